"""model.config, model.checkpoint, model.predictor and pipeline.run_folder: one home for each thing."""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_refiner, read_training_state, save_refiner, save_training_state
from model.config import VARIANTS, RefinerConfig
from model.predictor import Predictor
from model.refiner import build_refiner
from model.sparse import refine_sparse
from pipeline.run_folder import RunFolder, append_csv
from utils.cli import UserError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "fixtures"


# ---------------------------------------------------------------------------------------------- RefinerConfig
def test_config_round_trips_and_is_frozen():
    cfg = RefinerConfig("heavy_db2", 16, window=4, uncertain_radius=[3, 2], gate_threshold=0.5)
    assert cfg.uncertain_radius == (3, 2)  # a checkpoint's JSON list becomes the canonical tuple
    d = cfg.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(RefinerConfig)] and d["uncertain_radius"] == [3, 2]
    assert RefinerConfig.from_dict(d) == cfg
    assert cfg.replace(window=8).window == 8 and cfg.window == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.window = 2
    assert cfg.wavelet == "db2" and RefinerConfig("light").wavelet == "haar" and RefinerConfig("none").wavelet == "none"
    assert RefinerConfig(base_channels=16).widths == (4, 8, 16, 64, 128)
    assert RefinerConfig(window=8).pad_multiple == 64 and RefinerConfig(window=1).pad_multiple == 16


@pytest.mark.parametrize("changes, key", [
    ({"variant": "heavy_db3"}, "variant"), ({"base_channels": 6}, "base_channels"),
    ({"base_channels": 0}, "base_channels"), ({"base_channels": 8.0}, "base_channels"),
    ({"window": 0}, "window"), ({"window": True}, "window"), ({"uncertain_radius": (1,)}, "uncertain_radius"),
    ({"uncertain_radius": (1, -1)}, "uncertain_radius"), ({"focus_tau": 0.0}, "focus_tau"),
    ({"focus_tau": float("nan")}, "focus_tau"), ({"gate_threshold": 0.99}, "flip_threshold"),
    ({"flip_threshold": 1.0}, "flip_threshold"), ({"gate_threshold": float("nan")}, "gate_threshold"),
    ({"accurate_gate_threshold": -0.1}, "accurate_gate_threshold"), ({"trust_threshold": 0.0}, "trust_threshold"),
    ({"trust_threshold": float("inf")}, "trust_threshold"),
])
def test_config_refuses_every_value_that_would_fail_later(changes, key):
    with pytest.raises(ValueError, match=key) as info:
        RefinerConfig(**changes)
    assert "\n" not in str(info.value)


def test_config_from_dict_refuses_unknown_keys_and_takes_defaults_for_missing_ones():
    with pytest.raises(ValueError, match="unknown refiner config key"):
        RefinerConfig.from_dict({"variant": "light", "pretrained": "x.pt"})
    assert RefinerConfig.from_dict({"variant": "none"}) == RefinerConfig("none")
    assert VARIANTS[0] == "none"  # the ablation's baseline first, the order of its report


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_written_before_the_split_loads_to_the_same_outputs():
    """tests/fixtures holds a checkpoint written by the code of commit 850ee8f (one model/refiner.py) and the alpha
    that code gave; today's loader must rebuild the same model and give the same alpha, for both rules. Bit for
    bit on the CPU that wrote it (an AMD EPYC); another CPU's kernels round differently (an Intel Xeon: 2e-9), so
    the check is to 1e-6, far below what a wrong or missing weight moves (the gate's thresholds are hard)."""
    model, ckpt = load_refiner(DATA / "refiner_light_b8_850ee8f.pt")
    assert ckpt["step"] == 7 and model.config == RefinerConfig("light", 8)
    expected = np.load(DATA / "refiner_light_b8_850ee8f_alpha.npz")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 48, 56, generator=g)
    guide = torch.zeros(1, 1, 48, 56)
    guide[..., 10:38, 14:40] = 1
    with torch.no_grad():
        for name, accurate in (("coarse", False), ("accurate", True)):
            alpha = model(image, guide, guide_accurate=accurate).alpha[0, 0].numpy()
            np.testing.assert_allclose(alpha, expected[name], rtol=0, atol=1e-6, err_msg=name)
            assert (alpha != guide[0, 0].numpy()).any()  # the fixture's gate is open: the test can see a change


def test_checkpoint_bytes_depend_only_on_values(tmp_path):
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    save_refiner(tmp_path / "a.pt", model, step=3)
    save_refiner(tmp_path / "b.pt", model, step=3)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_training_state_round_trip_and_one_line_errors(tmp_path):
    path = tmp_path / "last.pt"
    save_training_state(path, {"fine": {"w": torch.ones(2)}, "optimizer": {}, "step": 5})
    state = read_training_state(path, ("fine", "optimizer", "step"), "fine-stage checkpoint", "use --overwrite")
    assert state["step"] == 5 and torch.equal(state["fine"]["w"], torch.ones(2))
    save_training_state(path, {"fine": {}, "step": 5})
    with pytest.raises(UserError, match=r"not a loadable fine-stage checkpoint: .* \(no optimizer\); use --overw"):
        read_training_state(path, ("fine", "optimizer", "step"), "fine-stage checkpoint", "use --overwrite")
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a loadable fine-stage checkpoint") as info:
        read_training_state(path, ("fine",), "fine-stage checkpoint", "use --overwrite")
    assert "\n" not in str(info.value)


