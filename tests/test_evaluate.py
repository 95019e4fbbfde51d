"""evaluate.py: checkpoints + baselines on a split, saved-prediction folders, the figure, bad input."""
import json

import numpy as np
import pytest
import torch

from model.checkpoint import save_refiner
from model.refiner import build_refiner
from pipeline import evaluate as E
from pipeline import metrics as M
from tests.train_helpers import make_tiny_frames, repo_on_pythonpath
from utils.cli import run_main
from utils.images import read_image

repo_on_pythonpath()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    root = make_tiny_frames(tmp / "data", split="test", clips=("t0", "t1"), n_frames=3, size=(40, 48))
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_refiner("light", base_channels=8)
        save_refiner(tmp / f"s{seed}.pt", model)
        ckpts.append(str(tmp / f"s{seed}.pt"))
    out = tmp / "out"
    assert E.main(["--root", str(root), "--ckpt", *ckpts, "--labels", "light", "light", "--out", str(out),
                   "--save_pred"]) == 0
    return root, ckpts, out


def test_table_metrics_and_figure(setup):
    root, _, out = setup
    table = (out / "table.md").read_text()
    for name in ("| guide | 1 |", "| closed_form | 1 |", "| shared | 1 |", "| light | 2 |", "MAD (x1e3)", "SAD unk. (/1e3)", "±"):
        assert name in table, name
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["methods"]) == {"guide", "closed_form", "shared", "light"}
    assert "mad_std" in data["methods"]["light"] and data["scales"]["mad"] == "x1e3"
    png = (out / "figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and read_image(out / "figure.png").shape[2] == 3
    rows = (out / "per_clip.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5  # 2 clips x (guide, closed_form, shared, 2 runs)
    # both classical baselines beat the binary guide on soft edges
    for method in ("closed_form", "shared"):
        assert data["methods"][method]["mad"] < data["methods"]["guide"]["mad"], method


def test_guide_baseline_value_is_independent_recomputation(setup):
    root, _, out = setup
    maddiffs = []
    for clip in ("t0", "t1"):
        for f in range(3):
            g = read_image(root / f"frames/test/alpha/{clip}/frames/{f:04d}.png", gray=True)
            m = (read_image(root / f"frames/test/mask/{clip}/frames/{f:04d}.png", gray=True) > 0.5).astype(np.float32)
            maddiffs.append(np.abs(m - g).mean() * 1000)
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"]["guide"]["mad"] == pytest.approx(np.mean(maddiffs), rel=1e-6)


def test_pred_dir_mode_matches_checkpoint_mode(setup, tmp_path):
    root, _, out = setup
    out2 = tmp_path / "b"
    assert E.main(["--pred_dir", str(out / "pred" / "closed_form"), "--gt_dir", str(root / "frames/test/alpha"),
                   "--out", str(out2), "--name", "cf"]) == 0
    a = json.loads((out / "metrics.json").read_text())["methods"]["closed_form"]
    b = json.loads((out2 / "metrics.json").read_text())["methods"]["cf"]
    for k in ("mad", "mse", "sad", "mad_unknown", "dtssd"):
        assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), k  # 16-bit PNG round trip of the predictions
    assert (out2 / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_mask_grows_band():
    g = np.zeros((100, 100))
    g[:, 50] = 0.5
    u = E.unknown_mask(g)
    assert u[:, 49:52].all() and not u[:, 47].any()
    assert M.unknown_region(g).sum() == 100


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(E.main, argv)
    return exc.value.code, capsys.readouterr().err.strip()


def test_bad_input(setup, tmp_path, capsys):
    root, ckpts, out = setup
    (tmp_path / "empty").mkdir()
    code, err = _cli(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.startswith("error: no frames in") and "\n" not in err
    pred = tmp_path / "pred"
    (pred / "t0").mkdir(parents=True)
    code, err = _cli(["--pred_dir", str(pred), "--gt_dir", str(root / "frames/test/alpha"),
                      "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.startswith("error: no prediction for t0/0000.png") and "\n" not in err
    code, err = _cli(["--root", str(root), "--ckpt", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "nope.pt" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_new_evaluation_replaces_the_folder_whole(setup, tmp_path):
    """--pred_dir scoring into a folder a checkpoint evaluation used keeps none of its per_frame.csv or pred/; a
    folder holding anything else is refused, untouched."""
    root, ckpts, _ = setup
    out = tmp_path / "o"
    assert E.main(["--root", str(root), "--ckpt", ckpts[0], "--out", str(out), "--save_pred"]) == 0
    assert (out / "per_frame.csv").is_file() and (out / "pred").is_dir()
    assert E.main(["--pred_dir", str(out / "pred" / "guide"), "--gt_dir", str(root / "frames/test/alpha"),
                   "--out", str(out), "--name", "g"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "metrics.json", "per_clip.csv", "table.md"]
    assert list(json.loads((out / "metrics.json").read_text())["methods"]) == ["g"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(E.UserError, match="not an evaluation's \\(notes.txt\\)"):
        E.main(["--root", str(root), "--baselines", "guide", "--out", str(out)])
    assert (out / "notes.txt").read_text() == "mine" and (out / "per_clip.csv").is_file()


def test_bad_values_and_a_prediction_of_another_size(setup, tmp_path, capsys):
    root, _, out = setup
    for flag, value in (("--max_frames", "-1"), ("--eval_long_side", "-5")):
        code, err = _cli(["--root", str(root), flag, value, "--out", str(tmp_path / "o")], capsys)
        assert code == 64 and f"{flag}" in err and "must be >= 0" in err, err
    pred = tmp_path / "pred"
    for clip in ("t0", "t1"):
        (pred / clip).mkdir(parents=True)
        for name in ("0000.png", "0001.png", "0002.png"):
            (pred / clip / name).write_bytes((root / "frames/test/alpha" / clip / "frames" / name).read_bytes())
    import cv2
    cv2.imwrite(str(pred / "t1" / "0001.png"), np.zeros((41, 49), np.uint8))
    code, err = _cli(["--pred_dir", str(pred), "--gt_dir", str(root / "frames/test/alpha"),
                      "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "t1/0001.png is 49x41 but its ground truth" in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()
