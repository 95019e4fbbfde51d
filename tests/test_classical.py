"""pipeline/classical.py: the trimap of a guide, closed-form and shared matting against pymatting called by hand."""
import numpy as np
import pytest
from pymatting import estimate_alpha_cf, estimate_alpha_sm

from pipeline.classical import classical_alpha, trimap_from_guide


def _soft_disc(h: int = 48, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A red disc with a 6 px soft rim over a blue-green gradient: the image and its true alpha."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    alpha = np.clip((16 - r) / 6 + 0.5, 0, 1)
    fg = np.array([0.9, 0.2, 0.1])
    bg = np.stack([0.1 + 0.2 * xx / w, 0.5 + 0.0 * xx, 0.3 + 0.4 * yy / h], -1)
    return alpha[..., None] * fg + (1 - alpha[..., None]) * bg, alpha


def test_trimap_from_guide():
    g = np.zeros((20, 20), np.float32)
    g[5:15, 5:15] = 1
    t = trimap_from_guide(g, 2)
    assert t[10, 10] == 1 and t[0, 0] == 0 and t[5, 10] == 0.5 and t[3, 10] == 0.5 and set(np.unique(t)) == {0, .5, 1}
    # the band is exactly the ellipse-dilated minus the ellipse-eroded guide: 2 px each way along a straight edge
    assert list(t[10, :9]) == [0, 0, 0, .5, .5, .5, .5, 1, 1]


@pytest.mark.parametrize("method,solve", [("closed_form", estimate_alpha_cf), ("shared", estimate_alpha_sm)])
def test_classical_alpha_is_pymatting_on_the_guides_trimap(method, solve):
    image, alpha = _soft_disc()
    guide = (alpha >= 0.5).astype(np.float32)
    got = classical_alpha(image.astype(np.float32), guide, method, 4)
    ref = np.clip(solve(image, trimap_from_guide(guide, 4)), 0, 1)
    assert got.dtype == np.float32 and got.shape == guide.shape
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # and it mattes: on the soft rim it is far nearer the truth than the binary guide
    assert np.abs(got - alpha).mean() < 0.5 * np.abs(guide - alpha).mean(), method


def test_nothing_to_solve_gives_the_guide_and_a_bad_name_is_refused():
    image = np.random.default_rng(0).random((16, 16, 3))
    for guide in (np.zeros((16, 16)), np.ones((16, 16))):
        for method in ("closed_form", "shared"):
            np.testing.assert_array_equal(classical_alpha(image, guide, method, 3), guide.astype(np.float32))
    with pytest.raises(ValueError, match="unknown classical matting method 'knn': use closed_form, shared"):
        classical_alpha(image, np.ones((16, 16)), "knn", 3)
