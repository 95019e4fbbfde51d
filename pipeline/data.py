"""Training data: the per-frame layout, a clip-level train/validation split, seeded augmentation, guides.

Reads ``<root>/<tree>/<split>/{image,alpha,fgr,bgr,mask}/<clip>/frames/NNNN.png`` (``tree`` is ``frames``, or
``frames_sharp`` for the all-in-focus control). Validation clips are held out whole: no frame of a validation
clip is ever a training frame (a per-frame split leaks clips).

Determinism: a training item is the key ``(frame_index, aug_seed)``; ``StepBatchSampler`` derives the keys of
step ``s`` from ``(seed, s)`` alone, so data order and augmentation do not depend on iterator state, worker
count or restarts, and a resumed run sees exactly the batches an uninterrupted one would have.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.degrade import degrade
from preprocess.perturb import accurate_guide, perturb_guide
from utils.cli import UserError, unit_seed
from utils.images import read_image_native, resize, to_float
from utils.paths import DataLayout

log = logging.getLogger(__name__)
GUIDES = ("perturb", "files", "mixed", "accurate")


@dataclass(frozen=True)
class Frame:
    """One frame of one clip; ``name`` is the file name (original frame index)."""

    split: str
    clip: str
    name: str


def list_clips(root: str | Path, split: str, tree: str = "frames") -> list[str]:
    """Clips of a split (folders under ``image/``), sorted."""
    layout = DataLayout(root)
    return layout.clips(layout.frames(split, "image", tree=tree))


def list_frames(root: str | Path, split: str, clips: list[str], tree: str = "frames",
                need: tuple[str, ...] = ("alpha",)) -> list[Frame]:
    """Every frame of ``clips``; a frame whose ``need`` layers are missing is a ``UserError`` naming the file."""
    layout = DataLayout(root)
    frames = []
    for clip in clips:
        folder = layout.frames(split, "image", clip, tree=tree)
        names = sorted(p.name for p in folder.glob("*.png") if not p.name.startswith(".")) if folder.is_dir() else []
        for name in names:
            for layer in need:
                path = layout.frames(split, layer, clip, tree=tree) / name
                if not path.is_file():
                    raise UserError(f"frame {split}/{clip}/{name} has no {layer}: {path} is missing")
            frames.append(Frame(split, clip, name))
    return frames


def split_clips(clips: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out ``ceil(val_fraction * n)`` whole clips (at least one) for validation, chosen by a seeded hash of
    the clip names; returns (train_clips, val_clips), both sorted and disjoint."""
    if val_fraction <= 0:
        return sorted(clips), []
    if len(clips) < 2:
        raise UserError(f"need at least 2 clips to hold out validation clips, found {len(clips)}: "
                        "add clips or set --val_source test")
    n_val = min(len(clips) - 1, max(1, math.ceil(val_fraction * len(clips))))
    ranked = sorted(clips, key=lambda c: unit_seed(seed, "val", c))
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


def _colour_jitter(layers: list[np.ndarray], rng: np.random.Generator, strength: float) -> list[np.ndarray]:
    """One random per-pixel linear colour transform (brightness, contrast about 0.5, saturation) applied to
    image, fgr and bgr alike, so image = alpha*fgr + (1-alpha)*bgr still holds (up to clipping)."""
    if strength <= 0:
        return layers
    b = 1.0 + rng.uniform(-strength, strength)
    c = 1.0 + rng.uniform(-strength, strength)
    s = 1.0 + rng.uniform(-strength, strength)
    out = []
    for x in layers:
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = gray[..., None] + s * (x - gray[..., None])
        x = (x * b - 0.5) * c + 0.5
        out.append(np.clip(x, 0.0, 1.0).astype(np.float32))
    return out


