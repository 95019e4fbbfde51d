"""Stage 1: put every foreground clip in front of a background, keeping the layers separate and lossless.

For each clip in ``<root>/raw/<split>/{fgr,pha}`` a background is chosen from ``<root>/backgrounds/<split>``
(seeded per clip, so the choice does not depend on ``--shard`` or restarts; a background named after the clip,
``<clip>.png`` or another still/video extension, is that clip's own and is always taken for it, and never for
another clip: the camouflage testbed of make_demo_data.py pairs clips and backgrounds that way), scaled to cover
the frame without stretching, cropped at a seeded offset (optionally panning slowly across the clip with ``--pan``) and written:

```
<root>/composed/<split>/<clip>/fgr/0000.png   8-bit RGB (the foreground layer as given)
                              /pha/0000.png   16-bit gray alpha
                              /bgr/0000.png   8-bit RGB (the fitted background)
                              /bgr_disp.npy   float32 disparity of the background, cropped the same way:
                                              HxW for a static crop, TxHxW when panning or for a video
                                              background (only when the background has ``<name>.disp.npy``)
                              /meta.json      background file, scale, crop, pan, seed, sources, fps, frames
```
The composite itself is ``pha * fgr + (1 - pha) * bgr`` and is not stored (every later stage rebuilds it).
A clip's folder is built under a temporary name and renamed when complete, so a kill never leaves half a clip.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.atomic import Manifest, atomic_dir, clean_stale_temps, write_json_atomic
from utils.cli import ArgumentParser, UserError, add_common_args, finite_float, run_main, splits_of, unit_seed
from utils.images import IMAGE_EXTS, read_image, write_png
from utils.paths import DataLayout, frame_name
from utils.stage import ClipRunner, open_stage
from utils.video import VIDEO_EXTS, clip_fps, clip_sources, iter_clip, read_clip

log = logging.getLogger("compose")
STAGE = "compose"
# bounds of --pan and --zoom: the background is resized to cover the frame plus the pan, times the zoom
MAX_PAN = 4096.0  # px
MAX_ZOOM = 4.0    # up to 5x the size that just covers


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--pan", type=finite_float(0.0, MAX_PAN), default=0.0,
                   help=f"largest slow pan over a clip, in pixels, in [0, {MAX_PAN:g}] (0: static background; "
                        f"default %(default)s)")
    p.add_argument("--zoom", type=finite_float(0.0, MAX_ZOOM), default=0.15,
                   help=f"extra seeded zoom beyond 'just covers the frame', up to this fraction, in [0, {MAX_ZOOM:g}] "
                        f"(default %(default)s)")
    return p


# ----------------------------------------------------------------------------------------------- backgrounds
def list_backgrounds(folder: Path) -> list[Path]:
    """Background stills and videos in ``folder`` (sorted; ``*.disp.npy`` maps are not backgrounds)."""
    if not folder.is_dir():
        raise UserError(f"background folder not found: {folder}")
    exts = IMAGE_EXTS + VIDEO_EXTS
    out = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                 and p.suffix.lower() in exts)
    if not out:
        raise UserError(f"no background images or videos in {folder}")
    return out


def disparity_path(background: Path) -> Path:
    """Where a background's optional true disparity map lives: ``<name>.disp.npy`` next to it."""
    return background.with_name(background.stem + ".disp.npy")


