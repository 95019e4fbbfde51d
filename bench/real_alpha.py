"""Real photographs with human-annotated alpha: each refiner beside its own guide and classical matting, per image.

The photos are yours to fetch and never committed (matting sets are research-only licences): a folder
``<root>/<set>/image/<name>.(png|jpg)`` with ``<root>/<set>/alpha/<name>.png`` (same size; 8- or 16-bit). Where
none is there the script says so in one line and exits 0, so it runs the same on a machine without the data.

Per photo, two guides, as a segmenter would give them: **accurate** (the true alpha binarised at 0.5) and
**coarse** (that mask seen at 1/8 resolution, upsampled and dilated by 3 px: a low-resolution segmenter's).
Per guide: the guide itself, each ``--ckpt`` through ``model.predictor.Predictor`` (``--guide_quality auto``, and
for accurate guides also told so), and pymatting's closed-form and shared matting with a trimap of the guide +-10
px. Scored on ``--crops`` squares of ``--crop`` px per photo where the truth is softest (hair), and on the whole
photo at ``--long_side`` px: MAD x1e3 on the whole item, on its unknown band (``pipeline.metrics.eval_region``),
Grad, and ``far``: the share (%) of pixels 16 px or more from the guide's boundary that a method changed.

    python bench/real_alpha.py --root /path/to/real_alpha --ckpt runs/train-cpu/s0/best.pt --out runs/real_alpha

Writes ``<out>/table.md`` (per item and the means), ``<out>/per_item.csv`` and ``<out>/<item>_<guide>.png`` panels
(image | guide | each refiner | closed-form | |error| of the first refiner x4; ``--no_panels``: none).
``--baselines none`` scores the guide and the refiners only (the ablation scores the classical methods once).
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import csv
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from bench.real_photos import FAR_PX, boundary_distance
from pipeline import metrics as M
from pipeline.classical import METHODS as CLASSICAL, classical_alpha
from utils.atomic import atomic_path, write_bytes_atomic
from utils.cli import ArgumentParser, UserError, nonneg_int, positive_int, run_main
from utils.images import IMAGE_EXTS, read_image, resize, write_png
from utils.paths import repo_default

log = logging.getLogger("real_alpha")
TRIMAP_PX = 10
GUIDES = ("accurate", "coarse")
Method = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image HxWx3, guide HxW) -> alpha HxW


def find_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """``(name, image, alpha)`` of every photo under ``root`` (``<set>/image`` beside ``<set>/alpha``), sorted."""
    pairs = []
    for image_dir in sorted(root.glob("*/image")):
        for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            alpha = image_dir.parent / "alpha" / f"{image.stem}.png"
            if alpha.is_file():
                pairs.append((f"{image_dir.parent.name}/{image.stem}", image, alpha))
    return pairs


def accurate_guide(alpha: np.ndarray) -> np.ndarray:
    """What a good segmenter gives: the truth binarised at 0.5."""
    return (alpha >= 0.5).astype(np.float32)


def coarse_guide(alpha: np.ndarray, factor: int = 8, grow: int = 3) -> np.ndarray:
    """A low-resolution segmenter's mask: the accurate mask at 1/``factor`` (area), binarised, upsampled
    (nearest) and dilated by ``grow`` px."""
    h, w = alpha.shape
    small = resize(accurate_guide(alpha), (max(1, h // factor), max(1, w // factor))) >= 0.5
    up = cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    return cv2.dilate(up, k).astype(np.float32)


def hair_crops(alpha: np.ndarray, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``count`` non-overlapping ``size`` px squares holding the most soft pixels
    (0 < alpha < 1), on a grid of half a square; squares with no soft pixel are never chosen."""
    h, w = alpha.shape
    if h < size or w < size:
        return []
    soft = ((alpha > 0.02) & (alpha < 0.98)).astype(np.float64)
    integral = cv2.integral(soft)
    step = max(1, size // 2)
    ys = sorted({*range(0, h - size + 1, step), h - size})
    xs = sorted({*range(0, w - size + 1, step), w - size})
    scored = sorted(((integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x],
                      y, x) for y in ys for x in xs), reverse=True)
    picked: list[tuple[int, int]] = []
    for score, y, x in scored:
        if len(picked) == count or score <= 0:
            break
        if all(abs(y - py) >= size or abs(x - px) >= size for py, px in picked):
            picked.append((y, x))
    return picked


