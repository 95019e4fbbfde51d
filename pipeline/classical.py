"""Classical matting from a guide mask: the baselines every learned refiner is scored beside.

pymatting's closed-form matting (Levin et al. 2008) and shared matting (Gastal & Oliveira 2010) need a trimap;
here it is the guide grown and shrunk by a radius (``trimap_from_guide``): what a user of either method would
draw around a segmenter's mask. Both take a float image in [0, 1] and return alpha in [0, 1], float32.
"""
from __future__ import annotations

import cv2
import numpy as np

METHODS = ("closed_form", "shared")


def trimap_from_guide(guide: np.ndarray, radius: int) -> np.ndarray:
    """Trimap in {0, 0.5, 1}: the guide eroded by ``radius`` is 1, outside it dilated by ``radius`` is 0."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    g = (guide > 0.5).astype(np.uint8)
    tri = np.full(g.shape, 0.5)
    tri[cv2.erode(g, k) > 0] = 1.0
    tri[cv2.dilate(g, k) == 0] = 0.0
    return tri


def classical_alpha(image: np.ndarray, guide: np.ndarray, method: str, radius: int) -> np.ndarray:
    """``method`` (closed_form or shared) on ``image`` (HxWx3 in [0, 1]) with the trimap of ``guide`` +-
    ``radius`` px. A trimap with no unknown, no foreground or no background pixel has nothing to solve: the
    guide binarised comes back."""
    if method not in METHODS:
        raise ValueError(f"unknown classical matting method {method!r}: use {', '.join(METHODS)}")
    from pymatting import estimate_alpha_cf, estimate_alpha_sm

    tri = trimap_from_guide(guide, radius)
    if not (tri == 0.5).any() or not (tri == 1).any() or not (tri == 0).any():
        return (tri > 0.5).astype(np.float32)
    solve = estimate_alpha_cf if method == "closed_form" else estimate_alpha_sm
    return np.clip(solve(np.ascontiguousarray(image, dtype=np.float64), tri), 0, 1).astype(np.float32)
