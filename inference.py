"""Apply a refiner checkpoint to an image, a folder of images, or a video.

    python inference.py --input IMG|FOLDER|VIDEO --ckpt CKPT --out OUT [--guide_mask MASK|FOLDER]
                        [--resize_h 720 --resize_w 1080] [--guide_quality auto|accurate|coarse]
                        [--downsample_ratio auto|R | --dense] [--device auto|cpu|cuda] [--fp16] [--16bit]
                        [--rgba] [--preview] [--yolo_ckpt YOLO.pt --sam2_ckpt SAM2.pt [--sam2_config CFG]]
    python inference.py --i IMG --c CKPT --o OUT --g MASK    # the original short flags: aliases of the long ones

Outputs: for one image with ``--out out.png``: ``out.png`` (alpha), ``out_rgba.png``, ``out_preview.png``;
otherwise ``--out`` is a folder: ``alpha/<name>.png``, ``rgba/<name>.png``, ``preview/<name>.png`` (``<name>`` is
the image's stem, or the frame index ``0000`` for a video; a video also gets ``preview.mp4``). The alpha has the
input's size whatever ``--resize_h/--resize_w`` (the network's input size) say.

The guide mask (``--guide_mask``): an image for an image input; a folder with one mask per image, matched by file
stem, for a folder; for a video a folder of per-frame masks (sorted), a mask video, or one image for every frame.
Without it, guides are made with YOLO + SAM2 (preprocess/guide_mask.py) when ``--yolo_ckpt`` and
``--sam2_ckpt`` are given. Everything is written to a temporary folder first and moved into place only after
every input succeeded, so an error leaves no partial output.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import load_refiner
from model.predictor import GUIDE_QUALITIES, Predictor
from model.refiner import Refiner
from model.sparse import RATIO_HELP, ratio_arg
from utils.atomic import clean_stale_temps, make_temp_dir
from utils.cli import ArgumentParser, UserError, positive_int, require_existing, run_main
from utils.device import resolve_device
from utils.images import IMAGE_EXTS, list_images, read_image, resize, to_uint, write_png
from utils.locks import hold_lock
from utils.paths import frame_name
from utils.video import VIDEO_EXTS, iter_video, video_fps, write_video

log = logging.getLogger("inference")
GUIDE_CHUNK = 16  # frames per call of the YOLO + SAM2 guide stage



def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Refine a coarse person mask into an alpha matte with a DWT refiner.")
    # long names (the README's conventions), the original short ones kept as aliases: --i --c --o --g
    p.add_argument("--input", "--i", dest="input", required=True, help="an image, a folder of images, or a video")
    p.add_argument("--ckpt", "--c", dest="ckpt", required=True,
                   help="refiner checkpoint (.pt from training or model.checkpoint.save_refiner)")
    p.add_argument("--out", "--o", dest="out", required=True, help="output .png (one image input) or folder")
    p.add_argument("--guide_mask", "--g", "--guide", dest="guide_mask",
                   help="guide mask: image, folder of masks, or mask video")
    p.add_argument("--guide_quality", choices=GUIDE_QUALITIES, default="auto",
                   help="auto: the image judges each guide (do its boundary's colours agree with it?); accurate: a segmenter's mask on a clean "
                        "frame (only its boundary ring is refined, never flipped); coarse: may be wrong by whole "
                        "regions (refined within ~10 px of its edge, flipped where the refiner is sure)")
    p.add_argument("--downsample_ratio", type=ratio_arg, default="auto",
                   help=RATIO_HELP + "; full resolution only in tiles where the refiner can change the guide")
    p.add_argument("--dense", action="store_true", help="every pixel at full resolution (the reference path)")
    p.add_argument("--resize_h", type=positive_int, help="network input height (alpha comes back at the input's size)")
    p.add_argument("--resize_w", type=positive_int, help="network input width (one of the two keeps the aspect ratio)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--fp16", action="store_true", help="half precision (autocast) on a CUDA device")
    p.add_argument("--16bit", dest="bits16", action="store_true", help="write 16-bit alpha (and RGBA) PNGs")
    p.add_argument("--rgba", action="store_true", help="also write RGBA cut-outs (foreground by pymatting)")
    p.add_argument("--preview", dest="preview", action="store_true", default=False,
                   help="also write side-by-side previews")
    p.add_argument("--no_preview", dest="preview", action="store_false", help="no previews (the default)")
    p.add_argument("--yolo_ckpt", help="YOLO person-detector weights (local file) to make guides without --guide_mask")
    p.add_argument("--sam2_ckpt", help="SAM2 weights (local file) to make guides without --guide_mask")
    p.add_argument("--sam2_config", help="SAM2 config name (default: the guide-mask stage's default)")
    return p


# ---------------------------------------------------------------------------------------------------- inputs
def input_kind(path: Path) -> str:
    """'image', 'folder' or 'video', or a UserError for anything else."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTS:
        return "video"
    if suffix in IMAGE_EXTS:
        return "image"
    raise UserError(f"not an image, folder or video: {path} (images: {' '.join(IMAGE_EXTS)}; "
                    f"videos: {' '.join(VIDEO_EXTS)})")