def test_one_torch_load_for_this_project_s_checkpoints():
    """Only model/checkpoint.py reads refiner and training checkpoints; the other calls read foreign weights
    (MatAnyone's, Video-Depth-Anything's)."""
    calls = {str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
             if ".venv" not in p.parts and "tests" not in p.parts and re.search(r"torch\.load\(", p.read_text())}
    assert calls == {"model/checkpoint.py", "get_default_model.py", "preprocess/depth.py"}, calls


# ---------------------------------------------------------------------------------------------- the predictor
def _frame(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g)
    guide = torch.zeros(1, 1, h, w)
    guide[..., h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1
    return image, guide


def test_predictor_decides_dense_or_sparse_once():
    model = build_refiner("light", base_channels=8)
    assert Predictor(model).ratio_for(480, 640) == 1.0  # below 768 px: dense
    assert Predictor(model).ratio_for(1080, 1920) == 0.25
    assert Predictor(model, dense=True).ratio_for(1080, 1920) == 1.0
    assert Predictor(model, downsample_ratio=0.5).ratio_for(100, 100) == 0.5
    with pytest.raises(ValueError, match="guide_quality"):
        Predictor(model, guide_quality="good")
    with pytest.raises(ValueError, match="downsample_ratio"):
        Predictor(model, downsample_ratio=0.0)


def test_predictor_gives_what_the_paths_it_chooses_give():
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8).eval()
    with torch.no_grad():
        model.decoder.head_gate[-1].bias.fill_(3.0)  # open: the outputs differ from the guide
    image, guide = _frame(40, 56)
    with torch.no_grad():
        for quality, accurate in (("auto", None), ("accurate", True), ("coarse", False)):
            # the ring's local samples, the image's call and the coarse band (tested in test_evidence) off: the
            # paths themselves compared
            p = Predictor(model, guide_quality=quality, ring_samples=False, guide_check=False,
                          coarse_band=False)(image, guide)
            assert p.ratio == 1.0 and p.dense is not None
            assert torch.equal(p.alpha, model(image, guide, guide_accurate=accurate).alpha)
        p = Predictor(model, downsample_ratio=0.5, ring_samples=False, guide_check=False, coarse_band=False)(image,
                                                                                                           guide)
        assert p.ratio == 0.5 and p.dense is None
        assert torch.equal(p.alpha, refine_sparse(model, image, guide, 0.5).alpha)
    alpha = Predictor(model, ring_samples=False, guide_check=False, coarse_band=False).alpha(
        image[0].permute(1, 2, 0).numpy(), guide[0, 0].numpy())
    assert alpha.shape == (40, 56) and alpha.dtype == np.float32
    assert np.array_equal(alpha, model(image, guide).alpha[0, 0].detach().numpy())


# ---------------------------------------------------------------------------------------------- run folder
def test_run_folder_refuses_an_existing_run_and_cleans_on_a_fresh_start(tmp_path):
    folder = RunFolder(tmp_path, "r", "a training run", checkpoints=("last.pt",), outputs=("best.pt",),
                       logs=("train.csv",))
    folder.check_start(resume=False, overwrite=False)  # nothing there yet
    run = folder.open(fresh=True, step=0)
    for step in (10, 20, 30):
        append_csv(run / "train.csv", {"step": step, "loss": 1.0 / step})
    (run / ".last.tmp-abc.pt").write_bytes(b"cut short")
    folder.open(fresh=False, step=20)  # a resume from step 20: later rows go, the temporary too
    assert [line.split(",")[0] for line in (run / "train.csv").read_text().split()] == ["step", "10", "20"]
    assert not (run / ".last.tmp-abc.pt").exists()
    (run / "last.pt").write_bytes(b"x")
    (run / "best.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="already has a run: pass --resume .* or --overwrite"):
        folder.check_start(resume=False, overwrite=False)
    folder.check_start(resume=True, overwrite=False)
    folder.check_start(resume=False, overwrite=True)
    folder.open(fresh=True, step=0)
    assert sorted(p.name for p in run.iterdir()) == []


def test_run_folder_lock_is_one_per_name(tmp_path):
    folder = RunFolder(tmp_path, "r", "a training run", checkpoints=("last.pt",))
    with folder.lock():
        with pytest.raises(UserError, match="already running"):
            with RunFolder(tmp_path, "r", "a training run", checkpoints=("last.pt",)).lock():
                pass
        with RunFolder(tmp_path, "other", "a training run", checkpoints=("last.pt",)).lock():
            pass


def test_mask_boundary_distance_is_one_beside_the_boundary_and_the_same_from_either_side():
    from model.masks import boundary_distance

    rng = np.random.default_rng(4)
    mask = np.zeros((40, 50), np.uint8)
    mask[8:30, 10:41] = 1
    mask[rng.random(mask.shape) < 0.02] ^= 1  # specks on both sides
    dist = boundary_distance(mask)
    padded = np.pad(mask, 1, mode="edge")
    beside = np.zeros_like(mask, bool)  # a 4-neighbour on the other side
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        beside |= padded[dy:dy + 40, dx:dx + 50] != mask
    assert (dist[beside] == 1).all() and (dist[~beside] > 1).all()
    assert np.array_equal(boundary_distance(1 - mask), dist)
    block = np.zeros((40, 50), np.uint8)
    block[8:30, 10:41] = 1
    assert boundary_distance(block)[19, 25] >= 10  # the block's middle, 11 px from its nearest edge
