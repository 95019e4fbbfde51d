"""Frame extraction: blurred/composed clip folders -> the per-frame layout, RATIO subsets, resume, bad inputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess import frame_extraction as fe
from utils.atomic import Manifest
from utils.cli import EXIT_UNITS_FAILED, UserError
from utils.images import read_image, write_png
from utils.paths import FRAME_LAYERS, DataLayout

REPO = Path(__file__).resolve().parents[1]


def make_clip(folder: Path, frames: int, h: int = 24, w: int = 32, seed: int = 0,
              layers=("image", "alpha", "fgr", "bgr"),
              alpha_name: str = "alpha") -> dict[str, np.ndarray]:
    """A tiny clip in the blur stage's layout; returns the arrays written (float)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        name = alpha_name if layer == "alpha" else layer
        shape = (frames, h, w) if layer == "alpha" else (frames, h, w, 3)
        data = rng.random(shape).astype(np.float32)
        out[name] = data
        for i in range(frames):
            write_png(folder / name / f"{i:04d}.png", data[i], bits=16 if layer == "alpha" else 8)
    (folder / "meta.json").write_text(json.dumps({"fps": 12}))
    mark_upstream_done(folder)
    return out


def mark_upstream_done(clip_dir: Path) -> None:
    """Record a hand-made ``<root>/{blurred,composed}/<split>/<clip>`` as finished by its stage (as the blur or
    compose stage does when a clip is complete): downstream stages take only recorded units."""
    stage = {"blurred": "blur", "composed": "compose"}.get(clip_dir.parent.parent.name)
    if stage:
        root, split = clip_dir.parent.parent.parent, clip_dir.parent.name
        Manifest(DataLayout(root).manifest(stage, split)).mark_done(clip_dir.name)


def make_root(tmp_path: Path, frames=(8, 5), test_frames=(6,)) -> Path:
    root = tmp_path / "data"
    for split, counts in (("train", frames), ("test", test_frames)):
        for k, t in enumerate(counts):
            make_clip(root / "blurred" / split / f"clip{k}", t, seed=k + (10 if split == "test" else 0))
    return root


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_outputs(got_folder: Path, want_folder: Path) -> None:
    """The same files; PNGs (the data) byte for byte; mp4 previews complete (same decoded frame count), because
    the encoder's bytes are not reproducible from run to run (seen here) and a preview is never a source of truth."""
    from utils.video import read_video

    got, want = tree_bytes(got_folder), tree_bytes(want_folder)
    assert got.keys() == want.keys()
    assert all(got[k] == want[k] for k in want if not k.endswith(".mp4"))
    for k in (k for k in want if k.endswith(".mp4")):
        assert len(read_video(got_folder / k)) == len(read_video(want_folder / k)) > 0


