"""Between stages: a stage takes only the units the stage before it recorded as finished, and redoes a unit whose
upstream unit changed since (utils.atomic.upstream_fingerprint)."""
from __future__ import annotations

from pathlib import Path

import pytest

from preprocess import compose_video_bg, dof_blur
from preprocess import frame_extraction as fe
from preprocess import guide_mask as gm
from tests.synth_data import composed_root_fixtures
from utils.atomic import Manifest, UpstreamNotDone, upstream_fingerprint
from utils.cli import EXIT_UNITS_FAILED
from utils.images import list_images
from utils.paths import DataLayout


def _blur_args(root: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--split", "train", "--seed", "1", "--ref_height", "48", "--coc_range", "2", "4",
            "--sigma_max_range", "2", "3", "--chunk", "1", "--no_preview", *extra]


composed_root, root = composed_root_fixtures("handoff", clips=("a", "b"), n=6, h=48, w=64)


def _frames(root: Path, clip: str) -> list[str]:
    folder = DataLayout(root).frames("train", "alpha", clip)
    return [p.name for p in list_images(folder)] if folder.is_dir() else []


def test_manifest_fingerprint_changes_on_every_completion(tmp_path):
    m = Manifest(tmp_path / "m")
    assert m.fingerprint("a") is None
    with pytest.raises(UpstreamNotDone, match="rerun x"):
        upstream_fingerprint(m, "a", "rerun x")
    m.mark_done("a", frames=3)
    first = m.fingerprint("a")
    assert upstream_fingerprint(m, "a", "") == first
    m.mark_done("a", frames=3)  # redone with identical settings: still a new fingerprint
    assert m.fingerprint("a") != first
    m.mark_failed("a", "x")
    m.clear("a")
    assert m.fingerprint("a") is None


def test_failed_blur_clip_is_refused_downstream_then_repaired(root, capsys):
    """The report's reproduction: a corrupt composed frame -> blur exits 2 leaving frames 0000-0001 of the clip;
    frame extraction must refuse that clip (exit 2, nothing extracted), and after the frame is restored and blur
    completes the clip, frame extraction must extract it again, whole."""
    frame = root / "composed/train/a/fgr/0002.png"
    good = frame.read_bytes()
    frame.write_text("x\n")
    assert dof_blur.main(_blur_args(root)) == EXIT_UNITS_FAILED
    partial = DataLayout(root).blurred("train", "a") / "alpha"
    assert [p.name for p in list_images(partial)] == ["0000.png", "0001.png"]  # what the report saw

    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == EXIT_UNITS_FAILED
    err = capsys.readouterr().err
    assert "train/a" in err and "blur" in err
    assert _frames(root, "a") == []  # refused: never taken as a 2-frame clip
    assert len(_frames(root, "b")) == 6
    assert not Manifest(DataLayout(root).manifest("frames", "train")).done("a")

    frame.write_bytes(good)
    assert dof_blur.main(_blur_args(root)) == 0
    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == 0
    assert _frames(root, "a") == [f"{i:04d}.png" for i in range(6)]


def test_killed_blur_clip_is_refused_downstream(root):
    """A blur run killed mid-clip: chunks recorded, the clip not -- frame extraction refuses the clip."""
    assert dof_blur.main(_blur_args(root)) == 0
    lay = DataLayout(root)
    Manifest(lay.manifest("blur", "train")).clear("a")  # what a kill between chunks leaves: the clip not done
    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == EXIT_UNITS_FAILED
    assert _frames(root, "a") == [] and _frames(root, "b")
    assert dof_blur.main(_blur_args(root)) == 0  # the resumed blur finishes the clip (its chunks are kept)
    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == 0
    assert len(_frames(root, "a")) == 6


def test_redone_upstream_clip_is_redone_downstream(root, caplog):
    """A clip re-blurred after frame extraction (here with --overwrite) is extracted again, not 'already done';
    a clip composed again is blurred again; frames redone -> masks redone."""
    assert dof_blur.main(_blur_args(root)) == 0
    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == 0
    assert gm.main(["--root", str(root), "--split", "train", "--no_preview"]) == 0
    lay = DataLayout(root)
    frames_fp = Manifest(lay.manifest("frames", "train")).fingerprint("a")
    masks_fp = Manifest(lay.manifest("frames_mask", "train")).fingerprint("a")

    assert compose_video_bg.main(["--root", str(root), "--split", "train", "--seed", "1", "--overwrite"]) == 0
    blur_fp = Manifest(lay.manifest("blur", "train")).fingerprint("a")
    assert dof_blur.main(_blur_args(root)) == 0  # no --overwrite: the composed clips changed, so they are redone
    assert Manifest(lay.manifest("blur", "train")).fingerprint("a") != blur_fp

    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == 0
    assert Manifest(lay.manifest("frames", "train")).fingerprint("a") != frames_fp
    assert gm.main(["--root", str(root), "--split", "train", "--no_preview"]) == 0
    assert Manifest(lay.manifest("frames_mask", "train")).fingerprint("a") != masks_fp

    # and with nothing changed, every stage skips
    before = {s: Manifest(lay.manifest(s, "train")).fingerprint("a") for s in ("blur", "frames", "frames_mask")}
    assert dof_blur.main(_blur_args(root)) == 0
    assert fe.main(["--root", str(root), "--split", "train", "--no_video"]) == 0
    assert gm.main(["--root", str(root), "--split", "train", "--no_preview"]) == 0
    assert before == {s: Manifest(lay.manifest(s, "train")).fingerprint("a") for s in ("blur", "frames", "frames_mask")}


def test_records_from_before_fingerprints_are_taken_once_upgraded(root):
    """A data root blurred before records held fingerprints is not re-blurred whole: its (complete) blur and
    depth records are taken as current and upgraded; frames made from them are redone once (cheap)."""
    import json

    assert dof_blur.main(_blur_args(root)) == 0
    lay = DataLayout(root)
    for stage in ("blur", "depth"):
        for marker in lay.manifest(stage, "train").glob("*.done.json"):
            info = json.loads(marker.read_text())
            info.pop("upstream"), info.pop("stamp")
            marker.write_text(json.dumps(info))
    image = lay.blurred("train", "a") / "image" / "0000.png"
    mtime = image.stat().st_mtime_ns
    assert dof_blur.main(_blur_args(root)) == 0
    assert image.stat().st_mtime_ns == mtime  # not re-rendered
    assert "upstream" in Manifest(lay.manifest("blur", "train")).info("a")
    assert dof_blur.main(_blur_args(root)) == 0 and image.stat().st_mtime_ns == mtime
