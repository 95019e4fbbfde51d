"""Far flips need evidence from the image: the do-no-harm rule that does not rest on the trust head.

The coarse output rule (``model.output_rule``) may flip a pixel far from the guide's boundary (a missing arm, a false
blob); on real photographs the trust head calls accurate guides coarse half the time and those flips then punch
holes deep inside people (bench/RESULTS.md, "Real photographs"). Here a flip more than ``near_px`` from the
guide's boundary is kept only where the image agrees: the pixel's colour is closer, by ``ratio``, to the colour
of the side it flips to than to the side it leaves, both measured around it (a ``window``-cell box at 1/``scale``
resolution) over the guide's pixels the model did not flip. A hole punched far inside a person has no background
around it to resemble, and a flip into colours that belong to the side it leaves is refused: every refused pixel
comes back to the guide, bit for bit. Changes within ``near_px`` of the boundary are the output rule's alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.masks import boundary_ring, dilate

NEAR_PX = 11  # Chebyshev radius of the zone left to the output rule: 11 px square < 16 px Euclidean everywhere
SCALE = 4  # the colour statistics' resolution (1/4: a cell is 4x4 px)
WINDOW = 33  # cells: the box (132 px at full resolution) over which each side's local colour is averaged
RATIO = 0.7  # a flip must be at least this much closer (distance ratio) to the side it flips to
MIN_SHARE = 0.05  # a side needs this share of the box to have a local colour at all


def box_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,C,H,W) -> the sum over each pixel's k x k box (k odd), zeros outside the frame; by cumulative sums, so
    the cost does not grow with k."""
    r = k // 2
    for dim in (-1, -2):
        pad = [0, 0, 0, 0]
        pad[0 if dim == -1 else 2] = r + 1
        pad[1 if dim == -1 else 3] = r
        c = F.pad(x, pad).cumsum(dim)
        n = x.shape[dim]
        x = c.narrow(dim, k, n) - c.narrow(dim, 0, n)
    return x


def _cells(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over scale x scale cells, the frame padded (replicated) to a whole number of cells."""
    h, w = x.shape[-2:]
    ph, pw = math.ceil(h / scale) * scale - h, math.ceil(w / scale) * scale - w
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, scale)


def far_flip_evidence(image: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, near_px: int = NEAR_PX,
                      scale: int = SCALE, window: int = WINDOW, ratio: float = RATIO,
                      min_share: float = MIN_SHARE) -> torch.Tensor:
    """``alpha`` (N,1,H,W) with every change farther than ``near_px`` (Chebyshev) from the guide's 0.5 boundary
    that the image does not support put back to ``guide``; see the module docstring. ``image`` (N,3,H,W)."""
    h, w = guide.shape[-2:]
    inside = guide >= 0.5
    far = dilate(boundary_ring(guide) > 0, near_px) == 0
    changed = far & (alpha != guide)
    if not bool(changed.any()):
        return alpha
    flipped = (alpha >= 0.5) != inside  # near ones too: a flipped blob's rim must not vouch for the blob
    flip = changed & flipped
    colour = _cells(image.float(), scale)
    n, _, y, x = flip.nonzero(as_tuple=True)  # judged one by one: far flips are few, the frame is large
    pixel = image.float()[n, :, y, x]  # (K,3): each flip's own colour
    cy, cx = y // scale, x // scale
    sides = []
    for side in (inside, ~inside):  # the guide's pixels of each side the model did not flip
        share = _cells((side & ~flipped).float(), scale)
        total = box_sum(share, window)
        mean = box_sum(colour * share, window) / total.clamp(min=1e-6)  # each side's local colour, per cell
        sides.append(((pixel - mean[n, :, cy, cx]).square().sum(1).sqrt(),
                      total[n, 0, cy, cx] >= min_share * window * window))
    (d_fg, has_fg), (d_bg, has_bg) = sides
    # fg -> bg: the background must be there and look like the pixel; a missing foreground colour counts as far
    to_bg = has_bg & (~has_fg | (d_bg < ratio * d_fg))
    to_fg = has_fg & (~has_bg | (d_fg < ratio * d_bg))
    ok = torch.zeros_like(flip)
    ok[n, 0, y, x] = torch.where(inside[n, 0, y, x], to_bg, to_fg)  # each flip by the side it leaves
    # far changes that do not flip (the coarse rule makes none) have nothing to vouch for them either
    return torch.where(changed & ~(flip & ok), guide, alpha)
