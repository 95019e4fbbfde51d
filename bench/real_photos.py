"""Do no harm on real photographs: the refiner on photos of people that scikit-image ships, with accurate guides.

The embedded data set is procedural; a refiner must also leave a real person's matte no worse than an accurate
guide, and must not carve lines along internal edges (eyes, mouth, hair over the face, clothing seams). Two real
photos ship with scikit-image (``skimage.data.astronaut`` and ``skimage.data.camera``; neither is used anywhere
in the training data). Their guides are made here with OpenCV GrabCut from a recorded rectangle and recorded
foreground/background hint circles (``PHOTOS``), deterministic (``cv2.setRNGSeed``), and stored in
``bench/real_photos/<name>_guide.png`` so the exact masks are part of the repository.

There is no ground-truth alpha for these photos, so the script reports what must hold whatever the truth:
- ``far`` : max |alpha - guide| at pixels >= 16 px from the guide's boundary (the guide is right there: <= 1/255);
- ``holes``: pixels deep inside the guide (>= 16 px) whose alpha fell below 0.5 (a carved internal edge);
- ``changed``: the share of pixels changed by more than 1/255, and the share of those within 16 px of the boundary.
It writes ``<out>/<name>_panel.png`` (image | guide | refined alpha | |alpha - guide| x4 | composite on green).

    python bench/real_photos.py --ckpt runs/train-cpu/s0/best.pt --out runs/train-cpu/real_photos
    python bench/real_photos.py --ckpt runs/fine/s0/fine.pt --upscale 2 --out runs/fine/real_photos  # fine stage
    python bench/real_photos.py --remake_guides        # rebuild the stored guides (same bytes)
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from model.masks import boundary_distance as mask_boundary_distance
from utils.cli import ArgumentParser, UserError, run_main
from utils.images import read_image, to_uint, write_png
from utils.paths import repo_default

log = logging.getLogger("real_photos")
GUIDE_DIR = Path(__file__).resolve().parent / "real_photos"
FAR_PX = 16

# GrabCut recipe per photo: rect (x, y, w, h) around the person, then hint circles (x, y, r) that are surely
# background (the astronaut's helmet on the table, the cameraman's tripod) or surely the person (dark suit ring,
# coat, hands), and GRABCUT_ITERS iterations each with the rectangle and with the hints.
PHOTOS = {
    "astronaut": {
        "rect": (15, 8, 355, 504),
        "bg": [(400, 440, 95), (470, 500, 40)],
        "fg": [(220, 120, 40), (200, 380, 80), (230, 230, 30), (125, 200, 8), (135, 240, 8), (170, 270, 8),
               (215, 282, 8), (265, 270, 8), (297, 235, 8), (300, 350, 14), (165, 480, 20), (245, 470, 14),
               (255, 430, 12), (240, 500, 10)],
    },
    "camera": {
        "rect": (0, 60, 345, 452),
        "bg": [(290, 420, 30), (360, 450, 25), (250, 470, 15), (295, 335, 14), (275, 385, 10), (318, 385, 10),
               (8, 228, 10), (335, 372, 8), (342, 388, 8), (236, 492, 8)],
        "fg": [(80, 350, 60), (210, 120, 25), (215, 225, 12), (240, 160, 12), (300, 190, 10), (285, 160, 10),
               (200, 190, 10)],
    },
}
GRABCUT_ITERS = 8


def load_photo(name: str) -> np.ndarray:
    """The photo as float32 RGB HxWx3 in [0, 1] (gray photos repeated to 3 channels)."""
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except Exception as exc:  # noqa: BLE001  (the photo files missing from the install: a downloader is offered)
        raise UserError(f"scikit-image's photo {name!r} is not installed ({exc.__class__.__name__}); nothing is "
                        "downloaded here: reinstall scikit-image from its wheel (./env_setup.sh) to get its data") \
            from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3].astype(np.float32) / 255.0


def grabcut_guide(image: np.ndarray, rect, bg=(), fg=(), iters: int = GRABCUT_ITERS) -> np.ndarray:
    """A binary guide (HxW float32 {0,1}) by GrabCut: initialised by ``rect``, then refined with hint circles."""
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation draws from OpenCV's global generator
    bgr = np.ascontiguousarray(to_uint(image)[..., ::-1])
    mask = np.zeros(image.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(bgr, mask, tuple(rect), bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
    for x, y, r in bg:
        cv2.circle(mask, (x, y), r, cv2.GC_BGD, -1)
    for x, y, r in fg:
        cv2.circle(mask, (x, y), r, cv2.GC_FGD, -1)
    cv2.grabCut(bgr, mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def guide_for(name: str, remake: bool = False) -> np.ndarray:
    """The stored guide of ``name`` (made and stored first when missing or ``remake``)."""
    path = GUIDE_DIR / f"{name}_guide.png"
    if remake or not path.is_file():
        spec = PHOTOS[name]
        write_png(path, grabcut_guide(load_photo(name), spec["rect"], spec["bg"], spec["fg"]))
        log.info("guide of %s -> %s", name, path)
    return read_image(path, gray=True)


def boundary_distance(guide: np.ndarray) -> np.ndarray:
    """Distance (px) of every pixel to the guide's boundary (inside and outside alike)."""
    return mask_boundary_distance((guide > 0.5).astype(np.uint8))


