"""The preamble and the per-clip loop of the five data stages (compose, depth, blur, frame extraction, guide masks).

Each stage parses and checks its flags first (nothing read or written yet), then opens its data root with
:func:`open_stage`: the root must exist, and the stage holds its lock on it (one run per stage and shard) until it
ends.

A clip is a stage's unit. For each split a stage lists its clips and hands them to :class:`ClipRunner`, which takes
this shard's share, skips the clips already done (unless ``--overwrite``), runs the stage's per-clip function on
the others and records a clip that fails for a reason the user can fix (``UserError``) as failed, so the other
clips still run and the stage ends with one ``error:`` line and exit code 2 (:func:`utils.cli.finish_units`).
Anything else (a bug, Ctrl-C, out of memory, a kill) stops the stage and leaves the clip unrecorded: a rerun
redoes it.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from utils.atomic import Manifest
from utils.cli import UserError, finish_units, shard_items
from utils.locks import stage_lock
from utils.paths import DataLayout


@contextlib.contextmanager
def open_stage(root: str | os.PathLike, stage: str, shard: str) -> Iterator[DataLayout]:
    """The data root of a stage's run, for the ``with`` block: a root that is not a folder is a ``UserError``
    (``data root not found: <root>``, exit 1) before anything is read or written; then the stage's lock on it
    (``utils.locks.stage_lock``: ``<root>/.manifest/.locks/<stage>.<I>of<N>.lock``, one run per stage and shard;
    a second one is ``Busy``) is held until the block ends. Yields the root's :class:`DataLayout`."""
    layout = DataLayout(root)
    if not layout.root.is_dir():
        raise UserError(f"data root not found: {layout.root}")
    with stage_lock(layout.root, stage, shard):
        yield layout


class ClipRunner:
    """Runs a stage's clips split after split and keeps the tally: ``done``, ``skipped`` and ``failed``.

    Per split, :meth:`run` takes two functions of a clip's name from the stage:

    * ``is_done(clip)``: whether the clip's record and outputs are current (the stage's own test: outputs
      present, same settings, upstream fingerprints unchanged...). Not asked under ``--overwrite``: a cache too
      broken to read must not stop the redo that repairs it. A ``UserError`` it raises stops the stage (exit 1).
    * ``process(clip)``: does the clip: cleans its stale temporaries, writes its outputs atomically, then records it
      with ``manifest.mark_done`` and logs it (the stage's own line). A ``UserError`` is a failed clip: logged as
      ``fail_format % (split, clip, reason)`` at ``fail_level``, recorded with ``manifest.mark_failed`` and
      listed by :meth:`exit_code`; ``fatal`` subclasses (a missing model: every clip would fail) stop the stage.

    ``skip_format`` (e.g. ``"depth %s: %d clip(s) already cached, skipped (use --overwrite to redo)"``): the line
    logged per split with the number of clips skipped as done.

    The stages record their clips themselves, not the runner: depth's record is also written when the blur
    stage computes a missing depth, and blur records its chunks on the way; each logs after its record.
    """

    def __init__(self, log: logging.Logger, shard: str, overwrite: bool, *, fail_format: str,
                 fail_level: int = logging.WARNING, fatal: tuple[type[UserError], ...] = (),
                 skip_format: str | None = None):
        self.log, self.shard, self.overwrite = log, shard, overwrite
        self.fail_level, self.fail_format, self.fatal = fail_level, fail_format, fatal
        self.skip_format = skip_format
        self.done = self.skipped = 0
        self.failed: dict[str, str] = {}  # {"split/clip": reason}

    def run(self, split: str, clips: Sequence[str], manifest: Manifest, process: Callable[[str], object],
            is_done: Callable[[str], bool], *, desc: str, leave: bool = True) -> int:
        """Run this shard's share of ``clips`` (sorted) of ``split``; ``manifest`` is the stage's record of the
        split. Returns how many of them were skipped as done (logged as ``skip_format % (split, count)`` when the
        runner has one and some were)."""
        skipped = 0
        # disable=None: a bar only on a terminal; in a log file or a pipe its residue would share a line with the
        # next message
        for clip in tqdm(shard_items(clips, self.shard), desc=desc, unit="clip", leave=leave, disable=None):
            if not self.overwrite and is_done(clip):
                skipped += 1
                continue
            try:
                process(clip)
            except UserError as exc:
                if isinstance(exc, self.fatal):
                    raise
                self.log.log(self.fail_level, self.fail_format, split, clip, exc)
                manifest.mark_failed(clip, str(exc))  # a rerun tries it again
                self.failed[f"{split}/{clip}"] = str(exc)
                continue
            self.done += 1
        self.skipped += skipped
        if skipped and self.skip_format:
            self.log.info(self.skip_format, split, skipped)
        return skipped

    def exit_code(self) -> int:
        """0, or (with failed clips) ``EXIT_UNITS_FAILED`` after one ``error: N clip(s) failed: ...`` line."""
        return finish_units(self.failed)
