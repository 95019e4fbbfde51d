"""Do no harm: a TRAINED refiner leaves an accurate guide unchanged far from its boundary, even over strong
internal edges, while it does refine the boundary itself.

The refiner is trained here, through the real solver, on frames whose subject carries high-contrast stripes (the
internal edges that a refiner which "sees high frequency" could mistake for the matte's edge), then run on
held-out frames with the exact guide (ground truth binarised at 0.5).
"""
import cv2
import numpy as np
import pytest
import torch

from model.checkpoint import load_refiner
from tests.train_helpers import repo_on_pythonpath
from utils.images import write_png
from utils.paths import DataLayout

repo_on_pythonpath()
FAR_PX = 16
SIZE = (96, 128)


def _striped_person_frames(root, split: str, clips, n_frames: int = 4, seed: int = 0) -> None:
    """A soft-edged ellipse 'person' with bold stripes and a dark eye-like blob inside, over a textured background;
    image = alpha * fgr + (1 - alpha) * bgr exactly."""
    layout = DataLayout(root)
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for ci, clip in enumerate(clips):
        rng = np.random.default_rng([seed, ci])
        c1, c2 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
        period, angle = rng.uniform(5, 10), rng.uniform(0, np.pi)
        bgr = np.clip(rng.uniform(0.2, 0.8, 3) + 0.15 * np.sin(xx / 2.5 + ci)[..., None]
                      * np.cos(yy / 3.5)[..., None], 0, 1).astype(np.float32)
        for f in range(n_frames):
            cy, cx = h / 2 + 2 * f, w / 2 + 3 * f - 6 + 4 * ci
            r = np.sqrt(((yy - cy) / 34) ** 2 + ((xx - cx) / 26) ** 2)
            alpha = np.clip((1 - r) * 26 / 2.5 + 0.5, 0, 1).astype(np.float32)  # a ~2.5 px soft edge
            u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            stripes = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)[..., None]
            fgr = stripes * c1 + (1 - stripes) * c2
            eye = np.hypot(yy - cy + 10, xx - cx - 6) < 3
            fgr[eye] = 0.05
            image = alpha[..., None] * fgr + (1 - alpha[..., None]) * bgr
            data = {"image": image, "alpha": alpha, "fgr": fgr, "bgr": bgr, "mask": (alpha > 0.5).astype(np.float32)}
            for layer, img in data.items():
                write_png(layout.frames(split, layer, clip, tree="frames") / f"{f:04d}.png", img.astype(np.float32),
                          bits=16 if layer == "alpha" else 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("striped")
    _striped_person_frames(root, "train", [f"c{i}" for i in range(6)])
    _striped_person_frames(root, "test", ["t0", "t1"], seed=1)
    runs = tmp_path_factory.mktemp("runs")
    from pipeline.solver_refiner_maggie import main

    argv = ["--root", str(root), "--runs_dir", str(runs), "--name", "noharm", "--model", "light", "--guide", "mixed",
            "--accurate_guide_prob", "0.5", "--steps", "300", "--batch_size", "4", "--crop", "96", "--base_channels", "16",
            "--num_workers", "0", "--threads", "1", "--warmup_steps", "10", "--lr", "3e-3", "--eval_every", "300",
            "--ckpt_every", "300", "--log_every", "20", "--val_max_frames", "2", "--seed", "0"]
    assert main(argv) == 0
    model, _ = load_refiner(runs / "noharm" / "last.pt")
    return root, model


def test_trained_refiner_keeps_an_accurate_guide_far_from_its_boundary(trained):
    root, model = trained
    layout = DataLayout(root)
    from utils.images import read_image

    opened = 0
    for clip in ("t0", "t1"):
        for f in range(4):
            name = f"{f:04d}.png"
            image = read_image(layout.frames("test", "image", clip) / name)
            alpha_gt = read_image(layout.frames("test", "alpha", clip) / name, gray=True)
            guide = (alpha_gt > 0.5).astype(np.float32)
            with torch.no_grad():
                out = model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None], torch.from_numpy(guide)[None, None])
            alpha = out.alpha[0, 0].numpy()
            g = guide.astype(np.uint8)
            dist = np.maximum(cv2.distanceTransform(g, cv2.DIST_L2, 5), cv2.distanceTransform(1 - g, cv2.DIST_L2, 5))
            far = dist >= FAR_PX
            assert far.sum() > 0.5 * far.size
            # far from the boundary (stripes and the eye included) the guide comes out unchanged
            assert np.abs(alpha - guide)[far].max() <= 1 / 255, (clip, name, np.abs(alpha - guide)[far].max())
            opened += int((np.abs(alpha - guide)[dist < 3] > 1 / 255).sum())
    # and the test is not vacuous: the trained gate does open on the boundary, where the guide is wrong
    assert opened > 0
