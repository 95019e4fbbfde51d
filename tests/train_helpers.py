"""Test helpers for the training pipeline: tiny per-frame data sets written in the real layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.images import write_png
from utils.paths import DataLayout


def make_tiny_frames(root: str | Path, split: str = "train", clips=("c0", "c1", "c2"), n_frames: int = 3,
                     size: tuple[int, int] = (48, 64), tree: str = "frames", seed: int = 0,
                     layers=("image", "alpha", "fgr", "bgr", "mask")) -> Path:
    """A soft-edged disc moving over a textured background, composited exactly: image = a*fgr + (1-a)*bgr."""
    layout = DataLayout(root)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for ci, clip in enumerate(clips):
        fgr = np.clip(rng.random((1, 1, 3)) * 0.5 + 0.5 + 0.05 * rng.standard_normal((h, w, 3)), 0, 1)
        bgr = np.clip(0.4 * rng.random((1, 1, 3)) + 0.2 * np.sin(xx / 3 + ci)[..., None], 0, 1)
        for f in range(n_frames):
            cy, cx, r = h / 2, w / 3 + 3 * f + 2 * ci, min(h, w) / 4
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            alpha = np.clip((r - dist) / 4 + 0.5, 0, 1).astype(np.float32)
            image = alpha[..., None] * fgr + (1 - alpha[..., None]) * bgr
            data = {"image": image, "alpha": alpha, "fgr": fgr, "bgr": bgr, "mask": (alpha > 0.5).astype(np.float32)}
            for layer in layers:
                bits = 16 if layer == "alpha" else 8
                write_png(layout.frames(split, layer, clip, tree=tree) / f"{f:04d}.png",
                          data[layer].astype(np.float32), bits=bits)
    return Path(root)


REPO = Path(__file__).resolve().parent.parent


def repo_on_pythonpath() -> None:
    """Put this checkout first on PYTHONPATH, so subprocesses (torchrun, killed runs) import its code."""
    import os

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def solver_main():
    """The training entry point users run (``pipeline/solver_refiner_maggie.py``'s ``main``)."""
    from pipeline.solver_refiner_maggie import main

    return main


def run_solver_cli(argv, capsys):
    """Run the solver as a user would (``run_main``: one error line, an exit code): returns (code, stderr)."""
    import pytest

    from utils.cli import run_main

    with pytest.raises(SystemExit) as exc:
        run_main(solver_main(), argv)
    return exc.value.code, capsys.readouterr().err
