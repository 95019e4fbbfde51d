"""Stage 3a: per-clip layer folders -> the original work's per-frame layout, optionally keeping a seeded subset of
frames.

```
blurred/<split>/<clip>/{image,alpha,fgr,bgr}/NNNN.png      (--source blurred, the default)
composed/<split>/<clip>/{fgr,pha,bgr}/NNNN.png             (--source composed: the all-in-focus control)
    -> <tree>/<split>/{image,alpha,fgr,bgr}/<clip>/frames/NNNN.png  +  .../<clip>/video/<clip>.mp4 (preview)
```
``<tree>`` is ``frames`` for the blurred source and ``frames_sharp`` for the composed one. With the composed
source the network input is recomposed in float, ``image = alpha*fgr + (1-alpha)*bgr``, and quantised to 8 bits
once. image/fgr/bgr are 8-bit RGB PNG, alpha 16-bit gray PNG (an 8-bit source alpha is widened exactly).

Frame subset (``--ratio``, ``--sampling``): a clip of ``T`` frames keeps ``n = max(1, floor(ratio*T + 0.5))``
frames (round half up, never zero). ``contiguous`` (default) keeps one run ``[s, s+n)`` with the start ``s``
drawn uniformly from ``0..T-n``, so temporal metrics stay meaningful; ``uniform`` draws ``n`` distinct frames
without replacement (kept in time order). The draw is seeded per clip from ``--seed``, split and clip name, so
it does not depend on sharding or restarts, and every layer keeps the same indices. File names keep the
original frame index (a clip cut to frames 12..23 has files 0012.png..0023.png).

Each clip is one unit: all its layer folders are built under temporary names and renamed into place at the end,
then the unit is recorded in ``<root>/.manifest/<tree>/<split>/``. A rerun skips finished clips (unless the
subset settings changed, or ``--overwrite``); a killed run leaves no partial folder and is redone on rerun.
Only source clips their own stage recorded as finished are taken (a half-blurred clip of a failed or killed
blur run is a failed unit here, exit 2), and a source clip redone since is extracted again.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from utils.atomic import Manifest, atomic_dir, clean_stale_temps, upstream_fingerprint
from utils.cli import ArgumentParser, UserError, add_common_args, finite_float, run_main, splits_of, unit_seed
from utils.images import list_images, read_image, to_uint, write_png
from utils.paths import FRAME_LAYERS, DataLayout, frame_index
from utils.stage import ClipRunner, open_stage
from utils.video import write_video

log = logging.getLogger("frame_extraction")

# source folder name of each output layer; 'image' of the composed source is recomposed (None)
SOURCE_LAYERS = {
    "blurred": {"image": "image", "alpha": "alpha", "fgr": "fgr", "bgr": "bgr"},
    "composed": {"image": None, "alpha": "pha", "fgr": "fgr", "bgr": "bgr"},
}
TREES = {"blurred": "frames", "composed": "frames_sharp"}
# the stage whose manifest says which source clips are complete (only those are taken; see utils.atomic)
UPSTREAM = {"blurred": "blur", "composed": "compose"}
UPSTREAM_HINT = {"blurred": "rerun run_blur.sh", "composed": "rerun preprocess/compose_video_bg.py"}


def subset_size(total: int, ratio: float) -> int:
    """How many of ``total`` frames a ``ratio`` keeps: ``floor(ratio*total + 0.5)`` clamped to ``[1, total]``."""
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"--ratio must be in (0, 1], got {ratio}")
    return min(total, max(1, math.floor(ratio * total + 0.5)))


def select_positions(total: int, ratio: float, sampling: str, rng: np.random.Generator) -> list[int]:
    """Positions (0-based, sorted) of the frames to keep among ``total`` (see the module docstring)."""
    n = subset_size(total, ratio)
    if sampling == "contiguous":
        start = int(rng.integers(0, total - n + 1))
        return list(range(start, start + n))
    if sampling == "uniform":
        return sorted(int(i) for i in rng.choice(total, size=n, replace=False))
    raise UserError(f"unknown sampling {sampling!r}: use contiguous or uniform")


def _clip_frames(clip_dir: Path, source: str) -> dict[str, list[Path]]:
    """The frame files of each source layer of one clip; all layers must hold the same frame names."""
    files: dict[str, list[Path]] = {}
    for src_layer in SOURCE_LAYERS[source].values():
        if src_layer is None:  # the composed image is made from pha, fgr, bgr
            continue
        folder = clip_dir / src_layer
        if not folder.is_dir():
            raise UserError(f"clip {clip_dir} has no {src_layer}/ folder")
        files[src_layer] = list_images(folder)
        if not files[src_layer]:
            raise UserError(f"no frames in {folder}")
    reference_layer = next(iter(files))
    reference = [p.name for p in files[reference_layer]]
    for layer, paths in files.items():
        if [p.name for p in paths] != reference:
            raise UserError(f"clip {clip_dir}: {layer}/ and {reference_layer}/ hold different frame files")
    try:
        [frame_index(p) for p in files[reference_layer]]
    except ValueError:
        raise UserError(f"clip {clip_dir}: frame files must be named by index (0000.png ...)") from None
    return files


def _clip_fps(clip_dir: Path, default: float = 25.0) -> float:
    meta = clip_dir / "meta.json"
    if meta.is_file():
        try:
            return float(json.loads(meta.read_text()).get("fps", default))
        except (ValueError, TypeError, AttributeError):
            raise UserError(f"unreadable meta.json: {meta}") from None
    return default


def _layer_frames(layer: str, source: str, files: dict[str, list[Path]],
                  positions: list[int]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(file name, float frame)`` of one output layer at the kept positions."""
    src = SOURCE_LAYERS[source][layer]
    for pos in positions:
        if src is not None:
            path = files[src][pos]
            frame = read_image(path, gray=(layer == "alpha"))
        else:  # recompose in float, quantised once when written
            alpha = read_image(files["pha"][pos], gray=True)[..., None]
            fgr = read_image(files["fgr"][pos], gray=False)
            bgr = read_image(files["bgr"][pos], gray=False)
            if not (alpha.shape[:2] == fgr.shape[:2] == bgr.shape[:2]):
                raise UserError(f"frame {files['pha'][pos].name}: pha, fgr, bgr differ in size")
            frame = alpha * fgr + (1.0 - alpha) * bgr
            path = files["pha"][pos]
        yield path.name, frame


