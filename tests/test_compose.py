"""compose_video_bg: layers lossless and exact, seeded per clip whatever the shard, idempotent, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess import compose_video_bg as compose
from tests.synth_data import make_raw
from utils.cli import UserError
from utils.images import read_image
from utils.paths import DataLayout, frame_name
from utils.video import read_clip

REPO = Path(__file__).resolve().parent.parent


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layers_exact_and_crop_matches_background(tmp_path):
    root = make_raw(tmp_path / "d", clips=("a", "b"))
    assert compose.main(["--root", str(root), "--split", "train"]) == 0
    lay = DataLayout(root)
    for clip in ("a", "b"):
        d = lay.composed("train", clip)
        meta = json.loads((d / "meta.json").read_text())
        assert meta["frames"] == 5 and meta["size"] == [40, 56]
        # fgr / pha are the lossless sources, bit for bit (pha stays 16-bit)
        src_pha = read_clip(root / "raw/train/pha" / clip, gray=True)
        got_pha = np.stack([read_image(d / "pha" / frame_name(t), gray=True) for t in range(5)])
        assert cv2.imread(str(d / "pha/0000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        np.testing.assert_array_equal(got_pha, src_pha)
        np.testing.assert_array_equal(read_image(d / "fgr/0003.png"), read_image(root / "raw/train/fgr" / clip / "0003.png"))
        # the background is the chosen file resized uniformly (no stretch) and cropped where meta says
        bg = read_image(root / meta["background"])
        rh, rw = meta["resized_size"]
        assert abs(rh / bg.shape[0] - rw / bg.shape[1]) < 0.02 * meta["scale"]  # one scale for both axes
        ref = compose.resize_cover(bg, (rh, rw))
        c = meta["crop"]
        ref_crop = ref[c["y"]:c["y"] + 40, c["x"]:c["x"] + 56]
        np.testing.assert_allclose(read_image(d / "bgr/0002.png"), ref_crop, atol=0.5 / 255 + 1e-6)
        # disparity cropped identically (static crop -> one HxW map)
        disp = np.load(d / "bgr_disp.npy")
        true = compose.resize_cover(np.load(root / meta["background_disparity"]), (rh, rw), linear=True)
        np.testing.assert_allclose(disp, true[c["y"]:c["y"] + 40, c["x"]:c["x"] + 56], atol=1e-6)
        for key in ("background", "crop", "pan", "seed", "sources", "fps", "frames", "scale"):
            assert key in meta


def test_seeded_choice_independent_of_shard_and_rerun_skips(tmp_path, caplog):
    root_a = make_raw(tmp_path / "a", clips=("c0", "c1", "c2", "c3"))
    root_b = make_raw(tmp_path / "b", clips=("c0", "c1", "c2", "c3"))
    assert compose.main(["--root", str(root_a), "--seed", "3", "--split", "train"]) == 0
    for i in range(3):
        assert compose.main(["--root", str(root_b), "--seed", "3", "--split", "train", "--shard", f"{i}/3"]) == 0
    ta, tb = _tree(root_a / "composed"), _tree(root_b / "composed")
    assert ta == tb
    # a rerun skips finished clips, says so, rewrites nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (root_a / "composed").rglob("*.png")}
    caplog.clear()
    with caplog.at_level("INFO"):
        assert compose.main(["--root", str(root_a), "--seed", "3", "--split", "train"]) == 0
    assert "already done, skipped" in caplog.text
    assert mtimes == {p: p.stat().st_mtime_ns for p in (root_a / "composed").rglob("*.png")}
    # a different seed changes some choice
    assert compose.main(["--root", str(root_a), "--seed", "4", "--split", "train", "--overwrite"]) == 0
    assert _tree(root_a / "composed") != ta


def test_pan_moves_crop_and_saves_per_frame_disparity(tmp_path):
    root = make_raw(tmp_path / "d", clips=("a",))
    assert compose.main(["--root", str(root), "--split", "train", "--pan", "12"]) == 0
    d = DataLayout(root).composed("train", "a")
    meta = json.loads((d / "meta.json").read_text())
    offs = np.array(meta["pan"]["offsets_yx"])
    assert offs.shape == (5, 2)
    travel = np.abs(offs[-1] - offs[0]).sum()
    assert 3 <= travel <= 2 * 12 + 2
    assert np.all(np.abs(np.diff(offs, axis=0)) <= 12)  # slow and monotone-ish steps
    assert np.load(d / "bgr_disp.npy").shape == (5, 40, 56)


def test_missing_or_empty_input_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        compose.main(["--root", str(tmp_path / "nope")])
    (tmp_path / "r/raw/train/fgr").mkdir(parents=True)
    with pytest.raises(UserError, match="no clips"):
        compose.main(["--root", str(tmp_path / "r"), "--split", "train"])
    res = subprocess.run([sys.executable, "preprocess/compose_video_bg.py", "--root", str(tmp_path / "r"),
                          "--split", "train"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error:")


def test_bad_clips_recorded_others_done_nothing_half_written(tmp_path):
    root = make_raw(tmp_path / "d", clips=("good", "trunc", "nopha", "short"), folders=False)
    raw = root / "raw/train"
    data = (raw / "fgr/trunc.mp4").read_bytes()
    (raw / "fgr/trunc.mp4").write_bytes(data[: len(data) // 2])  # truncated mid-stream
    (raw / "pha/nopha.mp4").unlink()
    make_raw(tmp_path / "other", clips=("short",), n=3, folders=False)
    (raw / "pha/short.mp4").write_bytes((tmp_path / "other/raw/train/pha/short.mp4").read_bytes())  # 3 vs 5
    res = subprocess.run([sys.executable, "-m", "preprocess.compose_video_bg", "--root", str(root),
                          "--split", "train"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert "trunc" in res.stderr and "nopha" in res.stderr and "short" in res.stderr
    assert "Traceback" not in res.stderr
    lay = DataLayout(root)
    assert lay.clips(lay.composed("train")) == ["good"]
    assert not [p for p in lay.composed("train").iterdir() if p.name.startswith(".")]  # no temp left
    from utils.atomic import Manifest
    m = Manifest(lay.manifest("compose", "train"))
    assert m.done("good") and not m.done("trunc") and set(m.failed()) == {"trunc", "nopha", "short"}


def test_video_background_loops_and_size_mismatch_is_clip_error(tmp_path):
    from utils.images import write_png
    from utils.video import write_video

    root = make_raw(tmp_path / "d", clips=("a", "wrongsize"), n_backgrounds=0)
    frames = np.stack([np.full((90, 120, 3), v, np.float32) for v in (0.1, 0.5, 0.9)])
    write_video(root / "backgrounds/train/moving.mp4", frames, fps=24)
    # a pha frame folder of another size
    for p in sorted((root / "raw/train/pha/wrongsize").iterdir()):
        write_png(p, np.zeros((20, 30), np.float32), bits=16)
    assert compose.main(["--root", str(root), "--split", "train"]) == 2
    d = DataLayout(root).composed("train", "a")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["background_kind"] == "video" and meta["bgr_disp"] is None
    means = [read_image(d / "bgr" / frame_name(t)).mean() for t in range(5)]
    assert means[0] < means[1] < means[2] and means[3] == pytest.approx(means[0], abs=0.02)  # loops
    from utils.atomic import Manifest
    failed = Manifest(DataLayout(root).manifest("compose", "train")).failed()
    assert "size differs" in failed["wrongsize"]
