"""Mask geometry on bool/0-1 maps: dilation by separable ORs, the guide's boundary ring and band, the uncertain
band of a prediction. Shared by the refiner, the sparse path and the losses."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


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


def uncertain(alpha: torch.Tensor, radius: int, eps: float = 1.0 / 255) -> torch.Tensor:
    """1 where ``alpha`` is neither ~0 nor ~1, dilated by ``radius`` pixels (a square max-pool); else 0."""
    return dilate((alpha > eps) & (alpha < 1 - eps), radius).to(alpha.dtype)


def boundary_distance(inside: np.ndarray) -> np.ndarray:
    """L2 px (OpenCV's 5x5 mask) from each pixel of a 0/1 uint8 mask to the nearest pixel of the other side: 1 on
    either side of the boundary, growing inwards and outwards alike."""
    return np.maximum(cv2.distanceTransform(inside, cv2.DIST_L2, 5), cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5))
