"""utils.stage.ClipRunner, the per-clip loop of the five data stages, with a tiny fake stage: skip done clips,
redo them under --overwrite, a UserError is one failed clip (recorded, no output, the others still run, exit 2),
anything else stops the stage with the clip unrecorded."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from utils.atomic import Manifest, atomic_dir
from utils.cli import EXIT_UNITS_FAILED, UserError
from utils.stage import ClipRunner

CLIPS = ["a", "b", "c"]
log = logging.getLogger("fake_stage")


class FakeStage:
    """A stage whose clip is one folder with one file, built atomically, recorded last; ``fail`` maps a clip to the
    exception its next run raises half-way through writing it."""

    def __init__(self, root: Path):
        self.out, self.manifest = root / "out", Manifest(root / "manifest")
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def process(self, clip: str) -> None:
        self.calls.append(clip)
        with atomic_dir(self.out / clip, overwrite=True) as tmp:
            (tmp / "x.txt").write_text(f"{clip} {len(self.calls)}")
            if clip in self.fail:
                raise self.fail.pop(clip)
        self.manifest.mark_done(clip, run=len(self.calls))

    def is_done(self, clip: str) -> bool:
        return self.manifest.done(clip) and (self.out / clip).is_dir()

    def run(self, runner: ClipRunner, clips=CLIPS) -> int:
        return runner.run("train", clips, self.manifest, self.process, self.is_done, desc="fake train")


def _runner(overwrite: bool = False, shard: str = "0/1", **kw) -> ClipRunner:
    return ClipRunner(log, shard, overwrite, **{"fail_format": "fake %s/%s failed: %s", **kw})


def test_done_clips_are_skipped(tmp_path):
    stage = FakeStage(tmp_path)
    first = _runner()
    assert stage.run(first) == 0 and stage.calls == CLIPS
    assert (first.done, first.skipped, first.exit_code()) == (3, 0, 0)
    second = _runner()
    assert stage.run(second) == 3 and stage.calls == CLIPS  # nothing processed again
    assert (second.done, second.skipped, second.exit_code()) == (0, 3, 0)
    # a done record without its output is not done
    shutil.rmtree(stage.out / "b")
    assert stage.run(_runner()) == 2 and stage.calls == CLIPS + ["b"]


def test_overwrite_redoes_done_clips_without_asking_is_done(tmp_path):
    stage = FakeStage(tmp_path)
    stage.run(_runner())
    stage.is_done = lambda clip: pytest.fail("is_done asked under --overwrite")
    runner = _runner(overwrite=True)
    assert stage.run(runner) == 0 and (runner.done, runner.skipped) == (3, 0)
    assert stage.calls == CLIPS * 2
    assert stage.manifest.info("c")["run"] == 6 and (stage.out / "c" / "x.txt").read_text() == "c 6"


def test_user_error_is_one_failed_clip(tmp_path, caplog, capsys):
    stage = FakeStage(tmp_path)
    stage.fail["b"] = UserError("corrupt frame 3")
    runner = _runner()
    with caplog.at_level("INFO"):
        assert stage.run(runner) == 0
    assert stage.calls == CLIPS  # the clips after the failed one still ran
    assert stage.manifest.done("a") and stage.manifest.done("c") and not stage.manifest.done("b")
    assert stage.manifest.failed() == {"b": "corrupt frame 3"}
    assert not (stage.out / "b").exists() and not list(stage.out.glob(".*tmp*"))  # nothing of b left
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("fake_stage", "WARNING", "fake train/b failed: corrupt frame 3")]
    assert (runner.done, runner.skipped, runner.failed) == (2, 0, {"train/b": "corrupt frame 3"})
    assert runner.exit_code() == EXIT_UNITS_FAILED
    # the one error line (earlier tests may have set up a log handler on stderr too: only the last line counts)
    assert capsys.readouterr().err.splitlines()[-1] == "error: 1 clip(s) failed: train/b: corrupt frame 3"

    # a rerun retries only the failed clip; done, it is no longer listed as failed
    rerun = _runner()
    assert stage.run(rerun) == 2 and stage.calls == CLIPS + ["b"]
    assert stage.manifest.done("b") and stage.manifest.failed() == {} and rerun.exit_code() == 0


def test_failures_of_several_splits_add_up(tmp_path, caplog, capsys):
    stage = FakeStage(tmp_path)
    stage.fail.update(a=UserError("one"))
    runner = _runner(fail_level=logging.ERROR, fail_format="%s/%s: %s")  # frame extraction's and masks' line
    stage.run(runner)
    test = FakeStage(tmp_path / "test")
    test.fail.update(c=UserError("two"))
    runner.run("test", CLIPS, test.manifest, test.process, test.is_done, desc="fake test")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("ERROR", "train/a: one"), ("ERROR", "test/c: two")]
    assert runner.failed == {"train/a": "one", "test/c": "two"} and runner.done == 4
    assert runner.exit_code() == EXIT_UNITS_FAILED
    assert capsys.readouterr().err.splitlines()[-1] == "error: 2 clip(s) failed: train/a: one; test/c: two"


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), KeyboardInterrupt(), MemoryError()])
def test_killed_clip_propagates_and_stays_unrecorded(tmp_path, exc):
    stage = FakeStage(tmp_path)
    stage.fail["b"] = exc
    runner = _runner()
    with pytest.raises(type(exc)):
        stage.run(runner)
    assert stage.calls == ["a", "b"]  # the stage stopped at b
    assert stage.manifest.done("a") and not stage.manifest.done("b") and stage.manifest.failed() == {}
    assert not (stage.out / "b").exists() and not list(stage.out.glob(".*tmp*"))
    assert runner.failed == {}
    # the next run redoes b (and does c), skipping a
    assert stage.run(_runner()) == 1 and stage.calls == ["a", "b", "b", "c"]


def test_fatal_user_error_stops_the_stage(tmp_path):
    class ModelMissing(UserError):
        pass

    stage = FakeStage(tmp_path)
    stage.fail["a"] = ModelMissing("checkpoint not found")
    with pytest.raises(ModelMissing):
        stage.run(_runner(fatal=(ModelMissing,)))
    assert stage.calls == ["a"] and stage.manifest.failed() == {} and not stage.manifest.done("a")


def test_user_error_of_the_skip_check_stops_the_stage(tmp_path):
    """An unreadable record (depth's cache) is an error to fix with --overwrite, not a failed clip."""
    stage = FakeStage(tmp_path)

    def unreadable(clip):
        raise UserError("unreadable cache; rerun with --overwrite")

    stage.is_done = unreadable
    with pytest.raises(UserError, match="unreadable"):
        stage.run(_runner())
    assert stage.calls == [] and stage.manifest.failed() == {}
    assert stage.run(_runner(overwrite=True)) == 0 and stage.calls == CLIPS


def test_shards_share_the_clips(tmp_path):
    stage = FakeStage(tmp_path)
    clips = [f"clip_{i}" for i in range(5)]
    stage.run(_runner(shard="1/2"), clips)
    assert stage.calls == ["clip_1", "clip_3"]
    stage.run(_runner(shard="0/2"), clips)
    assert sorted(stage.calls) == clips