def no_harm_stats(alpha: np.ndarray, guide: np.ndarray, far_px: int = FAR_PX) -> dict[str, float]:
    """What must hold with an accurate guide, truth unknown: see the module docstring."""
    dist = boundary_distance(guide)
    diff = np.abs(alpha - guide)
    far = dist >= far_px
    changed = diff > 1 / 255
    return {"far_max": float(diff[far].max()) if far.any() else 0.0,
            "holes": int(((guide > 0.5) & far & (alpha < 0.5)).sum()),
            "changed_pct": 100.0 * float(changed.mean()),
            "changed_near_pct": 100.0 * float((changed & ~far).sum() / max(1, changed.sum()))}


def panel(image: np.ndarray, guide: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """image | guide | alpha | |alpha - guide| x4 | composite over green, one row (float RGB)."""
    gray = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    green = np.zeros_like(image)
    green[..., 1] = 0.8
    comp = alpha[..., None] * image + (1 - alpha[..., None]) * green
    tiles = [image, gray(guide), gray(alpha), gray(np.clip(4 * np.abs(alpha - guide), 0, 1)), comp]
    return np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=1.0) for t in tiles], axis=1)


@torch.no_grad()
def refine(model, image: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Run a refiner on one HxWx3 image and HxW guide the way inference does (``model.predictor``: dense below
    768 px on the long side, the coarse pass and the fine stage's tiles above); returns alpha HxW float32."""
    from model.predictor import Predictor

    return Predictor(model).alpha(image, guide)


def upscaled(image: np.ndarray, guide: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo ``factor`` times larger (bicubic; the guide nearest, still a mask): a large frame for the sparse
    path, whose fine stage only runs at 768 px and more."""
    if factor == 1:
        return image, guide
    size = (image.shape[1] * factor, image.shape[0] * factor)
    return (np.clip(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), 0, 1).astype(np.float32),
            cv2.resize(guide, size, interpolation=cv2.INTER_NEAREST))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", nargs="*", default=[], help="refiner checkpoint(s) to run on the photos")
    p.add_argument("--photos", default=",".join(PHOTOS), help="comma list of " + ", ".join(PHOTOS))
    p.add_argument("--out", default=repo_default("runs/real_photos"), help="folder of the panels")
    p.add_argument("--remake_guides", action="store_true", help="rebuild the stored GrabCut guides")
    p.add_argument("--upscale", type=int, default=1, choices=(1, 2, 3, 4),
                   help="run on the photos this many times larger (2: 1024 px, the sparse path's fine stage)")
    return p


def panel_tag(ckpt: str, all_ckpts: Sequence[str]) -> str:
    """A checkpoint's part of its panels' names: its run folder (``train-cpu_s0``), and its file name too when
    another checkpoint of the same run is shown (``best.pt`` and ``last.pt`` must not write one file)."""
    run = "_".join(Path(ckpt).resolve().parent.parts[-2:])
    siblings = [c for c in all_ckpts if Path(c).resolve().parent == Path(ckpt).resolve().parent]
    return run if len(siblings) < 2 else f"{run}_{Path(ckpt).stem}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model.checkpoint import load_refiner

    names = [n for n in args.photos.split(",") if n]
    for n in names:
        if n not in PHOTOS:
            raise UserError(f"unknown photo {n!r}: one of {', '.join(PHOTOS)}")
    models = [(str(c), load_refiner(c)[0]) for c in args.ckpt]
    rows = ["| photo | checkpoint | far max (<= 1/255 = 0.0039) | holes | changed % | of which near the boundary % |",
            "|---|---|---|---|---|---|"]
    for name in names:
        image, guide = upscaled(load_photo(name), guide_for(name, args.remake_guides), args.upscale)
        for ckpt, model in models:
            alpha = refine(model, image, guide)
            s = no_harm_stats(alpha, guide)
            rows.append(f"| {name} | {ckpt} | {s['far_max']:.4f} | {s['holes']} | {s['changed_pct']:.2f} | "
                        f"{s['changed_near_pct']:.1f} |")
            tag = panel_tag(ckpt, args.ckpt) + (f"_x{args.upscale}" if args.upscale > 1 else "")
            path = write_png(Path(args.out) / f"{name}_{tag}_panel.png", panel(image, guide, alpha))
            log.info("%s with %s -> %s", name, ckpt, path)
    if models:
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    run_main(main)
