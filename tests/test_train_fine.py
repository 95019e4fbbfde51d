"""pipeline/train_fine.py: the fine stage trains on top of a frozen refiner, resumes exactly, and its checkpoint is
a refiner checkpoint whose sparse path uses the trained stage."""
import pytest
import torch

from model.refiner import build_refiner, load_refiner, save_refiner
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
