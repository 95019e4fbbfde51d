"""pipeline/stats.py against independent references (scipy directly, numpy with the same seed)."""
import math

import numpy as np
import pytest
from scipy import stats as st

from pipeline import stats


@pytest.fixture
def diffs():
    rng = np.random.default_rng(7)
    return rng.normal(-0.4, 1.0, 40)


def test_wilcoxon_p_is_scipys(diffs):
    assert stats.wilcoxon_p(diffs) == pytest.approx(st.wilcoxon(diffs).pvalue, rel=1e-12)
    small = np.array([0.5, -0.2, 1.1, 0.7, 0.9, -0.1])  # exact distribution
    assert stats.wilcoxon_p(small) == pytest.approx(st.wilcoxon(small, method="exact").pvalue, rel=1e-12)
    assert math.isnan(stats.wilcoxon_p(np.zeros(5)))


def test_bootstrap_ci_recomputed_with_numpy(diffs):
    lo, hi = stats.bootstrap_ci(diffs, n_boot=2000, seed=3)
    idx = np.random.default_rng(3).integers(0, len(diffs), (2000, len(diffs)))
    ref = np.percentile(diffs[idx].mean(1), [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(ref))
    assert lo < diffs.mean() < hi
    assert stats.bootstrap_ci(diffs, seed=3) == stats.bootstrap_ci(diffs, seed=3)  # seeded


def test_effect_sizes(diffs):
    s = stats.paired_summary(diffs)
    assert s["n"] == 40 and s["mean"] == pytest.approx(diffs.mean())
    assert s["dz"] == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    r = st.rankdata(np.abs(diffs))
    w_plus, w_minus = r[diffs > 0].sum(), r[diffs < 0].sum()
    assert s["rank_biserial"] == pytest.approx((w_plus - w_minus) / r.sum())
    assert stats.rank_biserial(np.array([1.0, 2.0, 0.0])) == 1.0
    assert stats.rank_biserial(np.array([-1.0, -2.0])) == -1.0


def test_pairing_is_by_key_and_interaction():
    a = {("c", 1): 3.0, ("c", 0): 1.0, ("d", 0): 5.0}
    b = {("c", 0): 0.5, ("c", 1): 1.0, ("e", 0): 9.0}
    assert stats.paired_differences(a, b) == {("c", 0): 0.5, ("c", 1): 2.0}
    assert stats.interaction({"x": 1.0, "y": -2.0}, {"y": 1.0, "z": 0.0}) == {"y": -3.0}


def test_fmt_p():
    assert stats.fmt_p(0.04321) == "0.0432" and stats.fmt_p(1.5e-5) == "1.50e-05" and stats.fmt_p(math.nan) == "n/a"
