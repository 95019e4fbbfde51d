"""Shared helpers added for the synthesis stages: Manifest.done_units, clean_stale_temps(name=...),
utils.video.iter_clip / clip_fps."""
from __future__ import annotations

import numpy as np
import pytest

from utils.atomic import Manifest, clean_stale_temps
from utils.cli import UserError
from utils.images import write_png
from utils.video import clip_fps, iter_clip, read_clip, write_video


def test_done_units_by_prefix(tmp_path):
    m = Manifest(tmp_path / "m")
    m.mark_done("a/chunk0000-0003", frames=[0, 1, 2, 3])
    m.mark_done("a/chunk0004-0004", frames=[4])
    m.mark_done("ab/chunk0000-0001", frames=[0, 1])
    m.mark_failed("a/chunk0005-0005", "boom")
    units = m.done_units("a/chunk")
    assert sorted(units) == ["a/chunk0000-0003", "a/chunk0004-0004"]
    assert units["a/chunk0004-0004"]["frames"] == [4]
    assert len(m.done_units()) == 3


def test_clean_stale_temps_only_of_one_unit(tmp_path):
    (tmp_path / ".a.tmp-x1.npz").write_bytes(b"")
    (tmp_path / ".ab.tmp-x2.npz").write_bytes(b"")
    (tmp_path / ".a.tmp-dir").mkdir()
    (tmp_path / "a.npz").write_bytes(b"keep")
    assert clean_stale_temps(tmp_path, name="a") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ab.tmp-x2.npz", "a.npz"]
    assert clean_stale_temps(tmp_path) == 1


def test_iter_clip_streams_folder_and_video(tmp_path):
    frames = np.random.default_rng(0).uniform(0, 1, (3, 16, 20)).astype(np.float32)
    for t, f in enumerate(frames):
        write_png(tmp_path / "c" / f"{t:04d}.png", f, bits=16)
    got = np.stack(list(iter_clip(tmp_path / "c", gray=True)))
    np.testing.assert_array_equal(got, read_clip(tmp_path / "c", gray=True))
    write_video(tmp_path / "c.mp4", np.repeat(frames[..., None], 3, axis=3), fps=12)
    assert clip_fps(tmp_path / "c") == pytest.approx(12)  # a folder takes its sibling mp4's rate
    assert clip_fps(tmp_path / "c.mp4") == pytest.approx(12)
    assert len(list(iter_clip(tmp_path / "c.mp4"))) == 3
    write_png(tmp_path / "c" / "0003.png", np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match="differ in size"):
        list(iter_clip(tmp_path / "c", gray=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no frames"):
        list(iter_clip(tmp_path / "empty"))
