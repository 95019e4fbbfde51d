"""Do no harm: the output rule that decides, from the guide gate and the guide's kind, what may change.

Where the gate is closed the guide comes out unchanged, bit for bit; a change that keeps a pixel on its guide's
side of 0.5 needs the gate's probability >= ``gate_threshold``, one that crosses it (a flip) >= ``flip_threshold``;
an accurate guide changes only in its boundary ring, on its own side, where the gate >= ``accurate_gate_threshold``.
The dense pass (``model.refiner``) and the sparse path's fine stage (``model.sparse``) both end here.
"""
from __future__ import annotations

import torch

from model.masks import boundary_band, boundary_ring

GATE_MARGIN = 0.02  # the gate's target: 1 where the refinement is closer to the truth than the guide by this much


def _cut(p: torch.Tensor, threshold: float) -> torch.Tensor:
    """``p`` cut to exactly 0 below ``threshold``, straight through: the gradient passes as if uncut, so a closed
    gate still learns from the output's loss (it would otherwise never open)."""
    return p + (torch.where(p >= threshold, p, torch.zeros_like(p)) - p).detach()



def on_guide_side(guide: torch.Tensor, refined: torch.Tensor) -> torch.Tensor:
    """``refined`` held on the guide's side of 0.5: a change that softens the guide but never flips it."""
    return torch.where(guide >= 0.5, refined.clamp(min=0.5), refined.clamp(max=0.5))


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
    on_side = on_guide_side(guide, refined)
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

