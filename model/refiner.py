"""The DWT refiner: one architecture, parameterised by its wavelet op.

An image and a coarse guide mask go in, a high-fidelity alpha comes out. The idea: an in-focus subject keeps
its high-frequency energy while a defocused background loses it, so a wavelet transform separates what decides
*where* the person is (the low-frequency LL band: structure) from what decides *how* the edge looks (the
LH/HL/HH bands: hair, soft edges) and, via their local energy, *what is in focus*.

Data flow (strides relative to the input; widths C0..C4 = ``Refiner.widths``)::

    image (ImageNet-normalised) + guide --DWT--> LL ----> structure S1 (/2) --DWT--> LL --------> S2 (/4) --> S3 (/8)
                                         '-> highs --> detail    D1 (/2) -- highs(S1) + LL(D1) -> D2 (/4) --> D3 (/8)
    focus maps F2, F4, F8 (local energy of the image's own high bands) are concatenated into every level;
    at /4 and /8 cross-band windowed attention: S queries D and D queries S (plain, then shifted windows);
    context: LL of S3 (/16) -> ASPP.

    decoder: F8 = fuse(S3, D3, context)                                  -> alpha at stride 8
             IDWT(LL <- F8, highs <- D3) = /4, fused with S2, D2 -> F4  -> alpha at stride 4
             IDWT(LL <- F4, highs <- D2) = /2, fused with S1, D1 -> F2
             IDWT(LL <- F2, highs <- D1) = /1, + image and guide        -> alpha at stride 1 (C0 channels only)

    every head predicts a correction of the guide's logit (gain * (2 * guide - 1), the guide average-pooled to the
    head's stride); the heads start at zero, so an untrained refiner returns its guide.

    progressive refinement (MaGGIe / MGMatting): alpha = alpha/8, replaced by alpha/4 inside the uncertain band
    around its boundary, replaced by alpha/1 inside the uncertain band of that merge.

    do no harm (the guide gate): a head on the stride-4 decoder state, corrected at full resolution from the
    stride-1 features, predicts where the refinement beats the guide (like the error map of BackgroundMattingV2,
    supervised with |guide - gt| - |refined - gt| > ``GATE_MARGIN``); the output is
    ``guide + gate * (refined - guide)`` where ``gate`` is that probability cut to exactly 0 below
    ``gate_threshold`` (a straight-through cut: gradients pass as if uncut); a change that moves a pixel across
    the guide's 0.5 level (a structural fix: the guide is wrong there) needs the stricter ``flip_threshold``.
    Where the network does not believe the refinement beats the guide, the guide comes out unchanged, bit for
    bit; an untrained refiner (gate bias -1, probability 0.27) returns its guide exactly.

    two kinds of guide, two rules (guide trust): a head on the stride-8 decoder state, averaged over the guide's
    boundary, judges per image whether the guide is accurate (a segmenter's mask on a clean frame: wrong only in
    its soft pixels) or coarse (a propagated or perturbed mask: wrong by whole regions). A coarse guide gets the
    rule above (a band of ~7-10 px, flips where sure); an accurate one only its boundary ring, on its side of
    0.5, where the gate >= ``accurate_gate_threshold``, and never a flip. Trained with BCE against what the data
    loader knows; a caller who knows its guide can say so (``guide_accurate``).

In code: ``Refiner.encoder`` (:class:`Encoder`, the upper half of the diagram: its weights are the backbone),
``Refiner.decoder`` (:class:`Decoder`: heads, progressive refinement, gate and trust logits), and the output rule
(``Refiner._guide_gate``: what may change, given the gate and the trust head's call).

The input is edge-padded to a multiple of ``8 * window`` (stride-8 windows tile exactly; the sparse path's
coarse pass pads only to 16, the deepest stride, and the attention then pads its own features to whole windows)
and every output is cropped back, so any H, W works.

Variants (``build_refiner``): ``'light'`` the plain-torch Haar of ``model.wavelets``; ``'heavy_db1|2|4'``
pytorch_wavelets in periodization mode; ``'none'`` the ablation without a DWT: a learned strided depthwise
conv down (4 outputs per channel in place of the 4 bands) and bilinear up, with the same channel widths (its
focus maps are the energy of the learned "high" outputs).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.fine import FineStage
from model.wavelets import HaarDWT, HaarIDWT, WaveletDWT, WaveletIDWT
from utils.atomic import atomic_path
from utils.cli import UserError

log = logging.getLogger(__name__)

VARIANTS = ("light", "heavy_db1", "heavy_db2", "heavy_db4", "none")
CHECKPOINT_FORMAT = "defocused_segmentation/refiner"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GUIDE_LOGIT_GAIN = 6.0  # initial logit of a guide pixel: sigmoid(+-6) = 0.9975 / 0.0025
GATE_INIT_BIAS = -1.0  # sigmoid(-1) = 0.27: the gate starts closed (below the default threshold 0.5), yet near
# enough to it that Adam (steps of about lr per parameter) can open it within a CPU run (from -4 it took >1500 steps)
TRUST_THRESHOLD = 0.25  # a guide gets the coarse rule only if P(accurate) < 0.25: calling an accurate guide coarse
# does harm (the wide band and flips), calling a coarse one accurate only forgoes a gain; at 3:1 costs the Bayes
# threshold on P(accurate) is 1 / (1 + 3) = 0.25 (bench/RESULTS.md, "learning": what it changes, measured)
GATE_MARGIN = 0.02  # the gate's target: 1 where the refinement is closer to the truth than the guide by this much


@dataclasses.dataclass
class RefinerOutput:
    """Everything one forward pass gives; every map is cropped to the input's size unless said otherwise.

    alpha:        (N,1,H,W) final alpha in [0,1] (progressive refinement of the three strides).
    alpha_os:     {8, 4, 1: (N,1,H,W)} each stride's own prediction (sigmoid), upsampled to the input size.
    logits_os:    {8, 4, 1: (N,1,H,W)} the same before the sigmoid: use these with any ``*_with_logits`` loss.
    uncertain_os: {8, 4: (N,1,H,W) in {0,1}} where the stride-8 (resp. merged stride-4) alpha was replaced by
                  the finer prediction; MGMatting-style losses weight the finer strides by these.
    refined:      (N,1,H,W) the progressive refinement before the gate (what ``alpha`` would be without it).
    gate_logit:   (N,1,H,W) logit of "the refinement beats the guide here" (train it with a ``*_with_logits`` loss).
    gate:         (N,1,H,W) in {0} u [gate_threshold, 1], the gate applied to changes that keep a pixel on its
                  guide's side of 0.5; changes across it (flips) need the probability >= flip_threshold:
                  alpha = guide + gate * (on_side - guide) + flip * (refined - on_side).
    trust_logit:  (N,) logit of "this guide is accurate" (a segmenter's mask on a clean frame, not a coarse one).
    accurate:     (N,) bool, the rule each image's output was made with: True = the accurate-guide rule (only the
                  guide's boundary ring may change, on its side of 0.5, where the gate >= accurate_gate_threshold;
                  never a flip); the trust head decides unless the caller says (``guide_accurate``).
    focus_map:    (N,1,H,W) the defocus cue: local energy of the image's high-frequency subbands at stride 2,
                  log-scaled (0 = flat or blurred, larger = sharp texture), upsampled to the input size.
    focus_os:     {2, 4, 8: (N,1,ceil(H/s),ceil(W/s))} the focus maps at the strides the network sees them.
    hidden:       (N,C0,H,W) the decoder's stride-1 hidden state (what the fine stage of ``model.sparse`` reads).
    Wavelet-domain losses apply ``model.wavelets.HaarDWT`` to ``alpha`` and the ground truth (the same fixed
    transform for every variant, so the ablation compares like with like).
    """

    alpha: torch.Tensor
    alpha_os: dict[int, torch.Tensor]
    logits_os: dict[int, torch.Tensor]
    uncertain_os: dict[int, torch.Tensor]
    focus_map: torch.Tensor
    focus_os: dict[int, torch.Tensor]
    refined: torch.Tensor
    gate_logit: torch.Tensor
    gate: torch.Tensor
    trust_logit: torch.Tensor
    accurate: torch.Tensor
    hidden: torch.Tensor


# ------------------------------------------------------------------------------------------ down / up operators
class _Down(nn.Module):
    """(N,C,H,W) -> (ll (N,C,H/2,W/2), highs (N,C,3,H/2,W/2)): a fixed DWT, or a learned strided conv ('none')."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        if kind == "haar":
            self.op = HaarDWT()
        elif kind == "none":  # 2x2 stride-2 depthwise conv, 4 outputs per channel: the shape of a DWT, learned
            self.op = nn.Conv2d(channels, 4 * channels, 2, stride=2, groups=channels)
        else:
            self.op = WaveletDWT(kind, "periodization")

    def forward(self, x):
        if self.kind != "none":
            return self.op(x)
        y = self.op(x).unflatten(1, (-1, 4))
        return y[:, :, 0], y[:, :, 1:]


