"""utils: atomic writes, manifest, image and video I/O, CLI conventions."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from utils.atomic import Manifest, atomic_dir, atomic_path, clean_stale_temps, write_json_atomic
from utils.cli import UserError, parse_shard, run_main, shard_items, unit_seed
from utils.images import list_images, read_image, write_png
from utils.paths import DataLayout, frame_index, frame_name
from utils.video import clip_sources, iter_video, read_clip, read_video, video_info, write_video


# ------------------------------------------------------------------ atomic writes
def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_whole(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the rename
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_all_or_nothing(tmp_path):
    target = tmp_path / "clip"
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "0000.png").write_bytes(b"x")
            raise ValueError
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_clean_stale_temps(tmp_path):
    (tmp_path / ".x.tmp-abc.png").write_bytes(b"")
    (tmp_path / ".clip.tmp-123").mkdir()
    (tmp_path / "keep.png").write_bytes(b"")
    assert clean_stale_temps(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_manifest_marks(tmp_path):
    m = Manifest(tmp_path / "m")
    assert not m.done("train/clip_0")
    m.mark_failed("train/clip_0", "corrupt")
    assert not m.done("train/clip_0") and m.failed() == {"train/clip_0": "corrupt"}
    m.mark_done("train/clip_0", frames=3)
    assert m.done("train/clip_0") and m.info("train/clip_0")["frames"] == 3 and m.failed() == {}
    m.clear("train/clip_0")
    assert not m.done("train/clip_0")


def test_write_json_atomic_roundtrip(tmp_path):
    import json
    write_json_atomic(tmp_path / "a" / "meta.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a" / "meta.json").read_text()) == {"a": [1, 2], "b": 1}


# ------------------------------------------------------------------ images
def test_png_16bit_roundtrip_and_8bit(tmp_path):
    rng = np.random.default_rng(0)
    alpha = rng.random((17, 23)).astype(np.float32)
    write_png(tmp_path / "a.png", alpha, bits=16)
    assert cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    back = read_image(tmp_path / "a.png", gray=True)
    assert back.shape == alpha.shape and np.abs(back - alpha).max() <= 0.5 / 65535 + 1e-7
    rgb = rng.random((9, 11, 3)).astype(np.float32)
    write_png(tmp_path / "c.png", rgb)
    assert np.abs(read_image(tmp_path / "c.png") - rgb).max() <= 0.5 / 255 + 1e-6


def test_png_channel_order_is_rgb(tmp_path):
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 1
    write_png(tmp_path / "r.png", red)
    bgr = cv2.imread(str(tmp_path / "r.png"))
    assert bgr[0, 0].tolist() == [0, 0, 255]
    assert read_image(tmp_path / "r.png")[0, 0].tolist() == [1.0, 0.0, 0.0]


def test_read_image_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_list_images_sorted_without_temps(tmp_path):
    for name in ["0002.png", "0000.png", ".0001.tmp-x.png", "notes.txt", "0001.jpg"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["0000.png", "0001.jpg", "0002.png"]


# ------------------------------------------------------------------ video
def _frames(t=5, h=31, w=45):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx + 3 * i) % w / w, yy / h, np.full_like(xx, 0.5, dtype=float)], -1)
                     for i in range(t)]).astype(np.float32)


def test_video_roundtrip_odd_size(tmp_path):
    frames = _frames()
    write_video(tmp_path / "v.mp4", frames, fps=12)
    back = read_video(tmp_path / "v.mp4")
    assert back.shape[0] == 5 and back.dtype == np.uint8
    back = back[:, :31, :45].astype(np.float32) / 255  # padded to even size by one edge pixel
    assert np.abs(back - frames).mean() < 4 / 255  # H.264 is lossy: close, not exact
    info = video_info(tmp_path / "v.mp4")
    assert info["frames"] == 5 and abs(info["fps"] - 12) < 1e-6


def test_truncated_and_missing_video_errors(tmp_path):
    write_video(tmp_path / "v.mp4", _frames(t=20, h=64, w=64), fps=25)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cut.mp4"):
        list(iter_video(tmp_path / "cut.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(UserError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    with pytest.raises(UserError, match="not found"):
        read_video(tmp_path / "nope.mp4")


def test_clip_sources_prefer_lossless_folder(tmp_path):
    frames = _frames(t=3)
    write_video(tmp_path / "a.mp4", frames)
    write_video(tmp_path / "b.mp4", frames)
    (tmp_path / "b").mkdir()
    for i, f in enumerate(frames):
        write_png(tmp_path / "b" / frame_name(i), f)
    sources = clip_sources(tmp_path)
    assert sources["a"].suffix == ".mp4" and sources["b"].is_dir()
    np.testing.assert_allclose(read_clip(sources["b"]), np.round(frames * 255) / 255, atol=1e-6)
    assert read_clip(sources["a"]).shape[0] == 3


# ------------------------------------------------------------------ cli + paths
def test_shards_partition_units():
    items = [f"clip_{i}" for i in range(11)]
    parts = [shard_items(items, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert all(not set(a) & set(b) for a in parts for b in parts if a is not b)
    for bad in ["3/3", "x", "1/0", "-1/2"]:
        with pytest.raises(UserError):
            parse_shard(bad)


def test_unit_seed_is_stable_and_distinct():
    assert unit_seed(0, "train", "clip_0") == unit_seed(0, "train", "clip_0")
    assert len({unit_seed(s, "train", c) for s in range(3) for c in "abc"}) == 9


def test_run_main_prints_one_line_and_exits_nonzero(capsys):
    def main(argv):
        raise UserError("video not found: /x.mp4")

    with pytest.raises(SystemExit) as exc:
        run_main(main, [])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: video not found: /x.mp4\n"


def test_layout_paths():
    lay = DataLayout("/d")
    assert str(lay.frames("train", "alpha", "c1")) == "/d/frames/train/alpha/c1/frames"
    assert str(lay.frames("test", "image", "c1", tree="frames_sharp")) == "/d/frames_sharp/test/image/c1/frames"
    assert str(lay.frames_video("train", "image", "c1")) == "/d/frames/train/image/c1/video/c1.mp4"
    assert frame_index(frame_name(17)) == 17


def test_scripts_run_as_file_and_module():
    for cmd in ([sys.executable, "preprocess/make_demo_data.py", "--help"],
                [sys.executable, "-m", "preprocess.make_demo_data", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "--seed" in out.stdout