def load_background(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(frames TxHxWx3 float32, disparity TxHxW or 1xHxW float32 or None)`` of a still or video background."""
    if path.suffix.lower() in VIDEO_EXTS:
        frames = read_clip(path)
    else:
        frames = read_image(path, gray=False)[None]
    disp = None
    dpath = disparity_path(path)
    if dpath.is_file():
        try:
            disp = np.load(dpath, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise UserError(f"unreadable disparity map {dpath} ({exc})") from None
        if not np.isfinite(disp).all():  # NaN/inf would silently flatten the whole map (robust_normalise)
            bad = int((~np.isfinite(disp)).sum())
            raise UserError(f"disparity map {dpath} holds {bad} NaN or infinite value(s); fix or delete it")
        if disp.ndim == 2:
            disp = disp[None]
        if disp.ndim != 3 or disp.shape[1:] != frames.shape[1:3] or disp.shape[0] not in (1, len(frames)):
            raise UserError(f"disparity map {dpath} has shape {disp.shape}, background is {frames.shape[:3]}")
    return frames, disp


def backgrounds_for(backgrounds: list[Path], clip: str, clips: set[str]) -> list[Path]:
    """The backgrounds ``clip`` may be composed over: its own (named after it) if it has one, else those that
    belong to no clip (with no clip-named backgrounds: all of them, so the seeded choice is unchanged)."""
    own = [b for b in backgrounds if b.stem == clip]
    return own[:1] or [b for b in backgrounds if b.stem not in clips] or backgrounds


def plan_fit(bg_hw: tuple[int, int], out_hw: tuple[int, int], n_frames: int, rng: np.random.Generator,
             pan: float, zoom: float) -> dict:
    """Scale (uniform, never stretching) and per-frame integer crop offsets that fit a background to the frame.

    The scale makes the background cover the frame plus the pan travel, times a seeded zoom in ``[1, 1+zoom]``;
    the first crop is at a seeded position and a pan moves it linearly along a seeded direction.
    """
    bh, bw = bg_hw
    h, w = out_hw
    travel = float(rng.uniform(0.5, 1.0) * pan) if pan > 0 else 0.0
    angle = float(rng.uniform(0, 2 * np.pi))
    dx, dy = travel * np.cos(angle), travel * np.sin(angle)
    need_h, need_w = h + int(np.ceil(abs(dy))), w + int(np.ceil(abs(dx)))
    scale = max(need_h / bh, need_w / bw) * float(rng.uniform(1.0, 1.0 + zoom))
    rh, rw = max(need_h, int(round(bh * scale))), max(need_w, int(round(bw * scale)))
    # start so that the whole travel stays inside the resized background
    x_lo, x_hi = max(0.0, -dx), rw - w - max(0.0, dx)
    y_lo, y_hi = max(0.0, -dy), rh - h - max(0.0, dy)
    x0, y0 = float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))
    ts = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    offsets = [[int(np.clip(round(y0 + t * dy), 0, rh - h)), int(np.clip(round(x0 + t * dx), 0, rw - w))]
               for t in ts]
    return {"scale": scale, "resized_size": [rh, rw], "pan_px": [dy, dx], "offsets_yx": offsets}


def resize_cover(img: np.ndarray, size_hw: tuple[int, int], linear: bool = False) -> np.ndarray:
    """Resize to ``size_hw``: area averaging when shrinking (no aliasing), cubic when enlarging (clipped)."""
    rh, rw = size_hw
    if linear:
        interp = cv2.INTER_LINEAR
    else:
        interp = cv2.INTER_AREA if rh < img.shape[0] else cv2.INTER_CUBIC
    out = cv2.resize(img, (rw, rh), interpolation=interp)
    return out if linear else np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------------ clips
def clip_pairs(layout: DataLayout, split: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """fgr and pha sources of a split; a missing or empty fgr folder is an error."""
    fgr_dir, pha_dir = layout.raw(split, "fgr"), layout.raw(split, "pha")
    if not fgr_dir.is_dir():
        raise UserError(f"input folder not found: {fgr_dir}")
    fgr = clip_sources(fgr_dir)
    if not fgr:
        raise UserError(f"no clips (mp4 files or frame folders) in {fgr_dir}")
    return fgr, clip_sources(pha_dir)


def compose_clip(layout: DataLayout, split: str, clip: str, fgr_src: Path, pha_src: Path,
                 backgrounds: list[Path], base_seed: int, pan: float, zoom: float, overwrite: bool) -> dict:
    """Compose one clip into ``composed/<split>/<clip>/`` atomically; returns its meta. Raises ``UserError``."""
    seed = unit_seed(base_seed, STAGE, split, clip)
    rng = np.random.default_rng(seed)
    bg_path = backgrounds[int(rng.integers(len(backgrounds)))]
    bg_frames, bg_disp = load_background(bg_path)
    fps = clip_fps(fgr_src)
    out_dir = layout.composed(split, clip)
    plan = None
    disp_frames: list[np.ndarray] = []
    # one HxW map serves every frame when neither the crop nor the disparity changes over the clip
    static_disp = pan <= 0 and bg_disp is not None and bg_disp.shape[0] == 1
    n = 0
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for sub in ("fgr", "pha", "bgr"):
            (tmp / sub).mkdir()
        fgr_it, pha_it = iter_clip(fgr_src), iter_clip(pha_src, gray=True)
        for fgr in fgr_it:
            pha = next(pha_it, None)
            if pha is None:
                raise UserError(f"{clip}: pha has fewer frames ({n}) than fgr ({pha_src})")
            if pha.shape != fgr.shape[:2]:
                raise UserError(f"{clip}: frame {n} size differs: fgr {fgr.shape[:2]} vs pha {pha.shape} ({pha_src})")
            if plan is None:
                # the frame count is needed for the pan's speed; counting costs one decode of the alpha only
                # when panning (a static crop needs no count)
                n_total = len(read_clip(pha_src, gray=True)) if pan > 0 else 1
                plan = plan_fit(bg_frames.shape[1:3], fgr.shape[:2], n_total, rng, pan, zoom)
                h, w = fgr.shape[:2]
                size = tuple(plan["resized_size"])
                bg_cache: dict[int, np.ndarray] = {}
                disp_cache: dict[int, np.ndarray] = {}
            k = n % len(bg_frames)
            if k not in bg_cache:
                bg_cache = {k: resize_cover(bg_frames[k], size)}
                if bg_disp is not None:
                    kd = k % len(bg_disp)
                    disp_cache = {k: resize_cover(bg_disp[kd], size, linear=True)}
            y, x = plan["offsets_yx"][min(n, len(plan["offsets_yx"]) - 1)]
            bgr = bg_cache[k][y:y + h, x:x + w]
            write_png(tmp / "fgr" / frame_name(n), fgr)
            write_png(tmp / "pha" / frame_name(n), pha, bits=16)
            write_png(tmp / "bgr" / frame_name(n), bgr)
            if bg_disp is not None and (not disp_frames or not static_disp):
                disp_frames.append(disp_cache[k][y:y + h, x:x + w])
            n += 1
        if next(pha_it, None) is not None:
            raise UserError(f"{clip}: pha has more frames than fgr ({n}) ({pha_src})")
        if pan > 0 and n != len(plan["offsets_yx"]):
            raise UserError(f"{clip}: fgr has {n} frames, pha {len(plan['offsets_yx'])}")
        disp_file = None
        if disp_frames:
            arr = disp_frames[0] if static_disp else np.stack(disp_frames)
            np.save(tmp / "bgr_disp.npy", arr.astype(np.float32))
            disp_file = "bgr_disp.npy"
        meta = {
            "clip": clip, "split": split, "frames": n, "size": [h, w], "fps": fps,
            "seed": seed, "base_seed": base_seed,
            "sources": {"fgr": _rel(fgr_src, layout.root), "pha": _rel(pha_src, layout.root)},
            "background": _rel(bg_path, layout.root),
            "background_kind": "video" if len(bg_frames) > 1 or bg_path.suffix.lower() in VIDEO_EXTS else "image",
            "background_size": list(bg_frames.shape[1:3]),
            "background_disparity": _rel(disparity_path(bg_path), layout.root) if bg_disp is not None else None,
            "bgr_disp": disp_file,
            "scale": plan["scale"], "resized_size": plan["resized_size"],
            "crop": {"y": plan["offsets_yx"][0][0], "x": plan["offsets_yx"][0][1], "h": h, "w": w},
            "pan": {"max_px": pan, "travel_px_yx": plan["pan_px"],
                    "offsets_yx": plan["offsets_yx"] if pan > 0 else None},
        }
        write_json_atomic(tmp / "meta.json", meta)
    return meta


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with open_stage(args.root, STAGE, args.shard) as layout:  # the root checked, this stage's lock held
        return run(args, layout)


def run(args: argparse.Namespace, layout: DataLayout) -> int:
    """Compose this shard's clips of ``args.split`` (the root open: :func:`utils.stage.open_stage`)."""
    splits = splits_of(args.split)
    if args.split == "all":  # a data set with only raw/train (or only raw/test): compose what is there
        present = [s for s in splits if layout.raw(s, "fgr").is_dir()]
        for s in splits:
            if s not in present:
                log.info("compose: no %s split (%s not found), skipped", s, layout.raw(s, "fgr"))
        splits = tuple(present) or splits  # none at all: the first split's error below names the folder
    runner = ClipRunner(log, args.shard, args.overwrite, fail_format="compose %s/%s failed: %s",
                        skip_format="compose %s: %d clip(s) already done, skipped (use --overwrite to redo)")
    for split in splits:
        fgr, pha = clip_pairs(layout, split)
        backgrounds = list_backgrounds(layout.backgrounds(split))
        manifest = Manifest(layout.manifest(STAGE, split))

        def compose_one(clip: str) -> None:
            clean_stale_temps(layout.composed(split), name=clip)  # a killed run's half clip (this shard's own)
            if clip not in pha:
                raise UserError(f"{clip}: fgr without pha (expected {layout.raw(split, 'pha') / clip}[.mp4])")
            meta = compose_clip(layout, split, clip, fgr[clip], pha[clip],
                                backgrounds_for(backgrounds, clip, set(fgr)), args.seed,
                                args.pan, args.zoom, overwrite=True)
            manifest.mark_done(clip, frames=meta["frames"], background=meta["background"])
            log.info("composed %s/%s: %d frames over %s -> %s", split, clip, meta["frames"], meta["background"],
                     layout.composed(split, clip))

        runner.run(split, sorted(fgr), manifest, compose_one,
                   lambda clip: manifest.done(clip) and layout.composed(split, clip).is_dir(), desc=f"compose {split}")
    return runner.exit_code()


if __name__ == "__main__":
    run_main(main)
