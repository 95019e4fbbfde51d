"""Sparse inference: the refiner at full resolution only where the matte can change.

The refiner's output equals its guide, bit for bit, everywhere except (a) the band around the guide's
boundary (the pixels a coarse guide may soften; only its 1-px ring for an accurate guide) and (b) where it
flips the guide (crosses its 0.5 level: a missing arm, a false blob). So a frame does not need a full-resolution
pass over every pixel:

1. coarse pass: the whole refiner on the frame downsampled to about ``COARSE_LONG_SIDE`` px on the long side
   (``downsample_ratio="auto"``, RobustVideoMatting's recommendation for its own coarse pass); it decides, per
   frame, which rule the guide gets (its trust head: accurate or coarse), and its guide gate is the error map:
   where the gate opens, the refiner wants to change the guide;
2. fine pass: full-resolution tiles (``tile`` px, each run with ``margin`` px of context on every side, so a
   crop is ``tile + 2 * margin`` px square, the size the refiner is trained on) where the coarse gate opened
   (grown by ``grow`` px) inside what the rule lets change at full resolution: (a), plus the coarse flips;
   each tile's centre is pasted into the guide.

Everything outside the tiles is the guide. The dense pass returns the guide there too, except where its
full-resolution gate opens although the coarse one did not: what the sparse path gives up is measured in
bench/RESULTS.md (bench_refiner, quality). BackgroundMattingV2 refines the patches its error map selects and
MaGGIe the uncertain region; here the error map is the refiner's own gate and the selection never leaves what
its do-no-harm rule allows. The wavelet path is untouched: each tile is the refiner's full DWT network.
"""
from __future__ import annotations

import argparse
import dataclasses
import math

import torch
import torch.nn.functional as F

from model.refiner import Refiner, boundary_band, boundary_ring

COARSE_LONG_SIDE = 512  # px on the long side of the coarse pass with downsample_ratio="auto"
TILE, MARGIN = 64, 32  # full-resolution tiles pasted back, and the context each one is run with (crop 128 px)
GROW = 8  # px (full resolution) the coarse gate's open region grows by: a coarse pixel is up to 1/ratio px wide
TILE_BATCH = 16  # tiles per forward pass (bounds memory on large frames)


@dataclasses.dataclass
class SparseOutput:
    """alpha (N,1,H,W); accurate (N,) the rule each frame got; coverage (N,) the fraction of pixels inside
    full-resolution tiles; tiles (N,) how many; ratio: the coarse pass's downsample ratio (1.0 = it was dense)."""

    alpha: torch.Tensor
    accurate: torch.Tensor
    coverage: torch.Tensor
    tiles: torch.Tensor
    ratio: float


def auto_ratio(h: int, w: int, long_side: int = COARSE_LONG_SIDE) -> float:
    """The coarse pass's downsample ratio: ``long_side / max(h, w)``, never above 1."""
    return min(1.0, long_side / max(h, w))