def classical(method: str) -> Method:
    """pymatting's closed-form or shared matting (``pipeline.classical``) with a trimap of the guide +-10 px."""
    return lambda image, guide: classical_alpha(image, guide, method, TRIMAP_PX)


def refiner(ckpt: str, guide_quality: str, **options) -> Method:
    """A checkpoint's predictor (``options``: ``model.predictor.Predictor``'s, e.g. ring_gate, soft_zone, coarse_band)."""
    from model.predictor import Predictor

    predictor, _ = Predictor.from_checkpoint(ckpt, "cpu", guide_quality=guide_quality, **options)
    return lambda image, guide: np.clip(predictor.alpha(image, guide), 0, 1)


def methods_for(ckpts: Sequence[str], guide_kind: str, baselines: Sequence[str] = CLASSICAL,
                **options) -> dict[str, Method]:
    """The guide, each checkpoint (auto; and told the guide is accurate when it is; ``options`` for its
    predictor), and the classical ``baselines`` (closed-form, shared matting)."""
    out: dict[str, Method] = {"guide": lambda image, guide: guide}
    for i, ckpt in enumerate(ckpts):
        tag = f"refiner{i}" if len(ckpts) > 1 else "refiner"
        out[tag] = refiner(ckpt, "auto", **options)
        if guide_kind == "accurate":
            out[f"{tag}_told"] = refiner(ckpt, "accurate", **options)
    out.update({m: classical(m) for m in baselines})
    return out


def far_changed(alpha: np.ndarray, guide: np.ndarray) -> float:
    """% of the pixels >= ``FAR_PX`` from the guide's boundary whose value moved by more than 1/255."""
    far = boundary_distance(guide) >= FAR_PX
    return 100.0 * float((np.abs(alpha - guide)[far] > 1 / 255).mean()) if far.any() else 0.0


def score(pred: np.ndarray, gt: np.ndarray, guide: np.ndarray) -> dict[str, float]:
    unknown = M.eval_region(gt)
    return {"mad": M.mad(pred, gt), "mad_unknown": M.mad(pred, gt, unknown), "grad": M.grad(pred, gt),
            "far_pct": far_changed(pred, guide)}


def items_of(name: str, image: np.ndarray, alpha: np.ndarray, crop: int, crops: int, long_side: int):
    """``(item name, image, alpha)``: the hair crops at full resolution and the whole photo at ``long_side``."""
    for y, x in hair_crops(alpha, crop, crops):
        yield f"{name}@{y},{x}", image[y:y + crop, x:x + crop], alpha[y:y + crop, x:x + crop]
    if long_side:
        h, w = alpha.shape
        s = min(1.0, long_side / max(h, w))
        size = (max(1, round(h * s)), max(1, round(w * s)))
        yield f"{name}@whole", resize(image, size), np.clip(resize(alpha, size), 0, 1)


def panel(image: np.ndarray, guide: np.ndarray, alphas: dict[str, np.ndarray], gt: np.ndarray) -> np.ndarray:
    gray = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    shown = [image, gray(guide)] + [gray(a) for k, a in alphas.items() if k.startswith("refiner")] + \
        [gray(alphas[k]) for k in ("closed_form",) if k in alphas] + [gray(gt)]
    first = next((a for k, a in alphas.items() if k.startswith("refiner")), alphas.get("closed_form", guide))
    shown.append(gray(np.clip(4 * np.abs(first - gt), 0, 1)))
    return np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=1.0) for t in shown], axis=1)


