"""Locks: one process per (data root, stage, shard) and per training run name.

Two runs of the same stage and shard on one root would delete each other's temporary folders; two trainings of
one run name would both append to its CSV files. A lock is an ``fcntl.flock`` on a small file: the kernel drops it
when its process ends, however it ends (kill -9 included), so a stale lock never blocks a rerun.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from utils.cli import UserError


class Busy(UserError):
    """Another process holds the lock."""


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str, remove: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block, or raise ``Busy``: one line
    naming ``what`` is running, its process id and the lock file. ``remove``: delete the file when done (for a
    lock next to a user's outputs); a process that locked a file deleted meanwhile sees it and takes the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(f"{what} is already running (process {pid}; lock {path}): wait for it to end or stop it, "
                       "then rerun") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder deleted on release: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if remove:
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def stage_lock(root: str | os.PathLike, stage: str, shard: str) -> contextlib.AbstractContextManager:
    """The lock of one stage's shard on one data root: ``<root>/.manifest/.locks/<stage>.<I>of<N>.lock``. Other
    shards (a job array) run at once; the same shard twice does not."""
    from utils.cli import parse_shard

    index, count = parse_shard(shard)
    return hold_lock(Path(root) / ".manifest" / ".locks" / f"{stage}.{index}of{count}.lock",
                     f"{stage} (shard {index}/{count}) on {root}")