class MattingFrames(torch.utils.data.Dataset):
    """Frames of the per-frame layout as tensors: image (3,H,W), alpha (1,H,W), guide (1,H,W), and fgr/bgr
    (3,H,W) when ``with_fb``, and guide_accurate (a 0-dim 0/1: whether the guide is an accurate one, the target of
    the refiner's guide trust head). An item key is ``(frame_index, aug_seed)`` (training) or a frame index (eval).

    ``cache_mb`` > 0 keeps decoded frames in memory (in their stored integer types, read-only) until that many
    megabytes are held, filled as frames are drawn or at once by :meth:`fill_cache` (the solver calls it before
    its first step); frames past the budget are decoded when drawn.
    Measured: PNG decoding was most of the loader's time, and the loader about a third of a ``make train-cpu`` step.
    Loader worker processes share the cache (forked, copy-on-write). The arrays are the decoded files' exactly,
    so cached or not, every item is the same.

    ``crop`` > 0 turns on training augmentation: scale in ``scale_range``, a ``crop``-sized window centred on an
    unknown-region pixel with probability ``unknown_crop_prob``, horizontal flip, colour jitter, and with
    probability ``degrade_prob`` a real camera's flaws (``pipeline.degrade``: lens blur, fringes, noise, gamma, JPEG).

    Guides: ``perturb`` (ground truth degraded as in ``preprocess.perturb.perturb_guide``), ``files`` (the mask
    layer), ``mixed`` (each item one of the two, 50/50), ``accurate`` (the ground truth binarised at 0.5). In
    training, ``accurate_prob`` of the items instead get an accurate guide with small boundary noise
    (``accurate_guide`` with a generator): a refiner that only ever sees degraded guides learns to distrust
    every guide, accurate ones included.
    """

    def __init__(self, root: str | Path, frames: list[Frame], tree: str = "frames", guide: str = "perturb",
                 crop: int = 0, scale_range: tuple[float, float] = (0.75, 1.25), unknown_crop_prob: float = 0.7,
                 jitter: float = 0.15, with_fb: bool = True, eval_long_side: int = 0, seed: int = 0,
                 accurate_prob: float = 0.0, cache_mb: float = 0.0, degrade_prob: float = 0.0):
        if guide not in GUIDES:
            raise UserError(f"unknown guide {guide!r}: use one of {', '.join(GUIDES)}")
        self.layout = DataLayout(root)
        self.frames, self.tree, self.guide = frames, tree, guide
        self.crop, self.scale_range, self.unknown_crop_prob = crop, tuple(scale_range), unknown_crop_prob
        self.jitter, self.with_fb, self.eval_long_side, self.seed = jitter, with_fb, eval_long_side, seed
        self.accurate_prob, self.degrade_prob = accurate_prob, degrade_prob
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.frames)

    def path(self, frame: Frame, layer: str) -> Path:
        return self.layout.frames(frame.split, layer, frame.clip, tree=self.tree) / frame.name

    def fill_cache(self) -> None:
        """Decode frames in order into the cache until the budget is full (the first frame that does not fit
        whole stops it); logs what it holds. Without it the cache fills as frames are drawn."""
        if not self.cache_bytes:
            return
        t0 = time.time()
        for index in range(len(self.frames)):
            self.load(index)
            if any((index, layer) not in self._cache for layer in self._layers(index)):
                break
        frames = len({i for i, _ in self._cache})
        log.info("cached %d of %d frames (%.0f MB) in %.1f s", frames, len(self.frames), self._cached_bytes / 2 ** 20,
                 time.time() - t0)

    def _layers(self, index: int) -> list[str]:
        """The layer files frame ``index`` is read from (a missing fgr/bgr falls back to the image)."""
        fb = [k for k in ("fgr", "bgr") if self.with_fb and self.path(self.frames[index], k).is_file()]
        return ["image", "alpha", *fb] + (["mask"] if self.guide in ("files", "mixed") else [])

    def _read(self, index: int, layer: str, gray: bool = False) -> np.ndarray:
        """One layer of frame ``index`` in its stored type, from the cache when it holds it."""
        key = (index, layer)
        arr = self._cache.get(key)
        if arr is None:
            arr = read_image_native(self.path(self.frames[index], layer), gray=gray)
            if self._cached_bytes + arr.nbytes <= self.cache_bytes:
                arr.flags.writeable = False  # shared by every later item: nothing may change it in place
                self._cache[key] = arr
                self._cached_bytes += arr.nbytes
        return arr

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Frame ``index``'s layers in their stored integer types (converted to float after cropping)."""
        out = {k: self._read(index, k, gray=k in ("alpha", "mask")) for k in self._layers(index)}
        if self.with_fb:  # a frame without fgr/bgr files composites over itself
            out.setdefault("fgr", out["image"])
            out.setdefault("bgr", out["image"])
        return out

    def _augment(self, d: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        h, w = d["alpha"].shape
        alpha = to_float(d["alpha"][::4, ::4])
        s = max(rng.uniform(*self.scale_range), self.crop / min(h, w))  # never a window larger than the frame
        win = min(h, w, max(1, round(self.crop / s)))  # the crop's window at the original resolution
        # window centred on an unknown-region pixel (searched on a 4x subsampled grid: cheap at 1080p)
        unknown = np.argwhere((alpha > 0.01) & (alpha < 0.99)) * 4
        if len(unknown) and rng.random() < self.unknown_crop_prob:
            cy, cx = unknown[rng.integers(len(unknown))]
            y = int(np.clip(cy - win // 2, 0, h - win))
            x = int(np.clip(cx - win // 2, 0, w - win))
        else:
            y = int(rng.integers(0, h - win + 1))
            x = int(rng.integers(0, w - win + 1))
        # crop first, then scale only the window (the same result as scaling the frame, at a fraction of the cost)
        d = {k: resize(to_float(v[y:y + win, x:x + win]), (self.crop, self.crop), nearest=(k == "mask"))
             for k, v in d.items()}
        if rng.random() < 0.5:
            d = {k: v[:, ::-1] for k, v in d.items()}
        rgb = [k for k in ("image", "fgr", "bgr") if k in d]
        for k, v in zip(rgb, _colour_jitter([d[k] for k in rgb], rng, self.jitter)):
            d[k] = v
        if self.degrade_prob > 0 and rng.random() < self.degrade_prob:  # no draw at 0: older runs stay bit-exact
            d = degrade({k: np.ascontiguousarray(v) for k, v in d.items()}, rng)
        return d

    def _eval_resize(self, d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = d["alpha"].shape
        if self.eval_long_side and max(h, w) > self.eval_long_side:
            s = self.eval_long_side / max(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            d = {k: resize(v, size, nearest=(k == "mask")) for k, v in d.items()}
        return d

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, aug_seed = key if isinstance(key, tuple) else (int(key), None)
        frame = self.frames[index]
        d = self.load(index)
        if not (self.crop and aug_seed is not None):
            d = {k: to_float(v) for k, v in d.items()}
        # eval items use a fixed per-frame seed, so validation guides are the same at every evaluation
        seed = aug_seed if aug_seed is not None else unit_seed(self.seed, "eval", frame.split, frame.clip, frame.name)
        rng = np.random.default_rng(seed)
        d = self._augment(d, rng) if (self.crop and aug_seed is not None) else self._eval_resize(d)
        alpha = np.ascontiguousarray(d["alpha"])
        use_file = self.guide == "files" or (self.guide == "mixed" and rng.random() < 0.5)
        accurate = self.guide == "accurate" or (
            aug_seed is not None and self.accurate_prob > 0 and rng.random() < self.accurate_prob)
        if self.guide == "accurate":
            guide = accurate_guide(alpha)
        elif accurate:
            guide = accurate_guide(alpha, rng)
        elif use_file:
            guide = (d["mask"] > 0.5).astype(np.float32)
        else:
            guide = perturb_guide(alpha, rng)
        out = {"image": d["image"], "alpha": d["alpha"][..., None], "guide": guide[..., None]}
        if self.with_fb:
            out["fgr"], out["bgr"] = d["fgr"], d["bgr"]
        items = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32))
                 for k, v in out.items()}
        items["guide_accurate"] = torch.tensor(float(accurate))  # what the guide trust head learns to tell
        return items


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of keys for steps ``start_step .. total_steps-1``; step ``s`` draws ``batch_size * world`` frame
    indices from a generator seeded by ``(seed, s)`` and hands this rank its slice. Each key carries its own
    augmentation seed ``(seed, s, slot)``. A pure function of (seed, step): resuming at step k gives the same
    batches as never having stopped."""

    def __init__(self, n_items: int, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed = n_items, batch_size, seed
        self.start, self.total, self.rank, self.world = start_step, total_steps, rank, world

    def batch(self, step: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng(unit_seed(self.seed, "batch", step))
        idx = rng.integers(0, self.n, size=self.bs * self.world)
        slots = range(self.rank * self.bs, (self.rank + 1) * self.bs)
        return [(int(idx[j]), unit_seed(self.seed, "aug", step, j)) for j in slots]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)
