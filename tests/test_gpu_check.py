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


# records the top-level modules a dry run imported (its parts import what they use as they run), then runs it
_RECORD_IMPORTS = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: json.dump(sorted({m.split('.')[0] for m in list(sys.modules)}), open(out, 'w')))
sys.argv[0] = 'bench/gpu_check.py'
runpy.run_path('bench/gpu_check.py', run_name='__main__')
"""


def test_cpu_dry_run_every_part(tmp_path):
    out = tmp_path / "out"
    imports = tmp_path / "imports.json"
    r = subprocess.run([sys.executable, "-c", _RECORD_IMPORTS, str(imports), str(out), "--cpu-dry-run"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _imports_are_on_the_gpu_machine(json.loads(imports.read_text()))
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


# modules that belong to no installed distribution: this project's, the interpreter's own, and generated ones
_NO_DISTRIBUTION = {"bench", "inference", "model", "pipeline", "preprocess", "utils", "get_default_model", "tests",
                    "__main__", "__mp_main__", "cython_runtime", "_remote_module_non_scriptable"}
# packages setuptools' pkg_resources vendors and puts on sys.path itself (setuptools/_vendor)
_VENDORED_BY_SETUPTOOLS = {"backports", "jaraco", "more_itertools", "platformdirs", "packaging", "zipp",
                           "importlib_metadata", "autocommand", "inflect", "typeguard", "wheel", "tomli"}


def _names(path) -> set[str]:
    """Distribution names of a list file (one a line, ``name==version`` allowed, # comments), normalised."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.add(_norm(line.split("==")[0]))
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _imports_are_on_the_gpu_machine(modules: list[str]) -> None:
    """Every module the dry run imported comes from the lent machine's image (bench/gpu_machine_packages.txt),
    a carried wheel (bench/gpu_wheels.txt), the standard library or this project: a new import of a package the
    machine lacks fails here, not there."""
    import importlib.metadata as md

    allowed = _names(REPO / "bench/gpu_machine_packages.txt") | _names(REPO / "bench/gpu_wheels.txt")
    dists = md.packages_distributions()
    stray = {}
    for mod in modules:
        if mod in sys.stdlib_module_names or mod in _NO_DISTRIBUTION or mod.startswith(("_cython_", "_sysconfigdata",
                                                                                        "__editable__")):
            continue
        names = {_norm(d) for d in dists.get(mod, [])}
        if mod in _VENDORED_BY_SETUPTOOLS and not names & allowed:
            continue
        if not names:
            stray[mod] = "no installed distribution"
        elif not names & allowed:
            stray[mod] = ", ".join(sorted(names))
    assert not stray, f"gpu_check imports packages the GPU machine lacks (add a wheel to bench/gpu_wheels.txt): {stray}"


def test_carried_wheels_are_pinned_as_requirements_txt():
    """Each carried wheel has one pinned version, requirements.txt's where it names the package (the versions the
    tests ran with), and none is already on the machine (it would only be a second copy)."""
    pins = {}
    for line in (REPO / "bench/gpu_wheels.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned wheel {line!r}"
            pins[_norm(name)] = version
    req = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            req[_norm(name)] = version
    for name, version in pins.items():
        assert req.get(name, version) == version, (name, version, req.get(name))
    on_machine = _names(REPO / "bench/gpu_machine_packages.txt")
    assert not (set(pins) - {"setuptools"}) & on_machine  # setuptools: the machine's may be >= 82 (no pkg_resources)


def test_missing_optional_package_is_not_available_not_an_error(tmp_path, monkeypatch):
    """A part whose optional package (no wheel was found for it) is missing reports 'not available' and the run
    exits 0; a missing package that is not optional stays an error."""
    def needs(name):
        def part(s, p):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return part

    monkeypatch.setitem(gc.PARTS, "masks", needs("sam2"))
    s = gc.Settings.for_dry_run(60.0)
    assert gc.run_parts(s, gc.Report(tmp_path, s), ["masks"]) == 0
    part = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]["masks"]
    assert part["status"] == "not available" and "sam2" in part["error"]
    monkeypatch.setitem(gc.PARTS, "masks", needs("pytorch_wavelets"))
    assert gc.run_parts(s, gc.Report(tmp_path, s), ["masks"]) == gc.EXIT_ERROR


def test_mismatch_has_its_own_exit_code():
    """3 is out of memory (utils.cli.EXIT_OOM; run_blur.sh restarts its worker on it): a numeric mismatch is 4,
    defined once in utils.cli next to every other code, and no two meanings share a number."""
    from utils import cli

    codes = {name: value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    assert gc.EXIT_MISMATCH is cli.EXIT_MISMATCH and gc.EXIT_MISMATCH == 4
    assert len(set(codes.values())) == len(codes), codes
    assert gc.EXIT_MISMATCH not in (cli.EXIT_OOM, cli.EXIT_USER_ERROR, cli.EXIT_UNITS_FAILED, cli.EXIT_USAGE)
