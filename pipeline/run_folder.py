"""A training run's folder, ``<runs_dir>/<name>/``: the one mechanism of every training entry point (the solver,
``pipeline/train_fine.py``, and through the solver every ablation run).

* one run per name at a time: :meth:`RunFolder.lock` holds ``<runs_dir>/.<name>.lock`` (a second run of the same
  name stops with one line; a killed run's lock goes with its process);
* a run is there once it has a checkpoint: starting over it needs ``--overwrite`` (which deletes the run's
  files), continuing it ``--resume``; logs without a checkpoint (a run killed before its first) are removed;
* temporaries a killed checkpoint write left are removed on start;
* the CSV logs are cut back to the step a resumed run continues from (:func:`truncate_csv`), so each step is
  logged once.

What a resumed run must match (its model, its base checkpoint, its budget) is each trainer's own check: the
solver's in ``_resume_checkpoint``, the fine stage's in ``_resume_state``.
"""
from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Iterator, Sequence

from utils.atomic import atomic_path, clean_stale_temps
from utils.cli import UserError
from utils.locks import hold_lock


class RunFolder:
    """``<runs_dir>/<name>/`` of a trainer whose checkpoints are ``checkpoints`` (any of them there: the run is),
    whose other outputs are ``outputs`` and whose CSV logs are ``logs`` (file names); ``what`` names the trainer
    in the lock's message ("a training run")."""

    def __init__(self, runs_dir: str | Path, name: str, what: str, checkpoints: Sequence[str],
                 outputs: Sequence[str] = (), logs: Sequence[str] = ()):
        self.path = Path(runs_dir) / name
        self.name, self.what = name, what
        self.checkpoints, self.outputs, self.logs = tuple(checkpoints), tuple(outputs), tuple(logs)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while the run trains: a second run of this name stops with one line."""
        with hold_lock(self.path.parent / f".{self.name}.lock", f"{self.what} named {self.name!r}"):
            yield

    def exists(self) -> bool:
        """Whether a run is there: any of its checkpoints."""
        return any((self.path / n).exists() for n in self.checkpoints)

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """Refuse to start over an existing run silently (before anything is written)."""
        if not resume and not overwrite and self.exists():
            raise UserError(f"{self.path} already has a run: pass --resume to continue it or --overwrite to restart")

    def open(self, fresh: bool, step: int) -> Path:
        """The folder, ready to train in (the caller holds :meth:`lock` and has passed :meth:`check_start`): a
        ``fresh`` run deletes the run's checkpoints and logs; a resumed one cuts its logs back to ``step``."""
        self.path.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.path)  # a checkpoint write a kill cut short (the run's lock is held)
        for name in self.logs:
            if fresh:
                (self.path / name).unlink(missing_ok=True)
            else:
                truncate_csv(self.path / name, step)
        if fresh:
            for name in self.checkpoints + self.outputs:
                (self.path / name).unlink(missing_ok=True)
        return self.path


def append_csv(path: Path, row: dict) -> None:
    """One row appended to a CSV log (its header first when the file is new)."""
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def truncate_csv(path: Path, step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint, so a resumed log has each step once."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(r["step"]) <= step]
    if rows and len(keep) != len(rows):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)
