"""Every numeric flag of the training, evaluation, inference and ablation entry points, given 0, -1, nan, 1e-7 or
1e30, ends in exit 0 (the value was taken and the command ran on tiny data) or exit 64 (a usage error: one
``error:`` line naming the flag, nothing written), never a traceback or any other code. NaN is never taken.
(The data stages' flags: tests/test_stage_numeric_flags.py.)

The flags are not listed by hand: the solver's come from ``TrainConfig`` and ``RefinerConfig`` (every int or float
field; its flags are typed by the config, not by argparse), the others from their parsers' typed options.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import inference
from bench import real_photos
from model import refiner_dwt_maggie, refiner_dwt_maggie_heavydwt
from model.checkpoint import save_refiner
from model.config import RefinerConfig
from model.refiner import build_refiner
from pipeline import ablation, evaluate, solver_refiner_maggie, train_fine
from pipeline.train_config import TrainConfig
from tests.test_stage_numeric_flags import numeric_flags, run_flag
from tests.train_helpers import make_tiny_frames
from utils.cli import EXIT_USAGE
from utils.images import write_png

VALUES = ("0", "-1", "nan", "1e-7", "1e30")
NUMBER = {"int", "float"}


def _fields(cls, prefix: str = "") -> list[str]:
    return [f"--{prefix}{f.name}" for f in dataclasses.fields(cls) if f.type in NUMBER]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("flags")
    small = make_tiny_frames(tmp / "small", size=(32, 32), n_frames=2)
    make_tiny_frames(tmp / "small", split="test", clips=("t0",), size=(32, 32), n_frames=2)
    make_tiny_frames(tmp / "small", split="test", clips=("t0",), size=(32, 32), n_frames=2, tree="frames_sharp")
    make_tiny_frames(tmp / "small", clips=("c0", "c1", "c2"), size=(32, 32), n_frames=2, tree="frames_sharp")
    large = make_tiny_frames(tmp / "large", size=(64, 64), n_frames=1, layers=("image", "alpha"))
    torch.manual_seed(0)
    ckpt = save_refiner(tmp / "m.pt", build_refiner("light", base_channels=4))
    image = tmp / "in.png"
    write_png(image, np.random.default_rng(0).random((40, 48, 3)).astype(np.float32))
    guide = np.zeros((40, 48), np.float32)
    guide[10:30, 12:36] = 1
    write_png(tmp / "guide.png", guide)
    return {"tmp": tmp, "small": small, "large": large, "ckpt": ckpt, "image": image, "guide": tmp / "guide.png"}


def _solver(s, out):
    return solver_refiner_maggie.main, [
        "--root", str(s["small"]), "--runs_dir", str(out), "--name", "r", "--steps", "2", "--batch_size", "2",
        "--crop", "16", "--base_channels", "4", "--num_workers", "0", "--threads", "1", "--val_max_frames", "1",
        "--eval_every", "2", "--ckpt_every", "2", "--log_every", "1", "--warmup_steps", "1", "--cache_mb", "0"]


def _train_fine(s, out):
    return train_fine.main, ["--ckpt", str(s["ckpt"]), "--root", str(s["large"]), "--runs_dir", str(out), "--name", "f",
                             "--steps", "2", "--batch_size", "1", "--crop", "64", "--fine_crop", "32", "--factors",
                             "2", "--log_every", "1", "--ckpt_every", "2", "--threads", "1"]


def _evaluate(s, out):
    return evaluate.main, ["--root", str(s["small"]), "--ckpt", str(s["ckpt"]), "--labels", "light", "--out",
                           str(out / "eval"), "--max_frames", "1"]


def _inference(s, out):
    return inference.main, ["--i", str(s["image"]), "--g", str(s["guide"]), "--c", str(s["ckpt"]), "--o",
                            str(out / "alpha.png")]


def _real_photos(s, out):
    return real_photos.main, ["--out", str(out / "photos"), "--photos", "astronaut"]


def _light(s, out):
    return refiner_dwt_maggie.main, ["--size", "32x32"]


def _heavy(s, out):
    return refiner_dwt_maggie_heavydwt.main, ["--size", "32x32", "--wave", "db2"]


def _ablation(s, out):
    return ablation.main, ["--root", str(s["small"]), "--out", str(out / "abl"), "--tiny", "--dry-run"]


ENTRIES = {"solver": _solver, "train_fine": _train_fine, "evaluate": _evaluate, "inference": _inference,
           "ablation": _ablation, "real_photos": _real_photos,
           "refiner_dwt_maggie": _light, "refiner_dwt_maggie_heavydwt": _heavy}
FLAGS = {
    "solver": _fields(TrainConfig) + _fields(RefinerConfig, "model."),
    "train_fine": numeric_flags(train_fine.build_parser()),
    "evaluate": numeric_flags(evaluate.build_parser()),
    "inference": numeric_flags(inference.build_parser()),
    "ablation": numeric_flags(ablation.build_parser()),
    "real_photos": numeric_flags(real_photos.build_parser()),
    "refiner_dwt_maggie": ["--base_channels"],  # their parsers are built inside main
    "refiner_dwt_maggie_heavydwt": ["--base_channels"],
}
SKIP = {("ablation", "--jobs")}  # the worker count of the grid: its dry run never starts a worker


def _cases():
    for name, flags in FLAGS.items():
        for flag in flags:
            flag, nargs = flag if isinstance(flag, tuple) else (flag, 1)
            if (name, flag) in SKIP:
                continue
            for value in VALUES:
                yield pytest.param(name, flag, nargs, value, id=f"{name}{flag}={value}")


def test_every_entry_point_has_its_numeric_flags_found():
    assert {"--lr", "--steps", "--scale_max", "--w_l1", "--model.base_channels", "--model.focus_tau"} <= \
        set(FLAGS["solver"])
    assert {"--lr", "--fine_crop", "--accurate_prob"} <= {f for f, _ in FLAGS["train_fine"]}
    assert {"--max_frames", "--long_side", "--downsample_ratio"} <= {f for f, _ in FLAGS["evaluate"]}
    assert {"--resize_h", "--downsample_ratio"} <= {f for f, _ in FLAGS["inference"]}
    assert {"--steps", "--seeds", "--n_boot"} <= {f for f, _ in FLAGS["ablation"]}
    assert {f for f, _ in FLAGS["real_photos"]} == {"--upscale"}


@pytest.mark.parametrize("name,flag,nargs,value", list(_cases()))
def test_numeric_flag_is_taken_or_a_usage_error(setup, tmp_path, capsys, name, flag, nargs, value):
    main, argv = ENTRIES[name](setup, tmp_path / "out")
    if run_flag(main, argv, name, flag, nargs, value, capsys) == EXIT_USAGE:
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*")), "written before refusing"
    else:
        assert not list(Path(tmp_path).rglob("*.tmp-*")), "temporaries left"
