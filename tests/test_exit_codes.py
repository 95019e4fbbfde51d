"""Exit codes and signals: a usage error has its own code (64, EX_USAGE), distinct from 2 ("some clips
failed"); Ctrl-C stops a launcher at once (130); launchers resolve relative paths against the caller's folder."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocess import compose_video_bg
from tests.synth_data import make_raw
from utils.cli import EXIT_INTERRUPTED, EXIT_USAGE, ArgumentParser, run_main

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable}


@pytest.mark.parametrize("script,args", [
    ("preprocess/dof_blur.py", ["--split", "foo"]),
    ("preprocess/frame_extraction.py", ["--nope"]),
    ("preprocess/compose_video_bg.py", ["--split", "foo"]),
    ("preprocess/make_demo_data.py", ["--frames", "x"]),
    ("pipeline/solver_refiner_maggie.py", ["--nope"]),
    ("pipeline/evaluate.py", ["--nope"]),
    ("inference.py", []),
])
def test_usage_error_exits_64_with_usage(script, args):
    r = subprocess.run([sys.executable, script, *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert "usage:" in r.stderr and "error:" in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr


def test_run_blur_bad_split_is_a_usage_error_not_failed_clips(tmp_path):
    """The report: ./run_blur.sh --split foo printed "some clips failed ... the others are done" and exited 2."""
    r = subprocess.run([str(REPO / "run_blur.sh"), "--root", str(tmp_path), "--split", "foo"], env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert "some clips failed" not in r.stderr and "invalid choice" in r.stderr
    assert r.stderr.count("attempt") == 1  # not retried


def test_parser_and_run_main_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        ArgumentParser(prog="x").parse_args(["--nope"])
    assert exc.value.code == EXIT_USAGE

    def plain(argv):
        argparse.ArgumentParser(prog="y").parse_args(argv)

    with pytest.raises(SystemExit) as exc:
        run_main(plain, ["--nope"])
    assert exc.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        run_main(lambda argv: 2, [])
    assert exc.value.code == 2  # "some clips failed" stays 2


@pytest.fixture(scope="module")
def composed_root(tmp_path_factory) -> Path:
    root = make_raw(tmp_path_factory.mktemp("sig") / "d", clips=("a", "b"), n=24, h=96, w=128)
    assert compose_video_bg.main(["--root", str(root), "--split", "train", "--seed", "1"]) == 0
    return root


def test_ctrl_c_stops_run_blur_at_once(composed_root, tmp_path):
    """SIGINT to the launcher's process group (what Ctrl-C does): exit 130 after one attempt, no restart."""
    root = tmp_path / "root"
    shutil.copytree(composed_root, root)
    proc = subprocess.Popen([str(REPO / "run_blur.sh"), "--root", str(root), "--split", "train", "--chunk", "1",
                             "--no_preview"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watch = root / "blurred"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if watch.exists() and any(watch.rglob("*.png")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "finished before the interrupt"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.count("attempt") == 1 and "restarting" not in err, err
    # and a rerun finishes the work (nothing half-written is taken)
    r = subprocess.run([str(REPO / "run_blur.sh"), "--root", str(root), "--split", "train", "--no_preview"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_launchers_resolve_relative_root_against_the_callers_folder(tmp_path):
    """The launchers used to cd into the repository, so --root data/x meant <repo>/data/x."""
    from tests.test_frame_extraction import make_clip

    make_clip(tmp_path / "mine" / "blurred" / "train" / "a", 2, h=16, w=16)
    env = {**ENV, "ROOT": "mine"}
    r = subprocess.run([str(REPO / "run_frame_extraction.sh"), "--no_video", "--split", "train"], cwd=tmp_path,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine/frames/train/alpha/a/frames/0000.png").is_file()
    r = subprocess.run([str(REPO / "run_mask_extraction.sh"), "all_frames", "--split", "train", "--no_preview"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine/frames/train/mask/a/frames/0000.png").is_file()
    r = subprocess.run([str(REPO / "run_blur.sh"), "--root", "nothing_here", "--split", "train"], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True)
    assert str(tmp_path / "nothing_here") in r.stderr or "nothing_here" in r.stderr
    assert not (REPO / "nothing_here").exists()
