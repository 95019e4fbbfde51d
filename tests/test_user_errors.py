"""Errors a user causes end in one ``error:`` line and a documented exit code, with nothing partial written
(the compose split included). One place maps OSError / MemoryError / decoder limits:
utils.cli.run_main and utils.images._imread."""
from __future__ import annotations

import errno
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess import compose_video_bg as compose
from preprocess import dof_blur
from preprocess import frame_extraction as fe
from tests.synth_data import composed_root_fixtures, make_raw
from tests.test_frame_extraction import make_clip
from utils import atomic
from utils.atomic import Manifest
from utils.cli import EXIT_OOM, EXIT_UNITS_FAILED, EXIT_USAGE, UserError, run_main
from utils.images import read_image
from utils.paths import DataLayout


def _run(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        run_main(main, argv)
    return exc.value.code, capsys.readouterr().err


def _last_line_only_error(err: str) -> str:
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


def huge_png(path: Path, w: int = 60000, h: int = 60000) -> None:
    """A tiny PNG whose header claims ``w x h`` pixels."""
    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    b = bytearray(buf.tobytes())
    b[16:20], b[20:24] = struct.pack(">I", w), struct.pack(">I", h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(b))


composed_root, root = composed_root_fixtures("ue", clips=("a", "b"), n=4, h=32, w=48)


def _blur(root: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--split", "train", "--ref_height", "32", "--no_preview", *extra]


# ------------------------------------------------------------------------------------------ decoder limits
@pytest.mark.parametrize("size", [(60000, 60000), (20000, 20000)])
def test_png_header_claiming_a_huge_size_is_one_line(tmp_path, size):
    huge_png(tmp_path / "x.png", *size)
    with pytest.raises(UserError, match="image too large") as info:
        read_image(tmp_path / "x.png")
    assert "\n" not in str(info.value)


def test_huge_png_in_one_clip_fails_that_clip_only(tmp_path, capsys):
    root = make_raw(tmp_path / "d", clips=("a", "b"), n=3, h=32, w=48)
    huge_png(root / "raw/train/fgr/a/0001.png")
    code, err = _run(compose.main, ["--root", str(root), "--split", "train"], capsys)
    assert code == EXIT_UNITS_FAILED, err
    assert "train/a" in _last_line_only_error(err) and "image too large" in err
    assert Manifest(DataLayout(root).manifest("compose", "train")).done("b")  # the other clip is not abandoned


# ------------------------------------------------------------------------------- OSError, MemoryError
def test_full_disk_is_one_line_exit_1_and_nothing_partial(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    make_clip(root / "blurred" / "train" / "a", 3, h=16, w=16)
    real_replace = atomic.os.replace

    def full(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    code, err = _run(fe.main, ["--root", str(root), "--split", "train", "--no_video"], capsys)
    assert code == 1
    line = _last_line_only_error(err)
    assert "No space left on device" in line and "0000.png" in line
    assert not Manifest(DataLayout(root).manifest("frames", "train")).done("a")
    assert not list((root / "frames").rglob("*.png")) if (root / "frames").exists() else True
    leftovers = [p for p in (root / "frames").rglob(".*tmp-*")] if (root / "frames").exists() else []
    assert not leftovers


def test_read_only_output_is_one_line(capsys):
    def main(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/ro/runs/x/config.yaml")

    code, err = _run(main, [], capsys)
    assert code == 1 and err == "error: Permission denied: /ro/runs/x/config.yaml\n"


def test_out_of_memory_in_compose_exits_3(root, capsys, monkeypatch):
    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(compose, "compose_clip", oom)
    code, err = _run(compose.main, ["--root", str(root), "--split", "train", "--overwrite"], capsys)
    assert code == EXIT_OOM and "out of memory" in _last_line_only_error(err)


# ------------------------------------------------------------------------------------------ blur inputs
def test_focus_nan_is_a_usage_error_and_deletes_nothing(root, capsys):
    assert dof_blur.main(_blur(root)) == 0
    before = sorted(p.name for p in (DataLayout(root).blurred("train", "a") / "image").iterdir())
    for bad in (["--focus", "nan"], ["--focus", "inf"], ["--coc_range", "nan", "3"]):
        code, err = _run(dof_blur.main, _blur(root, "--overwrite", *bad), capsys)
        assert code == EXIT_USAGE, err
        if bad[0] == "--focus":  # a string flag checked by the stage: utils.cli.UsageError's line
            _last_line_only_error(err)
        else:  # a number checked by its argparse type (utils.cli.finite_float): the usage, then argparse's line
            assert "Traceback" not in err and err.startswith("usage:"), err
            assert "error: argument --coc_range: must be a finite number" in err.strip().splitlines()[-1], err
    assert sorted(p.name for p in (DataLayout(root).blurred("train", "a") / "image").iterdir()) == before


def test_truncated_depth_cache_fails_the_clip_in_one_line(root, capsys):
    from preprocess import depth

    assert depth.main(["--root", str(root), "--split", "train"]) == 0
    npz = DataLayout(root).depth("train", "a")
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    code, err = _run(dof_blur.main, _blur(root), capsys)
    assert code == EXIT_UNITS_FAILED, err
    assert "unreadable depth cache" in _last_line_only_error(err)
    assert Manifest(DataLayout(root).manifest("blur", "train")).done("b")


def test_malformed_meta_json_fails_the_clip_in_one_line(root, capsys):
    (DataLayout(root).composed("train", "a") / "meta.json").write_text("{not json")
    code, err = _run(dof_blur.main, _blur(root), capsys)
    assert code == EXIT_UNITS_FAILED, err
    assert "malformed meta.json" in _last_line_only_error(err)


# ------------------------------------------------------------------------------- NaN disparity
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_disparity_is_refused(tmp_path, capsys, bad):
    root = make_raw(tmp_path / "d", clips=("a",), n=2, h=32, w=48, n_backgrounds=1)
    dpath = root / "backgrounds/train/bg0.disp.npy"
    disp = np.load(dpath)
    disp[3, 4] = bad
    np.save(dpath, disp)
    code, err = _run(compose.main, ["--root", str(root), "--split", "train"], capsys)
    assert code == EXIT_UNITS_FAILED, err
    assert "NaN or infinite" in _last_line_only_error(err)
    assert not Manifest(DataLayout(root).manifest("compose", "train")).done("a")


# ------------------------------------------------------------------- compose with one split only
def test_compose_all_splits_with_only_train_exits_0(tmp_path, capsys):
    root = make_raw(tmp_path / "d", clips=("a",), n=2, h=32, w=48)
    code, err = _run(compose.main, ["--root", str(root), "--split", "all"], capsys)
    assert code == 0, err
    assert "no test split" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run(compose.main, ["--root", str(empty), "--split", "all"], capsys)
    assert code == 1 and "input folder not found" in _last_line_only_error(err)


# ------------------------------------------------------------------- evaluate, solver, refiner checkpoints
def test_evaluate_with_nothing_to_score_writes_nothing(tmp_path, capsys):
    from pipeline import evaluate as E
    from tests.train_helpers import make_tiny_frames

    root = make_tiny_frames(tmp_path / "d", split="test", clips=("t0",), n_frames=2, size=(32, 32))
    code, err = _run(E.main, ["--root", str(root), "--baselines", "none", "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "nothing to score" in _last_line_only_error(err)
    assert not (tmp_path / "o").exists()


def test_guide_of_another_size_is_one_line_in_evaluate_and_solver(tmp_path, capsys):
    from pipeline import evaluate as E
    from pipeline.solver_refiner_maggie import main as train_main
    from tests.train_helpers import make_tiny_frames
    from utils.images import write_png

    for split in ("train", "test"):
        make_tiny_frames(tmp_path / "d", split=split, clips=("c0", "c1"), n_frames=2, size=(32, 32))
    for split in ("train", "test"):
        write_png(tmp_path / f"d/frames/{split}/mask/c1/frames/0001.png", np.ones((20, 24), np.float32))
    code, err = _run(E.main, ["--root", str(tmp_path / "d"), "--guide", "files", "--baselines", "guide",
                              "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "is 24x20 but its image" in _last_line_only_error(err)
    assert not (tmp_path / "o").exists()
    code, err = _run(train_main, ["--root", str(tmp_path / "d"), "--runs_dir", str(tmp_path / "runs"), "--guide",
                                  "files", "--steps", "2", "--crop", "16", "--base_channels", "8",
                                  "--num_workers", "0"], capsys)
    assert code == 1 and "is 24x20 but its image" in _last_line_only_error(err)
    assert not (tmp_path / "runs").exists()


def test_refiner_checkpoint_with_window_0_is_one_line(tmp_path):
    import torch

    from model.checkpoint import load_refiner, save_refiner
    from model.refiner import build_refiner

    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    ck["config"]["window"] = 0
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not match its config") as info:
        load_refiner(tmp_path / "bad.pt")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------- umask, read-only checkout
def test_outputs_follow_the_umask(tmp_path):
    import os
    import stat

    from utils.atomic import atomic_dir, write_json_atomic
    from utils.images import write_png

    old = os.umask(0o022)
    try:
        write_png(tmp_path / "a.png", np.zeros((4, 4), np.float32))
        write_json_atomic(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_inference_output_folder_follows_the_umask(tmp_path):
    import os
    import stat

    import inference
    from model.checkpoint import save_refiner
    from model.refiner import build_refiner
    from utils.images import write_png

    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a.png", np.zeros((16, 16, 3), np.float32))
    write_png(tmp_path / "g" / "a.png", np.ones((16, 16), np.float32))
    old = os.umask(0o022)
    try:
        assert inference.main(["--i", str(tmp_path / "in"), "--c", str(tmp_path / "m.pt"), "--g", str(tmp_path / "g"),
                               "--o", str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "alpha" / "a.png").stat().st_mode) == 0o644


def test_import_with_an_unwritable_cache_folder_falls_back(tmp_path):
    """A read-only checkout could not create <repo>/.cache and crashed at import; here the cache folder cannot be
    created (its parent is a file) and the import must still work, with the offline switches set."""
    import os
    import subprocess
    import sys

    (tmp_path / "file").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "TORCH_HOME")}
    env.update(DEFOCUS_CACHE_DIR=str(tmp_path / "file" / "cache"), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-c", "import utils.offline, os; print(os.environ['YOLO_CONFIG_DIR'])"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "xdg" / "defocused_segmentation" / "ultralytics")
