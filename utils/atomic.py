"""Atomic writes and the resume manifest.

A kill at any moment must lose nothing and leave nothing half-written: every file is written to a temporary
name in the same folder and renamed into place (``os.replace`` is atomic on POSIX); whole folders are built
under a temporary name and renamed at the end. Finished units are recorded as one marker file each, so shards
running at once never race on a shared manifest file.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from utils.cli import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` with the mode a plain ``mkdir`` would give (0777 less the umask, not 0700), since the
    folder is renamed into place as an output."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _temp_sibling(path: Path, is_dir: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix so encoders that choose by extension (cv2.imwrite) still work on the temp name
    if is_dir:
        return make_temp_dir(path.parent, f".{path.name}.tmp-")
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets what open() would give it
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` whole, on error it is removed."""
    path = Path(path)
    tmp = _temp_sibling(path, is_dir=True)
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists")
            old = _temp_sibling(path, is_dir=True)
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def clean_stale_temps(folder: str | os.PathLike, name: str | None = None) -> int:
    """Remove temporaries a killed run left behind in ``folder`` (non-recursive). Returns how many.

    With ``name`` (a folder's name, or a file's stem), only the temporaries of that one target
    are removed, so a shard can clean up after itself while other shards are writing in the same folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    pattern = f".{glob.escape(name)}.tmp-*" if name else ".*.tmp-*"
    for p in folder.glob(pattern):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


class Manifest:
    """Which units of a stage are finished (or failed), one marker file per unit under ``folder``.

    ``done(unit)`` is true only after ``mark_done`` ran, which callers do after every output of the unit was
    written atomically; so a unit killed half-way is simply redone.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _marker(self, unit: str, status: str) -> Path:
        safe = unit.replace("/", "__")
        return self.folder / f"{safe}.{status}.json"

    def done(self, unit: str) -> bool:
        return self._marker(unit, "done").exists()

    def info(self, unit: str) -> dict | None:
        marker = self._marker(unit, "done")
        return json.loads(marker.read_text()) if marker.exists() else None

    def mark_done(self, unit: str, **info: Any) -> None:
        """Record ``unit`` as finished. Each completion gets a fresh random ``stamp``, so a unit that was redone
        (even with identical settings) has a new :meth:`fingerprint` and the stages after it notice."""
        self._marker(unit, "failed").unlink(missing_ok=True)
        write_json_atomic(self._marker(unit, "done"),
                          {"unit": unit, "status": "done", "stamp": secrets.token_hex(8), **info})

    def fingerprint(self, unit: str) -> str | None:
        """A short hash of the unit's 'done' record, or ``None`` when the unit is not finished (never started,
        half-done, failed, or killed). A downstream stage stores it with its own unit (``upstream=...``) and
        redoes its unit when the upstream fingerprint changed: see :func:`upstream_fingerprint`."""
        try:
            data = self._marker(unit, "done").read_bytes()
        except FileNotFoundError:
            return None
        return hashlib.sha256(data).hexdigest()[:16]

    def mark_failed(self, unit: str, reason: str) -> None:
        """Record a bad unit (never as done) so a summary can list it; a rerun tries it again."""
        write_json_atomic(self._marker(unit, "failed"), {"unit": unit, "status": "failed", "reason": reason})

    def failed(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.folder.glob("*.failed.json")):
            d = json.loads(p.read_text())
            out[d["unit"]] = d["reason"]
        return out

    def done_units(self, prefix: str = "") -> dict[str, dict]:
        """``{unit: info}`` of every finished unit whose name starts with ``prefix`` (e.g. a clip's chunks)."""
        out = {}
        for p in sorted(self.folder.glob(prefix.replace("/", "__") + "*.done.json")):
            info = json.loads(p.read_text())
            if info.get("unit", "").startswith(prefix):
                out[info["unit"]] = info
        return out

    def clear(self, unit: str) -> None:
        self._marker(unit, "done").unlink(missing_ok=True)
        self._marker(unit, "failed").unlink(missing_ok=True)


class UpstreamNotDone(UserError):
    """The previous stage has not recorded this unit as finished (see :func:`upstream_fingerprint`)."""


def upstream_fingerprint(upstream: Manifest, unit: str, how_to_finish: str) -> str:
    """The fingerprint of ``unit`` in the previous stage's manifest, or ``UpstreamNotDone`` naming what to run.

    The one rule between stages: a stage consumes only units the stage before it recorded as complete (a
    half-written clip of a failed or killed run is refused, never taken as input), and stores this fingerprint
    with its own record, so a unit redone upstream is redone downstream on the next run.
    """
    fp = upstream.fingerprint(unit)
    if fp is None:
        raise UpstreamNotDone(f"not finished by the {upstream.folder.parent.name} stage ({how_to_finish})")
    return fp
