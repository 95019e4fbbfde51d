"""Command-line conventions shared by every stage.

Every stage takes ``--root --split --shard --overwrite --seed``; user-caused errors end in one readable
line and a non-zero exit (``UserError`` + ``run_main``), programming errors still raise.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from typing import Callable, Sequence, TypeVar

from utils.paths import repo_default

T = TypeVar("T")

SPLITS = ("train", "test")
EXIT_USER_ERROR = 1  # an error to fix before rerunning (one `error:` line; nothing was written)
EXIT_UNITS_FAILED = 2  # some units failed and were recorded as such; the others are done (1 = a user error)
EXIT_OOM = 3  # out of memory (run_blur.sh restarts the worker with smaller chunks)
EXIT_MISMATCH = 4  # bench/gpu_check.py only: a numeric check failed (no stage or launcher exits 4)
EXIT_USAGE = 64  # a wrong command line (unknown flag, bad value): sysexits' EX_USAGE, never retried
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT: the launchers stop too


class UserError(Exception):
    """An error the user can fix (bad path, corrupt video, missing weights): printed as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a usage error of its own exit code (``EXIT_USAGE``), distinct from "some clips failed" (2).

    Like argparse, prints the usage and one ``<prog>: error: ...`` line; only the exit code differs."""

    def error(self, message: str):  # noqa: D102
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UsageError(UserError):
    """A flag value argparse cannot check (e.g. ``--focus nan``): like a usage error, exit ``EXIT_USAGE``."""


def add_common_args(parser: argparse.ArgumentParser, root_default: str = "data/demo") -> argparse.ArgumentParser:
    """Add the flags every stage shares."""
    parser.add_argument("--root", default=repo_default(root_default), help="data root (default: %(default)s)")
    parser.add_argument("--split", default="all", choices=("train", "test", "all"), help="which split to process")
    parser.add_argument("--shard", default="0/1", help="I/N: process the I-th of N interleaved shards of the units")
    parser.add_argument("--overwrite", action="store_true", help="recompute units that are already done")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each unit derives its own from it")
    return parser


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``low`` (less, or not a whole number, is a usage error, exit 64)."""
    def at_least(text: str) -> int:
        return _int_at_least(text, low)

    at_least.__name__ = at_least.__qualname__ = f"int_at_least_{low}"
    return at_least


def nonneg_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 0 (a negative count or size is a usage error, exit 64)."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1 (a size or count of 0 or less is a usage error, exit 64)."""
    return _int_at_least(text, 1)


def finite_float(low: float | None = None, high: float | None = None, *,
                 low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``; ``None``: no
    bound on that side). ``nan``, ``inf`` or a value out of range is a usage error (exit 64), before anything runs."""
    interval = (("(-inf" if low is None else f"{'(' if low_open else '['}{low:g}") + ", "
                + ("inf)" if high is None else f"{high:g}]"))

    def finite(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    finite.__name__ = finite.__qualname__ = "finite_float"
    return finite


def splits_of(split: str) -> tuple[str, ...]:
    """``'all'`` -> both splits, otherwise the one named."""
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use train, test or all")
    return (split,)


def parse_shard(shard: str) -> tuple[int, int]:
    """Parse ``'I/N'`` into ``(I, N)`` with ``0 <= I < N``."""
    try:
        index_s, count_s = shard.split("/")
        index, count = int(index_s), int(count_s)
    except ValueError:
        raise UserError(f"--shard must look like I/N (e.g. 0/4), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return index, count


def shard_items(items: Sequence[T], shard: str) -> list[T]:
    """The units of ``items`` (sorted by the caller) that belong to this shard, interleaved."""
    index, count = parse_shard(shard)
    return [item for i, item in enumerate(items) if i % count == index]


def unit_seed(seed: int, *names: object) -> int:
    """A 32-bit seed derived from the base seed and a unit's names (clip, frame...).

    Derived from a hash, never from the worker or process, so results do not depend on sharding, worker count
    or restarts.
    """
    text = "/".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def finish_units(failed: dict[str, str]) -> int:
    """A stage's exit code. With failed units (``{'split/clip': reason}``, each already recorded in the stage's
    manifest and retried by a rerun): one line ``error: N clip(s) failed: ...`` on stderr and
    ``EXIT_UNITS_FAILED``; otherwise 0."""
    if not failed:
        return 0
    print(f"error: {len(failed)} clip(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()),
          file=sys.stderr)
    return EXIT_UNITS_FAILED


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not the stream of the first call)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(verbose: bool = False) -> None:
    """Plain ``LEVEL message`` logs on stderr."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run an entry point: ``UserError`` -> ``error: <message>`` on stderr and exit 1 (``UsageError``: 64);
    a bad command line -> argparse's usage and exit 64; Ctrl-C -> exit 130."""
    setup_logging()
    try:
        code = main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError:
        print("error: out of memory (use smaller inputs, chunks or batches)", file=sys.stderr)
        sys.exit(EXIT_OOM)
    except OSError as exc:  # a read-only or full disk, a quota, a folder another process removed...
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():  # torch.OutOfMemoryError (CUDA) is a RuntimeError
            raise
        print("error: out of memory (use smaller inputs, chunks or batches)", file=sys.stderr)
        sys.exit(EXIT_OOM)
    except SystemExit as exc:
        # a plain argparse parser (one not built with utils.cli.ArgumentParser) exits 2 on a bad command line:
        # 2 means "some clips failed" here, so a usage error is told apart (nothing else in main raises 2)
        if exc.code == 2:
            sys.exit(EXIT_USAGE)
        raise
    sys.exit(code or 0)


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError``: what failed and on which path (``No space left on device: runs/x/last.pt``)."""
    what = exc.strerror or str(exc) or exc.__class__.__name__
    paths = [p for p in (exc.filename, exc.filename2) if p]
    return f"{what}: {' -> '.join(map(str, paths))}" if paths else what


def require_existing(path, what: str = "path"):
    """Return ``path`` as a Path, or raise ``UserError`` naming it."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    return p
