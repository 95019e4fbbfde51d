"""dof_blur.render: the thin-lens model, occlusion-aware layering, its accuracy against independent references."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocess.dof_blur import (blur, disk_kernel, render, render_reference, sigma_levels,
                                 sigma_map)


def texture(h: int, w: int, seed: int = 0, smooth: float = 1.0) -> np.ndarray:
    """A natural-ish colour texture in [0, 1] (noise smoothed at ``smooth`` px, contrast stretched)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (0, 0), smooth)
    return np.clip((t - 0.5) * 4 + 0.5, 0, 1).astype(np.float32)


def disc(h: int, w: int, cy: float, cx: float, r: float, soft: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip((r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) / soft + 0.5, 0, 1).astype(np.float32)


def test_sigma_is_thin_lens_and_capped():
    d = np.linspace(0, 1, 11, dtype=np.float32)[None]
    s = sigma_map(d, 0.5, 10.0, 3.0)
    np.testing.assert_allclose(s[0], np.minimum(10 * np.abs(d[0] - 0.5), 3.0), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.7, 2.5, 3.9, 5.0, 9.0, 16.0])
def test_uniform_background_equals_cv2_gaussian(sigma):
    """A background at one disparity is blurred once, by cv2.GaussianBlur(img, (0,0), sigma) (< 2/255 mean);
    sigmas >= 4 px go through the reduced-resolution path."""
    h, w = 96, 128
    bg = texture(h, w, 1)
    disp = np.full((h, w), 0.2, np.float32)
    coc = sigma / 0.5  # focus at 0.7: |0.2 - 0.7| * coc == sigma
    assert len(sigma_levels(sigma_map(disp, 0.7, coc, 100.0), 16)) == 1  # equal disparity -> one blur
    image, alpha, _, bgr = render(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32), bg, disp, disp,
                                  0.7, coc, 100.0)
    ref = cv2.GaussianBlur(bg, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(image - ref).mean() < 2 / 255
    assert np.abs(bgr - ref).mean() < 2 / 255
    if sigma < 4:  # full resolution: exactly cv2's blur
        np.testing.assert_allclose(image, ref, atol=1e-5)
    assert not alpha.any()


def test_disk_kernel_is_pillbox_of_radius_two_sigma():
    k = disk_kernel(6.0)
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-6
    c = k.shape[0] // 2
    assert k[c, c] == k[c, c + 5] > 0 and k[c, c + 7] == 0  # flat inside, zero beyond radius + rim
    bg = texture(64, 64, 2)
    np.testing.assert_allclose(blur(bg, 3.0, "disk"),
                               cv2.filter2D(bg, -1, disk_kernel(6.0), borderType=cv2.BORDER_REFLECT_101), atol=1e-6)
    disp = np.full((64, 64), 0.3, np.float32)
    out = render(bg, np.zeros((64, 64), np.float32), bg, disp, disp, 0.6, 10.0, 50.0, kernel="disk")[0]
    assert np.abs(out - blur(bg, 3.0, "disk")).mean() < 1 / 255


def test_in_focus_plane_unchanged():
    """Where sigma < 0.3 px the image equals the sharp input (< 1/255), on the subject and on the background."""
    h, w = 96, 96
    fg, bg = texture(h, w, 3, smooth=1.5), texture(h, w, 4, smooth=1.5)
    alpha = disc(h, w, 48, 48, 30)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    disp_fg = 0.8 + 0.003 * (yy - 48)  # a gentle tilt: only the middle band is in focus
    disp_bg = np.where(xx < 20, 0.8, 0.1).astype(np.float32)  # a background strip at the focus plane
    image, a, fgr, bgr = render(fg, alpha, bg, disp_fg, disp_bg, 0.8, 20.0, 8.0)
    sig_fg = sigma_map(disp_fg, 0.8, 20.0, 8.0)
    inner = cv2.erode((alpha >= 1).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    on_subject = inner & (sig_fg < 0.3)
    assert on_subject.sum() > 200
    assert np.abs(image - fg)[on_subject].max() < 1 / 255
    assert np.abs(a - alpha)[on_subject].max() < 1 / 255
    # and it is what an exact per-pixel Gaussian does there (interpolating levels in kernel variance)
    ref = render_reference(fg, alpha, bg, disp_fg, disp_bg, 0.8, 20.0, 8.0)[0]
    assert np.abs(image - ref)[on_subject].max() < 0.05 / 255
    # background strip away from the depth edge and the subject
    strip = (xx < 20 - 4 * 8 / 2) | (xx < 8)
    strip &= cv2.dilate((alpha > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert strip.sum() > 50
    assert np.abs(bgr - bg)[strip].max() < 1 / 255


def test_blur_grows_monotonically_with_defocus():
    """High-frequency energy of the rendered background falls strictly as |disp - focus| grows, both sides."""
    h, w = 96, 96
    bg = texture(h, w, 5, smooth=0.7)
    zeros3, zeros = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)

    def detail(delta: float) -> float:
        d = np.full((h, w), 0.5 + delta, np.float32)
        img = render(zeros3, zeros, bg, d, d, 0.5, 20.0, 12.0)[0]
        return float(np.abs(cv2.Laplacian(img, cv2.CV_32F))[8:-8, 8:-8].mean())

    for sign in (1, -1):
        energies = [detail(sign * dd) for dd in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45)]
        assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert detail(0.6) == pytest.approx(detail(0.7), rel=1e-6)  # both capped at sigma_max


def test_layered_matches_brute_force_reference():
    """64x64 two-layer scene (background tilting away, subject nearer with a gentle tilt): the layered render
    is within 1/255 mean of a per-pixel brute-force gather, away from the subject's edge."""
    h, w = 64, 64
    fg, bg = texture(h, w, 6), texture(h, w, 7)
    alpha = disc(h, w, 30, 34, 14)
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    disp_bg = np.tile(np.linspace(0.05, 0.45, h, dtype=np.float32)[:, None], (1, w))
    disp_fg = (0.8 + 0.002 * (yy - 30)).astype(np.float32)
    args = (fg, alpha, bg, disp_fg, disp_bg, 0.8, 12.0, 6.0)
    image, a, _, _ = render(*args)
    ref_image, ref_alpha = render_reference(*args)
    edge = cv2.dilate(((alpha > 0) & (alpha < 1)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    err = np.abs(image - ref_image).mean(axis=2)
    assert err[~edge].mean() < 1 / 255, err[~edge].mean() * 255
    assert np.abs(a - ref_alpha)[~edge].mean() < 1 / 255
    assert err.max() < 8 / 255  # and no gross error anywhere, edge included


def test_no_background_colour_inside_opaque_in_focus_subject():
    """A strongly defocused pure-red background never leaks into an opaque in-focus subject."""
    h, w = 80, 80
    bg = np.zeros((h, w, 3), np.float32)
    bg[..., 0] = 1.0
    fg = texture(h, w, 8) * np.array([0.0, 1.0, 1.0], np.float32)  # no red at all in the subject
    alpha = (disc(h, w, 40, 40, 22, soft=0.01) >= 1).astype(np.float32)  # hard-edged, opaque
    disp_fg, disp_bg = np.full((h, w), 0.9, np.float32), np.full((h, w), 0.1, np.float32)
    image, a, fgr, _ = render(fg, alpha, bg, disp_fg, disp_bg, 0.9, 30.0, 10.0)
    inside = alpha >= 1
    assert image[..., 0][inside].max() < 1 / 255
    np.testing.assert_allclose(image[inside], fg[inside], atol=1e-6)
    assert a[inside].min() > 1 - 1e-6
    # outside the subject the background really is blurred red, and the subject does not spread (in focus)
    assert image[..., 0][~cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)].min() > 0.99


def test_compositing_equation_holds_before_quantisation():
    h, w = 64, 80
    fg, bg = texture(h, w, 9), texture(h, w, 10)
    alpha = disc(h, w, 32, 40, 20, soft=6)
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    image, a, f, b = render(fg, alpha, bg, 0.6 + 0.01 * yy / h * np.ones((h, w), np.float32),
                            np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1)), 0.3, 15.0, 5.0)
    assert np.abs(image - (a[..., None] * f + (1 - a[..., None]) * b)).max() < 1e-5
    assert a.max() <= 1 and a.min() >= 0 and (a > alpha + 0.05).any()  # a defocused subject spreads its alpha


@pytest.mark.parametrize("kernel", ["gaussian", "disk"])
def test_torch_path_matches_opencv_path(kernel):
    """render(device=...) runs the same levels, kernels, resampling and blending in torch (tested on CPU)."""
    h, w = 70, 93  # odd sizes: reduced-resolution padding
    fg, bg = texture(h, w, 11), texture(h, w, 12)
    alpha = disc(h, w, 35, 40, 20)
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    disp_bg = np.tile(np.linspace(0, 0.6, h, dtype=np.float32)[:, None], (1, w))
    disp_fg = (0.8 + 0.002 * (yy - 35)).astype(np.float32)
    ref = render(fg, alpha, bg, disp_fg, disp_bg, 0.8, 30.0, 16.0, kernel=kernel)
    got = render(fg, alpha, bg, disp_fg, disp_bg, 0.8, 30.0, 16.0, kernel=kernel, device="cpu")
    for a, b in zip(ref, got):
        assert np.abs(a - b).max() < 1e-3 / 255
