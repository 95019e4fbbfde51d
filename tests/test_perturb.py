import cv2
import numpy as np
import pytest

from preprocess.perturb import perturb_guide


def _disc_alpha(h=96, w=128, soft=4.0):
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    return np.clip((30 - r) / soft + 0.5, 0, 1).astype(np.float32)


def test_same_seed_same_guide_and_binary():
    alpha = _disc_alpha()
    a = perturb_guide(alpha, np.random.default_rng(7))
    b = perturb_guide(alpha, np.random.default_rng(7))
    assert a.dtype == np.float32 and a.shape == alpha.shape
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0}


def test_guides_differ_across_seeds_but_stay_near_the_subject():
    alpha = _disc_alpha()
    guides = [perturb_guide(alpha, np.random.default_rng(s)) for s in range(20)]
    assert len({g.tobytes() for g in guides}) > 10
    gt = alpha > 0.5
    for g in guides:
        inter = np.logical_and(g > 0, gt).sum()
        union = np.logical_or(g > 0, gt).sum()
        assert inter / union > 0.3  # coarse, not random


def test_only_threshold_is_exact_binarisation():
    alpha = _disc_alpha()
    g = perturb_guide(alpha, np.random.default_rng(0), threshold_range=(0.5, 0.5), morph_prob=0, downup_prob=0,
                      patch_prob=0, drop_prob=0)
    np.testing.assert_array_equal(g, (alpha > 0.5).astype(np.float32))


def test_dilation_grows_erosion_shrinks():
    alpha = _disc_alpha()
    base = (alpha > 0.5).sum()
    sizes = [perturb_guide(alpha, np.random.default_rng(s), threshold_range=(0.5, 0.5), morph_prob=1.0,
                           downup_prob=0, patch_prob=0, drop_prob=0).sum() for s in range(12)]
    assert min(sizes) < base < max(sizes)


def test_empty_alpha_gives_empty_guide_and_bad_shape_raises():
    assert perturb_guide(np.zeros((40, 50), np.float32), np.random.default_rng(0)).sum() == 0
    with pytest.raises(ValueError):
        perturb_guide(np.zeros((4, 5, 3), np.float32), np.random.default_rng(0))


def test_accurate_guide_is_exact_binarisation_or_near_it():
    from preprocess.perturb import accurate_guide

    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1.0
    alpha[16:48, 47] = 0.6
    alpha[16:48, 48] = 0.3
    exact = accurate_guide(alpha)
    assert np.array_equal(exact, (alpha > 0.5).astype(np.float32))
    for seed in range(10):  # training: within 1 px of the exact binarisation, and binary
        noisy = accurate_guide(alpha, np.random.default_rng(seed))
        assert set(np.unique(noisy)) <= {0.0, 1.0}
        grown = cv2.dilate(exact.astype(np.uint8), np.ones((3, 3), np.uint8))
        shrunk = cv2.erode(exact.astype(np.uint8), np.ones((3, 3), np.uint8))
        assert (noisy <= grown).all() and (noisy >= shrunk).all()
    assert np.array_equal(accurate_guide(alpha, np.random.default_rng(3)), accurate_guide(alpha, np.random.default_rng(3)))
