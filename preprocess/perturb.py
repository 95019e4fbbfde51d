"""Coarse guide masks made from ground-truth alpha: the degradations mask-guided matting trains with.

Following the recipe MaGGIe and earlier mask-guided matting work use, a guide is the ground truth pushed
towards what a real segmenter produces: binarised at a random level, grown or shrunk by a random amount,
made blocky by down-up sampling at 1/8 resolution, and corrupted by copied or cut patches and dropped boxes.
The refiner then learns to correct structure (wrong regions) and recover detail (hair, soft edges) that a
binary guide cannot hold. Each degradation's probability and range is a keyword, so training configs can
tune them; the defaults are moderate.
"""
from __future__ import annotations

import cv2
import numpy as np


def _kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))


def _random_box(rng: np.random.Generator, h: int, w: int, min_frac: float, max_frac: float) -> tuple[int, int, int, int]:
    bh = max(1, int(h * rng.uniform(min_frac, max_frac)))
    bw = max(1, int(w * rng.uniform(min_frac, max_frac)))
    y = int(rng.integers(0, h - bh + 1))
    x = int(rng.integers(0, w - bw + 1))
    return y, x, bh, bw


def accurate_guide(alpha: np.ndarray, rng: np.random.Generator | None = None, threshold_jitter: float = 0.1,
                   boundary_noise_px: int = 1) -> np.ndarray:
    """A near-exact binary guide (HxW float32 in {0,1}): what a good segmenter (SAM2 on a clean frame) gives.

    Without ``rng``: the ground truth binarised at 0.5 exactly (the "accurate guide" of the evaluation). With
    ``rng`` (training): binarised at 0.5 +- ``threshold_jitter``, and its boundary moved by up to
    ``boundary_noise_px`` pixels (dilate or erode, drawn per frame), so the refiner learns to trust a guide that
    is right up to its edge and to fix only that edge.
    """
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be HxW, got shape {alpha.shape}")
    if rng is None:
        return (alpha > 0.5).astype(np.float32)
    guide = (alpha > 0.5 + rng.uniform(-threshold_jitter, threshold_jitter)).astype(np.uint8)
    radius = int(rng.integers(0, boundary_noise_px + 1))
    if radius:
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        guide = op(guide, _kernel(radius))
    return guide.astype(np.float32)


def perturb_guide(
    alpha: np.ndarray,
    rng: np.random.Generator,
    threshold_range: tuple[float, float] = (0.1, 0.9),
    morph_prob: float = 0.8,
    morph_max_frac: float = 0.03,
    downup_prob: float = 0.5,
    downup_factor: int = 8,
    patch_prob: float = 0.3,
    drop_prob: float = 0.3,
    patch_max_frac: float = 0.2,
) -> np.ndarray:
    """A coarse binary guide (HxW float32 in {0,1}) from ground-truth alpha (HxW float in [0,1]).

    Steps, each drawn from ``rng`` (seed it per frame for reproducibility):
    1. binarise at a level drawn from ``threshold_range`` (soft hair becomes all-in or all-out);
    2. with ``morph_prob``, dilate or erode by an elliptic kernel of radius up to ``morph_max_frac`` of the
       shorter side (a segmenter's boundary is off by several pixels);
    3. with ``downup_prob``, resize to 1/``downup_factor`` (area) and back (bilinear), re-binarised at 0.5
       (blocky low-resolution masks);
    4. with ``patch_prob``, copy a patch of the mask elsewhere (a false positive) or cut one (a false negative);
    5. with ``drop_prob``, zero a random box (a missed part, such as an arm).
    An all-zero alpha gives an all-zero guide.
    """
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be HxW, got shape {alpha.shape}")
    h, w = alpha.shape
    guide = (alpha > rng.uniform(*threshold_range)).astype(np.uint8)

    if rng.random() < morph_prob:
        radius = int(rng.integers(1, max(2, int(morph_max_frac * min(h, w)) + 1)))
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        guide = op(guide, _kernel(radius))

    if rng.random() < downup_prob and min(h, w) >= 2 * downup_factor:
        small = cv2.resize(guide.astype(np.float32), (max(1, w // downup_factor), max(1, h // downup_factor)),
                           interpolation=cv2.INTER_AREA)
        guide = (cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)

    if rng.random() < patch_prob:
        y, x, bh, bw = _random_box(rng, h, w, 0.05, patch_max_frac)
        if rng.random() < 0.5:  # copy a patch from elsewhere onto (y, x)
            sy = int(rng.integers(0, h - bh + 1))
            sx = int(rng.integers(0, w - bw + 1))
            guide[y:y + bh, x:x + bw] = guide[sy:sy + bh, sx:sx + bw].copy()
        else:  # cut
            guide[y:y + bh, x:x + bw] = 0

    if rng.random() < drop_prob:
        y, x, bh, bw = _random_box(rng, h, w, 0.05, patch_max_frac)
        guide[y:y + bh, x:x + bw] = 0

    return guide.astype(np.float32)
