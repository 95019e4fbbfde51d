"""Sparse inference: a coarse pass, then full resolution only where the matte can change.

The refiner's output equals its guide, bit for bit, everywhere except (a) the band around the guide's
boundary (the pixels a coarse guide may soften; only its 1-px ring for an accurate guide) and (b) where it
flips the guide (crosses its 0.5 level: a missing arm, a false blob). So a frame does not need a full-resolution
pass over every pixel:

1. coarse pass: the whole refiner on the frame downsampled to about ``COARSE_LONG_SIDE`` px on the long side
   (``downsample_ratio="auto"``, RobustVideoMatting's recommendation for its own coarse pass; a 1080p person then
   has about the size the refiner is trained at); it decides, per frame, which rule the guide gets (its trust
   head: accurate or coarse), and its guide gate is the error map: where it opens, the refiner wants to change
   the guide;
2. fine pass: the fine stage (``model.fine``: three unpadded 3x3 convolutions on the Haar bands of the
   full-resolution image, guide and upsampled coarse alpha, fed the coarse hidden state) in ``tile``-px tiles
   where the coarse gate opened inside what the rule lets change at full resolution: (a), plus the coarse
   flips. Its alpha and gate go through the refiner's own output rule (``model.output_rule``); outside
   the tiles the gate is closed, so the output there is the guide.

A tile carries ``model.fine.RADIUS`` half-resolution pixels of context, the stage's whole receptive field, so the
tiles give exactly what the fine stage gives run over the whole frame (tested against that dense run; training
uses the same windows, :func:`refine_windows`). BackgroundMattingV2 refines the patches its error map selects with a small network on the coarse hidden
state, MaGGIe only the uncertain region; here the error map is the refiner's own gate, the selection never leaves
what its do-no-harm rule allows, and the full-resolution network works on wavelet bands. A checkpoint whose fine
stage was never trained (``fine_steps`` 0: trained by the solver only) gets the older fallback: the whole refiner
in 64-px tiles with 32 px of context (slow but as good as the dense pass there; a warning says so).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math

import torch
import torch.nn.functional as F

from model.evidence import colour_line_alpha, judge_ring, ring_colour_evidence, ring_proposal, ring_sampled_alpha
from model.fine import RADIUS, fine_output
from model.masks import boundary_band, boundary_ring, dilate, or_window
from model.output_rule import output_rule
from model.refiner import Refiner, RefinerOutput

log = logging.getLogger(__name__)

COARSE_LONG_SIDE = 512  # px on the long side of the coarse pass with downsample_ratio="auto"
# the coarse pass's input padding: the deepest stride only, not whole attention windows at stride 8 (a 1080p frame's
# 480x270 pass runs at 480x272, not 512x320; measured on 1080p test frames: the same quality, bench/RESULTS.md (d3))
COARSE_PAD_MULTIPLE = 16
FINE_TILE = 16  # full-resolution px of a fine-stage tile (8 half-resolution px of output, 14 with its context)
FINE_BATCH = 1024  # fine-stage tiles per call (bounds memory on large frames: ~6 MB of input each 1024)
BAND_REACH = 10  # px: no pixel of a guide's boundary band is farther than this from its ring (refiner.boundary_band)
# the fallback for checkpoints with an untrained fine stage: the whole refiner in tiles with context
TILE, MARGIN = 64, 32  # full-resolution tiles pasted back, and the context each one is run with (crop 128 px)
TILE_BATCH = 16  # tiles per forward pass (bounds memory on large frames)
GROW = 8  # px (full resolution) the fallback grows the coarse gate's open region by


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
    """The coarse pass's downsample ratio: 1/k for the integer k that brings the long side nearest to
    ``long_side`` (1 below 1.5 x ``long_side``). An integer factor makes the downsampling an exact box filter;
    with 512 px it is RobustVideoMatting's recommendation (0.25 at 1080p, 0.125 at 4K)."""
    return 1.0 / max(1, round(max(h, w) / long_side))


