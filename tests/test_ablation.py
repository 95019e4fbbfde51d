"""ablation.py: every (tree, variant, seed) trained with one budget, scored, tabulated; reruns reuse runs."""
import pytest

from pipeline import ablation
from tests.train_helpers import make_tiny_frames, repo_on_pythonpath
from utils.cli import run_main

repo_on_pythonpath()


def test_tiny_ablation_table_plot_and_rerun(tmp_path, caplog):
    root = tmp_path / "data"
    for tree in ("frames", "frames_sharp"):
        make_tiny_frames(root, "train", clips=("a", "b"), n_frames=2, size=(32, 40), tree=tree)
        make_tiny_frames(root, "test", clips=("t",), n_frames=2, size=(32, 40), tree=tree, seed=1)
    argv = ["--root", str(root), "--out", str(tmp_path / "abl"), "--tiny", "--steps", "4", "--crop", "32",
            "--baselines", "guide", "--", "--threads", "1"]
    assert ablation.main(argv) == 0
    text = (tmp_path / "abl" / "RESULTS.md").read_text()
    for part in ("### frames (defocused)", "### frames_sharp (all-in-focus control)", "| none |", "| light |",
                 "| guide |", "DWT effect", "MAD unk. (x1e3)", "steps 4,", "seeds [0]"):
        assert part in text, part
    assert (tmp_path / "abl" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    for tree in ("frames", "frames_sharp"):
        for v in ("none", "light"):
            assert (tmp_path / "abl" / "runs" / f"{tree}_{v}_s0" / "last.pt").is_file()
    caplog.clear()
    with caplog.at_level("INFO"):  # a rerun reuses the finished runs
        assert ablation.main(argv) == 0
    assert "finished earlier" in caplog.text


def test_missing_control_tree_is_one_line(tmp_path, capsys):
    root = make_tiny_frames(tmp_path / "data", "train", clips=("a", "b"))
    with pytest.raises(SystemExit):
        run_main(ablation.main, ["--root", str(root), "--out", str(tmp_path / "abl"), "--tiny"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no clips in") and "\n" not in err and not (tmp_path / "abl").exists()
