"""The committed ablation reports (``results/ablation_*``) are reproduced from their own per-frame CSVs: every
paired test and interaction in ``stats.json`` recomputed here with csv, numpy and scipy alone (the seeds averaged
per frame, variant minus ``none`` paired by clip and frame; the interaction defocused minus all-in-focus per
frame): the same frame count, mean, median and Wilcoxon p. A hand-edited table or a CSV that no longer matches
its report fails."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

ROOT = Path(__file__).resolve().parents[1] / "results"
REPORTS = sorted(p.parent for p in ROOT.glob("ablation_*/stats.json"))


def eval_dir(report: Path, dataset: str, tree: str) -> Path:
    return report / (f"eval_{tree}" if dataset == "standard" else f"eval_{dataset}_{tree}")


def seed_means(path: Path, metric: str) -> dict[str, dict[tuple[str, str], float]]:
    """{method: {(clip, frame): mean over the method's runs}} over the frames every run of the method has."""
    per: dict = defaultdict(lambda: defaultdict(dict))
    with open(path) as fh:
        for r in csv.DictReader(fh):
            per[r["method"]][r["run"]][(r["clip"], r["frame"])] = float(r[metric])
    out = {}
    for method, runs in per.items():
        keys = set.intersection(*(set(v) for v in runs.values()))
        out[method] = {k: float(np.mean([runs[r][k] for r in runs])) for k in keys}
    return out


def differences(report: Path, dataset: str, tree: str, variant: str, metric: str) -> dict:
    means = seed_means(eval_dir(report, dataset, tree) / "per_frame.csv", metric)
    a, b = means[variant], means["none"]
    return {k: a[k] - b[k] for k in sorted(set(a) & set(b))}


def check(entry: dict, diffs: list[float]) -> None:
    d = np.asarray(diffs)
    assert entry["n"] == len(d)
    assert entry["mean"] == pytest.approx(d.mean(), abs=1e-9)
    assert entry["median"] == pytest.approx(np.median(d), abs=1e-9)
    if not np.any(d != 0):  # every frame the same: no test
        assert np.isnan(entry["p"])
        return
    assert entry["p"] == pytest.approx(float(wilcoxon(d).pvalue), rel=1e-6, abs=1e-12)  # scipy's defaults


@pytest.mark.skipif(not REPORTS, reason="no committed ablation report under results/")
@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_the_reports_statistics_are_reproduced_from_its_per_frame_csvs(report):
    stats = json.loads((report / "stats.json").read_text())
    assert stats["paired"], f"{report}/stats.json holds no paired test"
    for e in stats["paired"]:
        check(e, list(differences(report, e["set"], e["tree"], e["variant"], e["metric"]).values()))
    for e in stats["interaction"]:
        defocused = differences(report, e["set"], "frames", e["variant"], e["metric"])
        sharp = differences(report, e["set"], "frames_sharp", e["variant"], e["metric"])
        check(e, [defocused[k] - sharp[k] for k in sorted(set(defocused) & set(sharp))])