def parse_ratio(text: str | float) -> float | str:
    """``--downsample_ratio``'s value: "auto" or a number in (0, 1]; raises ValueError naming the value."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"downsample_ratio must be 'auto' or a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1 or not math.isfinite(value):
        raise ValueError(f"downsample_ratio must be 'auto' or a number in (0, 1], got {text!r}")
    return value


def ratio_arg(text: str) -> float | str:
    """:func:`parse_ratio` as an argparse ``type`` (its message becomes the CLI's one-line error)."""
    try:
        return parse_ratio(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def allowed(guide: torch.Tensor, accurate: bool, flips: torch.Tensor | None) -> torch.Tensor:
    """(1,1,H,W) bool: every pixel the refiner may change at full resolution under the given rule: the boundary
    ring (accurate) or band (coarse) of the guide, and the coarse pass's flips (coarse rule only)."""
    h, w = guide.shape[-2:]
    if accurate:
        return boundary_ring(guide) > 0
    band = boundary_band(F.pad(guide, (0, w % 2, 0, h % 2), mode="replicate"))[..., :h, :w] > 0
    return band | flips if flips is not None else band


@torch.no_grad()
def refine_sparse(model: Refiner, image: torch.Tensor, guide: torch.Tensor, downsample_ratio: float | str = "auto",
                  guide_accurate: bool | None = None, tile: int = TILE, margin: int = MARGIN,
                  grow: int = GROW) -> SparseOutput:
    """Alpha of ``image`` (N,3,H,W in [0,1]) given ``guide`` (N,1,H,W): a coarse pass at ``downsample_ratio``
    and full-resolution tiles where the refiner can change the guide (module docstring). A ratio of 1 (what
    "auto" gives for frames up to ``COARSE_LONG_SIDE`` px) is the dense pass itself. ``guide_accurate`` forces
    the rule (None: the trust head's call on the coarse pass)."""
    if tile < 8 or margin < 0 or grow < 0:
        raise ValueError(f"tile must be >= 8, margin and grow >= 0, got {tile}, {margin}, {grow}")
    n, _, h, w = image.shape
    ratio = auto_ratio(h, w) if downsample_ratio == "auto" else float(downsample_ratio)
    if ratio >= 1.0:
        out = model(image, guide, guide_accurate=guide_accurate)
        ones = torch.ones(n, device=image.device)
        return SparseOutput(out.alpha, out.accurate, ones, ones * 0, 1.0)
    alphas, rules, coverage, counts = [], [], [], []
    for i in range(n):
        a, accurate, cov, count = _refine_one(model, image[i:i + 1], guide[i:i + 1], ratio, guide_accurate, tile,
                                              margin, grow)
        alphas.append(a), rules.append(accurate), coverage.append(cov), counts.append(count)
    dev = image.device
    return SparseOutput(torch.cat(alphas), torch.tensor(rules, device=dev), torch.tensor(coverage, device=dev),
                        torch.tensor(counts, device=dev), ratio)


def _refine_one(model: Refiner, image: torch.Tensor, guide: torch.Tensor, ratio: float,
                guide_accurate: bool | None, tile: int, margin: int,
                grow: int) -> tuple[torch.Tensor, bool, float, int]:
    h, w = image.shape[-2:]
    size = (max(8, round(h * ratio)), max(8, round(w * ratio)))
    small_image = F.interpolate(image, size=size, mode="area")
    small_guide = (F.interpolate(guide, size=size, mode="area") >= 0.5).to(guide.dtype)  # guides are masks
    coarse = model(small_image, small_guide, guide_accurate=guide_accurate)
    accurate = bool(coarse.accurate[0])

    def grown(coarse_mask: torch.Tensor) -> torch.Tensor:  # a coarse-pass mask at full resolution, grown
        full = F.interpolate(coarse_mask.to(guide.dtype), size=(h, w), mode="nearest")
        return F.max_pool2d(full, 2 * grow + 1, stride=1, padding=grow) > 0

    flips = None
    if not accurate:  # where the coarse pass crosses the guide's 0.5 level
        flips = grown((coarse.alpha >= 0.5) != (small_guide >= 0.5))
    need = allowed(guide, accurate, flips) & grown(coarse.gate > 0)

    alpha, coverage, count = _tiles(model, image, guide, need, accurate, tile, margin)
    return alpha, accurate, coverage, count


def _tiles(model: Refiner, image: torch.Tensor, guide: torch.Tensor, need: torch.Tensor, accurate: bool, tile: int,
           margin: int) -> tuple[torch.Tensor, float, int]:
    """The guide with every ``tile``-px cell that holds a ``need`` pixel replaced by the refiner's output there,
    each cell run with ``margin`` px of context; returns (alpha, fraction of pixels in those cells, their number)."""
    h, w = image.shape[-2:]
    # tiles on a grid over the frame padded to whole tiles; each crop adds the margin on every side
    th, tw = -(-h // tile), -(-w // tile)
    pad_need = F.pad(need.to(guide.dtype), (0, tw * tile - w, 0, th * tile - h))
    chosen = F.max_pool2d(pad_need, tile)[0, 0].nonzero().tolist()
    alpha = guide.clone()
    if not chosen:
        return alpha, 0.0, 0
    pad = (margin, tw * tile - w + margin, margin, th * tile - h + margin)
    big_image, big_guide = F.pad(image, pad, mode="replicate"), F.pad(guide, pad, mode="replicate")
    crop = tile + 2 * margin
    for start in range(0, len(chosen), TILE_BATCH):
        cells = chosen[start:start + TILE_BATCH]
        imgs = torch.cat([big_image[..., r * tile: r * tile + crop, c * tile: c * tile + crop] for r, c in cells])
        gds = torch.cat([big_guide[..., r * tile: r * tile + crop, c * tile: c * tile + crop] for r, c in cells])
        out = model(imgs, gds, guide_accurate=accurate).alpha[..., margin: margin + tile, margin: margin + tile]
        for k, (r, c) in enumerate(cells):
            y, x = r * tile, c * tile
            hh, ww = min(tile, h - y), min(tile, w - x)
            alpha[..., y: y + hh, x: x + ww] = out[k: k + 1, :, :hh, :ww]
    covered = sum(min(tile, h - r * tile) * min(tile, w - c * tile) for r, c in chosen)
    return alpha, covered / (h * w), len(chosen)
