"""The training solver: loss goes down, kill + --resume reaches the same weights, DDP (gloo) runs, bad input is one
clear line with nothing overwritten."""
import subprocess
import sys

import pytest
import torch

from tests.train_helpers import data  # noqa: F401  (the tiny frames fixture)
from tests.train_helpers import (REPO, make_tiny_frames, read_ckpt, repo_on_pythonpath, run_and_kill_at, run_solver_cli,
                                 solver_main, tiny_solver_args)

repo_on_pythonpath()
REFINER = "model.checkpoint"
ENTRY = str(REPO / "pipeline" / "solver_refiner_maggie.py")


_main = solver_main


def _args(root, runs, name, *extra):
    return tiny_solver_args(root, runs, name, *extra, steps=30, eval_every=10, log_every=5)


_run_cli = run_solver_cli


_weights = read_ckpt


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert _main()(_args(data, runs, "full", "--phases", "[]")) == 0
    return runs / "full"


def test_30_steps_lower_the_loss_and_write_the_run(full_run):
    import csv

    rows = list(csv.DictReader(open(full_run / "train.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    first = float(rows[0]["loss"])  # mean over steps 1-5
    last = sum(float(r["loss"]) for r in rows[-3:]) / 3  # mean over steps 16-30
    assert last < 0.9 * first, (first, last)
    val = list(csv.DictReader(open(full_run / "val.csv")))
    assert [int(r["step"]) for r in val] == [10, 20, 30] and "mad_unknown" in val[0]
    ck = _weights(full_run / "last.pt")  # weights_only-loadable, contract keys
    assert ck["format"] == "defocused_segmentation/refiner" and ck["variant"] == "light" and ck["step"] == 30
    for key in ("model", "config", "optimizer", "scheduler", "scaler", "rng", "train_config"):
        assert key in ck, key
    assert (full_run / "best.pt").is_file() and (full_run / "config.yaml").is_file()
    assert any((full_run / "tb").iterdir())
    import yaml
    assert yaml.safe_load((full_run / "config.yaml").read_text())["batch_size"] == 4


def test_refiner_loader_reads_solver_checkpoint(full_run):
    import importlib
    api = importlib.import_module(REFINER)
    model, ck = api.load_refiner(full_run / "last.pt")
    assert ck["step"] == 30 and model.config.variant == "light"


def test_kill_then_resume_gives_identical_weights(data, full_run, tmp_path):
    argv = [sys.executable, ENTRY, *_args(data, tmp_path, "killed", "--phases", "[]")]
    run_and_kill_at(argv, tmp_path / "killed" / "last.json", 15)
    killed_at = _weights(tmp_path / "killed" / "last.pt")["step"]
    assert 15 <= killed_at < 30
    subprocess.run(argv + ["--resume"], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = _weights(full_run / "last.pt"), _weights(tmp_path / "killed" / "last.pt")
    assert b["step"] == 30
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    rows = (tmp_path / "killed" / "train.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [5, 10, 15, 20, 25, 30]  # each step logged once


def test_two_process_gloo_run_matches_one_process(data, tmp_path):
    # whigh is normalised by its batch's weight sum (not a per-sample mean), so it is left out here
    common = ["--steps", "4", "--phases", "[]", "--w_whigh", "0", "--eval_every", "4", "--ckpt_every", "4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ENTRY,
           *_args(data, tmp_path, "ddp", *common, "--batch_size", "2")]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = _weights(tmp_path / "ddp" / "last.pt")
    assert ddp["step"] == 4
    # world 2 x batch 2 draws the same samples as world 1 x batch 4: same weights (the refiner normalises with
    # GroupNorm, which does not depend on the batch)
    assert _main()(_args(data, tmp_path, "single", *common, "--batch_size", "4")) == 0
    single = _weights(tmp_path / "single" / "last.pt")
    assert not any("running_mean" in k for k in single["model"])
    for k in single["model"]:
        torch.testing.assert_close(ddp["model"][k], single["model"][k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_schedule_and_phases():
    from pipeline.solver import TrainConfig, lr_at, phase_at

    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine half way
    import yaml
    from pipeline.train_config import CONFIG_DIR

    v1 = TrainConfig(steps=100, **{k: v for k, v in yaml.safe_load((CONFIG_DIR / "maggie_v0001.yaml").read_text()).items()
                                   if k not in ("name", "model")})
    name, w = phase_at(v1, 0)
    assert name == "coarse_warmup" and w.stride_weights == {8: 1.0, 4: 0.0, 1: 0.0, "final": 1.0} and w.whigh == 0
    assert phase_at(v1, 99)[0] == "fine_detail" and phase_at(v1, 99)[1].grad == pytest.approx(2 * v1.w_grad)
    new = TrainConfig(steps=100, **{k: v for k, v in yaml.safe_load((CONFIG_DIR / "maggie.yaml").read_text()).items()
                                    if k not in ("name", "model")})
    assert phase_at(new, 10)[1].whigh == 0 and phase_at(new, 60)[1].whigh > 0  # structure first, then detail


def test_v0001_entry_runs_its_curriculum(data, tmp_path):
    import csv

    from pipeline.solver_refiner_maggie_v0001 import main

    assert main(_args(data, tmp_path, "v1", "--steps", "10", "--eval_every", "10", "--log_every", "1")) == 0
    phases = [r["phase"] for r in csv.DictReader(open(tmp_path / "v1" / "train.csv"))]
    # step i runs at fraction i/10 of training: until 0.15, 0.45, 0.7, 1.0
    assert phases == ["coarse_warmup"] * 2 + ["structure"] * 3 + ["transition"] * 2 + ["fine_detail"] * 3


def test_config_file_and_unknown_key(data, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("batch_size: 2\nbogus: 1\n")
    code, err = _run_cli(_args(data, tmp_path / "runs", "x", "--config", str(tmp_path / "c.yaml")), capsys)
    assert code == 1 and "unknown config key(s) bogus" in err


# ------------------------------------------------------------------------------------------ bad input
def test_split_with_no_frames(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code, err = _run_cli(_args(tmp_path / "data", tmp_path / "runs", "x"), capsys)
    assert code == 1 and err.strip().startswith("error: no clips in") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_frame_without_alpha(tmp_path, capsys):
    root = make_tiny_frames(tmp_path / "d", clips=("a", "b"), n_frames=2)
    (root / "frames/train/alpha/b/frames/0001.png").unlink()
    code, err = _run_cli(_args(root, tmp_path / "runs", "x"), capsys)
    assert code == 1 and "has no alpha" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_non_numeric_override(data, tmp_path, capsys):
    code, err = _run_cli(_args(data, tmp_path / "runs", "x", "--batch_size", "eight"), capsys)
    assert code == 64 and err.strip() == "error: --batch_size expects int, got 'eight'"
    code, err = _run_cli(_args(data, tmp_path / "runs", "x", "--lr", "nan"), capsys)
    assert code == 64 and err.strip() == "error: --lr must be a finite number, got nan"
    assert not (tmp_path / "runs").exists()


def test_resume_with_another_variant_and_existing_run(data, full_run, capsys):
    before = (full_run / "last.pt").read_bytes()
    runs = str(full_run.parent)
    code, err = _run_cli(_args(data, runs, "full", "--resume", "--model", "heavy_db2"), capsys)
    assert code == 1 and "'light' checkpoint but --model is 'heavy_db2'" in err and len(err.strip().splitlines()) == 1
    code, err = _run_cli(_args(data, runs, "full"), capsys)  # no --resume, no --overwrite
    assert code == 1 and "already has a run" in err
    assert (full_run / "last.pt").read_bytes() == before


def test_resume_with_a_smaller_budget_is_refused_and_changes_nothing(data, full_run, capsys):
    """A finished 30-step run resumed with --steps 10 would exit 0 saying "finished 30 steps" and rewrite its
    config.yaml to 10: refused in one line, nothing rewritten; a killed write's temporary is removed on start."""
    before = {p: p.read_bytes() for p in (full_run / "last.pt", full_run / "config.yaml", full_run / "train.csv")}
    code, err = _run_cli(_args(data, full_run.parent, "full", "--resume", "--steps", "10"), capsys)
    assert code == 1 and "has trained 30 steps, more than --steps 10" in err and len(err.strip().splitlines()) == 1
    assert all(p.read_bytes() == b for p, b in before.items())
    (full_run / ".last.tmp-dead.pt").write_bytes(b"half a checkpoint")
    assert _main()(_args(data, full_run.parent, "full", "--resume", "--phases", "[]")) == 0  # 30 of 30: no step
    assert not list(full_run.glob(".*.tmp-*"))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(data, tmp_path, capsys, monkeypatch):
    assert _main()(_args(data, tmp_path, "nan", "--steps", "5", "--eval_every", "100")) == 0
    before = (tmp_path / "nan" / "last.pt").read_bytes()
    import pipeline.solver as S

    def diverged(*args, **kwargs):  # a weight that overflows is refused by the flags' ranges: diverge from inside
        loss, parts = losses_of(*args, **kwargs)
        return loss * float("inf"), parts

    losses_of = S.matting_losses
    monkeypatch.setattr(S, "matting_losses", diverged)
    code, err = _run_cli(_args(data, tmp_path, "nan", "--steps", "10", "--resume"), capsys)
    assert code == 1 and "non-finite loss at step 5" in err and "last.pt" in err
    assert (tmp_path / "nan" / "last.pt").read_bytes() == before
    code, err = _run_cli(_args(data, tmp_path, "nan2", "--w_lap", "1e39"), capsys)
    assert code == 64 and "--w_lap must be in [0, 10000]" in err and not (tmp_path / "nan2").exists()


def test_guide_mode_has_the_older_name_as_an_alias(tmp_path):
    """--guide_mode is the name (one vocabulary with evaluate); --guide, and the key `guide` in a config.yaml of
    an older run, still mean it."""
    from pipeline.train_config import build_parser, resolve_config

    for flag in ("--guide_mode", "--guide"):
        assert resolve_config(build_parser().parse_args([flag, "mixed"])).guide_mode == "mixed"
    (tmp_path / "old.yaml").write_text("guide: files\n")
    assert resolve_config(build_parser().parse_args(["--config", str(tmp_path / "old.yaml")])).guide_mode == "files"


def test_train_takes_a_config_and_returns_its_run(tmp_path):
    """train(cfg) is the API (ablation.py calls it; main(argv) only parses): it returns where the run went."""
    from pipeline.solver import TrainConfig, train

    root = make_tiny_frames(tmp_path / "d")
    from model.config import RefinerConfig

    cfg = TrainConfig(root=str(root), runs_dir=str(tmp_path / "runs"), name="api", steps=2, batch_size=2, crop=32,
                      model=RefinerConfig("light", 8), num_workers=0, val_fraction=0.34, eval_every=2, ckpt_every=2, log_every=1,
                      warmup_steps=0, val_max_frames=2)
    result = train(cfg)
    assert result.steps == 2 and result.last == tmp_path / "runs" / "api" / "last.pt" and result.last.is_file()
    assert result.best.is_file() and result.best_value < float("inf")
    assert train(cfg, resume=True).steps == 2  # nothing left to do: the same run, resumed
