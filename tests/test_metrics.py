"""Metrics: hand-computed values, known properties, and agreement with loop-based reference formulas."""
import math
from collections import deque

import numpy as np
import pytest

from pipeline import metrics as M


# ---------------------------------------------------------------- hand-computed values on tiny arrays
def test_sad_mad_mse_by_hand():
    p = np.array([[0.0, 1.0], [0.5, 0.0]])
    g = np.zeros((2, 2))
    assert M.sad(p, g) == pytest.approx(1.5 / 1000)
    assert M.mad(p, g) == pytest.approx(1.5 / 4 * 1000)
    assert M.mse(p, g) == pytest.approx(1.25 / 4 * 1000)
    m = np.array([[1, 1], [0, 0]])
    assert M.sad(p, g, m) == pytest.approx(1.0 / 1000)
    assert M.mad(p, g, m) == pytest.approx(0.5 * 1000)
    assert M.mse(p, g, m) == pytest.approx(0.5 * 1000)
    assert M.mad(p, g, np.zeros((2, 2))) == 0.0


def test_grad_filter_and_ramp_by_hand():
    fx, fy = M.gauss_derivative_filters(1.4)
    assert fx.shape == (9, 9)  # half size ceil(1.4*sqrt(-2 ln(sqrt(2pi)*1.4*0.01))) = ceil(3.62) = 4
    assert np.sqrt((fx ** 2).sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(fy, fx.T)
    # correlation of the x kernel with the ramp x/(W-1) at an interior pixel: sum fx[i,j]*(j-4)/(W-1)
    w = 20
    ramp = np.tile(np.arange(w) / (w - 1), (12, 1))
    c = abs(sum(fx[i, j] * (j - 4) for i in range(9) for j in range(9))) / (w - 1)
    mag = M.gradient_magnitude(ramp)
    assert mag[6, 10] == pytest.approx(c)
    # pred flat (normalises to 0, gradient 0), so Grad over one interior pixel is c^2/1000
    mask = np.zeros_like(ramp)
    mask[6, 10] = 1
    assert M.grad(np.zeros_like(ramp), ramp, mask) == pytest.approx(c ** 2 / 1000)


def test_conn_by_hand():
    # gt [1,1,0], pred [1,0,0]: the intersection is pixel 0 at every threshold, so pixels 1, 2 get level 0 and
    # pixel 0 level 1; phi_g = [1, 0, 1], phi_p = [1, 1, 1]: error 1 -> 1/1000
    g = np.array([[1.0, 1.0, 0.0]])
    p = np.array([[1.0, 0.0, 0.0]])
    assert M.conn(p, g) == pytest.approx(0.001)
    # the 0.15 rule: a difference of 0.1 above the level does not count
    g2 = np.array([[1.0, 0.1, 0.0]])
    assert M.conn(p, g2) == pytest.approx(0.0)


def test_dtssd_messddt_by_hand():
    p = np.array([[[0.0, 0.0]], [[0.5, 0.0]]])
    g = np.zeros((2, 1, 2))
    assert M.dtssd(p, g) == pytest.approx(math.sqrt(0.125) * 100)
    zero = np.zeros((1, 1, 2, 2), np.int64)
    # e0 = 0, e1 = [0.25, 0]: sum |e0 - e1| = 0.25 over (2 + 1) -> x1e4
    assert M.messddt(p, g, flows=zero) == pytest.approx(0.25 / 3 * 1e4)


# ---------------------------------------------------------------- known properties
def test_perfect_prediction_is_zero():
    rng = np.random.default_rng(0)
    g = rng.random((3, 16, 16))
    for name in M.IMAGE_METRICS:
        assert getattr(M, name)(g[0], g[0]) == 0.0, name
    assert M.dtssd(g, g) == 0.0
    assert M.messddt(g, g) == 0.0


def test_conn_of_shifted_edge_positive():
    g = np.zeros((16, 16))
    g[:, 8:] = 1.0
    p = np.zeros((16, 16))
    p[:, 9:] = 1.0
    p[:, 8] = 0.5
    assert M.conn(p, g) > 0
    assert M.grad(p, g) > 0


def test_dtssd_static_correct_video_zero_and_static_error_zero():
    g = np.repeat(np.random.default_rng(1).random((1, 8, 8)), 5, axis=0)
    assert M.dtssd(g, g) == 0.0
    # a constant error over time has no temporal component
    assert M.dtssd(g * 0.5 + 0.1, g * 0.5) == pytest.approx(0.0, abs=1e-9)
    assert M.mad(g * 0.5 + 0.1, g * 0.5) > 0


def test_messddt_follows_motion():
    # the error moves with the object by one pixel: with the true flow (+1 in x) MESSDdt is 0
    g = np.zeros((2, 4, 6))
    p = g.copy()
    p[0, 1, 2] = 0.5
    p[1, 1, 3] = 0.5
    flows = np.zeros((1, 4, 6, 2), np.int64)
    flows[..., 0] = 1
    assert M.messddt(p, g, flows=flows) == 0.0
    assert M.messddt(p, g, flows=np.zeros_like(flows)) > 0


def test_mask_shape_checked():
    with pytest.raises(ValueError):
        M.sad(np.zeros((2, 2)), np.zeros((2, 3)))


# ---------------------------------------------------------------- independent loop implementations
def ref_grad(p, g, m):
    sigma, eps = 1.4, 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    gauss = lambda x: math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    size = 2 * half + 1
    fx = [[gauss(i - half) * (-(j - half) * gauss(j - half) / sigma ** 2) for j in range(size)] for i in range(size)]
    norm = math.sqrt(sum(v * v for row in fx for v in row))
    fx = [[v / norm for v in row] for row in fx]
    h, w = len(g), len(g[0])

    def norm01(a):
        lo, hi = min(map(min, a)), max(map(max, a))
        return [[(v - lo) / (hi - lo) if hi > lo else 0.0 for v in row] for row in a]

    def mag(a):
        out = [[0.0] * w for _ in range(h)]
        for y in range(h):
            for x in range(w):
                gx = gy = 0.0
                for i in range(size):
                    for j in range(size):
                        yy = min(max(y + i - half, 0), h - 1)
                        xx = min(max(x + j - half, 0), w - 1)
                        gx += fx[i][j] * a[yy][xx]
                        gy += fx[j][i] * a[yy][xx]
                out[y][x] = math.sqrt(gx * gx + gy * gy)
        return out

    mp, mg = mag(norm01(p.tolist())), mag(norm01(g.tolist()))
    return sum((mp[y][x] - mg[y][x]) ** 2 * m[y, x] for y in range(h) for x in range(w)) / 1000


def ref_conn(p, g, m):
    h, w = g.shape
    level = [[-1.0] * w for _ in range(h)]
    for i in range(1, 11):
        t = i / 10
        inside = [[p[y, x] >= t and g[y, x] >= t for x in range(w)] for y in range(h)]
        seen = [[False] * w for _ in range(h)]
        best = []
        for y in range(h):
            for x in range(w):
                if inside[y][x] and not seen[y][x]:
                    comp, q = [], deque([(y, x)])
                    seen[y][x] = True
                    while q:
                        cy, cx = q.popleft()
                        comp.append((cy, cx))
                        for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                            if 0 <= ny < h and 0 <= nx < w and inside[ny][nx] and not seen[ny][nx]:
                                seen[ny][nx] = True
                                q.append((ny, nx))
                    if len(comp) > len(best):
                        best = comp
        best = set(best)
        for y in range(h):
            for x in range(w):
                if level[y][x] == -1 and (y, x) not in best:
                    level[y][x] = (i - 1) / 10
    total = 0.0
    for y in range(h):
        for x in range(w):
            lv = 1.0 if level[y][x] == -1 else level[y][x]
            dp, dg = p[y, x] - lv, g[y, x] - lv
            php = 1 - dp if dp >= 0.15 else 1.0
            phg = 1 - dg if dg >= 0.15 else 1.0
            total += abs(php - phg) * m[y, x]
    return total / 1000


def ref_dtssd(p, g, m):
    vals = []
    for t in range(1, len(p)):
        s = n = 0.0
        for y in range(p.shape[1]):
            for x in range(p.shape[2]):
                if m[t - 1, y, x]:
                    s += ((p[t, y, x] - p[t - 1, y, x]) - (g[t, y, x] - g[t - 1, y, x])) ** 2
                    n += 1
        vals.append(math.sqrt(s / n) if n else 0.0)
    return sum(vals) / len(vals) * 100


def ref_messddt(p, g, m, flows):
    total = count = 0.0
    T, h, w = p.shape
    for t in range(T - 1):
        for y in range(h):
            for x in range(w):
                ny = min(max(y + flows[t, y, x, 1], 0), h - 1)
                nx = min(max(x + flows[t, y, x, 0], 0), w - 1)
                e0 = (p[t, y, x] - g[t, y, x]) ** 2 * m[t, y, x]
                e1 = (p[t + 1, ny, nx] - g[t + 1, ny, nx]) ** 2 * m[t + 1, ny, nx]
                total += abs(e0 - e1)
                count += m[t, y, x]
        count += 1
    return total / count * 1e4


def _random_matte(rng, shape):
    """Random soft mattes with solid regions (so components and the 0.15 rule matter)."""
    g = rng.random(shape)
    g[g > 0.7] = 1.0
    g[g < 0.2] = 0.0
    return g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_with_loop_reference(seed):
    rng = np.random.default_rng(seed)
    g = _random_matte(rng, (10, 11))
    p = np.clip(g + rng.normal(0, 0.2, g.shape), 0, 1)
    m = rng.random(g.shape) > 0.4
    for mask in (None, m):
        mm = np.ones(g.shape) if mask is None else m.astype(float)
        assert M.sad(p, g, mask) == pytest.approx(np.sum(np.abs(p - g) * mm) / 1000)
        assert M.mad(p, g, mask) == pytest.approx(sum(abs(a - b) for a, b, k in zip(p.flat, g.flat, mm.flat) if k)
                                                  / mm.sum() * 1000)
        assert M.mse(p, g, mask) == pytest.approx(sum((a - b) ** 2 for a, b, k in zip(p.flat, g.flat, mm.flat) if k)
                                                  / mm.sum() * 1000)
        assert M.grad(p, g, mask) == pytest.approx(ref_grad(p, g, mm), rel=1e-9, abs=1e-12)
        assert M.conn(p, g, mask) == pytest.approx(ref_conn(p, g, mm), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_video_agreement_with_loop_reference(seed):
    rng = np.random.default_rng(seed)
    g = _random_matte(rng, (4, 7, 8))
    p = np.clip(g + rng.normal(0, 0.2, g.shape), 0, 1)
    m = rng.random(g.shape) > 0.3
    flows = rng.integers(-2, 3, size=(3, 7, 8, 2))
    assert M.dtssd(p, g) == pytest.approx(ref_dtssd(p, g, np.ones(g.shape)))
    assert M.dtssd(p, g, m) == pytest.approx(ref_dtssd(p, g, m))
    assert M.messddt(p, g, m, flows=flows) == pytest.approx(ref_messddt(p, g, m.astype(float), flows))
    assert M.messddt(p, g, None, flows=flows) == pytest.approx(ref_messddt(p, g, np.ones(g.shape), flows))


def test_gt_flow_tracks_translation():
    g0 = np.zeros((32, 32))
    g0[10:20, 8:16] = 1.0
    g1 = np.roll(g0, 2, axis=1)
    flow = M.gt_flow(g0, g1)
    assert np.median(flow[12:18, 10:14, 0]) == 2
    assert np.median(flow[12:18, 10:14, 1]) == 0
