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

from model.layers import upsample_bilinear  # F.interpolate's bilinear, as matrix products on small maps
from model.masks import uncertain  # the soft band of an alpha, dilated
from model.output_rule import GATE_MARGIN  # the gate's target is defined with the rule it serves
from model.wavelets import haar_dwt  # the light Haar (pywt.dwt2's convention; odd sizes edge-padded)

TERMS = ("l1", "lap", "grad", "comp", "wll", "whigh")

# The fixed filters below are written as separable sums of shifted slices, not as convolutions: on a CPU a
# one-channel convolution (and its backward) is the slowest thing in a training step (measured: the Sobel and
# binomial convolutions of these losses were ~30% of a `make train-cpu` step; bench/RESULTS.md, "Training speed
# round").
GAUSS_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)  # binomial, the Laplacian pyramid's low-pass


def _gauss_down(x: torch.Tensor) -> torch.Tensor:
    """The 5x5 binomial blur (reflect padding) of (N,C,H,W), kept at even rows and columns only: ``blur[::2, ::2]``
    of the full blur, computed at those positions alone (rows first, then columns)."""
    h, w = x.shape[-2:]
    hh, ww = (h + 1) // 2, (w + 1) // 2
    xp = F.pad(x, (2, 2, 2, 2), mode="reflect")
    rows = sum(g * xp[..., u:u + 2 * hh - 1:2, :] for u, g in enumerate(GAUSS_5))
    return sum(g * rows[..., v:v + 2 * ww - 1:2] for v, g in enumerate(GAUSS_5))


def laplacian_pyramid(x: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    """Laplacian pyramid of (N,1,H,W): band-pass levels then the low-pass residual."""
    out, cur = [], x
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 4:
            break
        down = _gauss_down(cur)
        up = upsample_bilinear(down, size=cur.shape[-2:], for_backward=True)
        out.append(cur - up)
        cur = down
    out.append(cur)
    return out


def _level_weights(n: int) -> list[float]:
    weights = [2.0 ** i for i in range(n)]
    return [w / sum(weights) for w in weights]


def laplacian_loss(pred: torch.Tensor, gt: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """L1 between Laplacian pyramids, level i weighted 2^i, the weights normalised to sum to 1: on the scale of
    the plain L1 term (un-normalised, the 2^4-weighted low-pass residual made this term ~20x the L1 term and
    the whole loss a blurred-alpha loss)."""
    pairs = list(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(gt, levels)))
    return sum(w * F.l1_loss(p, g) for w, (p, g) in zip(_level_weights(len(pairs)), pairs))


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradients of (N,1,H,W) (replicate padding, kernels /4) -> (N,2,H,W): d/dx, then d/dy."""
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    down = xp[..., :-2, :] + 2 * xp[..., 1:-1, :] + xp[..., 2:, :]  # [1 2 1] down the rows
    across = xp[..., :, :-2] + 2 * xp[..., :, 1:-1] + xp[..., :, 2:]  # [1 2 1] across the columns
    gx = (down[..., 2:] - down[..., :-2]) / 4
    gy = (across[..., 2:, :] - across[..., :-2, :]) / 4
    return torch.cat([gx, gy], 1)


def uncertain_weight(gt: torch.Tensor, dilate: int = 3) -> torch.Tensor:
    """1 on the (dilated) region where 0.01 < gt < 0.99, else 0."""
    return uncertain(gt, dilate, eps=0.01)


DEFAULT_STRIDE_WEIGHTS = {8: 0.25, 4: 0.5, 1: 1.0, "final": 1.0}


@dataclass
class LossWeights:
    """Weight of each term (0 = off) and of each output stride. These defaults are the training defaults too
    (``pipeline.train_config.TrainConfig`` reads them from here)."""

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


def _stride_weight(stride_weights: dict, s) -> float:
    return float(stride_weights.get(s, stride_weights.get(str(s), 0.0)))


def _per_stride_l1(a: torch.Tensor, b: torch.Tensor, strides: int) -> torch.Tensor:
    """(strides,) mean |a - b| of each stride's slice; ``a`` holds the strides stacked on the batch axis, ``b`` one
    stride's worth (broadcast)."""
    diff = a.unflatten(0, (strides, -1)) - b.unsqueeze(0)
    return diff.abs().flatten(1).mean(1)


def matting_losses(alpha_os: dict[int, torch.Tensor], gt: torch.Tensor, w: LossWeights,
                   image: torch.Tensor | None = None, fgr: torch.Tensor | None = None,
                   bgr: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss over strides and terms, and each term's (unweighted, stride-weighted) value.

    Every supervised stride's alpha goes through each term in one batched pass (the strides stacked on the batch
    axis), and the ground truth's side of each term is computed once: the same sums as term by term and stride
    by stride, in a quarter of the operations."""
    weights = {t: getattr(w, t) for t in TERMS}
    if image is None or fgr is None or bgr is None:
        weights["comp"] = 0.0
    used = [(s, _stride_weight(w.stride_weights, s)) for s in alpha_os]
    used = [(s, sw) for s, sw in used if sw != 0]
    terms = [t for t in TERMS if weights[t] > 0]
    if not used or not terms:
        return gt.new_zeros(()), {t: 0.0 for t in terms}
    a = torch.cat([alpha_os[s].float() for s, _ in used], 0)
    if bool(((a < 0) | (a > 1)).any()):  # logits passed where probabilities belong: refuse, do not squash
        raise ValueError("alpha outside [0, 1]: pass probabilities (alpha_os), not logits")
    sw = gt.new_tensor([x for _, x in used])
    k = len(used)
    per: dict[str, torch.Tensor] = {}  # each term's value per stride, (k,)
    if "l1" in terms:
        per["l1"] = _per_stride_l1(a, gt, k)
    if "lap" in terms:
        pyr_a, pyr_g = laplacian_pyramid(a), laplacian_pyramid(gt)
        per["lap"] = sum(lw * _per_stride_l1(pa, pg, k)
                         for lw, pa, pg in zip(_level_weights(len(pyr_a)), pyr_a, pyr_g))
    if "grad" in terms:
        per["grad"] = _per_stride_l1(sobel(a), sobel(gt), k)
    if "comp" in terms:
        a_k = a.unflatten(0, (k, -1))
        comp = a_k * fgr + (1 - a_k) * bgr
        per["comp"] = (comp - image).abs().flatten(1).mean(1)
    if "wll" in terms or "whigh" in terms:
        ll, highs = haar_dwt(a)
        gt_ll, gt_highs = haar_dwt(gt)
        if "wll" in terms:
            per["wll"] = _per_stride_l1(ll, gt_ll, k)
        if "whigh" in terms:
            # the uncertain region at the band's resolution (max over each 2x2 block), plus a floor elsewhere
            unc = uncertain_weight(gt)
            wt = F.max_pool2d(F.pad(unc, (0, unc.shape[-1] % 2, 0, unc.shape[-2] % 2)), 2)
            wt = (wt + w.whigh_floor)[:, :, None]
            err = (highs.unflatten(0, (k, -1)) - gt_highs.unsqueeze(0)).abs() * wt
            per["whigh"] = err.flatten(1).sum(1) / (wt.expand_as(gt_highs).sum() + 1e-6)
    parts = {t: (sw * v).sum() for t, v in per.items()}
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