def kill_when_output_appears(cmd: list[str], env: dict, watch: Path) -> None:
    """Start ``cmd`` and SIGKILL it as soon as a PNG appears under ``watch`` (mid-clip, or between clips);
    asserts it died from the signal rather than finishing first."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if watch.exists() and any(watch.rglob("*.png")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished


def test_subset_size_rounding():
    assert fe.subset_size(10, 0.5) == 5
    assert fe.subset_size(5, 0.5) == 3  # 2.5 rounds half up
    assert fe.subset_size(7, 0.5) == 4  # 3.5 -> 4
    assert fe.subset_size(3, 0.1) == 1  # never zero
    assert fe.subset_size(4, 1.0) == 4
    with pytest.raises(UserError):
        fe.subset_size(4, 0.0)
    with pytest.raises(UserError):
        fe.subset_size(4, 1.5)


def test_select_positions_contiguous_and_uniform_seeded():
    for seed in range(20):
        pos = fe.select_positions(11, 0.5, "contiguous", np.random.default_rng(seed))
        assert len(pos) == 6 and pos == list(range(pos[0], pos[0] + 6)) and 0 <= pos[0] <= 5
    starts = {fe.select_positions(11, 0.5, "contiguous", np.random.default_rng(s))[0] for s in range(50)}
    assert len(starts) > 1  # the start really is drawn
    pos = fe.select_positions(11, 0.5, "uniform", np.random.default_rng(3))
    assert len(pos) == 6 and pos == sorted(set(pos)) and max(pos) < 11
    assert pos == fe.select_positions(11, 0.5, "uniform", np.random.default_rng(3))


def test_full_extraction_exact_layers(tmp_path):
    root = tmp_path / "data"
    src = make_clip(root / "blurred" / "train" / "c", 4)
    assert fe.main(["--root", str(root), "--split", "train"]) == 0
    lay = DataLayout(root)
    for layer in FRAME_LAYERS:
        folder = lay.frames("train", layer, "c")
        assert sorted(p.name for p in folder.iterdir()) == [f"{i:04d}.png" for i in range(4)]
        assert lay.frames_video("train", layer, "c").is_file()
    for i in range(4):
        a = cv2.imread(str(lay.frames("train", "alpha", "c") / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert a.dtype == np.uint16 and a.ndim == 2
        np.testing.assert_array_equal(a, np.round(src["alpha"][i] * 65535).astype(np.uint16))
        img = read_image(lay.frames("train", "image", "c") / f"{i:04d}.png")
        np.testing.assert_array_equal(np.round(img * 255), np.round(src["image"][i] * 255))


def test_ratio_half_same_contiguous_indices_in_every_layer(tmp_path):
    root = make_root(tmp_path)
    assert fe.main(["--root", str(root), "--ratio", "0.5", "--seed", "7", "--no_video"]) == 0
    lay = DataLayout(root)
    for split, clip, total in (("train", "clip0", 8), ("train", "clip1", 5), ("test", "clip0", 6)):
        names = None
        for layer in FRAME_LAYERS:
            got = sorted(p.name for p in lay.frames(split, layer, clip).iterdir())
            names = names or got
            assert got == names
        idx = [int(n[:4]) for n in names]
        assert len(idx) == fe.subset_size(total, 0.5)
        assert idx == list(range(idx[0], idx[0] + len(idx)))  # one contiguous run, original indices
        # the kept frames are the original ones (content, not just names)
        src = read_image(root / "blurred" / split / clip / "fgr" / names[0])
        np.testing.assert_array_equal(read_image(lay.frames(split, "fgr", clip) / names[0]), src)


def test_rerun_recomputes_nothing_and_changed_ratio_recomputes(tmp_path, caplog):
    caplog.set_level("INFO")
    root = make_root(tmp_path, frames=(4,), test_frames=())
    fe.main(["--root", str(root), "--no_video"])
    out = root / "frames"
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    caplog.clear()
    fe.main(["--root", str(root), "--no_video"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert "0 clip(s) written, 1 already done" in caplog.text
    fe.main(["--root", str(root), "--no_video", "--ratio", "0.5"])
    assert len(list(DataLayout(root).frames("train", "image", "clip0").iterdir())) == 2


def test_composed_source_builds_frames_sharp(tmp_path):
    root = tmp_path / "data"
    src = make_clip(root / "composed" / "train" / "c", 3, layers=("alpha", "fgr", "bgr"), alpha_name="pha")
    assert fe.main(["--root", str(root), "--source", "composed", "--split", "train", "--no_video"]) == 0
    lay = DataLayout(root)
    for i in range(3):
        # independent reference: float composite of what is on disk, quantised once
        a = cv2.imread(str(root / "composed/train/c/pha" / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED) / 65535.0
        f = cv2.imread(str(root / "composed/train/c/fgr" / f"{i:04d}.png"))[..., ::-1] / 255.0
        b = cv2.imread(str(root / "composed/train/c/bgr" / f"{i:04d}.png"))[..., ::-1] / 255.0
        ref = np.round((a[..., None] * f + (1 - a[..., None]) * b) * 255)
        got = cv2.imread(str(lay.frames("train", "image", "c", tree="frames_sharp") / f"{i:04d}.png"))[..., ::-1]
        assert np.abs(got.astype(np.float64) - ref).max() <= 1  # float32 vs float64 rounding ties only
        alpha = cv2.imread(str(lay.frames("train", "alpha", "c", tree="frames_sharp") / f"{i:04d}.png"),
                           cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(alpha, np.round(src["pha"][i] * 65535).astype(np.uint16))
    assert not (root / "frames").exists()


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match="data root not found"):
        fe.main(["--root", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no blurred clips"):
        fe.main(["--root", str(tmp_path / "empty")])


def test_clip_without_alpha_fails_cleanly_others_done(tmp_path, capsys):
    root = make_root(tmp_path, frames=(3, 3), test_frames=())
    import shutil
    shutil.rmtree(root / "blurred/train/clip1/alpha")
    assert fe.main(["--root", str(root), "--no_video"]) == EXIT_UNITS_FAILED
    assert "error: 1 clip(s) failed: train/clip1:" in capsys.readouterr().err
    assert "clip1" in Manifest(DataLayout(root).manifest("frames", "train")).failed()
    lay = DataLayout(root)
    assert lay.frames("train", "image", "clip0").is_dir()
    for layer in FRAME_LAYERS:
        assert not (lay.frames("train", layer) / "clip1").exists()
        assert not [p for p in lay.frames("train", layer).iterdir() if p.name.startswith(".")]


def test_unreadable_frame_leaves_nothing(tmp_path, capsys):
    root = make_root(tmp_path, frames=(4,), test_frames=())
    (root / "blurred/train/clip0/bgr/0002.png").write_bytes(b"not a png")
    assert fe.main(["--root", str(root)]) == EXIT_UNITS_FAILED
    assert "not a readable image" in capsys.readouterr().err
    lay = DataLayout(root)
    for layer in FRAME_LAYERS:  # image/alpha/fgr were complete before bgr failed: none may remain
        assert list(lay.frames("train", layer).iterdir()) == []
    assert not DataLayout(root).manifest("frames", "train").joinpath("clip0.done.json").exists()


def test_cli_error_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "preprocess/frame_extraction.py", "--root", str(tmp_path / "nope")],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: data root not found: {tmp_path / 'nope'}"
    assert "Traceback" not in r.stderr


def test_kill9_then_rerun_is_byte_identical(tmp_path):
    root = make_root(tmp_path, frames=(10, 10, 10), test_frames=())
    ref_root = tmp_path / "ref"
    import shutil
    shutil.copytree(root, ref_root)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "preprocess.frame_extraction", "--ratio", "0.7"]
    subprocess.run(cmd + ["--root", str(ref_root)], cwd=REPO, env=env, check=True, capture_output=True)
    kill_when_output_appears(cmd + ["--root", str(root)], env, root / "frames")
    subprocess.run(cmd + ["--root", str(root)], cwd=REPO, env=env, check=True, capture_output=True)
    assert_same_outputs(root / "frames", ref_root / "frames")
    assert not [p for p in (root / "frames").rglob(".*")]


def test_clean_stale_temps_only_the_named_target(tmp_path):
    """utils.atomic.clean_stale_temps(folder, name): a shard removes its own clip's leftovers, not another's."""
    from utils.atomic import atomic_dir, clean_stale_temps

    for clip in ("a", "b", "a[1]"):
        with pytest.raises(RuntimeError):  # a crash inside leaves nothing...
            with atomic_dir(tmp_path / clip):
                raise RuntimeError
        (tmp_path / f".{clip}.tmp-stale").mkdir()  # ...but a SIGKILL would leave this
    assert clean_stale_temps(tmp_path, "a") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a[1].tmp-stale", ".b.tmp-stale"]
    assert clean_stale_temps(tmp_path, "a[1]") == 1  # glob characters in names are literal
    assert clean_stale_temps(tmp_path) == 1 and list(tmp_path.iterdir()) == []
