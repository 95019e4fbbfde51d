"""The solver keeps its promises under faults: flags checked before anything is written,
--resume continues the run's saved config, a resumed run's logs and checkpoints equal an uninterrupted
run's, one training per run name and one stage run per shard on a root."""
import csv
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.train_helpers import data  # noqa: F401  (the tiny frames fixture)
from tests.train_helpers import (REPO, read_ckpt, repo_on_pythonpath, run_and_kill_at, run_solver_cli,
                                 solver_main, tiny_solver_args)

from utils.locks import hold_lock, stage_lock

repo_on_pythonpath()
ENTRY = str(REPO / "pipeline" / "solver_refiner_maggie.py")
# ckpt_every (5) is not a multiple of log_every (4): a resume lands inside a log interval
WALL_CLOCK = ("samples_per_s",)  # the only columns a resumed run may differ in


_main = solver_main


def _args(root, runs, name, *extra):
    return tiny_solver_args(root, runs, name, *extra, steps=24, eval_every=6, log_every=4)


_run_cli = run_solver_cli


_ck = read_ckpt


def _rows(path):
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(open(path))]


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert _main()(_args(data, runs, "full")) == 0
    return runs / "full"


# ------------------------------------------------------------------------------------------ resume equals an uninterrupted run
def _assert_same_state(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def test_killed_and_resumed_run_equals_uninterrupted_logs_checkpoints_and_rng(data, tmp_path):
    # the reference: the same run (same --runs_dir and --name, which the checkpoint records) uninterrupted
    runs = tmp_path / "runs"
    assert _main()(_args(data, runs, "killed")) == 0
    full_run = tmp_path / "reference"
    (runs / "killed").rename(full_run)
    argv = [sys.executable, ENTRY, *_args(data, runs, "killed")]
    run_and_kill_at(argv, runs / "killed" / "last.json", 5)
    killed_at = _ck(runs / "killed" / "last.pt")["step"]
    assert 5 <= killed_at < 24
    # resumed with no flags but the run's name: the saved config supplies the rest
    subprocess.run([sys.executable, ENTRY, "--runs_dir", str(runs), "--name", "killed", "--resume"], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = runs / "killed"
    assert _rows(got / "train.csv") == _rows(full_run / "train.csv")
    assert _rows(got / "val.csv") == _rows(full_run / "val.csv")
    for name in ("last.pt", "best.pt"):
        a, b = _ck(full_run / name), _ck(got / name)
        _assert_same_state(a, b, name)  # every tensor, optimizer state, RNG state, log accumulators
        assert (got / name).read_bytes() == (full_run / name).read_bytes(), name  # and byte for byte


def test_checkpoint_rng_state_is_the_step_boundary_state(data, full_run, tmp_path):
    """A run stopped at step 10 by --steps cannot be compared (its schedule differs); but the RNG state a
    checkpoint saves must not depend on how the loader was started: it equals the state right after the model
    was built (nothing in a step draws from the global RNG)."""
    from model.refiner import build_refiner

    torch.manual_seed(0)
    build_refiner("light", base_channels=8)
    assert torch.equal(_ck(full_run / "last.pt")["rng"]["torch"], torch.get_rng_state())


# ------------------------------------------------------------------------------------------ --resume keeps the saved config
def test_resume_uses_the_saved_config_and_flags_override_it(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert _main()(_args(data, runs, "r", "--steps", "6", "--ckpt_every", "3", "--eval_every", "3")) == 0
    saved = (runs / "r" / "config.yaml").read_text()
    # only the name: no size-mismatch traceback, no silent defaults (base_channels 8, not 32)
    assert _main()(["--runs_dir", str(runs), "--name", "r", "--resume", "--steps", "9"]) == 0
    import yaml
    cfg = yaml.safe_load((runs / "r" / "config.yaml").read_text())
    assert cfg["model"]["base_channels"] == 8 and cfg["crop"] == 32 and cfg["steps"] == 9 and cfg["root"] == str(data)
    assert {k: v for k, v in yaml.safe_load(saved).items() if k != "steps"} == \
        {k: v for k, v in cfg.items() if k != "steps"}
    # a flag that changes the model's shape: one line, nothing overwritten
    before = (runs / "r" / "last.pt").read_bytes()
    capsys.readouterr()
    code, err = _run_cli(["--runs_dir", str(runs), "--name", "r", "--resume", "--base_channels", "16"], capsys)
    assert code == 1 and "base_channels=8" in err and len(err.strip().splitlines()) == 1, err
    assert (runs / "r" / "last.pt").read_bytes() == before


def test_a_run_saved_with_the_older_flat_config_resumes(data, tmp_path):
    """config.yaml of runs from before the model block (model: light, base_channels: 8, the thresholds as top-level
    keys) still resumes with the settings it was started with."""
    import yaml
    runs = tmp_path / "runs"
    assert _main()(_args(data, runs, "old", "--steps", "6", "--ckpt_every", "3", "--eval_every", "3",
                         "--gate_threshold", "0.6")) == 0
    path = runs / "old" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    block = cfg.pop("model")
    assert block["base_channels"] == 8 and block["gate_threshold"] == 0.6  # the older flag, into the block
    flat = {**cfg, "model": block["variant"], "base_channels": 8, "gate_threshold": 0.6, "flip_threshold": 0.95,
            "accurate_gate_threshold": 0.9, "guide": cfg.pop("guide_mode")}
    path.write_text(yaml.safe_dump({k: v for k, v in flat.items() if k != "guide_mode"}))
    assert _main()(["--runs_dir", str(runs), "--name", "old", "--resume", "--steps", "9"]) == 0
    now = yaml.safe_load(path.read_text())
    assert now["model"]["base_channels"] == 8 and now["model"]["gate_threshold"] == 0.6 and now["steps"] == 9


# ------------------------------------------------------------------------------------------ flags checked first
@pytest.mark.parametrize("flag,value,message", [
    ("--eval_every", "0", "--eval_every must be >= 1"),
    ("--ckpt_every", "0", "--ckpt_every must be >= 1"),
    ("--log_every", "0", "--log_every must be >= 1"),
    ("--batch_size", "0", "--batch_size must be in [1, 4096]"),
    ("--phases", "x", "--phases must be a list"),
    ("--phases", "[{until: x}]", "numeric 'until'"),
    ("--phases", "[{until: 1, weights: {nope: 1}}]", "weights: keys must be among"),
    ("--best_metric", "foo", "--best_metric must be one of"),
])
def test_bad_flags_fail_before_anything_is_written(data, tmp_path, capsys, flag, value, message):
    code, err = _run_cli(_args(data, tmp_path / "runs", "x", flag, value), capsys)
    assert code == 64 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs" / "x").exists()  # no config.yaml, no tb/


# ------------------------------------------------------------------------------------------ one run per name, one stage per shard
def test_second_training_of_the_same_name_stops(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    capsys.readouterr()
    with hold_lock(runs / ".dup.lock", "test"):  # what the first training holds while it runs
        code, err = _run_cli(_args(data, runs, "dup"), capsys)
    assert code == 1 and "already running" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "dup").exists()
    assert _main()(_args(data, runs, "dup", "--steps", "2", "--eval_every", "2")) == 0  # free again afterwards


def test_two_concurrent_trainings_of_one_name(data, tmp_path):
    """For real, two processes: one runs, the other stops with one line; the CSV rows are not doubled."""
    runs = tmp_path / "runs"
    argv = [sys.executable, ENTRY, *_args(data, runs, "two")]
    # a budget the first cannot finish while the second starts (a loaded machine takes seconds to import torch);
    # it is stopped with Ctrl-C once the second has been refused
    first = subprocess.Popen(argv + ["--steps", "100000"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (runs / "two" / "train.csv").exists():
        time.sleep(0.01)
    second = subprocess.run(argv + ["--overwrite"], cwd=REPO, capture_output=True, text=True)
    assert first.poll() is None, "the first training ended before the second started"
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130
    assert second.returncode == 1 and "already running" in second.stderr, second.stderr
    steps = [int(r["step"]) for r in csv.DictReader(open(runs / "two" / "train.csv"))]
    assert steps == sorted(set(steps))


def test_same_stage_and_shard_twice_on_one_root_stops(tmp_path):
    from tests.test_frame_extraction import make_clip

    root = tmp_path / "data"
    make_clip(root / "blurred" / "train" / "a", 2, h=16, w=16)
    env_cmd = [sys.executable, "preprocess/frame_extraction.py", "--root", str(root), "--no_video"]
    with stage_lock(root, "frames", "0/1"):
        r = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: frames (shard 0/1)")
        assert "already running" in r.stderr and "Traceback" not in r.stderr
        assert not (root / "frames").exists()
        r = subprocess.run(env_cmd + ["--shard", "1/2"], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr  # another shard runs alongside
    r = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_resume_of_a_run_saved_before_the_encoder_decoder_split(tmp_path):
    """A checkpoint from before the refiner's encoder/decoder split has flat keys and an optimiser state in the
    older parameter order (guide_gain first): it resumes with every moment at its own parameter."""
    import torch

    from model.refiner import build_refiner
    from pipeline.solver import _upgrade_optimizer_state

    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    named = model.trunk_named_parameters()  # what the solver optimises (not the fine stage)
    old = [p for n, p in named if n == "decoder.guide_gain"] + [p for n, p in named if n != "decoder.guide_gain"]
    opt = torch.optim.AdamW(old, lr=1e-3)
    sum(p.float().pow(2).sum() * (i + 1) for i, p in enumerate(old)).backward()  # a different gradient each
    opt.step()
    flat_state = {("guide_gain" if k == "decoder.guide_gain" else k.split(".", 1)[1]): v
                  for k, v in [("decoder.guide_gain", model.decoder.guide_gain.detach())]
                  + [(k, v) for k, v in model.state_dict().items()
                     if k != "decoder.guide_gain" and k.startswith(("encoder.", "decoder."))]}
    upgraded = _upgrade_optimizer_state(opt.state_dict(), flat_state, model)
    fresh = torch.optim.AdamW([p for _, p in named], lr=1e-3)
    fresh.load_state_dict(upgraded)
    for _, p in named:
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    current = fresh.state_dict()
    assert _upgrade_optimizer_state(current, model.state_dict(), model) is current