def table(rows: list[dict], methods: list[str]) -> str:
    """Markdown: per item and guide kind the whole-item MAD of every method, then per guide kind the means of
    every metric."""
    lines = ["| item | guide | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    keyed = {(r["item"], r["guide_kind"], r["method"]): r for r in rows}
    for item in dict.fromkeys(r["item"] for r in rows):
        for kind in GUIDES:
            if (item, kind, "guide") in keyed:
                lines.append(f"| {item} | {kind} | " + " | ".join(
                    f"{keyed[(item, kind, m)]['mad']:.1f}" if (item, kind, m) in keyed else "-" for m in methods) + " |")
    for metric in ("mad", "mad_unknown", "grad", "far_pct"):
        lines += ["", f"Mean {metric} ({'x1e3' if metric.startswith('mad') else '%' if metric == 'far_pct' else 'x1'}),"
                  " over every item:", "", "| guide | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        for kind in GUIDES:
            vals = [[r[metric] for r in rows if r["guide_kind"] == kind and r["method"] == m] for m in methods]
            lines.append(f"| {kind} | " + " | ".join(f"{np.mean(v):.2f}" if v else "-" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("REAL_ALPHA_ROOT", repo_default("data/real_alpha")),
                   help="folder of <set>/image and <set>/alpha (default $REAL_ALPHA_ROOT or data/real_alpha)")
    p.add_argument("--ckpt", nargs="*", default=[], help="refiner checkpoint(s) to score")
    p.add_argument("--out", default=repo_default("runs/real_alpha"), help="folder of the table and panels")
    p.add_argument("--crop", type=positive_int, default=320, help="px of a hair crop")
    p.add_argument("--crops", type=nonneg_int, default=2, help="hair crops per photo")
    p.add_argument("--long_side", type=nonneg_int, default=640, help="px of the whole photo (0: no whole photo)")
    p.add_argument("--max_photos", type=nonneg_int, default=0, help="at most this many photos (0: all)")
    p.add_argument("--baselines", default=",".join(CLASSICAL),
                   help="classical methods beside the refiners, comma-separated, or none (the guide is always scored)")
    p.add_argument("--no_panels", action="store_true", help="write the tables only (no image panels)")
    p.add_argument("--gated_ring", action="store_true",
                   help="the refiner's ring takes its local samples only where the gate leans open (Predictor "
                        "ring_gate; the ablation's evaluations)")
    p.add_argument("--soft_zone", action="store_true",
                   help="the refiner grows the soft zone beyond the ring (model.evidence.soft_zone_alpha)")
    p.add_argument("--no_coarse_band", action="store_true",
                   help="coarse-ruled frames keep the refiner's band (model.evidence.coarse_band_alpha off; the "
                        "ablation's evaluations)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    pairs = find_pairs(root) if root.is_dir() else []
    if not pairs:
        print(f"real_alpha: no photos with alpha under {root} (<set>/image + <set>/alpha): nothing to score")
        return 0
    for c in args.ckpt:
        if not Path(c).is_file():
            raise UserError(f"checkpoint not found: {c}")
    pairs = pairs[: args.max_photos or None]
    baselines = [] if args.baselines == "none" else [b for b in args.baselines.split(",") if b]
    unknown = [b for b in baselines if b not in CLASSICAL]
    if unknown:
        raise UserError(f"--baselines: unknown method {unknown[0]!r}: use {', '.join(CLASSICAL)} or none")
    options = {"ring_gate": args.gated_ring, "soft_zone": args.soft_zone, "coarse_band": not args.no_coarse_band}
    methods = {kind: methods_for(args.ckpt, kind, baselines, **options) for kind in GUIDES}
    out = Path(args.out)
    rows: list[dict] = []
    panels = 0
    for name, image_path, alpha_path in pairs:
        image, alpha = read_image(image_path)[..., :3], read_image(alpha_path, gray=True)
        if image.shape[:2] != alpha.shape:
            raise UserError(f"{alpha_path} is {alpha.shape[1]}x{alpha.shape[0]}, its image "
                            f"{image.shape[1]}x{image.shape[0]}")
        for item, img, gt in items_of(name, image, alpha, args.crop, args.crops, args.long_side):
            for kind in GUIDES:
                guide = accurate_guide(gt) if kind == "accurate" else coarse_guide(gt)
                alphas = {m: run(img, guide) for m, run in methods[kind].items()}
                rows += [{"item": item, "guide_kind": kind, "method": m, **score(a, gt, guide)} for m, a in alphas.items()]
                if not args.no_panels:
                    write_png(out / f"{item.replace('/', '_').replace('@', '_')}_{kind}.png",
                              panel(img, guide, alphas, gt))
                    panels += 1
            log.info("scored %s", item)
    names = list(methods["accurate"])
    text = table(rows, names)
    write_bytes_atomic(out / "table.md", text.encode())
    with atomic_path(out / "per_item.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(text)
    log.info("wrote %s, %s and %d panels under %s", out / "table.md", out / "per_item.csv", panels, out)
    return 0


if __name__ == "__main__":
    run_main(main)
