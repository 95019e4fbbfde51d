"""Training losses, each with its own weight and each returned separately so every term is logged.

Terms (per output stride s in {8, 4, 1}, weighted by ``stride_weights[s]``):
- ``l1``: |alpha_s - gt|;
- ``lap``: L1 between Laplacian pyramids (5 levels, weighted 2^level as in RVM/MODNet-style training, the
  weights normalised to sum to 1 so the term is on the L1 term's scale);
- ``grad``: L1 between Sobel gradients;
- ``comp``: |alpha_s*fgr + (1-alpha_s)*bgr - image| (composition; needs fgr and bgr);
- ``wll``: L1 between the Haar LL bands (low frequency: structure);
- ``whigh``: L1 between the LH/HL/HH bands, weighted by the uncertain region (0 < gt < 1, dilated) plus a small
  floor elsewhere (high frequency: detail).
The key ``"final"`` of ``alpha_os`` is the refiner's gated output (``RefinerOutput.alpha``), supervised like a
stride with its own weight. ``gate_loss`` trains the guide gate: binary cross-entropy *with logits* on
``RefinerOutput.gate_logit`` against where the refinement beats the guide; ``logit_bce_loss`` is the BCE *with
logits* of each stride's logit (``RefinerOutput.logits_os``), whose gradient does not vanish on the saturated
guide prior. ``trust_loss`` trains the guide trust head (one logit per image: is this guide accurate?).
Only alpha (probabilities) enters these L1-type losses; nothing here is a ``*_with_logits`` loss, so no logit
is ever squashed twice (the model's ``logits_os`` would be the input to one, never ``alpha_os``).
A weight of 0 skips the term's computation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.refiner import GATE_MARGIN  # the gate's target is defined with the model

TERMS = ("l1", "lap", "grad", "comp", "wll", "whigh")

try:  # the model's differentiable Haar transform (issue 6); same convention as pywt.dwt2
    from model.wavelets import HaarDWT as _HaarDWT
except ImportError:  # pragma: no cover - only before model/wavelets.py is merged
    _HaarDWT = None


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-level orthonormal Haar DWT: (ll (N,C,H/2,W/2), highs (N,C,3,H/2,W/2)); odd sizes are padded by
    replication. Uses ``model.wavelets.HaarDWT`` when present."""
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")
    if _HaarDWT is not None:
        ll, highs = _HaarDWT()(x)
        if isinstance(highs, (list, tuple)):
            highs = highs[0]
        return ll, highs
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) / 2
    h = (a + b - c - d) / 2
    v = (a - b + c - d) / 2
    dd = (a - b - c + d) / 2
    return ll, torch.stack([h, v, dd], dim=2)


def _gauss_kernel(device, dtype) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k = torch.outer(k, k)
    return (k / k.sum())[None, None]


def laplacian_pyramid(x: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    """Laplacian pyramid of (N,1,H,W): band-pass levels then the low-pass residual."""
    k = _gauss_kernel(x.device, x.dtype)
    out, cur = [], x
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 4:
            break
        blur = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode="reflect"), k)
        down = blur[..., ::2, ::2]
        up = F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False)
        out.append(cur - up)
        cur = down
    out.append(cur)
    return out


def laplacian_loss(pred: torch.Tensor, gt: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """L1 between Laplacian pyramids, level i weighted 2^i, the weights normalised to sum to 1: on the scale of
    the plain L1 term (un-normalised, the 2^4-weighted low-pass residual made this term ~20x the L1 term and
    the whole loss a blurred-alpha loss)."""
    pairs = list(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(gt, levels)))
    weights = [2.0 ** i for i in range(len(pairs))]
    return sum(w * F.l1_loss(p, g) for w, (p, g) in zip(weights, pairs)) / sum(weights)


def sobel(x: torch.Tensor) -> torch.Tensor:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 4
    k = torch.stack([kx, kx.t()])[:, None]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def uncertain_weight(gt: torch.Tensor, dilate: int = 3) -> torch.Tensor:
    """1 on the (dilated) region where 0 < gt < 1, else 0."""
    band = ((gt > 0.01) & (gt < 0.99)).to(gt.dtype)
    return F.max_pool2d(band, 2 * dilate + 1, stride=1, padding=dilate) if dilate > 0 else band


DEFAULT_STRIDE_WEIGHTS = {8: 0.25, 4: 0.5, 1: 1.0, "final": 1.0}


@dataclass
class LossWeights:
    """Weight of each term (0 = off) and of each output stride. These defaults are the training defaults too
    (``pipeline.solver.TrainConfig`` reads them from here)."""

    l1: float = 1.0
    lap: float = 1.0
    grad: float = 0.5
    comp: float = 0.5
    wll: float = 0.5
    whigh: float = 1.0
    whigh_floor: float = 0.1
    gate: float = 3.0
    trust: float = 1.0
    bce: float = 1.0
    stride_weights: dict = field(default_factory=lambda: dict(DEFAULT_STRIDE_WEIGHTS))


