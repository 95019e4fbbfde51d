"""Every numeric flag of every preprocess entry point, given 0, -1, nan, 1e-7 or 1e30, ends in exit 0 (a value the
stage takes: it ran, and left no temporaries) or exit 64 (a usage error: the usage and one ``error:`` line naming the
flag, nothing written to the data root), never a traceback or any other code. NaN is never a value a stage takes.

The flags are not listed by hand: each entry point's parser is asked for its options whose ``type`` turns "1" or
"0.5" into a number (``int``, ``float``, ``utils.cli.positive_int``, ``finite_float(...)``...), so a numeric flag
added later is covered as it comes. A few string flags that also take a number (dof_blur's ``--focus``) are added.
Every run is in-process, through ``utils.cli.run_main`` (the exit codes of the command line), on one tiny data root
(one 2-frame 32x48 clip) carried through every stage once, each value run with ``--overwrite`` so it is used.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from preprocess import compose_video_bg, depth, dof_blur, frame_extraction, guide_mask, make_demo_data
from tests.synth_data import make_raw
from utils.cli import EXIT_USAGE, run_main

VALUES = ("0", "-1", "nan", "1e-7", "1e30")
# entry point -> (module, the flags of every run: one split, redo what is done, no previews)
STAGES = {
    "compose_video_bg": (compose_video_bg, ["--split", "train", "--overwrite"]),
    "depth": (depth, ["--split", "train", "--overwrite"]),
    "dof_blur": (dof_blur, ["--split", "train", "--overwrite", "--no_preview"]),
    "frame_extraction": (frame_extraction, ["--split", "train", "--overwrite", "--no_video"]),
    "guide_mask": (guide_mask, ["--split", "train", "--overwrite", "--no_preview", "--device", "cpu"]),
    "make_demo_data": (make_demo_data, ["--split", "test", "--overwrite", "--size", "32x32", "--frames", "2"]),
}
STRING_FLAGS_TAKING_NUMBERS = {"dof_blur": ["--focus"]}  # "subject|background|rack or a disparity value"


def _is_numeric(kind) -> bool:
    for probe in ("1", "0.5", "16"):
        try:
            value = kind(probe)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False


def numeric_flags(parser: argparse.ArgumentParser) -> list[tuple[str, int]]:
    """``(option, how many values it takes)`` of each option whose argparse type makes a number."""
    return [(a.option_strings[-1], a.nargs if isinstance(a.nargs, int) else 1) for a in parser._actions
            if a.option_strings and a.type is not None and _is_numeric(a.type)]


def _cases():
    for name, (module, _) in STAGES.items():
        flags = numeric_flags(module.build_parser()) + [(f, 1) for f in STRING_FLAGS_TAKING_NUMBERS.get(name, [])]
        for flag, nargs in flags:
            for value in VALUES:
                yield pytest.param(name, flag, nargs, value, id=f"{name}{flag}={value}")


def test_every_entry_point_is_covered_and_has_numeric_flags():
    """Each preprocess module with a ``main`` is in STAGES (perturb.py is a library: no command line)."""
    with_main = {p.stem for p in (Path(__file__).resolve().parent.parent / "preprocess").glob("*.py")
                 if hasattr(importlib.import_module(f"preprocess.{p.stem}"), "main")}
    assert with_main == set(STAGES)
    for name, (module, _) in STAGES.items():
        assert ("--seed", 1) in numeric_flags(module.build_parser()), name  # the enumeration sees the types
    assert {f for f, _ in numeric_flags(dof_blur.build_parser())} >= {"--coc_range", "--n_layers", "--memory_safety"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """One tiny root through compose, depth, blur, frame extraction and guide masks; another for the demo data."""
    root = make_raw(tmp_path_factory.mktemp("numeric") / "d", clips=("a",), n=2, h=32, w=48, n_backgrounds=1)
    for name in ("compose_video_bg", "depth", "dof_blur", "frame_extraction", "guide_mask"):
        module, base = STAGES[name]
        assert module.main(["--root", str(root), *base]) == 0, name
    return {**{name: root for name in STAGES}, "make_demo_data": tmp_path_factory.mktemp("numeric") / "demo"}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))} \
        if root.exists() else {}


@pytest.mark.parametrize("name,flag,nargs,value", list(_cases()))
def test_numeric_flag_is_taken_or_a_usage_error(roots, capsys, name, flag, nargs, value):
    module, base = STAGES[name]
    root = roots[name]
    before = _snapshot(root)
    code = run_flag(module.main, ["--root", str(root), *base], name, flag, nargs, value, capsys)
    if code == EXIT_USAGE:
        assert _snapshot(root) == before  # checked before anything was read or written (no lock file either)
    else:
        assert not [p for p in root.rglob("*.tmp-*")], "temporaries left"


def run_flag(main, argv: list[str], name: str, flag: str, nargs: int, value: str, capsys) -> int:
    """``main(argv + [flag, value...])`` through ``run_main``: its exit code, which must be 0 or 64 (64 for nan),
    with no traceback, and for 64 one last ``error:`` line naming the flag."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_main(main, [*argv, flag, *[value] * nargs])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert exc.value.code in (0, EXIT_USAGE), f"{name} {flag} {value}: exit {exc.value.code}\n{err}"
    if value == "nan":
        assert exc.value.code == EXIT_USAGE, f"{name} took {flag} nan"
    if exc.value.code == EXIT_USAGE:
        last = err.strip().splitlines()[-1]
        assert "error:" in last and flag.lstrip("-").split(".")[-1] in last, err
    return exc.value.code
