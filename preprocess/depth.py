"""Stage 2a: disparity of each composed clip (subject and background separately), computed once and cached.

Writes ``<root>/depth/<split>/<clip>.npz`` with, per frame ``t``, ``fg_NNNN`` (subject disparity, HxW, defined
everywhere so a blur can be gathered at any pixel) and ``bg_NNNN`` (background plate disparity; a single ``bg``
when it does not change over the clip), plus ``backend``, ``frames``, ``subject_median`` and
``background_median`` (clip-wide medians, used for focus so it never flickers) and the backend's parameters.
Disparity is relative, larger = nearer, normalised ONCE per clip to about [0, 1] (robust percentiles over all
frames; never per frame, which would make focus and blur flicker).

Backends (``--depth_backend``):
* ``layered`` (default, offline): the background's true disparity map cropped by the compose stage
  (``bgr_disp.npy``) when present, else a ground plane with a seeded horizon and tilt; the subject sits at a
  seeded disparity with a gentle seeded gradient across it (head vs hands).
* ``video-depth-anything``: the real model from a local clone (``--vda_root`` or ``VDA_ROOT``) and checkpoint
  (``--depth_ckpt``). The whole clip goes through its ``infer_video_depth`` twice: the composite (for the
  subject) and the background plate alone (for the plate behind the subject); the plate run is aligned to the
  composite run by least squares on pixels where the background is visible, then both are normalised with the
  composite's clip-wide percentiles.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import contextlib
import json
import logging
import os
import sys
import types
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from utils.atomic import Manifest, atomic_path, clean_stale_temps, upstream_fingerprint
from utils.cli import ArgumentParser, UserError, add_common_args, int_at_least, run_main, splits_of, unit_seed
from utils.images import read_image
from utils.paths import DataLayout, frame_name
from utils.stage import ClipRunner, open_stage

log = logging.getLogger("depth")
STAGE = "depth"
BACKENDS = ("layered", "video-depth-anything")
VDA_URL = "https://github.com/DepthAnything/Video-Depth-Anything"
VDA_CONFIGS = {
    "vits": {"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"encoder": "vitb", "features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"encoder": "vitl", "features": 256, "out_channels": [256, 512, 1024, 1024]},
}
NORM_PERCENTILES = (2.0, 98.0)


def add_depth_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the depth stage (shared with dof_blur.py, which computes missing depth on demand)."""
    p.add_argument("--depth_backend", default="layered", choices=BACKENDS, help="default: %(default)s")
    p.add_argument("--vda_root", default=os.environ.get("VDA_ROOT"),
                   help="clone of Video-Depth-Anything (default: $VDA_ROOT)")
    p.add_argument("--depth_ckpt", default=os.environ.get("VDA_CKPT"),
                   help="its checkpoint, e.g. checkpoints/video_depth_anything_vits.pth (default: $VDA_CKPT)")
    p.add_argument("--vda_encoder", default=None, choices=tuple(VDA_CONFIGS),
                   help="encoder of the checkpoint (default: from its file name, else vits)")
    p.add_argument("--input_size", type=int_at_least(14), default=518,
                   help="VDA input size, at least 14 (its ViT patch; default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device for VDA / the blur")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    return add_depth_args(p)


