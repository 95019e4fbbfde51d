"""bench/gpu_check.py: the one-line skip without CUDA, the CPU dry run of every part, and the exit codes.

The dry run is the script's own test: it runs every part (the same code paths as on a GPU) at toy sizes on the
CPU, as the command line a user runs, in about 35 s on a loaded 2-core machine.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from bench import gpu_check as gc
from tests.train_helpers import REPO


def _run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/gpu_check.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _numbers(obj):
    """Every int/float (not bool) anywhere in a JSON value."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_no_cuda_prints_one_line_writes_nothing(tmp_path):
    out = tmp_path / "out"
    r = _run(str(out), env={"CUDA_VISIBLE_DEVICES": ""})  # also on a GPU machine: no device visible
    assert r.returncode == 0, r.stderr
    assert r.stdout == gc.NO_CUDA_LINE + "\n"
    assert not out.exists()  # no file that could be taken for a measurement


def test_cpu_dry_run_every_part(tmp_path):
    out = tmp_path / "out"
    r = _run(str(out), "--cpu-dry-run", env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["finished"] is True and report["exit_code"] == 0
    assert sorted(report["parts"]) == sorted(gc.PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert part["rows"], name
        assert all(c["ok"] for c in part["checks"]), name
        numbers = list(_numbers(part["rows"]))
        assert numbers and all(math.isfinite(x) for x in numbers), name
    checks = {c["check"] for p in report["parts"].values() for c in p["checks"]}
    assert "Haar DWT vs pytorch_wavelets db1 (fp32, no TF32)" in checks and "DoF render torch (cpu) vs OpenCV" in checks
    assert {f"refiner {v} fp16 vs fp32 alpha, {g} guide" for v in ("light", "none") for g in ("binary", "flat 0.5")} \
        <= checks
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# gpu_check: CPU DRY RUN") and all(f"## {n}: ok" in md for n in gc.PARTS)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left by the atomic writes


def _fake_part(kind):
    def part(s, p):
        if kind == "error":
            raise RuntimeError("broken on purpose")
        if kind == "partial":  # a row that does not fit in the part's time: noted, not an error
            assert not p.fits("a huge row", need_s=1e9)
        p.row(x=1.0)
        p.check("diff", 0.5 if kind == "mismatch" else 0.0, 0.1)
        return p.result()
    return part


@pytest.mark.parametrize("kinds,code", [(("ok", "partial"), 0), (("error", "ok"), gc.EXIT_ERROR),
                                        (("mismatch", "error"), gc.EXIT_MISMATCH)])
def test_errors_are_rows_and_exit_codes(tmp_path, monkeypatch, kinds, code):
    for name, kind in zip(("numerics", "dwt"), kinds):
        monkeypatch.setitem(gc.PARTS, name, _fake_part(kind))
    s = gc.Settings.for_dry_run(60.0)
    report = gc.Report(tmp_path, s)
    assert gc.run_parts(s, report, ["numerics", "dwt"]) == code
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["exit_code"] == code and data["finished"]
    for name, kind in zip(("numerics", "dwt"), kinds):
        part = data["parts"][name]
        assert part["status"] == kind
        if kind == "error":
            assert part["error"] == "RuntimeError: broken on purpose"
        else:  # a broken part does not lose the other's numbers
            assert part["rows"] == [{"x": 1.0}]
            assert bool(part["notes"]) == (kind == "partial")
    assert ("**MISMATCH**" in (tmp_path / "gpu_check.md").read_text()) == ("mismatch" in kinds)


def test_spent_budget_skips_parts(tmp_path):
    s = gc.Settings.for_dry_run(0.0)
    report = gc.Report(tmp_path, s)
    assert gc.run_parts(s, report, ["dwt"]) == gc.EXIT_ERROR
    assert json.loads((tmp_path / "gpu_check.json").read_text())["parts"]["dwt"]["status"] == "skipped"


def test_watchdog_keeps_rows_of_a_hung_part(tmp_path):
    """A part still running past budget + grace (a compile that hangs): the process ends, the report keeps its rows."""
    code = f"""
import time
from pathlib import Path
from bench import gpu_check as gc
gc.WATCHDOG_GRACE_S = 0.5
def hung(s, p):
    p.row(x=1.0)
    time.sleep(60)
gc.PARTS["dwt"] = hung
s = gc.Settings.for_dry_run(2.0)
gc.run_parts(s, gc.Report(Path({str(tmp_path)!r}), s), ["dwt"])
"""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == gc.EXIT_ERROR and time.monotonic() - t0 < 30, r.stdout + r.stderr
    assert "budget of 2 s exceeded in part dwt" in r.stdout
    part = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]["dwt"]
    assert part["status"] == "timeout" and part["rows"] == [{"x": 1.0}]
