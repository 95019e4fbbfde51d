"""Standard alpha-matting metrics, computed the way the matting literature reports them.

Every function takes float arrays in [0, 1]: ``f(pred, gt, mask=None)``. Image metrics take (H, W); the video
metrics ``dtssd`` and ``messddt`` take (T, H, W) stacks. ``mask`` (same shape, bool or {0,1}) restricts the
metric to a region, typically the trimap's unknown band; ``None`` means the whole frame.

Scale factors (state them in every table header, as ``SCALES`` does):

======== ==================================================================== =========
metric   formula                                                              scale
======== ==================================================================== =========
sad      sum |p - g| over the region                                          / 1000
mad      mean |p - g| over the region                                         x 1000
mse      mean (p - g)^2 over the region                                       x 1000
grad     sum (|G*p| - |G*g|)^2 over the region, G = Gaussian-derivative       / 1000
conn     sum |phi(p) - phi(g)| over the region (0.15 rule, step 0.1)          / 1000
dtssd    mean over t of sqrt(mean over region of (dp_t - dg_t)^2)             x 100
messddt  sum |e_t(x) - e_{t+1}(x + v_t(x))| / number of region pixels         x 10000
======== ==================================================================== =========

References and where they disagree:

* RobustVideoMatting ``evaluation/evaluate_lr.py`` (RVM): MAD and MSE are means x1e3; Grad min-max normalises
  both mattes, filters with the first derivative of a Gaussian (sigma 1.4, kernel cut where it falls below 1e-2,
  unit L2 norm) with replicated borders, sums the squared difference of gradient magnitudes, /1000; Conn uses
  thresholds 0..1 step 0.1, the largest 4-connected component of the thresholded intersection and the 0.15
  rule, /1000; dtSSD per frame pair is sqrt(sum(err)/numel) x100. RVM computes every metric on the whole frame.
* The Deep Image Matting MATLAB code (Xu et al. 2017, ``compute_sad_loss.m``, ``compute_mse_loss.m``,
  ``compute_gradient_loss.m``, ``compute_connectivity_error.m``): the same formulas restricted to the trimap's
  unknown pixels (``trimap == 128``); SAD and MSE are the ones most papers quote on Composition-1k. It divides
  8-bit mattes by 255 instead of min-max normalising before Grad (on mattes already in [0,1] that span 0..1 the
  two agree; they differ for a matte that never reaches 0 or 1). MSE there is a plain mean (no x1e3): papers
  multiply by 1e3 when printing.
* MaGGIe (``maggie/utils/metric.py``): region metrics over ``trimap > 0``; MAD/MSE are scaled so that the
  printed numbers match x1e3 per pixel; its dtSSD is sqrt of the *sum* (not mean) over pixels x0.1, so its
  values are not comparable with RVM's; MESSDdt (Erofeev et al., BMVC 2015) warps the next frame's squared
  error to the current one by Farneback optical flow computed on the ground-truth alpha (x255, uint8), rounds
  the flow to whole pixels, sums the absolute difference of the squared errors and divides by the number of
  region pixels (+1 per frame pair), x1e4. Its code adds the flow's x component to the row index; we add
  (dx, dy) to (column, row) as the flow defines them.
* dtSSD per clip: RVM records 0 for the first frame and averages over all T frames; we average over the T-1
  frame pairs (RVM's clip value is (T-1)/T of ours).
"""
from __future__ import annotations

import cv2
import numpy as np

SCALES = {"sad": "/1e3", "mad": "x1e3", "mse": "x1e3", "grad": "/1e3", "conn": "/1e3", "dtssd": "x1e2",
          "messddt": "x1e4"}
IMAGE_METRICS = ("sad", "mad", "mse", "grad", "conn")
VIDEO_METRICS = ("dtssd", "messddt")


def _prep(pred, gt, mask):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    m = np.ones(gt.shape, dtype=np.float64) if mask is None else (np.asarray(mask) > 0).astype(np.float64)
    if m.shape != gt.shape:
        raise ValueError(f"mask shape {m.shape} != ground truth shape {gt.shape}")
    return pred, gt, m