def matting_losses(alpha_os: dict[int, torch.Tensor], gt: torch.Tensor, w: LossWeights,
                   image: torch.Tensor | None = None, fgr: torch.Tensor | None = None,
                   bgr: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss over strides and terms, and each term's (unweighted, stride-weighted) value."""
    weights = {t: getattr(w, t) for t in TERMS}
    if image is None or fgr is None or bgr is None:
        weights["comp"] = 0.0
    parts = {t: gt.new_zeros(()) for t in TERMS if weights[t] > 0}
    unc = uncertain_weight(gt) if weights["whigh"] > 0 else None
    gt_dwt = haar_dwt(gt) if (weights["wll"] > 0 or weights["whigh"] > 0) else None
    for s, a in alpha_os.items():
        sw = float(w.stride_weights.get(s, w.stride_weights.get(str(s), 0.0)))
        if sw == 0:
            continue
        a = a.float()
        if bool(((a < 0) | (a > 1)).any()):  # logits passed where probabilities belong: refuse, do not squash
            raise ValueError(f"alpha at stride {s} is outside [0, 1]: pass probabilities (alpha_os), not logits")
        if "l1" in parts:
            parts["l1"] = parts["l1"] + sw * F.l1_loss(a, gt)
        if "lap" in parts:
            parts["lap"] = parts["lap"] + sw * laplacian_loss(a, gt)
        if "grad" in parts:
            parts["grad"] = parts["grad"] + sw * F.l1_loss(sobel(a), sobel(gt))
        if "comp" in parts:
            comp = a * fgr + (1 - a) * bgr
            parts["comp"] = parts["comp"] + sw * F.l1_loss(comp, image)
        if gt_dwt is not None:
            ll, highs = haar_dwt(a)
            if "wll" in parts:
                parts["wll"] = parts["wll"] + sw * F.l1_loss(ll, gt_dwt[0])
            if "whigh" in parts:
                # the uncertain region at the band's resolution (max over each 2x2 block)
                wt = F.max_pool2d(F.pad(unc, (0, unc.shape[-1] % 2, 0, unc.shape[-2] % 2)), 2)
                wt = (wt + w.whigh_floor)[:, :, None]
                err = (highs - gt_dwt[1]).abs() * wt
                parts["whigh"] = parts["whigh"] + sw * err.sum() / (wt.expand_as(err).sum() + 1e-6)
    total = sum(weights[t] * v for t, v in parts.items())
    return total, {t: float(v.detach()) for t, v in parts.items()}


def gate_target(gt: torch.Tensor, guide: torch.Tensor, refined: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """1 where the refinement beats the guide by more than ``margin`` (|guide - gt| - |refined - gt| > margin),
    else 0. The gate learns where to trust the refiner over the guide: not merely where the guide is wrong, but
    where the refiner is right; with an accurate guide that is at most the soft band, and never a place where
    the refiner would do harm. ``refined`` is detached: the gate's loss does not train the refinement."""
    gain = (guide - gt).abs() - (refined.detach() - gt).abs()
    return (gain > margin).to(gt.dtype)


def gate_loss(gate_logit: torch.Tensor, gt: torch.Tensor, guide: torch.Tensor, refined: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits of the guide gate against :func:`gate_target` (the gate's logit, never
    its probability: a probability here would be squashed twice)."""
    target = gate_target(gt, guide, refined.float(), GATE_MARGIN)
    return F.binary_cross_entropy_with_logits(gate_logit.float(), target)


def logit_bce_loss(logits_os: dict, gt: torch.Tensor, stride_weights: dict) -> torch.Tensor:
    """Binary cross-entropy *with logits* of each stride's prediction against the (soft) ground truth, weighted
    like the strides. Why: every head adds its correction to the guide's logit (+-6, ``model.refiner``), where the
    sigmoid is saturated; an L1-type loss on the probability then has a gradient of about sigmoid'(6) = 0.0025
    per pixel and a wrong guide region is corrected only after hundreds of steps. The BCE's gradient with respect
    to the logit is (sigmoid - gt), which does not vanish where the guide is confidently wrong."""
    total = gt.new_zeros(())
    for s, logit in logits_os.items():
        sw = float(stride_weights.get(s, stride_weights.get(str(s), 0.0)))
        if sw:
            total = total + sw * F.binary_cross_entropy_with_logits(logit.float(), gt)
    return total


def trust_loss(trust_logit: torch.Tensor, guide_accurate: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits of the guide trust head ((N,) logits) against whether each guide is an
    accurate one ((N,) 0/1, known to the data loader)."""
    return F.binary_cross_entropy_with_logits(trust_logit.float(), guide_accurate.float().view(-1))
