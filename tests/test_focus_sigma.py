"""The true blur map of a frame (dof_blur.true_sigma) and the focus-map correlation in evaluate.py."""
import csv
import json

import numpy as np
import pytest
import torch

from model.checkpoint import save_refiner
from model.refiner import build_refiner
from pipeline import evaluate as E
from preprocess import compose_video_bg, depth, dof_blur, frame_extraction
from preprocess import make_demo_data as mdd
from preprocess.depth import ClipDepth
from tests.train_helpers import repo_on_pythonpath
from utils.images import read_image
from utils.paths import DataLayout, frame_name

repo_on_pythonpath()


@pytest.fixture(scope="module")
def blurred_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs") / "d"
    common = ["--root", str(root), "--split", "test"]
    mdd.main([*common, "--size", "96x64", "--frames", "3"])
    assert compose_video_bg.main(common) == 0
    assert depth.main(common) == 0
    # blur ranges for a 64-pixel-high frame, so the tiny clips get real defocus
    assert dof_blur.main([*common, "--ref_height", "64", "--coc_range", "4", "8", "--sigma_max_range", "3", "6"]) == 0
    assert frame_extraction.main(common) == 0
    assert frame_extraction.main([*common, "--source", "composed"]) == 0
    return root


def test_true_sigma_is_the_blur_stage_model(blurred_root):
    lay = DataLayout(blurred_root)
    meta = json.loads((lay.blurred("test", "clip_0000") / "meta.json").read_text())
    d = ClipDepth(lay.depth("test", "clip_0000"))
    t = 2
    sig = dof_blur.true_sigma(blurred_root, "test", "clip_0000", t)
    alpha = read_image(lay.blurred("test", "clip_0000") / "alpha" / frame_name(t), gray=True)
    f, c, m = meta["focus_disp"][t], meta["coc_scale"], meta["sigma_max"]
    ref = alpha * np.minimum(c * np.abs(d.fg(t) - f), m) + (1 - alpha) * np.minimum(c * np.abs(d.bg(t) - f), m)
    assert sig.shape == alpha.shape and np.allclose(sig, ref, atol=1e-5)
    assert 0 <= sig.min() and sig.max() <= m + 1e-6
    # focus on the subject: its core is much sharper than the background
    assert np.median(sig[alpha >= 1]) < 0.5 * np.median(sig[alpha <= 0])
    assert dof_blur.true_sigma(blurred_root, "test", "no_such_clip", 0) is None


def test_spearman_sign_and_undefined():
    s = np.linspace(0, 3, 100).reshape(10, 10)
    assert E.focus_sigma_spearman(-s, s) == pytest.approx(-1.0)
    assert np.isnan(E.focus_sigma_spearman(s, np.zeros_like(s)))  # an all-in-focus frame: undefined


@pytest.mark.parametrize("tree", ["frames", "frames_sharp"])
def test_evaluate_reports_focus_sigma_spearman(blurred_root, tmp_path, tree):
    torch.manual_seed(0)
    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    out = tmp_path / "ev"
    assert E.main(["--root", str(blurred_root), "--tree", tree, "--ckpt", str(tmp_path / "m.pt"), "--labels", "light",
                   "--baselines", "guide", "--out", str(out)]) == 0
    clips = list(csv.DictReader(open(out / "per_clip.csv")))
    light = [r for r in clips if r["method"] == "light"]
    assert len(light) == 3 and all(np.isfinite(float(r["focus_sigma_spearman"])) for r in light)
    assert all(r["focus_sigma_spearman"] == "" for r in clips if r["method"] == "guide")
    frames = list(csv.DictReader(open(out / "per_frame.csv")))
    assert len([r for r in frames if r["method"] == "light"]) == 9  # 3 clips x 3 frames
    # the clip value is the mean of its frames' values
    r0 = [float(r["focus_sigma_spearman"]) for r in frames if r["method"] == "light" and r["clip"] == "clip_0000"]
    assert float(light[0]["focus_sigma_spearman"]) == pytest.approx(np.mean(r0))
    summary = json.loads((out / "metrics.json").read_text())["methods"]["light"]
    assert np.isfinite(summary["focus_sigma_spearman"])
    assert "Focus map vs the true blur sigma" in (out / "table.md").read_text()