def sad(pred, gt, mask=None) -> float:
    """Sum of absolute differences over the region, /1000 (DIM, MaGGIe)."""
    p, g, m = _prep(pred, gt, mask)
    return float(np.sum(np.abs(p - g) * m) / 1000.0)


def mad(pred, gt, mask=None) -> float:
    """Mean absolute difference over the region, x1000 (RVM ``MetricMAD``). An empty region gives 0."""
    p, g, m = _prep(pred, gt, mask)
    n = m.sum()
    return float(np.sum(np.abs(p - g) * m) / n * 1000.0) if n else 0.0


def mse(pred, gt, mask=None) -> float:
    """Mean squared difference over the region, x1000 (RVM ``MetricMSE``, DIM ``compute_mse_loss``)."""
    p, g, m = _prep(pred, gt, mask)
    n = m.sum()
    return float(np.sum((p - g) ** 2 * m) / n * 1000.0) if n else 0.0


def gauss_derivative_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) first-derivative-of-Gaussian kernels of DIM's ``gaussgradient`` and RVM's ``MetricGRAD``.

    Half size ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon))) (4 for sigma 1.4: a 9x9 kernel); the x kernel
    is gaussian(row) * d/dx gaussian(column), scaled to unit L2 norm; the y kernel is its transpose.
    """
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    t = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-t ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -t * g / sigma ** 2
    fx = np.outer(g, dg)
    fx /= np.sqrt((fx ** 2).sum())
    return fx, fx.T.copy()


_FX, _FY = gauss_derivative_filters(1.4)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """|Gaussian-derivative gradient| of a 2-D array with replicated borders (cv2.filter2D correlates; the sign
    flip against MATLAB's convolution does not change the magnitude)."""
    gx = cv2.filter2D(x, cv2.CV_64F, _FX, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(x, cv2.CV_64F, _FY, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def grad(pred, gt, mask=None) -> float:
    """Gradient error: sum over the region of (|grad p| - |grad g|)^2 after min-max normalising each matte, /1000
    (RVM ``MetricGRAD``; DIM ``compute_gradient_loss`` restricts the sum to the unknown band)."""
    p, g, m = _prep(pred, gt, mask)
    if p.ndim != 2:
        raise ValueError("grad takes one (H, W) matte")
    d = gradient_magnitude(_minmax(p)) - gradient_magnitude(_minmax(g))
    return float(np.sum(d ** 2 * m) / 1000.0)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def conn(pred, gt, mask=None, step: float = 0.1) -> float:
    """Connectivity error (Rhemann et al. 2009 as coded by DIM and RVM), /1000.

    For thresholds t_i = i*step, i >= 1: a pixel's level l is the last threshold t_{i-1} before it left the
    largest 4-connected component of {p >= t_i and g >= t_i} (1 if it never left). phi(a) = 1 - (a - l) where
    a - l >= 0.15, else 1. The error is sum |phi(p) - phi(g)| over the region.
    """
    p, g, m = _prep(pred, gt, mask)
    if p.ndim != 2:
        raise ValueError("conn takes one (H, W) matte")
    steps = int(round(1.0 / step))
    level = -np.ones_like(g)
    for i in range(1, steps + 1):
        omega = _largest_component((p >= i * step) & (g >= i * step))
        level[(level == -1) & ~omega] = (i - 1) * step
    level[level == -1] = 1.0
    dp, dg = p - level, g - level
    phi_p = 1.0 - dp * (dp >= 0.15)
    phi_g = 1.0 - dg * (dg >= 0.15)
    return float(np.sum(np.abs(phi_p - phi_g) * m) / 1000.0)


def _video(pred, gt, mask):
    p, g, m = _prep(pred, gt, mask)
    if p.ndim != 3:
        raise ValueError(f"video metrics take (T, H, W) stacks, got shape {p.shape}")
    return p, g, m


def dtssd(pred, gt, mask=None) -> float:
    """Temporal coherence (Erofeev et al. 2015 as RVM ``MetricDTSSD`` computes it), x100.

    Per frame pair (t-1, t): sqrt(mean over the region of ((p_t - p_{t-1}) - (g_t - g_{t-1}))^2), with the region
    of frame t-1 (as MaGGIe); the clip value is the mean over the T-1 pairs. A single frame gives 0.
    """
    p, g, m = _video(pred, gt, mask)
    if len(p) < 2:
        return 0.0
    err = ((p[1:] - p[:-1]) - (g[1:] - g[:-1])) ** 2 * m[:-1]
    n = m[:-1].reshape(len(err), -1).sum(1)
    per_pair = np.sqrt(np.where(n > 0, err.reshape(len(err), -1).sum(1) / np.maximum(n, 1), 0.0))
    return float(per_pair.mean() * 100.0)


def gt_flow(gt_prev: np.ndarray, gt_next: np.ndarray) -> np.ndarray:
    """Farneback flow from ``gt_prev`` to ``gt_next`` (alpha x255 as uint8, MaGGIe's parameters), (H, W, 2) as
    (dx, dy) rounded to whole pixels."""
    a = np.round(np.clip(gt_prev, 0, 1) * 255).astype(np.uint8)
    b = np.round(np.clip(gt_next, 0, 1) * 255).astype(np.uint8)
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 10, 2, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    return np.rint(flow).astype(np.int64)


def messddt(pred, gt, mask=None, flows: np.ndarray | None = None) -> float:
    """Motion-compensated temporal error MESSDdt (Erofeev et al. 2015, as MaGGIe computes it), x1e4.

    e_t = (p_t - g_t)^2 * m_t. With v_t the ground-truth flow from frame t to t+1 (``gt_flow`` unless ``flows``
    (T-1, H, W, 2) is given), the error is sum_t sum_x |e_t(x) - e_{t+1}(x + v_t(x))| (target clamped to the
    frame) divided by sum_t (sum_x m_t(x) + 1), x1e4. A single frame gives 0.
    """
    p, g, m = _video(pred, gt, mask)
    t, h, w = p.shape
    if t < 2:
        return 0.0
    if flows is None:
        flows = np.stack([gt_flow(g[i], g[i + 1]) for i in range(t - 1)])
    e = (p - g) ** 2 * m
    yy, xx = np.mgrid[0:h, 0:w]
    total, count = 0.0, 0.0
    for i in range(t - 1):
        ty = np.clip(yy + flows[i, ..., 1], 0, h - 1)
        tx = np.clip(xx + flows[i, ..., 0], 0, w - 1)
        total += np.abs(e[i] - e[i + 1][ty, tx]).sum()
        count += m[i].sum() + 1.0
    return float(total / count * 1e4)


def unknown_region(gt: np.ndarray, low: float = 0.0, high: float = 1.0, dilate: int = 0) -> np.ndarray:
    """The unknown band of a trimap made from ground truth: pixels with low < alpha < high, grown by ``dilate``
    pixels (a square kernel). Works on (H, W) or (T, H, W)."""
    gt = np.asarray(gt)
    band = (gt > low + 1e-6) & (gt < high - 1e-6)
    if dilate <= 0:
        return band
    k = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    if band.ndim == 2:
        return cv2.dilate(band.astype(np.uint8), k) > 0
    return np.stack([cv2.dilate(b.astype(np.uint8), k) > 0 for b in band])


def eval_region(gt: np.ndarray) -> np.ndarray:
    """The unknown region every table here reports: 0 < alpha < 1 grown by 1% of the shorter side (>= 1 px)."""
    return unknown_region(gt, dilate=max(1, round(0.01 * min(np.shape(gt)[-2:]))))


def frame_metrics(pred, gt, mask=None) -> dict[str, float]:
    """All image metrics of one frame."""
    return {"sad": sad(pred, gt, mask), "mad": mad(pred, gt, mask), "mse": mse(pred, gt, mask),
            "grad": grad(pred, gt, mask), "conn": conn(pred, gt, mask)}