class _Up(nn.Module):
    """(ll, highs) -> (N,C,2h,2w): the inverse DWT, or ('none') bilinear upsampling of ll + a learned mix of highs."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        if kind == "haar":
            self.op = HaarIDWT()
        elif kind == "none":
            self.op = nn.Conv2d(3 * channels, channels, 1, groups=channels)
        else:
            self.op = WaveletIDWT(kind, "periodization")

    def forward(self, ll, highs):
        if self.kind != "none":
            return self.op(ll, highs)
        x = ll + self.op(highs.flatten(1, 2))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ building blocks
def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (groups of up to 8 channels), not BatchNorm: matting trains on small batches of crops around
    the subject's edge and infers on whole frames one at a time, where BatchNorm's running statistics do not
    hold (measured: far-field error nearly doubled in eval mode); GroupNorm behaves the same in both."""
    return nn.GroupNorm(max(1, channels // 8), channels)


class ConvNormReLU(nn.Sequential):
    """conv - GroupNorm - ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         norm(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """``k_in`` x ``k_in`` conv-norm-ReLU into ``cout`` channels, then ``extra`` residual 3x3 conv-norm-ReLU layers.

    After a DWT, ``k_in = 1`` already mixes a 2x2 neighbourhood (the four bands of a pixel are its 2x2 block),
    and for concatenations a 1x1 fuse is enough: both keep the deep, wide levels cheap.
    """

    def __init__(self, cin: int, cout: int, extra: int = 1, k_in: int = 3):
        super().__init__()
        self.inp = ConvNormReLU(cin, cout, k_in)
        self.res = nn.ModuleList(ConvNormReLU(cout, cout) for _ in range(extra))

    def forward(self, x):
        x = self.inp(x)
        for layer in self.res:
            x = x + layer(x)
        return x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (context at the deepest level): 1x1, three dilated 3x3, image pooling."""

    def __init__(self, channels: int, dilations=(2, 4, 6)):
        super().__init__()
        mid = channels // 4
        self.branches = nn.ModuleList([ConvNormReLU(channels, mid, 1)] +
                                      [ConvNormReLU(channels, mid, 3, d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True))
        self.project = ConvNormReLU(mid * (len(dilations) + 2), channels, 1)

    def forward(self, x):
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return x + self.project(torch.cat(feats, 1))


def _window_partition(x: torch.Tensor, win: int) -> torch.Tensor:
    """(N,H,W,C) -> (N, nW, win*win, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // win) * (w // win), win * win, c)


def _window_merge(x: torch.Tensor, win: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (N, nW, win*win, C) -> (N,H,W,C)."""
    n, _, _, c = x.shape
    x = x.view(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def shifted_window_mask(h: int, w: int, win: int, shift: int, device=None) -> torch.Tensor | None:
    """Boolean (nW, 1, T, T) mask, True where a query may attend a key, for windows shifted by ``shift``.

    After rolling the map by ``-shift``, the last row/column of windows holds pixels from opposite borders of
    the image; they must not attend each other (Swin Transformer's mask). ``None`` when ``shift == 0``.
    """
    if shift == 0:
        return None
    region = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws] = label
            label += 1
    ids = _window_partition(region, win)[0, :, :, 0]  # (nW, T)
    return (ids[:, :, None] == ids[:, None, :])[:, None]


class CrossBandAttention(nn.Module):
    """Each branch (structure S, detail D) queries the other inside local windows; one residual per branch.

    ``shift = win // 2`` gives shifted windows (with their mask), so alternating levels connect neighbouring
    windows. Features whose size is not a multiple of ``win`` are edge-padded to one for the windows and cropped
    back: the refiner pads its input to whole windows (what training sees) unless told to pad less (the sparse
    path's coarse pass pads to 16: whole windows at stride 8 cost a 1080p frame's 480x270 coarse pass 26% more
    pixels through every layer).
    """

    def __init__(self, dim: int, heads: int, win: int, shift: int = 0):
        super().__init__()
        self.heads, self.win, self.shift = heads, win, shift
        self.norm_s, self.norm_d = nn.LayerNorm(dim), nn.LayerNorm(dim)
        # keys without bias: a key bias adds the same q.b to every logit of a query, which the softmax cancels (its
        # true gradient is zero, so an optimiser would only drift it on rounding noise)
        self.q_s, self.k_d, self.v_d = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.q_d, self.k_s, self.v_s = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.out_s, self.out_d = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}

    def _mask(self, h, w, device):
        key = (h, w, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = shifted_window_mask(h, w, self.win, self.shift, device)
        return self._mask_cache[key]

    def _attend(self, q, k, v, mask):
        n, nw, t, c = q.shape
        # 4-D (batch*windows, heads, T, d): the layout the fused CUDA attention kernels take
        split = lambda z: z.reshape(n * nw, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        if mask is not None:
            mask = mask.expand(n, -1, -1, -1, -1).reshape(n * nw, 1, t, t)
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return o.transpose(1, 2).reshape(n, nw, t, c)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = s.shape[-2:]
        ph, pw = (-h) % self.win, (-w) % self.win
        if ph or pw:
            pad = (0, pw, 0, ph)
            s, d = self._windowed(F.pad(s, pad, mode="replicate"), F.pad(d, pad, mode="replicate"))
            return s[..., :h, :w], d[..., :h, :w]
        return self._windowed(s, d)

    def _windowed(self, s: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = s.shape
        ts, td = s.permute(0, 2, 3, 1), d.permute(0, 2, 3, 1)
        if self.shift:
            ts = torch.roll(ts, (-self.shift, -self.shift), dims=(1, 2))
            td = torch.roll(td, (-self.shift, -self.shift), dims=(1, 2))
        ts, td = _window_partition(ts, self.win), _window_partition(td, self.win)
        ns, nd = self.norm_s(ts), self.norm_d(td)
        mask = self._mask(h, w, s.device)
        upd_s = self.out_s(self._attend(self.q_s(ns), self.k_d(nd), self.v_d(nd), mask))  # structure asks detail
        upd_d = self.out_d(self._attend(self.q_d(nd), self.k_s(ns), self.v_s(ns), mask))  # detail asks structure
        upd = torch.cat([_window_merge(upd_s, self.win, h, w), _window_merge(upd_d, self.win, h, w)], dim=-1)
        if self.shift:
            upd = torch.roll(upd, (self.shift, self.shift), dims=(1, 2))
        upd = upd.permute(0, 3, 1, 2)
        return s + upd[:, :c], d + upd[:, c:]


def or_window(mask: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """OR over each run of ``k`` consecutive entries along ``dim`` (the result is ``k - 1`` shorter): windows of
    doubling length, then two overlapping ones cover ``k``: about log2(k) + 1 ORs instead of k - 1."""
    span = 1
    while span * 2 <= k:
        n = mask.shape[dim] - span
        mask = mask.narrow(dim, 0, n) | mask.narrow(dim, span, n)
        span *= 2
    if span < k:
        n = mask.shape[dim] - (k - span)
        mask = mask.narrow(dim, 0, n) | mask.narrow(dim, k - span, n)
    return mask


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(N,C,H,W) bool -> uint8 0/1: whether each pixel's (2 radius + 1)^2 square holds a True pixel (outside the
    frame holds none), i.e. ``max_pool2d(mask, 2 radius + 1, 1, radius)``. Separable ORs on bytes: on a CPU several
    times faster than a float max-pool, on whole frames and on batches of small tiles alike."""
    mask = mask.to(torch.uint8)
    if radius == 0:
        return mask
    k = 2 * radius + 1
    return or_window(or_window(F.pad(mask, (radius,) * 4), k, -1), k, -2)


def _ring(guide: torch.Tensor) -> torch.Tensor:
    inside = guide >= 0.5
    return dilate(inside, 1) & dilate(~inside, 1)  # a 3x3 neighbourhood holds both sides of the 0.5 level


def boundary_ring(guide: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) 0/1: the pixels on either side of the guide's 0.5 level (a 3x3 neighbourhood holds both sides)."""
    return _ring(guide).to(guide.dtype)


def boundary_band(guide: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) 0/1, H and W even: where a coarse guide may be softened. The boundary ring pooled into 2x2 cells
    and grown by 4 cells: every pixel within ~7 px of the boundary, none farther than 10 px (Chebyshev), so none
    16 px or more away. Elsewhere only a flip may change a pixel."""
    n, c, h, w = guide.shape
    ring = _ring(guide)
    cells = ring[..., 0::2, 0::2] | ring[..., 1::2, 0::2] | ring[..., 0::2, 1::2] | ring[..., 1::2, 1::2]
    band = dilate(cells, 4).to(guide.dtype)
    return band[:, :, :, None, :, None].expand(n, c, h // 2, 2, w // 2, 2).reshape(n, c, h, w)


def _uncertain(alpha: torch.Tensor, radius: int, eps: float = 1.0 / 255) -> torch.Tensor:
    """1 where ``alpha`` is neither ~0 nor ~1, dilated by ``radius`` pixels (a square max-pool); else 0."""
    return dilate((alpha > eps) & (alpha < 1 - eps), radius).to(alpha.dtype)


# ------------------------------------------------------------------------------------------------------- model
@dataclasses.dataclass
class EncoderFeatures:
    """The encoder's output: the network input ``x`` (normalised image + guide, stride 1), the structure (s) and
    detail (d) branches at strides 2, 4, 8, the context (stride 8, upsampled from 16) and the focus maps."""

    x: torch.Tensor
    s1: torch.Tensor
    d1: torch.Tensor
    s2: torch.Tensor
    d2: torch.Tensor
    s3: torch.Tensor
    d3: torch.Tensor
    context: torch.Tensor
    focus: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Encoder(nn.Module):
    """Image + guide -> the DWT's structure (LL) and detail (LH/HL/HH) branches, cross-band attention at strides 4
    and 8, ASPP context at stride 16, and the focus maps (module docstring, the upper half of the diagram)."""

    def __init__(self, kind: str, widths: tuple[int, ...], window: int, focus_tau: float):
        super().__init__()
        _, c1, c2, c3, c4 = widths
        self.focus_tau = focus_tau
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # focus maps: the variant's transform applied to the luminance, three levels
        self.focus_down = nn.ModuleList(_Down(kind, 1) for _ in range(3))
        self.down0 = _Down(kind, 4)
        self.s1, self.d1 = Block(4 + 1, c1, extra=0), Block(12 + 1, c1, extra=0)
        self.down_s1, self.down_d1 = _Down(kind, c1), _Down(kind, c1)
        self.s2, self.d2 = Block(c1 + 1, c2, k_in=1), Block(4 * c1 + 1, c2, k_in=1)
        self.attn2 = CrossBandAttention(c2, attention_heads(c2), window, shift=0)
        self.down_s2, self.down_d2 = _Down(kind, c2), _Down(kind, c2)
        self.s3, self.d3 = Block(c2 + 1, c3, k_in=1), Block(4 * c2 + 1, c3, k_in=1)
        self.attn3 = CrossBandAttention(c3, attention_heads(c3), window, shift=window // 2)
        # context: the LL band of the structure branch once more (stride 16), ASPP at this deepest level
        self.down_s3 = _Down(kind, c3)
        self.s4 = Block(c3, c4, k_in=1)
        self.aspp = ASPP(c4)

    def focus_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Focus maps at strides 2, 4, 8: log(1 + local mean of the squared high bands / tau^2)."""
        gray = (0.299 * image[:, :1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3])
        maps, ll = [], gray
        for down in self.focus_down:
            ll, highs = down(ll)
            energy = highs.pow(2).mean(dim=2)
            energy = F.avg_pool2d(energy, 3, stride=1, padding=1, count_include_pad=False)
            maps.append(torch.log1p(energy / self.focus_tau ** 2))
            ll = ll * 0.5  # orthonormal LL grows x2 per level: keep the next level's scale comparable
        return maps[0], maps[1], maps[2]

    def forward(self, image: torch.Tensor, guide: torch.Tensor) -> EncoderFeatures:
        f2, f4, f8 = self.focus_maps(image)
        x = torch.cat([(image - self.mean) / self.std, guide * 2 - 1], 1)
        ll, highs = self.down0(x)
        s1 = self.s1(torch.cat([ll, f2], 1))
        d1 = self.d1(torch.cat([highs.flatten(1, 2), f2], 1))
        ll_s, hi_s = self.down_s1(s1)
        ll_d, _ = self.down_d1(d1)
        s2 = self.s2(torch.cat([ll_s, f4], 1))
        d2 = self.d2(torch.cat([hi_s.flatten(1, 2), ll_d, f4], 1))
        s2, d2 = self.attn2(s2, d2)
        ll_s, hi_s = self.down_s2(s2)
        ll_d, _ = self.down_d2(d2)
        s3 = self.s3(torch.cat([ll_s, f8], 1))
        d3 = self.d3(torch.cat([hi_s.flatten(1, 2), ll_d, f8], 1))
        s3, d3 = self.attn3(s3, d3)
        context = self.aspp(self.s4(self.down_s3(s3)[0]))
        return EncoderFeatures(x, s1, d1, s2, d2, s3, d3, context, (f2, f4, f8))


@dataclasses.dataclass
class DecoderOutput:
    """The decoder's predictions at the padded size: each stride's logit (``logit8``, ``logit4`` at their own
    stride, ``logit1`` full), the progressive refinement and its bands, the gate's logit (full resolution) and
    the trust logit (N,)."""

    logit8: torch.Tensor
    logit4: torch.Tensor
    logit1: torch.Tensor
    u8: torch.Tensor
    u4: torch.Tensor
    refined: torch.Tensor
    gate_logit: torch.Tensor
    trust_logit: torch.Tensor
    hidden: torch.Tensor


class Decoder(nn.Module):
    """Encoder features + guide -> alpha at strides 8, 4, 1 (inverse DWT up: its LL from the decoder state, its
    high bands from the detail branch; every head a correction of the guide's logit), their progressive merge,
    the guide gate's logit and the guide trust logit (module docstring, the lower half)."""

    def __init__(self, kind: str, widths: tuple[int, ...]):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        self.ctx = nn.Conv2d(c4, c3, 1)
        self.f8 = Block(3 * c3, c3, k_in=1)
        self.head8 = nn.Conv2d(c3, 1, 1)
        self.ll4, self.hi4, self.up4 = nn.Conv2d(c3, c2, 1), nn.Conv2d(c3, 3 * c2, 3, padding=1), _Up(kind, c2)
        self.f4 = Block(3 * c2, c2, k_in=1)
        self.head4 = nn.Conv2d(c2, 1, 1)
        # the guide gate sees the stride-4 decoder state (structure, detail, context) and the guide itself
        self.head_gate = nn.Sequential(ConvNormReLU(c2 + 1, c2), nn.Conv2d(c2, 1, 1))
        # guide trust: per-pixel evidence at stride 4 (does the guide's edge sit where the network's own alpha
        # puts it?), averaged over the guide's boundary into one logit per image of "this guide is accurate"
        self.head_trust = nn.Sequential(ConvNormReLU(c2 + 2, c2), ConvNormReLU(c2, c2), nn.Conv2d(c2, 1, 1))
        self.ll2, self.hi2, self.up2 = nn.Conv2d(c2, c1, 1), nn.Conv2d(c2, 3 * c1, 3, padding=1), _Up(kind, c1)
        self.f2 = Block(3 * c1, c1, extra=0)
        self.ll1, self.hi1, self.up1 = nn.Conv2d(c1, c0, 1), nn.Conv2d(c1, 3 * c0, 3, padding=1), _Up(kind, c0)
        self.f1 = nn.Sequential(ConvNormReLU(c0 + 4, c0), nn.Conv2d(c0, 1, 1))
        # the gate's full-resolution correction: the stride-4 gate is blurry at pixel scale, and an accurate
        # guide's soft band is 1-2 px wide; opening the gate on the confident pixels beside it would only do harm
        # it also sees the refinement itself and how far it moves from the guide (detached: the gate's loss judges
        # the refinement, it does not train it)
        self.gate1 = nn.Sequential(ConvNormReLU(c0 + 7, 2 * c0), ConvNormReLU(2 * c0, c0),
                                   nn.Conv2d(c0, 1, 3, padding=1))
        # Residual on the guide: every head predicts a correction of the guide's logit, so an untrained refiner
        # returns about its guide (its random corrections are small next to the prior's +-4) and training only
        # has to learn where the guide is wrong.
        self.guide_gain = nn.Parameter(torch.tensor(GUIDE_LOGIT_GAIN))
        # The decoder's predicted high bands start at zero: the inverse DWT then begins as plain upsampling of
        # the LL band, and detail is added only where training finds it (random high bands would stamp a
        # checkerboard onto every level's output).
        for hi in (self.hi4, self.hi2, self.hi1):
            nn.init.zeros_(hi.weight)
            nn.init.zeros_(hi.bias)
        # The gate's last layers start small but not zero: with zero weights the layers before them get no
        # gradient, the mostly-negative targets drive the weights negative on every (non-negative, post-ReLU)
        # feature, and the gate ends up only able to close (measured: its maximum stuck at sigmoid(bias) for
        # 600 steps). Scaled by 0.1 the initial logits stay within ~0.1 of the bias: closed.
        for last in (self.head_gate[-1], self.gate1[-1]):
            with torch.no_grad():
                last.weight.mul_(0.1)
        nn.init.constant_(self.head_gate[-1].bias, GATE_INIT_BIAS)
        nn.init.zeros_(self.gate1[-1].bias)

    def prior(self, guide: torch.Tensor, stride: int) -> torch.Tensor:
        """The guide's logit at ``stride``: gain * (2 * guide - 1), the guide average-pooled to the stride."""
        return self.guide_gain * (2 * (F.avg_pool2d(guide, stride) if stride > 1 else guide) - 1)

    def trust(self, f4: torch.Tensor, logit4: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(N,) logit of "this guide is accurate": per-cell evidence averaged over the guide's boundary.

        Its inputs are detached: the trust head learns to read the refiner, it does not train it (measured: its
        gradient in the shared decoder cost the coarse-guide results ~15%; bench/RESULTS.md, "learning")."""
        guide4 = F.avg_pool2d(guide, 4)
        disagreement = (torch.sigmoid(logit4.detach()) - guide4).abs()
        evidence = self.head_trust(torch.cat([f4.detach(), guide4 * 2 - 1, disagreement], 1))
        # the guide's boundary at stride 4 (cells neither all in nor all out, grown by two cells); a guide with no
        # boundary is judged on the whole frame
        boundary = dilate((guide4 > 0.01) & (guide4 < 0.99), 2).to(guide.dtype) + 1e-3
        return (evidence * boundary).sum((1, 2, 3)) / boundary.sum((1, 2, 3))

    def forward(self, e: EncoderFeatures, guide: torch.Tensor, radius: tuple[int, int]) -> DecoderOutput:
        context = F.interpolate(self.ctx(e.context), scale_factor=2.0, mode="bilinear")  # smooth: plain upsampling
        f = self.f8(torch.cat([e.s3, e.d3, context], 1))
        logit8 = self.head8(f) + self.prior(guide, 8)
        up = self.up4(self.ll4(f), self.hi4(e.d3).unflatten(1, (-1, 3)))
        f = self.f4(torch.cat([up, e.s2, e.d2], 1))
        logit4 = self.head4(f) + self.prior(guide, 4)
        gate_logit = self.head_gate(torch.cat([f, F.avg_pool2d(guide, 4) * 2 - 1], 1))
        trust_logit = self.trust(f, logit4, guide)
        up = self.up2(self.ll2(f), self.hi2(e.d2).unflatten(1, (-1, 3)))
        f = self.f2(torch.cat([up, e.s1, e.d1], 1))
        up = self.up1(self.ll1(f), self.hi1(e.d1).unflatten(1, (-1, 3)))
        hidden = self.f1[0](torch.cat([up, e.x], 1))  # the stride-1 hidden state (the fine stage's input)
        logit1 = self.f1[1](hidden) + self.prior(guide, 1)
        gate_logit = F.interpolate(gate_logit, scale_factor=4.0, mode="bilinear")

        # progressive refinement: a finer prediction replaces the coarser one only in the uncertain band
        r8, r4 = radius
        a8 = torch.sigmoid(logit8)
        u8 = F.interpolate(_uncertain(a8, r8), scale_factor=2.0, mode="nearest")
        merged4 = torch.where(u8 > 0, torch.sigmoid(logit4), F.interpolate(a8, scale_factor=2.0, mode="bilinear"))
        u4 = F.interpolate(_uncertain(merged4, r4), scale_factor=4.0, mode="nearest")
        merged4_full = F.interpolate(merged4, scale_factor=4.0, mode="bilinear")
        refined = torch.where(u4 > 0, torch.sigmoid(logit1), merged4_full)
        r = refined.detach()
        gate_logit = gate_logit + self.gate1(torch.cat([up, e.x, gate_logit, 2 * r - 1, (r - guide).abs()], 1))
        return DecoderOutput(logit8, logit4, logit1, u8, u4, refined, gate_logit, trust_logit, hidden)


def attention_heads(channels: int) -> int:
    """Heads of a cross-band attention of this width: one per 32 channels, at least one."""
    return max(1, channels // 32)


def _cut(p: torch.Tensor, threshold: float) -> torch.Tensor:
    """``p`` cut to exactly 0 below ``threshold``, straight through: the gradient passes as if uncut, so a closed
    gate still learns from the output's loss (it would otherwise never open)."""
    return p + (torch.where(p >= threshold, p, torch.zeros_like(p)) - p).detach()


def upgrade_state_dict_keys(state: dict) -> dict:
    """State-dict keys of checkpoints written before the encoder and decoder were submodules ("s1.inp.0.weight"),
    renamed to their place now ("encoder.s1.inp.0.weight"); current keys pass unchanged."""
    out = type(state)()
    for key, value in state.items():
        top = key.split(".")[0]
        if top in DECODER_MODULES:
            key = f"decoder.{key}"
        elif top in ENCODER_MODULES:
            key = f"encoder.{key}"
        out[key] = value
    return out


ENCODER_MODULES = ("focus_down", "down0", "s1", "d1", "down_s1", "down_d1", "s2", "d2", "attn2", "down_s2", "down_d2",
                   "s3", "d3", "attn3", "down_s3", "s4", "aspp")
DECODER_MODULES = ("ctx", "f8", "head8", "ll4", "hi4", "up4", "f4", "head4", "head_gate", "head_trust", "ll2", "hi2",
                   "up2", "f2", "ll1", "hi1", "up1", "f1", "gate1", "guide_gain")


def output_rule(guide: torch.Tensor, refined: torch.Tensor, gate_logit: torch.Tensor, accurate: torch.Tensor,
                gate_threshold: float, flip_threshold: float, accurate_gate_threshold: float,
                ring: torch.Tensor | None = None,
                band: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Do no harm: (alpha, the gate applied) from the guide (N,1,H,W; H, W even), the refinement, the gate's logit
    and each image's rule (``accurate`` (N,) bool); the dense pass and the sparse path's fine stage both end here.
    ``ring`` and ``band``: the guide's boundary ring and band when computed elsewhere (a tile's, from its
    context), else from ``guide``."""
    # Two kinds of change, two thresholds: a change that keeps each pixel on its guide's side of 0.5 (soft
    # edges, hair) needs the gate's probability >= gate_threshold; a change that crosses it (the guide is
    # wrong: a missing arm, a false blob) needs >= flip_threshold. Softening only in the band near the
    # guide's boundary; elsewhere only a flip may change a pixel.
    p = torch.sigmoid(gate_logit)
    on_side = torch.where(guide >= 0.5, refined.clamp(min=0.5), refined.clamp(max=0.5))
    any_accurate, all_accurate = bool(accurate.any()), bool(accurate.all())  # skip a rule no image gets
    if not all_accurate:
        gate, flip = _cut(p, gate_threshold), _cut(p, flip_threshold)
        band = boundary_band(guide) if band is None else band
        flipped = (on_side != refined).to(guide.dtype)
        alpha_coarse = guide + band * (gate * (on_side - guide) + flip * (refined - on_side)) \
            + (1 - band) * flip * flipped * (refined - guide)
        if not any_accurate:
            return alpha_coarse, gate
    # An accurate guide (the truth binarised at 0.5, up to a pixel) is wrong only in its soft pixels, which
    # sit at its boundary: only the ring of pixels on either side of its 0.5 level may change, only on the
    # guide's side, and only where the gate is surer (accurate_gate_threshold). Measured on make train-cpu's
    # models: wider bands and flips are where they harm accurate guides (bench/RESULTS.md, "learning").
    gate_acc = _cut(p, accurate_gate_threshold)
    ring = boundary_ring(guide) if ring is None else ring
    alpha_accurate = guide + ring * gate_acc * (on_side - guide)
    if all_accurate:
        return alpha_accurate, gate_acc
    pick = accurate.view(-1, 1, 1, 1)
    return torch.where(pick, alpha_accurate, alpha_coarse), torch.where(pick, gate_acc, gate)


class Refiner(nn.Module):
    """See the module docstring. Build it with :func:`build_refiner`."""

    def __init__(self, variant: str = "light", base_channels: int = 32, window: int = 8,
                 uncertain_radius: tuple[int, int] = (4, 4), focus_tau: float = 0.01,
                 gate_threshold: float = 0.7, flip_threshold: float = 0.95, accurate_gate_threshold: float = 0.9,
                 trust_threshold: float = TRUST_THRESHOLD, pretrained: str | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown refiner variant {variant!r}: one of {', '.join(VARIANTS)}")
        if base_channels < 4 or base_channels % 4:
            raise ValueError(f"base_channels must be a positive multiple of 4, got {base_channels}")
        self.variant, self.base_channels, self.window = variant, base_channels, window
        self.uncertain_radius = tuple(int(r) for r in uncertain_radius)
        self.focus_tau = float(focus_tau)
        if not 0.0 <= gate_threshold <= flip_threshold < 1.0:
            raise ValueError(f"gate_threshold and flip_threshold must satisfy 0 <= gate_threshold <= flip_threshold < 1,"
                             f" got {gate_threshold}, {flip_threshold}")
        self.gate_threshold, self.flip_threshold = float(gate_threshold), float(flip_threshold)
        if not 0.0 <= accurate_gate_threshold < 1.0:
            raise ValueError(f"accurate_gate_threshold must be in [0, 1), got {accurate_gate_threshold}")
        self.accurate_gate_threshold = float(accurate_gate_threshold)
        if not 0.0 < trust_threshold < 1.0:
            raise ValueError(f"trust_threshold must be in (0, 1), got {trust_threshold}")
        self.trust_threshold = float(trust_threshold)
        kind = {"light": "haar", "none": "none"}.get(variant, variant.removeprefix("heavy_"))
        # most width where pixels are few; the full-resolution path has a few channels only
        self.widths = (max(4, base_channels // 4), base_channels // 2, base_channels, 4 * base_channels,
                       8 * base_channels)
        self.pad_multiple = max(16, 8 * window)  # stride-8 features tile into windows; stride 16 exists
        self.encoder = Encoder(kind, self.widths, window, self.focus_tau)  # built first: the same initial weights
        self.decoder = Decoder(kind, self.widths)                          # per seed as before the split
        # the sparse path's full-resolution stage (model.fine), trained after the trunk (pipeline/train_fine.py);
        # built on a forked RNG so the trunk's training draws the same random numbers as before it existed
        with torch.random.fork_rng(devices=[]):
            self.fine = FineStage(self.widths[0])
        self.register_buffer("fine_steps", torch.zeros((), dtype=torch.long))  # its training steps; 0: untrained
        if pretrained:
            self.load_backbone(pretrained)

    @property
    def config(self) -> dict[str, Any]:
        """Plain JSON-able dict: ``build_refiner(**model.config)`` rebuilds this architecture."""
        return {"variant": self.variant, "base_channels": self.base_channels, "window": self.window,
                "uncertain_radius": list(self.uncertain_radius), "focus_tau": self.focus_tau,
                "gate_threshold": self.gate_threshold, "flip_threshold": self.flip_threshold,
                "accurate_gate_threshold": self.accurate_gate_threshold, "trust_threshold": self.trust_threshold}

    @property
    def fine_trained(self) -> bool:
        """Whether the fine stage has been trained (a checkpoint of ``pipeline/train_fine.py``)."""
        return bool(self.fine_steps > 0)

    def trunk_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters the solver trains: all but the fine stage's (trained on its own, afterwards)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("fine.")]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, also for checkpoints from before the encoder/decoder split and from
        before the fine stage existed (its weights then stay as built, untrained: ``fine_steps`` 0)."""
        state = upgrade_state_dict_keys(state_dict)
        if not any(k.startswith("fine.") for k in state):
            own = {k: v for k, v in self.state_dict().items() if k.startswith("fine.") or k == "fine_steps"}
            state = {**state, **{k: torch.zeros_like(v) if k == "fine_steps" else v for k, v in own.items()}}
        return super().load_state_dict(state, strict=strict, assign=assign)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a pretrained backbone provides: the encoder's."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("encoder.")}

    def load_backbone(self, path: str | os.PathLike) -> int:
        """Load encoder weights from a local file (a refiner checkpoint or a plain state dict); returns how many
        tensors matched by name and shape. Nothing is ever downloaded."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"pretrained backbone weights not found: {path} (give a local file)")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  (untrusted file: any failure is the user's file)
            raise UserError(f"not a loadable weights file: {path} ({exc.__class__.__name__})") from None
        state = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"no state dict in {path}")
        own = self.encoder_state_dict()
        matched = {k: v for k, v in upgrade_state_dict_keys(state).items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if not matched:
            raise UserError(f"no encoder weights of this refiner found in {path}")
        self.load_state_dict(matched, strict=False)
        log.info("loaded %d/%d backbone tensors from %s", len(matched), len(own), path)
        return len(matched)

    def forward(self, image: torch.Tensor, guide: torch.Tensor, uncertain_radius: tuple[int, int] | None = None,
                guide_accurate: torch.Tensor | bool | None = None, pad_multiple: int | None = None) -> RefinerOutput:
        """image (N,3,H,W) RGB in [0,1] (not normalised), guide (N,1,H,W) in [0,1]; any H, W.

        ``guide_accurate``: which output rule to use, per image ((N,) bool or one bool for all); None lets the
        trust head decide (``sigmoid(trust_logit) >= trust_threshold``). ``pad_multiple``: the input is
        edge-padded to a multiple of it (default ``self.pad_multiple``, whole attention windows at stride 8, what
        training sees); any multiple of 16 works, the attention then pads its own features to whole windows (the
        sparse path's coarse pass: 16)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (N,3,H,W), got {tuple(image.shape)}")
        if guide.shape != (image.shape[0], 1, *image.shape[-2:]):
            raise ValueError(f"guide must be (N,1,H,W) matching the image, got {tuple(guide.shape)}")
        h, w = image.shape[-2:]
        multiple = pad_multiple or self.pad_multiple
        if multiple % 16:
            raise ValueError(f"pad_multiple must be a multiple of 16 (the deepest stride), got {multiple}")
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:  # edge padding, cropped from every output
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
            guide = F.pad(guide, (0, pw, 0, ph), mode="replicate")
        features = self.encoder(image, guide)
        d = self.decoder(features, guide, uncertain_radius or self.uncertain_radius)
        alpha, gate, accurate = self._guide_gate(guide, d, guide_accurate)
        return self._output(h, w, features, d, alpha, gate, accurate)

    def _guide_gate(self, guide: torch.Tensor, d: DecoderOutput, guide_accurate) -> tuple:
        """Do no harm: the output rule (module docstring) -> (alpha, the gate applied, the rule of each image)."""
        if guide_accurate is None:
            accurate = torch.sigmoid(d.trust_logit.detach()) >= self.trust_threshold
        else:
            accurate = torch.as_tensor(guide_accurate, device=guide.device).to(torch.bool).expand(guide.shape[0])
        alpha, gate = output_rule(guide, d.refined, d.gate_logit, accurate, self.gate_threshold, self.flip_threshold,
                                  self.accurate_gate_threshold)
        return alpha, gate, accurate

    @staticmethod
    def _output(h: int, w: int, e: EncoderFeatures, d: DecoderOutput, alpha: torch.Tensor, gate: torch.Tensor,
                accurate: torch.Tensor) -> RefinerOutput:
        """Every map cropped back to the input's HxW (strided ones upsampled first)."""
        def crop(t: torch.Tensor) -> torch.Tensor:
            return t[..., :h, :w]

        def full(t: torch.Tensor, stride: int) -> torch.Tensor:
            return crop(F.interpolate(t, scale_factor=float(stride), mode="bilinear") if stride > 1 else t)

        logits_os = {8: full(d.logit8, 8), 4: full(d.logit4, 4), 1: crop(d.logit1)}
        f2, f4, f8 = e.focus
        return RefinerOutput(
            alpha=crop(alpha),
            alpha_os={s: torch.sigmoid(v) for s, v in logits_os.items()},
            logits_os=logits_os,
            uncertain_os={8: crop(F.interpolate(d.u8, scale_factor=4.0, mode="nearest")), 4: crop(d.u4)},
            focus_map=full(f2, 2),
            focus_os={s: f[..., : -(-h // s), : -(-w // s)] for s, f in ((2, f2), (4, f4), (8, f8))},
            refined=crop(d.refined), gate_logit=crop(d.gate_logit), gate=crop(gate),
            trust_logit=d.trust_logit, accurate=accurate, hidden=crop(d.hidden),
        )


# ------------------------------------------------------------------------------------------ builder, checkpoint
def build_refiner(variant: str = "light", base_channels: int = 32, **kwargs) -> Refiner:
    """Build a refiner: ``variant`` in :data:`VARIANTS`; ``kwargs`` as :class:`Refiner` (window, uncertain_radius,
    focus_tau, gate_threshold, flip_threshold, pretrained=<local path of backbone weights>)."""
    return Refiner(variant, base_channels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_refiner(path: str | os.PathLike, model: Refiner, **extra: Any) -> Path:
    """Write ``{'format', 'variant', 'config', 'model', **extra}`` to ``path`` atomically (temp + rename)."""
    path = Path(path)
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    ckpt = {"format": CHECKPOINT_FORMAT, "variant": model.variant, "config": model.config,
            "model": model.state_dict(), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    # through a file object: torch names the archive's top folder after a path (here the random temp name), so
    # identical states would give different bytes; a file object's archive is always named 'archive'
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(_canonical(ckpt), fh)
    return path


def _canonical(obj: Any) -> Any:
    """``obj`` rebuilt so that its pickle depends only on its values, not on which equal objects happen to be
    shared (pickle writes a back-reference for an object seen before, by identity): every string is interned
    (equal strings always shared), every dict, list and tuple is new (never shared). Tensors are kept."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, collections.OrderedDict):  # a state dict: keep its type and its _metadata
        out = collections.OrderedDict((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = _canonical(obj._metadata)
        return out
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_canonical(v) for v in obj)
    return obj


def _check_saved_config(config: dict) -> None:
    """Values a checkpoint's config could hold that build a model which only fails later, inside forward."""
    window = config.get("window", 8)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    radius = config.get("uncertain_radius", (4, 4))
    if not isinstance(radius, (list, tuple)) or len(radius) != 2 or \
            not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in radius):
        raise ValueError(f"uncertain_radius must be two integers >= 0, got {radius!r}")
    tau = config.get("focus_tau", 0.01)
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"focus_tau must be a finite number > 0, got {tau!r}")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dict of a refiner checkpoint (``save_refiner``'s, or the solver's with its training state), read with
    ``weights_only=True``: the one reader of checkpoints (inference, evaluation and resuming all come here).
    Raises ``UserError`` (one line) for a missing file, an unreadable file, or a checkpoint of something else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (untrusted file: any failure to load is the file's fault)
        raise UserError(f"not a loadable checkpoint: {path} ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a refiner checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
                        "train one or save it with model.refiner.save_refiner)")
    return ckpt


def load_refiner(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Refiner, dict]:
    """Rebuild a refiner from a checkpoint written by :func:`save_refiner` (or the training solver).

    Loads with ``weights_only=True`` (a checkpoint is untrusted input). Returns ``(model in eval mode, ckpt)``.
    Raises ``UserError`` (one line) for a missing file, an unreadable file, or a checkpoint of something else.
    """
    ckpt = read_checkpoint(path, map_location)
    state = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:  # a run that diverged: its alpha would be NaN, or cut to 0 in whole tiles
        raise UserError(f"refiner checkpoint {path} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s), "
                        f"e.g. {bad[0]}: retrain it (a smaller learning rate)")
    try:
        _check_saved_config(ckpt["config"])
        model = build_refiner(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except Exception as exc:  # noqa: BLE001  (a config the model cannot be built from, e.g. window: 0)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"refiner checkpoint {path} does not match its config: {first}") from None
    return model.to(map_location).eval(), ckpt
