"""The blur worker and ./run_blur.sh on disk: compositing invariant, focus, kill -9 + resume, bad clips, retries."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from preprocess import compose_video_bg, dof_blur
from preprocess.depth import ClipDepth
from tests.synth_data import make_raw
from utils import memory
from utils.atomic import Manifest
from utils.cli import EXIT_UNITS_FAILED
from utils.images import read_image
from utils.paths import DataLayout, frame_name

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def composed_root(tmp_path_factory) -> Path:
    root = make_raw(tmp_path_factory.mktemp("data") / "d", clips=("a", "b", "c"), n=8, h=96, w=128)
    assert compose_video_bg.main(["--root", str(root), "--split", "train", "--seed", "1"]) == 0
    return root


def fresh(composed_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(composed_root, root)
    return root


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def blur_cmd(root: Path, *extra: str) -> list[str]:
    # blur ranges for a 96-pixel-high frame, so the tiny clips get real defocus
    return [sys.executable, "preprocess/dof_blur.py", "--root", str(root), "--split", "train", "--seed", "1",
            "--ref_height", "96", "--coc_range", "4", "8", "--sigma_max_range", "3", "6", *extra]


def test_compositing_invariant_on_what_is_read_back(composed_root, tmp_path):
    """|image - (alpha*fgr + (1-alpha)*bgr)| on the PNGs read back from disk, max <= 1/255 + 0.5/65535 + 1e-6:
    image rounds to 8 bits (<= 0.5/255), fgr and bgr too (their convex combination <= 0.5/255), alpha to 16 bits
    (<= 0.5/65535 times |fgr - bgr| <= 1)."""
    root = fresh(composed_root, tmp_path)
    assert subprocess.run(blur_cmd(root), cwd=REPO, env=ENV).returncode == 0
    lay = DataLayout(root)
    bound = 1 / 255 + 0.5 / 65535 + 1e-6
    worst = 0.0
    for clip in ("a", "b", "c"):
        d = lay.blurred("train", clip)
        for t in range(8):
            img, f, b = (read_image(d / layer / frame_name(t)) for layer in ("image", "fgr", "bgr"))
            a = read_image(d / "alpha" / frame_name(t), gray=True)[..., None]
            worst = max(worst, float(np.abs(img - (a * f + (1 - a) * b)).max()))
        meta = json.loads((d / "meta.json").read_text())
        assert meta["sigma_max"] > 2.5 and (d / "preview.png").is_file()
        # the background really was defocused (far from the subject's plane)
        sharp_bgr = read_image(lay.composed("train", clip) / "bgr/0000.png")
        assert np.abs(read_image(d / "bgr/0000.png") - sharp_bgr).mean() > 0.02
    assert worst <= bound, worst * 255


def test_focus_constant_across_frames_and_parameters_logged(composed_root, tmp_path):
    root = fresh(composed_root, tmp_path)
    assert subprocess.run(blur_cmd(root), cwd=REPO, env=ENV).returncode == 0
    lay = DataLayout(root)
    for clip in ("a", "b", "c"):
        meta = json.loads((lay.blurred("train", clip) / "meta.json").read_text())
        focus = meta["focus_disp"]
        assert len(focus) == 8 and len(set(focus)) == 1
        # and it is the clip-wide median subject disparity, computed here independently from the depth cache
        depth = ClipDepth(lay.depth("train", clip))
        alpha = np.stack([read_image(lay.composed("train", clip) / "pha" / frame_name(t), gray=True)
                          for t in range(8)])
        fg = np.stack([depth.fg(t) for t in range(8)])
        assert focus[0] == pytest.approx(float(np.median(fg[:, ::2, ::2][alpha[:, ::2, ::2] > 0.5])), abs=1e-6)
        for key in ("coc_scale", "sigma_max", "seed", "focus_mode", "coc_range", "sigma_max_range", "depth",
                    "n_layers", "kernel"):
            assert key in meta
        assert 4 <= meta["coc_scale"] <= 8 and 3 <= meta["sigma_max"] <= 6
    # rack focus sweeps monotonically from one plane to the other
    assert subprocess.run(blur_cmd(root, "--focus", "rack", "--overwrite"), cwd=REPO, env=ENV).returncode == 0
    rack = json.loads((lay.blurred("train", "a") / "meta.json").read_text())["focus_disp"]
    steps = np.diff(rack)
    assert len(set(np.sign(steps))) == 1 and abs(rack[-1] - rack[0]) > 0.05


def test_kill9_then_resume_is_byte_identical(composed_root, tmp_path):
    """SIGKILL the worker at several moments; each rerun continues, never redoes a finished chunk, and the
    result equals an uninterrupted run (other chunk size too) byte for byte."""
    ref_root = fresh(composed_root, tmp_path / "ref")
    assert subprocess.run(blur_cmd(ref_root), cwd=REPO, env=ENV).returncode == 0
    root = fresh(composed_root, tmp_path / "killed")
    chunks = Manifest(DataLayout(root).manifest("blur", "train") / "chunks")
    kills = 0
    stamps: dict[Path, int] = {}  # frames of chunks finished before a kill: never rewritten afterwards
    for wait_chunks in (1, 6, 13):  # kill after this many chunks (of 24) have been recorded
        proc = subprocess.Popen(blur_cmd(root, "--chunk", "1"), cwd=REPO, env=ENV, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(chunks.done_units()) < wait_chunks and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        for unit, info in chunks.done_units().items():
            for t in info["frames"]:
                for layer in ("image", "alpha", "fgr", "bgr"):
                    p = DataLayout(root).blurred("train", unit.split("/")[0]) / layer / frame_name(t)
                    stamps.setdefault(p, p.stat().st_mtime_ns)
    assert kills >= 2, "the worker finished before it could be killed: make the test data larger"
    res = subprocess.run(blur_cmd(root, "--chunk", "1"), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert tree(root / "blurred") == tree(ref_root / "blurred")
    assert tree(root / "depth") == tree(ref_root / "depth")
    assert len(stamps) > 4 * 6 and all(p.stat().st_mtime_ns == ns for p, ns in stamps.items())
    # and a third run finds everything done
    res = subprocess.run(blur_cmd(root), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert "already done, skipped" in res.stderr


def test_bad_clip_recorded_and_skipped_others_done(composed_root, tmp_path):
    root = fresh(composed_root, tmp_path)
    bad = DataLayout(root).composed("train", "b") / "fgr" / frame_name(5)
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    res = subprocess.run(blur_cmd(root), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert res.returncode == EXIT_UNITS_FAILED
    assert str(bad) in res.stderr and "Traceback" not in res.stderr
    m = Manifest(DataLayout(root).manifest("blur", "train"))
    assert m.done("a") and m.done("c") and not m.done("b") and "b" in m.failed()
    assert not (DataLayout(root).blurred("train", "b") / "meta.json").exists()


def test_missing_composed_is_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "preprocess.dof_blur", "--root", str(tmp_path)], cwd=REPO, env=ENV,
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.startswith("error:") and res.stderr.count("\n") == 1


def test_run_blur_sh_with_the_real_worker(composed_root, tmp_path):
    root = fresh(composed_root, tmp_path)
    cmd = [str(REPO / "run_blur.sh")] + blur_cmd(root)[2:] + ["--shard", "0/2"]
    res = subprocess.run(cmd, env={**ENV, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lay = DataLayout(root)
    assert lay.clips(lay.blurred("train")) == ["a", "c"]  # shard 0 of 2
    assert len(list((lay.blurred("train", "a") / "alpha").glob("*.png"))) == 8
    if not __import__("torch").cuda.is_available():
        res = subprocess.run(cmd + ["--device", "cuda"], env={**ENV, "PYTHON": sys.executable},
                             capture_output=True, text=True)
        assert res.returncode == 1 and "no CUDA device" in res.stderr and "Traceback" not in res.stderr


def _fake_worker(tmp_path: Path, codes: list[int]) -> Path:
    """A stand-in for the python interpreter that logs its arguments and exits with the next code."""
    script = tmp_path / "fake_python"
    (tmp_path / "codes").write_text(" ".join(map(str, codes)))
    script.write_text(f"""#!/usr/bin/env bash
