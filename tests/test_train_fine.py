"""pipeline/train_fine.py: the fine stage trains on top of a frozen refiner, resumes exactly, and its checkpoint is
a refiner checkpoint whose sparse path uses the trained stage."""
import pytest
import torch

from model.checkpoint import load_refiner, save_refiner
from model.refiner import build_refiner
from pipeline import train_fine
from tests.train_helpers import make_tiny_frames
from utils.cli import UserError


@pytest.fixture()
def setup(tmp_path):
    root = make_tiny_frames(tmp_path / "data", size=(96, 128), layers=("image", "alpha"))
    torch.manual_seed(0)
    save_refiner(tmp_path / "trunk.pt", build_refiner("light", base_channels=8))
    return tmp_path


def _cfg(tmp_path, **kw):
    base = dict(ckpt=str(tmp_path / "trunk.pt"), root=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"),
                steps=4, batch_size=2, crop=64, fine_crop=32, factors=(2, 4), warmup_steps=1, log_every=1,
                ckpt_every=2)
    return train_fine.FineConfig(**{**base, **kw})


def test_trains_only_the_fine_stage_and_writes_a_refiner_checkpoint(setup):
    path = train_fine.train(_cfg(setup))
    trunk, _ = load_refiner(setup / "trunk.pt")
    model, ckpt = load_refiner(path)
    assert model.fine_trained and int(model.fine_steps) == 4 and ckpt["fine_config"]["steps"] == 4
    before, after = trunk.state_dict(), model.state_dict()
    for key in before:
        if key.startswith("fine"):
            continue
        assert torch.equal(before[key], after[key]), key  # the trunk is frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("fine.net.4"))
    rows = (setup / "runs" / "fine" / "train.csv").read_text().splitlines()
    assert rows[0] == "step,l1,lap,out,gate" and len(rows) == 5


def test_resume_ends_with_the_same_weights(setup):
    straight = load_refiner(train_fine.train(_cfg(setup, name="a")))[0]
    train_fine.train(_cfg(setup, name="b", steps=2))
    resumed = load_refiner(train_fine.train(_cfg(setup, name="b"), resume=True))[0]
    for (k, v), (_, w) in zip(straight.fine.state_dict().items(), resumed.fine.state_dict().items()):
        assert torch.equal(v, w), k
    rows = (setup / "runs" / "b" / "train.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_bad_inputs_are_one_line(setup, tmp_path):
    with pytest.raises(UserError, match="fine_crop"):
        train_fine.train(_cfg(setup, fine_crop=40))
    with pytest.raises(UserError, match="no frames"):
        train_fine.train(_cfg(setup, root=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="checkpoint not found"):
        train_fine.parse(["--ckpt", str(tmp_path / "missing.pt")])


# ---------------------------------------------------------------------------------------------- run folder
def test_a_finished_run_is_refused_without_resume_or_overwrite(setup):
    """Rerunning a finished run's command (no --resume) must not cut its last.pt and train.csv back."""
    train_fine.train(_cfg(setup, name="f"))
    run = setup / "runs" / "f"
    before = {p: p.read_bytes() for p in (run / "last.pt", run / "fine.pt", run / "train.csv")}
    with pytest.raises(UserError, match="already has a run: pass --resume"):
        train_fine.train(_cfg(setup, name="f"))
    assert all(p.read_bytes() == b for p, b in before.items())
    (run / ".last.tmp-x1.pt").write_bytes(b"half")  # a temporary a killed write left
    train_fine.train(_cfg(setup, name="f", steps=2), overwrite=True)
    rows = (run / "train.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"] and not list(run.glob(".*.tmp-*"))


def test_resume_refuses_another_refiner_a_smaller_budget_and_a_broken_last_pt(setup):
    train_fine.train(_cfg(setup, name="r", steps=2))
    torch.manual_seed(1)
    save_refiner(setup / "other.pt", build_refiner("light", base_channels=8))
    with pytest.raises(UserError, match="another refiner"):
        train_fine.train(_cfg(setup, name="r", ckpt=str(setup / "other.pt")), resume=True)
    with pytest.raises(UserError, match="has trained 2 steps, more than --steps 1"):
        train_fine.train(_cfg(setup, name="r", steps=1), resume=True)
    last = setup / "runs" / "r" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(UserError, match="not a loadable fine-stage checkpoint"):
        train_fine.train(_cfg(setup, name="r"), resume=True)


def test_second_training_of_the_same_name_stops(setup):
    from utils.locks import hold_lock

    with hold_lock(setup / "runs" / ".busy.lock", "x"):
        with pytest.raises(UserError, match="already running"):
            train_fine.train(_cfg(setup, name="busy"))
    assert not (setup / "runs" / "busy").exists()


def test_non_finite_loss_stops_and_a_diverged_checkpoint_never_loads(setup, monkeypatch):
    real = train_fine.fine_loss
    calls = {"n": 0}

    def diverging(batch, *args):
        calls["n"] += 1
        loss, terms = real(batch, *args)
        if calls["n"] == 3:  # the third step's loss
            terms["l1"] = float("nan")
        return loss, terms

    monkeypatch.setattr(train_fine, "fine_loss", diverging)
    with pytest.raises(UserError, match=r"non-finite l1 at step 2; stopped, last good checkpoint: .*last.pt"):
        train_fine.train(_cfg(setup, name="nan"))
    run = setup / "runs" / "nan"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2 and not (run / "fine.pt").exists()
    model = build_refiner("light", base_channels=8)
    with torch.no_grad():
        model.fine.net[0].weight.fill_(float("nan"))
    save_refiner(setup / "nan.pt", model)
    with pytest.raises(UserError, match="non-finite weights"):
        load_refiner(setup / "nan.pt")


@pytest.mark.parametrize("flag,value", [("--batch_size", "0"), ("--factors", "0"), ("--log_every", "0"),
                                        ("--threads", "0"), ("--fine_crop", "0"), ("--lr", "nan"),
                                        ("--lr", "1e30"), ("--steps", "-1"), ("--accurate_prob", "2")])
def test_bad_values_are_usage_errors_before_anything_is_written(setup, capsys, flag, value):
    from utils.cli import run_main

    argv = ["--ckpt", str(setup / "trunk.pt"), "--root", str(setup / "data"), "--runs_dir", str(setup / "runs"),
            flag, value]
    with pytest.raises(SystemExit) as exc:
        run_main(train_fine.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 64 and len(err) == 1 and err[0].startswith("error: --"), err
    assert not (setup / "runs").exists()


def test_help_names_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train_fine.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--fine_crop" in out and "(default: 192)" in out and "--overwrite" in out