def coarse_ratio(h: int, w: int, downsample_ratio: float | str = "auto", dense: bool = False) -> float:
    """The one decision of how an HxW frame runs: 1.0 (the dense pass) when ``dense`` or when ``"auto"`` gives full
    size, else the coarse pass's ratio (``"auto"``: :func:`auto_ratio`)."""
    if dense:
        return 1.0
    return auto_ratio(h, w) if downsample_ratio == "auto" else float(downsample_ratio)


MIN_RATIO = 1 / 64  # a coarser pass is useless (60 px of a 4K frame) and its 1/ratio upsampling factor unbounded


def parse_ratio(text: str | float) -> float | str:
    """``--downsample_ratio``'s value: "auto" or a number in [1/64, 1]; raises ValueError naming the value."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"downsample_ratio must be 'auto' or a number in [1/64, 1], got {text!r}") from None
    if not MIN_RATIO <= value <= 1 or not math.isfinite(value):
        raise ValueError(f"downsample_ratio must be 'auto' or a number in [1/64, 1], got {text!r}")
    return value


RATIO_HELP = ("coarse pass of the sparse path: 'auto' (1/k bringing the long side nearest 512 px: 0.25 at 1080p; "
              "frames under 768 px on the long side run dense) or a number in [1/64, 1]")


def ratio_arg(text: str) -> float | str:
    """:func:`parse_ratio` as an argparse ``type`` (its message becomes the CLI's one-line error)."""
    try:
        return parse_ratio(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@functools.cache
def _warn_untrained_fine() -> None:
    log.warning("this checkpoint's fine stage is untrained (train it with pipeline/train_fine.py): the sparse path "
                "runs the whole refiner in tiles instead (as good, several times slower)")


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
                  guide_accurate: bool | None = None, tile: int = FINE_TILE, ring_evidence: bool = False,
                  line: tuple[torch.Tensor, torch.Tensor] | None = None, ring_samples: bool = True,
                  ring_gate: bool = True) -> SparseOutput:
    """Alpha of ``image`` (N,3,H,W in [0,1]) given ``guide`` (N,1,H,W): a coarse pass at ``downsample_ratio``
    and the fine stage in ``tile``-px tiles where the refiner can change the guide (module docstring). A ratio of
    1 (what "auto" gives below ``1.5 * COARSE_LONG_SIDE`` px on the long side) is the dense pass itself.
    ``guide_accurate`` forces the rule (None: the trust head's call on the coarse pass). ``ring_evidence``: with
    the accurate rule, the colour line judges the ring in every tile run (``model.evidence``; ring pixels in no
    tile keep the guide; ``line``: the frames' ``colour_line_alpha`` when the caller has it; ``ring_samples``,
    ``ring_gate``: as in ``model.evidence.ring_colour_evidence``, in the tiles run). The dense pass here is
    the model's alone: the caller judges it."""
    if tile < 4 or tile % 4:
        raise ValueError(f"tile must be a positive multiple of 4, got {tile}")
    n, _, h, w = image.shape
    ratio = coarse_ratio(h, w, downsample_ratio)
    if ratio >= 1.0:
        out = model(image, guide, guide_accurate=guide_accurate)
        ones = torch.ones(n, device=image.device)
        return SparseOutput(out.alpha, out.accurate, ones, ones * 0, 1.0)
    if not model.fine_trained:
        _warn_untrained_fine()
    alphas, rules, coverage, counts = [], [], [], []
    for i in range(n):
        a, accurate, cov, count = _refine_one(model, image[i:i + 1], guide[i:i + 1], ratio, guide_accurate, tile,
                                              ring_evidence, None if line is None else (line[0][i:i + 1],
                                                                                        line[1][i:i + 1]),
                                              ring_samples, ring_gate)
        alphas.append(a), rules.append(accurate), coverage.append(cov), counts.append(count)
    dev = image.device
    return SparseOutput(torch.cat(alphas), torch.tensor(rules, device=dev), torch.tensor(coverage, device=dev),
                        torch.tensor(counts, device=dev), ratio)


def _factor(ratio: float) -> int | None:
    """k when ``ratio`` is 1/k for an integer k (the coarse pass then box-filters k x k blocks), else None."""
    k = round(1.0 / ratio)
    return k if abs(k * ratio - 1.0) < 1e-6 else None


def box_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of each k x k block of ``x`` (N,C,H,W; H and W multiples of k): ``F.avg_pool2d(x, k)`` up to float
    rounding. A channels-last ``x`` (an HWC image permuted, what the CLI and the data loaders give) is summed in
    place: ``avg_pool2d`` would first copy it to NCHW (a 1080p frame: 22 ms instead of 5)."""
    n, c, h, w = x.shape
    if k == 1 or c == 1 or x.is_contiguous() or not x.permute(0, 2, 3, 1).is_contiguous():
        return F.avg_pool2d(x, k) if k > 1 else x
    blocks = x.permute(0, 2, 3, 1).reshape(n, h // k, k, w // k, k, c)
    rows = blocks[:, :, 0]
    for i in range(1, k):
        rows = rows + blocks[:, :, i]
    total = rows[:, :, :, 0]
    for j in range(1, k):
        total = total + rows[:, :, :, j]
    return (total / (k * k)).permute(0, 3, 1, 2).contiguous()


def coarse_pass(model: Refiner, image: torch.Tensor, guide: torch.Tensor, ratio: float,
                guide_accurate: bool | torch.Tensor | None = None) -> tuple[RefinerOutput, torch.Tensor, tuple]:
    """The refiner on the frame downsampled by ``ratio``, its guide binarised again after the resize (guides are
    masks). Returns (its output, that small guide, the full-resolution size its grid covers). A ratio of 1/k is
    an exact box filter over k x k blocks (the frame edge-padded to whole blocks), any other ratio area
    interpolation."""
    h, w = image.shape[-2:]
    k = _factor(ratio)
    if k is not None:
        hc, wc = -(-h // k), -(-w // k)
        pad = (0, wc * k - w, 0, hc * k - h)
        if any(pad):
            image, guide = F.pad(image, pad, mode="replicate"), F.pad(guide, pad, mode="replicate")
        small_image, small_guide = box_filter(image, k), F.avg_pool2d(guide, k)
        covers = (hc * k, wc * k)
    else:
        size = (max(8, round(h * ratio)), max(8, round(w * ratio)))
        small_image = F.interpolate(image, size=size, mode="area")
        small_guide = F.interpolate(guide, size=size, mode="area")
        covers = (h, w)
    small_guide = (small_guide >= 0.5).to(guide.dtype)
    out = model(small_image, small_guide, guide_accurate=guide_accurate, pad_multiple=COARSE_PAD_MULTIPLE)
    return out, small_guide, covers


@dataclasses.dataclass
class CoarseMaps:
    """What the fine stage reads of the coarse pass, upsampled (bilinear) to the frame: its refined alpha and
    gate logit at full resolution (N,1,H,W), its gate logit and hidden state at half resolution
    (N,1+C0,ceil(H/2),ceil(W/2))."""

    base: torch.Tensor
    gate: torch.Tensor
    half: torch.Tensor


def upsample_coarse(coarse: RefinerOutput, covers: tuple[int, int], size: tuple[int, int]) -> CoarseMaps:
    """The coarse pass's maps resized to ``covers`` (the full-resolution extent of its grid) and cropped to the
    frame's ``size``."""
    h, w = size
    half_cover = (-(-covers[0] // 2), -(-covers[1] // 2))

    def up(t: torch.Tensor, to: tuple[int, int], crop: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(t, size=to, mode="bilinear", align_corners=False)[..., :crop[0], :crop[1]]

    return CoarseMaps(up(coarse.refined, covers, size), up(coarse.gate_logit, covers, size),
                      up(torch.cat([coarse.gate_logit, coarse.hidden], 1), half_cover, (-(-h // 2), -(-w // 2))))


def _fine_windows(model: Refiner, image: torch.Tensor, guide: torch.Tensor, base: torch.Tensor, gate: torch.Tensor,
                  half: torch.Tensor, accurate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine stage on windows: ``image``, ``guide``, ``base`` (n,C,L+4R,L+4R) at full resolution with 2R px
    of context per side, ``half`` (n,1+C0,L/2+2R,...) with R, ``gate`` (n,1,L,L) the window's centre. Returns
    (refined alpha, gate logit) of the centre (n,1,L,L); the gate is corrected for coarse guides only."""
    m = 2 * RADIUS
    x = model.fine.inputs(image, guide, base, half[:, :1], half[:, 1:])
    return fine_output(base[..., m:-m, m:-m], gate, model.fine(x), correct_gate=not accurate)


def _gather(t: torch.Tensor, starts_y: torch.Tensor, starts_x: torch.Tensor, length: int) -> torch.Tensor:
    """Windows of ``t`` (1,C,H,W): (n,C,length,length) from the given top-left corners; rows and columns outside
    the frame repeat its edge (the same as edge padding). One ``index_select`` on the flattened frame: on a CPU
    several times faster than 2-D advanced indexing."""
    c, h, w = t.shape[1:]
    offsets = torch.arange(length, device=t.device)
    rows = (starts_y[:, None] + offsets).clamp(0, h - 1)
    cols = (starts_x[:, None] + offsets).clamp(0, w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(-1)
    n = len(starts_y)
    if c == 1:
        return t.reshape(h * w).index_select(0, flat).reshape(n, 1, length, length)
    if t.stride(1) == 1:  # channels last (an HWC image, permuted): gather whole pixels, no copy of the frame; the
        # windows come back NCHW (what the stage's Haar transform reads fastest)
        return t[0].permute(1, 2, 0).reshape(h * w, c).index_select(0, flat).reshape(n, length, length, c) \
            .permute(0, 3, 1, 2).contiguous()
    return t.reshape(c, h * w).index_select(1, flat).reshape(c, n, length, length).transpose(0, 1)


def _tile_grid(mask: torch.Tensor, tile: int, context: int) -> torch.Tensor:
    """(ceil(H/tile), ceil(W/tile)) bool: the tiles whose square, grown by ``context`` px, holds both a pixel of
    ``mask`` (1,1,H,W in [0,1]) at or above 0.5 and one below it (a tile then holds the 0.5 level's boundary
    ring when ``context`` is 1, or pixels within ``context - 1`` px of it). One byte per pixel, bit 1 for a pixel
    at or above 0.5 and bit 2 for one below, ORed over each square (rows, then columns): both bits set means
    both sides. The same answer as two float max-pools, at a fraction of the cost."""
    h, w = mask.shape[-2:]
    th, tw = -(-h // tile), -(-w // tile)
    k = tile + 2 * context
    sides = 2 - (mask >= 0.5).to(torch.uint8)  # 1: at or above 0.5; 2: below; 0: outside the frame (padding)
    sides = F.pad(sides, (context, tw * tile - w + context, context, th * tile - h + context))
    sides = or_window(or_window(sides, k, -2)[..., ::tile, :], k, -1)[..., ::tile]
    return (sides == 3)[0, 0]


def _coarse_grid(mask: torch.Tensor, covers: tuple[int, int], size: tuple[int, int], tile: int) -> torch.Tensor:
    """A coarse-pass mask (1,1,h,w, bool) grown by one coarse pixel, on the tile grid of the full-resolution frame."""
    grown = dilate(mask, 1).to(torch.float32)
    grid = (-(-size[0] // tile), -(-size[1] // tile))
    k = covers[0] // mask.shape[-2]
    if covers == (mask.shape[-2] * k, mask.shape[-1] * k) and tile % k == 0:  # a 1/k pass: a tile is whole cells
        return F.max_pool2d(grown, tile // k, ceil_mode=True)[0, 0, :grid[0], :grid[1]] > 0
    full = F.interpolate(grown, size=covers, mode="nearest")[..., :size[0], :size[1]]
    return F.max_pool2d(full, tile, tile, ceil_mode=True)[0, 0] > 0


@dataclasses.dataclass
class Windows:
    """The fine stage's windows (n,1,L,L): the ruled alpha, the refined alpha and gate logit before the rule, the
    guide, and the pixels the rule lets change (the guide's ring for an accurate guide, else its band)."""

    alpha: torch.Tensor
    refined: torch.Tensor
    gate: torch.Tensor
    guide: torch.Tensor
    region: torch.Tensor


def refine_windows(model: Refiner, image: torch.Tensor, guide: torch.Tensor, maps: CoarseMaps, ys: torch.Tensor,
                   xs: torch.Tensor, size: int, accurate: bool) -> Windows:
    """The fine stage and the output rule on the ``size``-px windows of a frame (image (1,3,H,W), guide
    (1,1,H,W), its coarse maps) whose top-left corners are (ys, xs), even: each window is gathered with its whole
    context (the fine stage's receptive field, the guide's ring or band), edges repeated outside the frame, so it
    gets exactly what a pass over the whole frame gives there. The tiles of :func:`refine_sparse`, and the
    training windows of ``pipeline/train_fine.py``."""
    m = 2 * RADIUS
    ctx = m if accurate else max(m, BAND_REACH + 2)  # the output rule's context: the ring (1 px) or band
    guide_w = _gather(guide, ys - ctx, xs - ctx, size + 2 * ctx)
    refined, gate = _fine_windows(model, _gather(image, ys - m, xs - m, size + 2 * m),
                                  guide_w[..., ctx - m: size + ctx + m, ctx - m: size + ctx + m],
                                  _gather(maps.base, ys - m, xs - m, size + 2 * m), _gather(maps.gate, ys, xs, size),
                                  _gather(maps.half, ys // 2 - RADIUS, xs // 2 - RADIUS, size // 2 + 2 * RADIUS),
                                  accurate)
    centre = (..., slice(ctx, ctx + size), slice(ctx, ctx + size))
    region = boundary_ring(guide_w)[centre] if accurate else boundary_band(guide_w)[centre]
    rule = torch.full((len(ys),), accurate, device=image.device)
    alpha, _ = output_rule(guide_w[centre], refined, gate, rule, model.config.gate_threshold,
                           model.config.flip_threshold, model.config.accurate_gate_threshold, ring=region if accurate else None,
                           band=None if accurate else region)
    return Windows(alpha, refined, gate, guide_w[centre], region)


def _refine_one(model: Refiner, image: torch.Tensor, guide: torch.Tensor, ratio: float,
                guide_accurate: bool | None, tile: int, ring_evidence: bool = False,
                line: tuple[torch.Tensor, torch.Tensor] | None = None,
                ring_samples: bool = True, ring_gate: bool = True) -> tuple[torch.Tensor, bool, float, int]:
    h, w = image.shape[-2:]
    coarse, small_guide, covers = coarse_pass(model, image, guide, ratio, guide_accurate)
    accurate = bool(coarse.accurate[0])
    if not model.fine_trained:
        flips = None if accurate else _grown_full((coarse.alpha >= 0.5) != (small_guide >= 0.5), covers, (h, w))
        need = allowed(guide, accurate, flips) & _grown_full(coarse.gate > 0, covers, (h, w))
        alpha, coverage, count = _tiles(model, image, guide, need, accurate, TILE, MARGIN, ring_evidence,
                                        ring_samples, ring_gate)
        return alpha, accurate, coverage, count

    # the tiles the rule lets change (the guide's ring, or its band plus the coarse flips) where the coarse gate
    # opened; a band pixel is at most BAND_REACH px from a ring pixel
    if accurate:
        grid = _tile_grid(guide, tile, 1)
    else:
        grid = _tile_grid(guide, tile, BAND_REACH + 1)
        grid |= _coarse_grid((coarse.alpha >= 0.5) != (small_guide >= 0.5), covers, (h, w), tile)
    grid &= _coarse_grid(coarse.gate > 0, covers, (h, w), tile)
    rows, cols = grid.nonzero(as_tuple=True)
    if not len(rows):
        return guide.clone(), accurate, 0.0, 0
    maps = upsample_coarse(coarse, covers, (h, w))
    th, tw = grid.shape
    canvas = F.pad(guide, (0, tw * tile - w, 0, th * tile - h))
    cells = canvas.unfold(2, tile, tile).unfold(3, tile, tile)  # (1,1,th,tw,tile,tile): a view, written in place
    judge = accurate and ring_evidence
    if judge and line is None:
        line = colour_line_alpha(image, guide)  # once for the frame
    sample = ring_sampled_alpha(image, guide) if judge and ring_samples else None  # once for the frame
    for start in range(0, len(rows), FINE_BATCH):
        r, c = rows[start:start + FINE_BATCH], cols[start:start + FINE_BATCH]
        win = refine_windows(model, image, guide, maps, r * tile, c * tile, tile, accurate)
        alpha = win.alpha
        if judge:
            cut = [_gather(t.to(image.dtype), r * tile, c * tile, tile) for t in (*line, *(sample or ()))]
            alpha = judge_ring(win.guide, win.refined, win.gate, alpha, cut[0], cut[1] > 0.5, win.region > 0,
                               ring_proposal(model), (cut[2], cut[3] > 0.5) if sample else None, ring_gate)
        cells[0, :, r, c] = alpha.permute(1, 0, 2, 3).to(canvas.dtype)
    heights = (h - rows * tile).clamp(max=tile)
    widths = (w - cols * tile).clamp(max=tile)
    return canvas[..., :h, :w], accurate, float((heights * widths).sum()) / (h * w), len(rows)


def _grown_full(coarse_mask: torch.Tensor, covers: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The fallback's selection: a coarse-pass mask (bool) at full resolution, grown by ``GROW`` px."""
    full = F.interpolate(coarse_mask.to(torch.float32), size=covers, mode="nearest")[..., :size[0], :size[1]]
    return dilate(full > 0, GROW) > 0


def _tiles(model: Refiner, image: torch.Tensor, guide: torch.Tensor, need: torch.Tensor, accurate: bool, tile: int,
           margin: int, ring_evidence: bool = False, ring_samples: bool = True,
           ring_gate: bool = True) -> tuple[torch.Tensor, float, int]:
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
        res = model(imgs, gds, guide_accurate=accurate)
        out = res.alpha
        if accurate and ring_evidence:  # the colour line's box (15 px each way) lies within the crop's margin
            out = ring_colour_evidence(imgs, gds, res.refined, res.gate_logit, out, res.accurate,
                                       ring_proposal(model), sampled=ring_samples, ring_gate=ring_gate)
        out = out[..., margin: margin + tile, margin: margin + tile]
        for k, (r, c) in enumerate(cells):
            y, x = r * tile, c * tile
            hh, ww = min(tile, h - y), min(tile, w - x)
            alpha[..., y: y + hh, x: x + ww] = out[k: k + 1, :, :hh, :ww]
    covered = sum(min(tile, h - r * tile) * min(tile, w - c * tile) for r, c in chosen)
    return alpha, covered / (h * w), len(chosen)