def iter_inputs(path: Path, kind: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, image HxWx3 float32)``: name is the stem, or the frame name for a video."""
    if kind == "image":
        yield path.stem, read_image(path, gray=False)
    elif kind == "folder":
        for p in list_images(path):
            yield p.stem, read_image(p, gray=False)
    else:
        for i, frame in enumerate(iter_video(path)):
            yield Path(frame_name(i)).stem, frame.astype(np.float32) / 255.0


class Guides:
    """Guide masks for the inputs, from ``--g`` or made by the YOLO + SAM2 stage, in the order of the inputs."""

    def __init__(self, args, inp: Path, kind: str, names: list[str] | None):
        self.args, self.kind, self.source, self.static = args, kind, None, None
        self._video_iter: Iterator[np.ndarray] | None = None
        self._files: list[Path] = []
        self._static_mask: np.ndarray | None = None
        if args.guide_mask is None:
            if not (args.yolo_ckpt and args.sam2_ckpt):
                raise UserError("no guide mask: give --guide_mask MASK (an image, or a folder of masks for a folder/video), "
                                "or --yolo_ckpt and --sam2_ckpt to make one with YOLO + SAM2")
            require_existing(args.yolo_ckpt, "YOLO checkpoint (--yolo_ckpt)")
            require_existing(args.sam2_ckpt, "SAM2 checkpoint (--sam2_ckpt)")
            return
        g = require_existing(args.guide_mask, "guide mask (--guide_mask)")
        if kind == "image":
            if g.is_dir():
                raise UserError(f"--guide_mask must be a mask image for an image input, got a folder: {g}")
            self.static = g
        elif kind == "folder":
            if not g.is_dir():
                raise UserError(f"--guide_mask must be a folder of masks (named like the images) for a folder input: {g}")
            by_stem = {p.stem: p for p in list_images(g)}
            missing = [n for n in names or [] if n not in by_stem]
            if missing:
                raise UserError(f"no guide mask for {len(missing)} image(s) in {g}, e.g. {missing[0]!r}")
            self._by_stem = by_stem
        else:  # video
            if g.is_dir():
                self._files = list_images(g)
                if not self._files:
                    raise UserError(f"no mask images in {g}")
            elif g.suffix.lower() in VIDEO_EXTS:
                self._video_iter = iter_video(g, gray=True)
            else:
                self.static = g
        self.source = g

    def get(self, index: int, name: str) -> np.ndarray | None:
        """The guide of input ``index`` (HxW float32), or None when it must be made by :func:`make_guide`."""
        if self.source is None:
            return None
        if self.static is not None:
            if self._static_mask is None:  # one mask for every frame: read it once
                self._static_mask = read_image(self.static, gray=True)
            return self._static_mask
        if self.kind == "folder":
            return read_image(self._by_stem[name], gray=True)
        if self._video_iter is not None:
            frame = next(self._video_iter, None)
            if frame is None:
                raise UserError(f"the guide video {self.source} has fewer frames than the input video")
            return frame.astype(np.float32) / 255.0
        if index >= len(self._files):
            raise UserError(f"the guide folder {self.source} has fewer masks ({len(self._files)}) than the video "
                            "has frames")
        return read_image(self._files[index], gray=True)


def make_guide(images: list[np.ndarray], args) -> list[np.ndarray]:
    """Guides from the guide-mask stage: ``preprocess.guide_mask.yolo_sam2_guides`` (YOLO boxes -> SAM2 masks)."""
    try:
        from preprocess.guide_mask import yolo_sam2_guides
    except ImportError as exc:
        raise UserError(f"the guide-mask stage (preprocess/guide_mask.py) is not available ({exc}); give --g") \
            from None
    kwargs = {"sam2_config": args.sam2_config} if args.sam2_config else {}
    return yolo_sam2_guides(images, args.yolo_ckpt, args.sam2_ckpt, device=args.device_str, **kwargs)


def fit_guide(guide: np.ndarray, shape: tuple[int, int], name: str, warned: set) -> np.ndarray:
    """Resize a guide of the wrong size to the image's (with a warning, once per size)."""
    if guide.shape[:2] != shape:
        key = (guide.shape[:2], shape)
        if key not in warned:
            log.warning("guide of %s is %dx%d, the image %dx%d: resized", name, guide.shape[1], guide.shape[0],
                        shape[1], shape[0])
            warned.add(key)
        guide = cv2.resize(guide, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(guide, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- model
def network_size(h: int, w: int, rh: int | None, rw: int | None) -> tuple[int, int]:
    """The network's input size: the flags, or one flag and the aspect ratio, or the input's own size."""
    if rh is None and rw is None:
        return h, w
    if rh is None:
        rh = max(1, round(h * rw / w))
    if rw is None:
        rw = max(1, round(w * rh / h))
    if rh < 1 or rw < 1:
        raise UserError(f"--resize_h/--resize_w must be positive, got {rh}x{rw}")
    return rh, rw


@torch.no_grad()
def predict_alpha(model: Refiner, image: np.ndarray, guide: np.ndarray, device: torch.device, fp16: bool,
                  size: tuple[int, int], guide_quality: str = "auto", downsample_ratio: float | str = "auto",
                  dense: bool = False) -> np.ndarray:
    """Alpha (HxW float32 in [0,1]) of ``image`` at its own size; the network sees it at ``size``.
    ``guide_quality``: one of ``GUIDE_QUALITIES`` (which output rule the refiner uses; see ``--guide_quality``).
    The sparse path (``model.sparse``: a coarse pass at ``downsample_ratio``, full-resolution tiles where the
    refiner can act) unless ``dense``.

    ``fp16``: float16 autocast on ``device``'s type (the CLI allows it on CUDA only; bench/gpu_check.py's CPU dry
    run also takes this path on the CPU, so the script that compares fp16 with fp32 is itself tested).
    """
    predictor = Predictor(model, device, downsample_ratio, dense, guide_quality, torch.float16 if fp16 else None)
    return predict_with(predictor, image, guide, size)


def predict_with(predictor: Predictor, image: np.ndarray, guide: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Alpha (HxW float32 in [0,1]) of ``image`` at its own size; the network sees it at ``size``."""
    alpha = predictor.alpha(resize(image, size), resize(guide, size))
    return np.clip(resize(alpha, image.shape[:2]), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------- outputs
def cutout(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA cut-out: foreground colours estimated by pymatting (multi-level), alpha as the fourth channel."""
    from pymatting import estimate_foreground_ml

    fg = estimate_foreground_ml(image.astype(np.float64), alpha.astype(np.float64))
    return np.concatenate([np.clip(fg, 0, 1), alpha[..., None]], axis=2).astype(np.float32)


def preview(image: np.ndarray, guide: np.ndarray, alpha: np.ndarray, height: int = 360) -> np.ndarray:
    """image | guide | alpha | composite on a checkerboard, each scaled to ``height`` (at most the input's)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 0.8, 0.55).astype(np.float32)
    comp = image * alpha[..., None] + board * (1 - alpha[..., None])
    panels = [image, np.repeat(guide[..., None], 3, 2), np.repeat(alpha[..., None], 3, 2), comp]
    ph = min(height, h)
    pw = max(1, round(w * ph / h))
    return np.concatenate([resize(p.astype(np.float32), (ph, pw)) for p in panels], axis=1)


def swap_dirs(a: Path, b: Path) -> None:
    """Exchange two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere two renames, the old
    folder parked under ``a``'s temporary name (a rerun removes it)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    except (OSError, AttributeError):
        pass
    parked = a.with_name(a.name + "-old")
    os.replace(b, parked)
    os.replace(a, b)
    os.replace(parked, a)


class Writer:
    """Writes outputs under a temporary folder; :meth:`commit` moves them into place, :meth:`discard` drops them."""

    def __init__(self, out: Path, single_file: bool):
        self.out, self.single_file = out, single_file
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
        self.files: list[tuple[Path, Path]] = []  # (temporary, final)
        self.previews: list[np.ndarray] = []

    def _target(self, kind: str, name: str) -> Path:
        if self.single_file:
            suffix = "" if kind == "alpha" else f"_{kind}"
            return self.out.with_name(f"{self.out.stem}{suffix}.png")
        return self.out / kind / f"{name}.png"

    def add(self, kind: str, name: str, img: np.ndarray, bits: int = 8) -> None:
        final = self._target(kind, name)
        tmp = self.tmp / kind / f"{name}.png"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        write_png(tmp, img, bits=bits)
        self.files.append((tmp, final))

    def add_video(self, frames: list[np.ndarray], fps: float) -> None:
        tmp = self.tmp / "preview.mp4"
        write_video(tmp, frames, fps=fps)
        self.files.append((tmp, self.out / "preview.mp4"))

    def commit(self) -> list[Path]:
        if self.single_file:  # one image in: each of its (at most 3) files is renamed into place atomically
            for tmp, final in self.files:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            shutil.rmtree(self.tmp, ignore_errors=True)
            return [final for _, final in self.files]
        # a folder: the temporary folder becomes the output folder in one rename, so a kill at any moment leaves
        # the old folder or the new one, never part of each. Files of the old folder that this run does not
        # rewrite are kept (hard links, no copies).
        for tmp, final in self.files:
            want = self.tmp / final.relative_to(self.out)
            if want != tmp:
                want.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, want)
        if self.out.is_dir():
            for old in self.out.rglob("*"):
                mine = self.tmp / old.relative_to(self.out)
                if old.is_dir() or mine.exists() or old.is_symlink():
                    continue
                mine.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(old, mine)
                except OSError:
                    shutil.copy2(old, mine)
            swap_dirs(self.tmp, self.out)  # self.tmp now holds the old folder
        else:
            os.replace(self.tmp, self.out)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return [final for _, final in self.files]

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    with contextlib.ExitStack() as locks:  # the output's lock (one inference per output), released at the end
        return _main(argv, locks)


def _main(argv: Sequence[str] | None, locks: contextlib.ExitStack) -> int:
    args = build_parser().parse_args(argv)
    inp, out = Path(args.input), Path(args.out)
    kind = input_kind(inp)
    names = [p.stem for p in list_images(inp)] if kind == "folder" else None
    if kind == "folder" and not names:
        raise UserError(f"no images in {inp} (extensions: {' '.join(IMAGE_EXTS)})")
    single_file = kind == "image" and out.suffix.lower() in IMAGE_EXTS
    if out.suffix.lower() in IMAGE_EXTS and not single_file:
        raise UserError(f"--o must be a folder for a {kind} input, got {out}")
    if not single_file and out.exists() and not out.is_dir():
        raise UserError(f"--o {out} exists and is not a folder")
    if single_file and out.suffix.lower() != ".png":
        raise UserError(f"--o must end in .png (lossless alpha), got {out}")
    device = resolve_device(args.device)
    args.device_str = str(device)
    if args.fp16 and device.type != "cuda":
        raise UserError("--fp16 needs a CUDA device (use --device cuda, or drop --fp16 on CPU)")
    guides = Guides(args, inp, kind, names)  # validates the guide (or the guide-stage checkpoints) up front
    model, _ = load_refiner(args.ckpt, map_location=device)
    predictor = Predictor(model, device, args.downsample_ratio, args.dense, args.guide_quality,
                          torch.float16 if args.fp16 else None)
    log.info("refiner %s (%s) from %s on %s%s; frames of 768 px and more: %s", model.variant, model.config,
             args.ckpt, device, ", fp16" if args.fp16 else "",
             f"fine stage ({int(model.fine_steps)} steps)" if model.fine_trained else "fallback tiles (fine stage untrained)")

    bits = 16 if args.bits16 else 8
    out.parent.mkdir(parents=True, exist_ok=True)
    locks.enter_context(hold_lock(out.parent / f".{out.name}.lock", f"an inference writing {out}", remove=True))
    clean_stale_temps(out.parent, out.name)  # what a killed run left (safe: no other run writes here now)
    writer = Writer(out, single_file)
    warned: set = set()
    count = 0
    try:
        items = iter_inputs(inp, kind)
        total = len(names) if names else (1 if kind == "image" else None)
        bar = tqdm(total=total, unit="frame" if kind == "video" else "image", desc="inference",
                   disable=True if total == 1 else None)  # None: a bar on a terminal only, never glued to an error line
        while True:
            chunk = [item for _, item in zip(range(GUIDE_CHUNK), items)]
            if not chunk:
                break
            made = make_guide([img for _, img in chunk], args) if guides.source is None else None
            for j, (name, image) in enumerate(chunk):
                guide = made[j] if made is not None else guides.get(count, name)
                guide = fit_guide(np.asarray(guide, dtype=np.float32), image.shape[:2], name, warned)
                size = network_size(*image.shape[:2], args.resize_h, args.resize_w)
                alpha = predict_with(predictor, image, guide, size)
                writer.add("alpha", name, alpha, bits)
                if args.rgba:
                    writer.add("rgba", name, cutout(image, alpha), bits)
                if args.preview:
                    pv = preview(image, guide, alpha)
                    if kind == "video":
                        writer.previews.append(to_uint(pv))
                    writer.add("preview", name, pv)
                count += 1
                bar.update(1)
        bar.close()
        if kind == "video" and guides._files and len(guides._files) != count:
            raise UserError(f"the guide folder {guides.source} has {len(guides._files)} masks for {count} frames")
        if kind == "video" and guides._video_iter is not None and next(guides._video_iter, None) is not None:
            raise UserError(f"the guide video {guides.source} has more frames than the input video ({count})")
        if writer.previews:
            writer.add_video(writer.previews, video_fps(inp))
        written = writer.commit()
    except BaseException:
        writer.discard()
        raise
    where = written[0] if single_file else out
    log.info("wrote %d alpha matte(s)%s%s to %s", count, " + RGBA" if args.rgba else "",
             " + previews" if args.preview else "", where)
    return 0


if __name__ == "__main__":
    run_main(main)