# -------------------------------------------------------------------------------------------- composed clip
def read_composed(clip_dir: Path, layers: Sequence[str] = ("fgr", "pha", "bgr"),
                  frames: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Frames of a composed clip as float32 arrays ``{'fgr': TxHxWx3, 'pha': TxHxW, 'bgr': TxHxWx3}``."""
    meta = composed_meta(clip_dir)
    idx = range(meta["frames"]) if frames is None else frames
    out = {}
    for layer in layers:
        gray = layer == "pha"
        out[layer] = np.stack([read_image(clip_dir / layer / frame_name(t), gray=gray) for t in idx])
    return out


def composed_meta(clip_dir: Path) -> dict:
    path = clip_dir / "meta.json"
    if not path.is_file():
        raise UserError(f"not a composed clip (no meta.json): {clip_dir}")
    try:
        meta = json.loads(path.read_text())
        int(meta["frames"]), [int(v) for v in meta["size"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"malformed meta.json in {clip_dir} ({exc.__class__.__name__}: {exc}); "
                        "rerun the compose stage with --overwrite") from None
    return meta


# ----------------------------------------------------------------------------------------------- the cache
class ClipDepth:
    """Read access to a cached ``depth/<split>/<clip>.npz`` (frames load lazily, one at a time)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            self.frames = int(self._npz["frames"])
            self.backend = str(self._npz["backend"])
            self.subject_median = float(self._npz["subject_median"])
            self.background_median = float(self._npz["background_median"])
        except Exception as exc:  # noqa: BLE001  (a truncated/foreign zip: BadZipFile, KeyError, EOFError...)
            raise self._unreadable(exc) from None
        self._static_bg = "bg" in self._npz.files

    def _unreadable(self, exc: BaseException) -> UserError:
        return UserError(f"unreadable depth cache {self.path} ({exc.__class__.__name__}: {str(exc)[:80]}); "
                         "rerun with --overwrite to recompute it")

    def _array(self, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except Exception as exc:  # noqa: BLE001  (a member truncated or missing: zlib/zip/CRC errors)
            raise self._unreadable(exc) from None

    def fg(self, t: int) -> np.ndarray:
        return self._array(f"fg_{t:04d}")

    def bg(self, t: int) -> np.ndarray:
        return self._array("bg") if self._static_bg else self._array(f"bg_{t:04d}")

    def params(self) -> dict:
        return json.loads(str(self._npz["params"]))


def save_depth(path: Path, fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray, backend: str, params: dict) -> None:
    """Write the cache atomically. ``fg`` TxHxW; ``bg`` TxHxW or HxW (static); ``alpha`` TxHxW for the medians."""
    core = alpha[:, ::2, ::2] > 0.5
    fg_sub = fg[:, ::2, ::2][core]
    subject_median = float(np.median(fg_sub)) if fg_sub.size else float(np.median(fg))
    bg_all = bg if bg.ndim == 3 else bg[None]
    arrays: dict[str, np.ndarray] = {f"fg_{t:04d}": fg[t].astype(np.float32) for t in range(len(fg))}
    if bg.ndim == 2:
        arrays["bg"] = bg.astype(np.float32)
    else:
        arrays.update({f"bg_{t:04d}": bg[t].astype(np.float32) for t in range(len(bg))})
    arrays.update(frames=np.array(len(fg)), backend=np.array(backend), subject_median=np.array(subject_median),
                  background_median=np.array(float(np.median(bg_all[:, ::2, ::2]))),
                  params=np.array(json.dumps(params, sort_keys=True)))
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


# -------------------------------------------------------------------------------------------------- layered
def robust_normalise(values: np.ndarray, sample: np.ndarray | None = None,
                     percentiles: tuple[float, float] = NORM_PERCENTILES) -> tuple[np.ndarray, float, float]:
    """Map ``values`` so the clip-wide percentiles of ``sample`` (default: values) go to 0 and 1 (clipped)."""
    ref = values if sample is None else sample
    lo, hi = (float(v) for v in np.percentile(ref, percentiles))
    scale = 1.0 / (hi - lo) if hi - lo > 1e-8 else 0.0
    out = np.clip((values - lo) * scale, 0.0, 1.0) if scale else np.full_like(values, 0.5)
    return out.astype(np.float32), lo, hi


def ground_plane(h: int, w: int, horizon: float, tilt_deg: float, far: float) -> np.ndarray:
    """Disparity of a flat ground seen by a level camera: 0 at the (tilted) horizon line, 1 at the bottom row.

    On a ground plane disparity is proportional to the image distance below the horizon; above it (walls,
    sky) it is the constant ``far``.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y_h = horizon * h + np.tan(np.deg2rad(tilt_deg)) * (xx - w / 2)
    v = (yy - y_h) / max(h - horizon * h, 1.0)
    return np.maximum(v, far).astype(np.float32)


def subject_plane(alpha: np.ndarray, base: float, slope: float, angle: float) -> np.ndarray:
    """Subject disparity for one frame: ``base`` at its alpha centroid, rising by ``slope`` per frame size
    along direction ``angle`` (a gentle tilt: hands or head slightly nearer). Defined at every pixel."""
    h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    total = float(alpha.sum())
    cy, cx = ((float((alpha * yy).sum()) / total, float((alpha * xx).sum()) / total) if total > 0
              else (h / 2, w / 2))
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / max(h, w)
    return (base + slope * u).astype(np.float32)


def layered_depth(clip_dir: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(fg TxHxW, bg TxHxW or HxW, alpha TxHxW, params)`` from the compose stage's outputs, offline."""
    rng = np.random.default_rng(seed)
    meta = composed_meta(clip_dir)
    alpha = read_composed(clip_dir, layers=("pha",))["pha"]
    t, h, w = alpha.shape
    params: dict = {"backend": "layered", "seed": seed}
    disp_file = clip_dir / "bgr_disp.npy"
    if meta.get("bgr_disp") and disp_file.is_file():
        raw = np.load(disp_file, allow_pickle=False).astype(np.float32)
        if raw.shape[-2:] != (h, w):
            raise UserError(f"{disp_file} has shape {raw.shape}, frames are {h}x{w}")
        bg, lo, hi = robust_normalise(raw)  # percentiles over all frames at once: one mapping per clip
        params.update(background="true disparity (bgr_disp.npy)", norm_lo=lo, norm_hi=hi)
    else:
        horizon, tilt, far = float(rng.uniform(0.3, 0.55)), float(rng.uniform(-4, 4)), float(rng.uniform(0, 0.1))
        bg = ground_plane(h, w, horizon, tilt, far)
        params.update(background="ground plane", horizon=horizon, tilt_deg=tilt, far=far)
    base, slope, angle = float(rng.uniform(0.55, 0.95)), float(rng.uniform(0.02, 0.08)), float(rng.uniform(0, 2 * np.pi))
    fg = np.stack([subject_plane(alpha[i], base, slope, angle) for i in range(t)])
    params.update(subject_disparity=base, subject_slope=slope, subject_angle=angle)
    return fg, bg, alpha, params


# ------------------------------------------------------------------------------------- Video-Depth-Anything
@contextlib.contextmanager
def vda_imports(vda_root: Path) -> Iterator[None]:
    """Import from the clone with its own top-level ``utils`` package, without clobbering ours.

    The clone's modules do ``from utils.util import ...`` at import time. Ours are taken out of
    ``sys.modules`` for the duration, the clone's are dropped afterwards and ours put back, so both work
    afterwards (the clone's functions keep references to what they imported).
    """
    def ours() -> dict:
        return {k: m for k, m in sys.modules.items() if k == "utils" or k.startswith("utils.")}

    saved = ours()
    for k in saved:
        del sys.modules[k]
    # the clone's utils/ has no __init__.py, so a regular package named utils anywhere on sys.path (ours)
    # would win over it: register it explicitly as the package whose sub-modules live in the clone
    theirs = types.ModuleType("utils")
    theirs.__path__ = [str(vda_root / "utils")]
    sys.modules["utils"] = theirs
    sys.path.insert(0, str(vda_root))
    try:
        yield
    finally:
        sys.path.remove(str(vda_root))
        for k in ours():
            del sys.modules[k]
        sys.modules.update(saved)


def load_vda(vda_root: str | None, ckpt: str | None, encoder: str | None = None, device: str = "cpu"):
    """Build Video-Depth-Anything from a local clone and load its checkpoint (weights_only). One-line errors."""
    if not vda_root or not (Path(vda_root) / "video_depth_anything" / "video_depth.py").is_file():
        raise UserError(f"Video-Depth-Anything clone not found at {vda_root!r}: git clone {VDA_URL} and pass "
                        "--vda_root <clone> (or set VDA_ROOT)")
    if not ckpt or not Path(ckpt).is_file():
        raise UserError(f"Video-Depth-Anything checkpoint not found at {ckpt!r}: download "
                        "video_depth_anything_vits.pth (see the clone's get_weights.sh) and pass --depth_ckpt <file>")
    import torch

    if encoder is None:
        encoder = next((e for e in VDA_CONFIGS if e in Path(ckpt).name), "vits")
    with vda_imports(Path(vda_root).resolve()):
        from video_depth_anything.video_depth import VideoDepthAnything
    model = VideoDepthAnything(**VDA_CONFIGS[encoder])
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001  (untrusted file: a refused pickle, a truncated zip, wrong keys...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"cannot load Video-Depth-Anything checkpoint {ckpt} as '{encoder}': {first}") from None
    return model.to(device).eval(), encoder


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def fill_from_core(disp: np.ndarray, core: np.ndarray, default: float) -> np.ndarray:
    """Keep ``disp`` on ``core`` pixels and give every other pixel the value of its nearest core pixel."""
    from scipy import ndimage

    if not core.any():
        return np.full_like(disp, default)
    _, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
    return disp[iy, ix]


def vda_depth(model, clip_dir: Path, fps: float, input_size: int, device: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(fg, bg, alpha, params)`` from two whole-clip passes of VDA (composite, then the plate alone)."""
    layers = read_composed(clip_dir)
    alpha = layers["pha"]
    comp = alpha[..., None] * layers["fgr"] + (1 - alpha[..., None]) * layers["bgr"]
    fp32 = device == "cpu"
    d_comp, _ = model.infer_video_depth(_to_uint8(comp), fps, input_size=input_size, device=device, fp32=fp32)
    d_plate, _ = model.infer_video_depth(_to_uint8(layers["bgr"]), fps, input_size=input_size, device=device,
                                         fp32=fp32)
    d_comp, d_plate = d_comp.astype(np.float32), d_plate.astype(np.float32)
    # the two runs have their own scale and shift (relative disparity): fit the plate run to the composite
    # run where the background is visible, by least squares over the whole clip
    visible = alpha < 0.01
    if visible.sum() >= 16:
        a = np.stack([d_plate[visible], np.ones(int(visible.sum()), np.float32)], 1)
        (scale, shift), *_ = np.linalg.lstsq(a.astype(np.float64), d_comp[visible].astype(np.float64), rcond=None)
    else:
        scale, shift = 1.0, 0.0
    d_plate = d_plate * np.float32(scale) + np.float32(shift)
    # ONE normalisation per clip, from the composite run's percentiles over every frame
    sample = d_comp[:, ::4, ::4].ravel()
    comp_n, lo, hi = robust_normalise(d_comp, sample)
    bg, _, _ = robust_normalise(d_plate, sample)
    core = alpha > 0.5
    default = float(np.median(comp_n[core])) if core.any() else 0.5
    fg = np.stack([fill_from_core(comp_n[i], core[i], default) for i in range(len(alpha))])
    params = {"backend": "video-depth-anything", "norm_lo": lo, "norm_hi": hi, "percentiles": NORM_PERCENTILES,
              "plate_scale": float(scale), "plate_shift": float(shift), "input_size": input_size}
    return fg, bg, alpha, params


# -------------------------------------------------------------------------------------------------- driver
def ensure_clip_depth(layout: DataLayout, split: str, clip: str, args: argparse.Namespace,
                      model_cache: dict | None = None) -> ClipDepth:
    """The clip's cached depth, computing it first if missing (or if ``args.overwrite``)."""
    path = layout.depth(split, clip)
    manifest = Manifest(layout.manifest(STAGE, split))
    up = compose_fingerprint(layout, split, clip)
    if is_cached(layout, split, clip, up) and not getattr(args, "overwrite", False):
        cached = ClipDepth(path)
        if cached.backend == args.depth_backend:
            return cached
        log.info("depth %s/%s cached with backend %s; recomputing with %s", split, clip, cached.backend,
                 args.depth_backend)
    clean_stale_temps(path.parent, name=clip)  # what a killed run of this clip left (never another shard's)
    clip_dir = layout.composed(split, clip)
    seed = unit_seed(args.seed, STAGE, split, clip)
    if args.depth_backend == "layered":
        fg, bg, alpha, params = layered_depth(clip_dir, seed)
    else:
        cache = model_cache if model_cache is not None else {}
        if "vda" not in cache:
            cache["vda"] = load_vda(args.vda_root, args.depth_ckpt, args.vda_encoder, args.device)
        model, encoder = cache["vda"]
        fg, bg, alpha, params = vda_depth(model, clip_dir, float(composed_meta(clip_dir).get("fps", 25.0)),
                                          args.input_size, args.device)
        params.update(encoder=encoder, checkpoint=str(args.depth_ckpt))
    save_depth(path, fg, bg, alpha, args.depth_backend, params)
    manifest.mark_done(clip, backend=args.depth_backend, upstream=up)
    log.info("depth %s/%s (%s) -> %s", split, clip, args.depth_backend, path)
    return ClipDepth(path)


def compose_fingerprint(layout: DataLayout, split: str, clip: str) -> str:
    """The composed clip's fingerprint (``UserError`` if compositing did not finish it: it is never taken)."""
    return upstream_fingerprint(Manifest(layout.manifest("compose", split)), clip,
                                "rerun preprocess/compose_video_bg.py")


def is_cached(layout: DataLayout, split: str, clip: str, up: str | None = None) -> bool:
    """Whether the clip's depth is cached and was computed from the composed clip as it is now."""
    info = Manifest(layout.manifest(STAGE, split)).info(clip)
    if up is None:
        up = Manifest(layout.manifest("compose", split)).fingerprint(clip)
    # a record without "upstream" predates fingerprints: it was complete, and is taken as current
    return (bool(info) and up is not None and info.get("upstream", up) == up
            and layout.depth(split, clip).is_file())


def composed_clips(layout: DataLayout, split: str) -> list[str]:
    folder = layout.composed(split)
    if not folder.is_dir():
        raise UserError(f"no composed clips: {folder} not found (run preprocess/compose_video_bg.py first)")
    clips = layout.clips(folder)
    if not clips:
        raise UserError(f"no composed clips in {folder} (run preprocess/compose_video_bg.py first)")
    return clips


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with open_stage(args.root, STAGE, args.shard) as layout:  # the root checked, this stage's lock held
        return run(args, layout)


def run(args: argparse.Namespace, layout: DataLayout) -> int:
    """Depth of this shard's composed clips of ``args.split`` (the root open: :func:`utils.stage.open_stage`)."""
    if args.depth_backend == "video-depth-anything":
        model_cache = {"vda": load_vda(args.vda_root, args.depth_ckpt, args.vda_encoder, args.device)}
    else:
        model_cache = {}
    runner = ClipRunner(log, args.shard, args.overwrite, fail_format="depth %s/%s failed: %s",
                        skip_format="depth %s: %d clip(s) already cached, skipped (use --overwrite to redo)")
    for split in splits_of(args.split):
        runner.run(split, composed_clips(layout, split), Manifest(layout.manifest(STAGE, split)),
                   lambda clip: ensure_clip_depth(layout, split, clip, args, model_cache),
                   lambda clip: (is_cached(layout, split, clip)
                                 and ClipDepth(layout.depth(split, clip)).backend == args.depth_backend),
                   desc=f"depth {split}")
    return runner.exit_code()


if __name__ == "__main__":
    run_main(main)