def extract_clip(clip_dir: Path, layout: DataLayout, split: str, clip: str, source: str, positions: list[int],
                 fps: float, video: bool = True) -> list[str]:
    """Write every layer of one clip at ``positions``; all-or-nothing. Returns the written frame names."""
    tree = TREES[source]
    files = _clip_frames(clip_dir, source)
    names: list[str] = []
    shape = None
    with contextlib.ExitStack() as stack:
        for layer in FRAME_LAYERS:
            # the clip folder of this layer is built under a temporary name; all are renamed at the very end
            final = layout.frames(split, layer, clip, tree=tree).parent
            clean_stale_temps(final.parent, final.name)
            tmp = stack.enter_context(atomic_dir(final, overwrite=True))
            bits = 16 if layer == "alpha" else 8
            written: list[str] = []

            def frames() -> Iterator[np.ndarray]:
                nonlocal shape
                for name, frame in _layer_frames(layer, source, files, positions):
                    if shape is None:
                        shape = frame.shape[:2]
                    elif frame.shape[:2] != shape:
                        raise UserError(f"clip {clip_dir}: {layer} frame {name} is {frame.shape[:2]}, expected {shape}")
                    write_png(tmp / "frames" / name, frame, bits=bits)
                    written.append(name)
                    yield to_uint(frame, 8)

            (tmp / "frames").mkdir()
            if video:
                write_video(tmp / "video" / f"{clip}.mp4", frames(), fps=fps)
            else:
                for _ in frames():
                    pass
            names = written
    return names


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--source", default="blurred", choices=tuple(SOURCE_LAYERS),
                   help="blurred -> <root>/frames (default); composed -> <root>/frames_sharp (all-in-focus control)")
    p.add_argument("--ratio", type=finite_float(0.0, 1.0, low_open=True), default=1.0,
                   help="fraction of each clip's frames to keep, in (0, 1]")
    p.add_argument("--sampling", default="contiguous", choices=("contiguous", "uniform"),
                   help="one contiguous run (default) or frames drawn without replacement")
    p.add_argument("--no_video", action="store_true", help="skip the mp4 previews")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --ratio outside (0, 1] is a usage error here, before the root is read
    with open_stage(args.root, TREES[args.source], args.shard) as layout:  # the root checked, the tree's lock held
        return run(args, layout)


def run(args: argparse.Namespace, layout: DataLayout) -> int:
    """Extract this shard's source clips of ``args.split`` (the root open: :func:`utils.stage.open_stage`)."""
    tree = TREES[args.source]
    stage_dir = layout.blurred if args.source == "blurred" else layout.composed
    params = {"source": args.source, "ratio": args.ratio, "sampling": args.sampling, "seed": args.seed,
              "video": not args.no_video}
    runner = ClipRunner(log, args.shard, args.overwrite, fail_level=logging.ERROR, fail_format="%s/%s: %s")
    found_any = False
    for split in splits_of(args.split):
        src_split = stage_dir(split)
        clips = layout.clips(src_split)
        if not clips:
            log.info("no %s clips under %s", args.source, src_split)
            continue
        found_any = True
        manifest = Manifest(layout.manifest(tree, split))
        upstream = Manifest(layout.manifest(UPSTREAM[args.source], split))

        def is_done(clip: str) -> bool:  # same settings, made from the source clip as it is now, all layers there
            info, up = manifest.info(clip), upstream.fingerprint(clip)
            return bool(info and info.get("params") == params and up is not None and info.get("upstream") == up
                        and all(layout.frames(split, layer, clip, tree=tree).is_dir() for layer in FRAME_LAYERS))

        def extract_one(clip: str) -> None:
            clip_dir = src_split / clip
            up = upstream_fingerprint(upstream, clip, UPSTREAM_HINT[args.source])
            total = len(_clip_frames(clip_dir, args.source)[SOURCE_LAYERS[args.source]["alpha"]])
            rng = np.random.default_rng(unit_seed(args.seed, split, clip))
            positions = select_positions(total, args.ratio, args.sampling, rng)
            names = extract_clip(clip_dir, layout, split, clip, args.source, positions,
                                 fps=_clip_fps(clip_dir), video=not args.no_video)
            manifest.mark_done(clip, params=params, total_frames=total, frames=names, upstream=up)
            log.info("%s/%s: %d of %d frames -> %s", split, clip, len(names), total,
                     f"{layout.root / tree / split}/{{{','.join(FRAME_LAYERS)}}}/{clip}")

        runner.run(split, clips, manifest, extract_one, is_done, desc=f"{tree}/{split}", leave=False)
    if not found_any:
        raise UserError(f"no {args.source} clips under {layout.root / args.source} (run the "
                        f"{'blur' if args.source == 'blurred' else 'compose'} stage first)")
    log.info("%s: %d clip(s) written, %d already done (skipped)", tree, runner.done, runner.skipped)
    return runner.exit_code()


if __name__ == "__main__":
    run_main(main)