echo "$@" >> {tmp_path}/calls
read -r -a codes < {tmp_path}/codes
code=${{codes[0]}}
echo "${{codes[@]:1}}" > {tmp_path}/codes
if [ "$code" = 137 ]; then kill -9 $$; fi
exit $code
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("codes,expect_rc,expect_calls", [
    ([137, 3, 0], 0, 3),             # OOM kill, then MemoryError, then success
    ([137, 137, 137, 137, 137, 137], 3, 5),  # keeps failing: bounded retries, non-zero exit
    ([1, 0], 1, 1),                  # a user error is not retried
    ([2, 0], 2, 1),                  # some clips failed: final
    ([64, 0], 64, 1),                # a usage error: final, and not reported as "some clips failed"
    ([130, 0], 130, 1),              # Ctrl-C: final (it used to restart with half the chunk)
])
def test_run_blur_restarts_with_half_chunk(tmp_path, codes, expect_rc, expect_calls):
    fake = _fake_worker(tmp_path, codes)
    res = subprocess.run([str(REPO / "run_blur.sh"), "--root", "X", "--shard", "1/2", "--device", "cpu"],
                         env={**ENV, "PYTHON": str(fake), "MAX_RETRIES": "4"}, capture_output=True, text=True)
    assert res.returncode == expect_rc, res.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == expect_calls
    for i, call in enumerate(calls):
        assert call.startswith(f"{REPO}/preprocess/dof_blur.py --root X --shard 1/2 --device cpu")
        assert call.endswith(f"--chunk_divisor {2 ** i}")
    if expect_rc == 3:
        assert "giving up" in res.stderr
    assert ("some clips failed" in res.stderr) == (expect_rc == 2)
    assert "restarting" not in res.stderr or expect_calls > 1


def test_frames_per_chunk_from_memory():
    gib = 1 << 30
    small = memory.frames_per_chunk(1080, 1920, free=1 * gib)
    big = memory.frames_per_chunk(1080, 1920, free=16 * gib)
    assert 1 <= small < big <= 32
    assert memory.frames_per_chunk(1080, 1920, free=0) == 1
    assert memory.frames_per_chunk(256, 384, free=16 * gib, max_frames=8) == 8
    per = 1080 * 1920
    n = memory.frames_per_chunk(1080, 1920, free=4 * gib, safety=0.5, max_frames=10 ** 6)
    assert n == (2 * gib - per * memory.WORK_BYTES_PER_PIXEL) // (per * memory.CHUNK_BYTES_PER_PIXEL)
    assert memory.free_bytes("cpu") > 0
