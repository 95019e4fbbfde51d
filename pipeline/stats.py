"""Paired statistics for the ablation report: pure functions of arrays of per-frame numbers.

A comparison is a vector of paired differences ``d`` (e.g. per test frame: MAD of a variant minus MAD of ``none``
on the same frame, each averaged over the seeds first). :func:`paired_summary` gives

* ``mean`` and ``median`` of ``d``, ``n`` pairs;
* ``p``: the two-sided Wilcoxon signed-rank test of ``d`` (``scipy.stats.wilcoxon``, its defaults: zero
  differences dropped, exact distribution for small samples without ties, normal approximation otherwise);
  NaN when every difference is zero (the test is undefined, and nothing differs);
* ``ci_lo, ci_hi``: a percentile bootstrap 95% confidence interval of the mean (``n_boot`` resamples of the pairs
  with replacement, drawn from ``numpy.random.default_rng(seed)``: the same numbers give the same interval);
* ``dz``: Cohen's d for paired samples, mean / standard deviation (ddof 1) of ``d``;
* ``rank_biserial``: the matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` over the non-zero
  differences (ranks of ``|d|``, ties averaged): +1 when every difference is positive, -1 when every one is
  negative.

:func:`interaction` pairs two such vectors by key (the same clip and frame on the defocused and the all-in-focus
tree) and returns the per-key differences of differences.
"""
from __future__ import annotations

import math
from typing import Hashable, Mapping

import numpy as np

N_BOOT = 2000
CI = 0.95


def bootstrap_ci(d: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = CI) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d``: ``n_boot`` resamples of ``len(d)`` indices drawn with
    ``default_rng(seed).integers(0, n, (n_boot, n))``."""
    d = np.asarray(d, float)
    if len(d) == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` (scipy's defaults); NaN when all differences are zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, float)
    if len(d) == 0 or not np.any(d != 0):
        return math.nan
    return float(wilcoxon(d).pvalue)


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of ``d`` (zeros dropped); NaN when nothing is left."""
    from scipy.stats import rankdata

    d = np.asarray(d, float)
    d = d[d != 0]
    if len(d) == 0:
        return math.nan
    r = rankdata(np.abs(d))
    plus, minus = r[d > 0].sum(), r[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def paired_summary(d, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Everything the report says about one vector of paired differences (see the module docstring)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    lo, hi = bootstrap_ci(d, n_boot, seed)
    return {"n": n, "mean": float(d.mean()) if n else math.nan, "median": float(np.median(d)) if n else math.nan,
            "p": wilcoxon_p(d), "ci_lo": lo, "ci_hi": hi,
            "dz": float(d.mean() / sd) if n > 1 and sd > 0 else math.nan, "rank_biserial": rank_biserial(d)}


def paired_differences(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """``a[k] - b[k]`` for every key in both (sorted by key): the pairing is by key, never by position."""
    return {k: float(a[k]) - float(b[k]) for k in sorted(set(a) & set(b), key=str)}


def interaction(defocused: Mapping[Hashable, float], sharp: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Difference of differences per key present in both trees: (variant - none on the defocused frame) minus
    (variant - none on the same clip and frame all in focus)."""
    return paired_differences(defocused, sharp)


def fmt_p(p: float) -> str:
    """A p-value for a table: 3 significant digits, scientific below 1e-3, 'n/a' when undefined."""
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"
