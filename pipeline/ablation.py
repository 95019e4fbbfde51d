"""The DWT ablation: the same refiner, data, budget and seeds with and without the wavelet branch, on defocused
frames and on the all-in-focus control, on the standard set and on the camouflage testbed.

    python pipeline/ablation.py --root data/demo --steps 20000 --batch_size 8 --crop 512
    python pipeline/ablation.py --root data/demo --tiny          # the demo: one seed, two variants, minutes on CPU
    python pipeline/ablation.py --cpu                           # make ablation-cpu's 36-run grid, two at a time
    python pipeline/ablation.py --cpu --dry-run                 # list that grid: run folders, done/partial/todo

For every set (``--sets``: ``standard`` under ``--root``, ``camouflage`` under ``--camo_root``, made by
``make_demo_data.py --camouflage``) x tree (``frames``: depth-of-field blurred; ``frames_sharp``: the same clips
without blur) x variant (``none light heavy_db1 heavy_db2 heavy_db4``) x seed it trains
``pipeline/solver_refiner_maggie.py`` with identical flags (same steps, batch, crop, schedule: the same budget)
into ``<out>/runs/[camouflage_]<tree>_<variant>_s<seed>`` (``--jobs N``: N runs at a time, each a subprocess with
one thread, its output in ``<out>/logs/``), scores every run's best checkpoint on the test split of its own set and
tree (pipeline/evaluate.py, with the guide, closed-form and shared-matting baselines; per-frame MAD in
``per_frame.csv``, the focus map's correlation with the true blur where the root has blur records), and writes
``<out>/RESULTS.md`` (tables, paired tests, focus correlations), ``<out>/stats.json`` and ``<out>/ablation.png``. Paired tests (pipeline/stats.py):
per test frame, the variant's MAD minus ``none``'s on the same frame, each first averaged over the seeds; Wilcoxon
signed-rank p, bootstrap 95% CI of the mean, effect sizes; and the interaction, that difference on the defocused
frame minus on the same clip and frame all in focus. Finished runs are reused (a rerun skips them), a killed run is
resumed, an evaluation whose checkpoints did not change is reused. Extra solver flags go after ``--``.
"""
from __future__ import annotations

import sys
from pathlib import Path


import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import csv
import io
import json
import logging
import math
from typing import Sequence

import numpy as np

from model.config import VARIANTS
from pipeline import evaluate, metrics as M, stats as S
from pipeline.data import list_clips
from pipeline.solver import parse, train
from utils.atomic import write_bytes_atomic, write_json_atomic
from utils.cli import ArgumentParser, UserError, nonneg_int, positive_int, run_main
from utils.paths import repo_default

log = logging.getLogger("ablation")
TREES = ("frames", "frames_sharp")
SETS = ("standard", "camouflage")
REPORT = ("mad", "mse", "grad", "conn", "dtssd", "mad_unknown", "grad_unknown")
PAIRED = ("mad_unknown", "mad")  # per-frame metrics of the paired tests (both x1e3)
TINY = {"variants": ["none", "light"], "seeds": [0], "steps": 40, "batch_size": 4, "crop": 64,
        "base_channels": 8, "eval_long_side": 128, "max_frames": 4}
# make ablation-cpu: 3 variants x 3 seeds x 2 trees x 2 sets = 36 runs, two at a time with one thread each; the
# recipe of make train-cpu (light refiner's flags, mixed guides, half of them accurate) with fewer steps
CPU = {"variants": ["none", "light", "heavy_db2"], "sets": ["standard", "camouflage"], "seeds": [0, 1, 2],
       "steps": 500, "batch_size": 4, "crop": 128, "base_channels": 16, "jobs": 2,
       "out": repo_default("runs/ablation-cpu"), "camo_root": repo_default("data/camo"), "max_frames": 12}
CPU_SOLVER = ["--guide_mode", "mixed", "--accurate_guide_prob", "0.5", "--warmup_steps", "100", "--lr", "1e-3",
              "--num_workers", "0", "--ckpt_every", "100", "--log_every", "50", "--val_max_frames", "8"]
# make ablation-learned (issue "The research answer"): the same 36 runs at the budget where every variant learns
# (results/ablation_learned/calibration: 3200 steps), on make train-cpu's training set and a camouflage set of its
# size, each run scored as soon as it has trained (and on the real photographs when data/real_alpha holds them),
# the evaluations (never the checkpoints, which stay in runs/) under results/ablation_learned
LEARNED = {**CPU, "steps": 3200, "root": repo_default("data/train-cpu"), "camo_root": repo_default("data/camo-cpu"),
           "out": repo_default("results/ablation_learned"), "runs_dir": repo_default("runs/ablation-learned"),
           "per_run": True, "max_frames": 0, "real_root": repo_default("data/real_alpha")}
SOLVER = Path(__file__).resolve().parent / "solver_refiner_maggie.py"
EVALUATE = Path(__file__).resolve().parent / "evaluate.py"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default=repo_default("data/demo"), help="data root of the standard set")
    p.add_argument("--camo_root", default=repo_default("data/camo"),
                   help="data root of the camouflage set (make_demo_data.py --camouflage and every stage)")
    p.add_argument("--sets", nargs="+", default=["standard"], choices=SETS)
    p.add_argument("--out", default=repo_default("runs/ablation"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--trees", nargs="+", default=list(TREES), help="frames (defocused) and frames_sharp (control)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=positive_int, default=20000, help="training steps of every run (the shared budget)")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--crop", type=positive_int, default=512)
    p.add_argument("--base_channels", type=positive_int, default=32)
    p.add_argument("--eval_long_side", "--long_side", dest="eval_long_side", type=nonneg_int, default=0,
                   help="evaluation: downscale frames to this long side (0: full resolution)")
    p.add_argument("--max_frames", type=nonneg_int, default=0, help="evaluation: frames per test clip (0: all)")
    p.add_argument("--baselines", default="guide,closed_form,shared",
                   help="baselines scored beside every run (pipeline/evaluate.py --baselines)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs (and evaluations) at a time; above 1 each is a subprocess with one thread")
    p.add_argument("--n_boot", type=positive_int, default=2000, help="bootstrap resamples of the confidence intervals")
    p.add_argument("--runs_dir", default=None,
                   help="where the run folders (runs/, checkpoints) and logs (logs/) go (default: --out); keep them "
                        "out of a repository that --commit commits to")
    p.add_argument("--per_run", action="store_true",
                   help="score each run as soon as it has trained (<out>/eval_runs/<run>/) and the baselines once "
                        "per set and tree (<out>/eval_baselines/<set>_<tree>/); the report merges them")
    p.add_argument("--commit", action="store_true",
                   help="with --per_run: git-commit each finished unit's evaluation (CSVs, tables; never "
                        "checkpoints) in the repository holding --out, so a grid stopped midway loses nothing")
    p.add_argument("--no_ring_samples", action="store_true",
                   help="evaluation: the ring keeps each variant's own values (pipeline/evaluate.py --no_ring_samples)")
    p.add_argument("--real_root", default=None,
                   help="with --per_run: also score every run on the real photographs with alpha under this folder "
                        "(bench/real_alpha.py; skipped when it holds none), the classical methods once")
    p.add_argument("--report_only", action="store_true",
                   help="with --per_run: write the report from the evaluations that have landed (no training, no "
                        "scoring; the grid may be partial or running elsewhere)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the grid (one line per run: folder and done / partial / todo) and exit")
    p.add_argument("--tiny", action="store_true",
                   help=f"demo defaults: {', '.join(f'{k}={v}' for k, v in TINY.items())} (explicit flags win)")
    p.add_argument("--cpu", action="store_true",
                   help="make ablation-cpu's grid: " + ", ".join(f"{k}={v}" for k, v in CPU.items())
                        + "; solver flags " + " ".join(CPU_SOLVER) + " (explicit flags win)")
    p.add_argument("--learned", action="store_true",
                   help="make ablation-learned's grid: " + ", ".join(f"{k}={v}" for k, v in LEARNED.items())
                        + "; solver flags as --cpu (explicit flags win)")
    p.add_argument("--_score_run", default=None, help=argparse.SUPPRESS)  # the per-run scoring subprocess
    return p


def run_name(tree: str, variant: str, seed: int, dataset: str = "standard") -> str:
    """``<tree>_<variant>_s<seed>`` on the standard set (as before sets existed), ``camouflage_...`` otherwise."""
    return ("" if dataset == "standard" else f"{dataset}_") + f"{tree}_{variant}_s{seed}"


def runs_root(args) -> Path:
    """The folder holding ``runs/`` (checkpoints) and ``logs/``: ``--runs_dir``, else ``--out``."""
    return Path(args.runs_dir or args.out)


def set_root(args, dataset: str) -> str:
    return args.root if dataset == "standard" else args.camo_root


def grid(args) -> list[dict]:
    """Every run of the ablation: set, root, tree, variant, seed, name, folder."""
    runs = runs_root(args) / "runs"
    return [{"set": ds, "root": set_root(args, ds), "tree": tree, "variant": v, "seed": seed,
             "name": run_name(tree, v, seed, ds), "dir": runs / run_name(tree, v, seed, ds)}
            for ds in args.sets for tree in args.trees for v in args.variants for seed in args.seeds]


def status(run_dir: Path, steps: int) -> str:
    """done (trained to ``steps``), partial (a checkpoint to resume from) or todo."""
    state = run_dir / "last.json"
    try:
        step = json.loads(state.read_text()).get("step") if state.is_file() else None
    except (ValueError, AttributeError):  # a corrupt file: the checkpoint decides (a resume reads last.pt)
        step = None
    if step == steps:
        return "done"
    return "partial" if (run_dir / "last.pt").is_file() else "todo"


def best_ckpt(run_dir: Path) -> Path:
    best = run_dir / "best.pt"
    return best if best.is_file() else run_dir / "last.pt"


def solver_argv(args, run: dict, extra: list[str]) -> list[str]:
    argv = ["--root", run["root"], "--tree", run["tree"], "--model", run["variant"], "--seed", str(run["seed"]),
            "--steps", str(args.steps), "--batch_size", str(args.batch_size), "--crop", str(args.crop),
            "--base_channels", str(args.base_channels), "--runs_dir", str(runs_root(args) / "runs"),
            "--name", run["name"], *extra]
    if (run["dir"] / "last.pt").is_file():
        argv.append("--resume")
    return argv


def run_parallel(tasks: list[tuple], jobs: int, on_done=None) -> None:
    """Run ``(label, command, log file)`` tasks, ``jobs`` at a time, each a subprocess with one thread; a task's
    command may be a list of commands, run in order until one fails. ``on_done(label)`` is called (one at a time)
    as each task succeeds. Raise one UserError naming every failure (after the others finished)."""
    import os
    import subprocess
    import threading
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))}
    lock = threading.Lock()

    def one(task):
        label, cmd, log_path = task
        cmds = cmd if cmd and isinstance(cmd[0], list) else [cmd]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("%s: started, log %s", label, log_path)
        rc = 0
        with open(log_path, "ab") as fh:
            for c in cmds:
                rc = subprocess.run(c, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
                if rc:
                    break
        log.info("%s: %s", label, "finished" if rc == 0 else f"FAILED (exit {rc}), see {log_path}")
        if rc == 0 and on_done is not None:
            with lock:
                on_done(label)
        return label, rc, log_path

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        failed = [(lab, p) for lab, rc, p in pool.map(one, tasks) if rc != 0]
    if failed:
        raise UserError(f"{len(failed)} task(s) failed: " + ", ".join(f"{lab} (log {p})" for lab, p in failed))


def train_grid(args, runs: list[dict], extra: list[str]) -> None:
    """Train every run of the grid that is not done: in this process (``--jobs 1``) or ``--jobs`` subprocesses."""
    todo = []
    for run in runs:
        if status(run["dir"], args.steps) == "done":
            log.info("%s: finished earlier, reusing %s", run["name"], run["dir"])
        else:
            todo.append(run)
    if args.jobs <= 1:
        for run in todo:
            cfg, resume, overwrite = parse(solver_argv(args, run, extra), defaults_yaml="maggie.yaml")
            train(cfg, resume=resume, overwrite=overwrite)
        return
    one_thread = [] if "--threads" in extra else ["--threads", "1"]
    run_parallel([(run["name"], [sys.executable, str(SOLVER), *solver_argv(args, run, extra + one_thread)],
                   runs_root(args) / "logs" / f"{run['name']}.log") for run in todo], args.jobs)


def eval_dir(args, dataset: str, tree: str) -> Path:
    return Path(args.out) / (f"eval_{tree}" if dataset == "standard" else f"eval_{dataset}_{tree}")


def evaluate_grid(args, runs: list[dict]) -> None:
    """Score every (set, tree) on its test split; reuse an evaluation whose inputs (checkpoints, flags) are
    unchanged (``<eval>/inputs.json``)."""
    tasks = []
    for ds in args.sets:
        for tree in args.trees:
            mine = [r for r in runs if r["set"] == ds and r["tree"] == tree]
            ckpts = [str(best_ckpt(r["dir"])) for r in mine]
            out = eval_dir(args, ds, tree)
            argv = _eval_argv(args, ds, tree, ckpts, [r["variant"] for r in mine], args.baselines, out)
            stamp = _stamp(argv, ckpts)
            if _is_current(out, stamp):
                log.info("%s/%s: evaluated earlier with these checkpoints, reusing %s", ds, tree, out)
                continue
            tasks.append((f"eval {ds}/{tree}", argv, out, stamp))
    if args.jobs <= 1:
        for _, argv, out, stamp in tasks:
            evaluate.main(argv)
            write_json_atomic(out / "inputs.json", stamp)
        return
    run_parallel([(label, [sys.executable, str(EVALUATE), *argv], runs_root(args) / "logs" / f"{out.name}.log")
                  for label, argv, out, _ in tasks], args.jobs)
    for _, _, out, stamp in tasks:
        write_json_atomic(out / "inputs.json", stamp)


# ------------------------------------------------------------------------------ per-run evaluation (--per_run)
def run_eval_dir(args, run: dict) -> Path:
    return Path(args.out) / "eval_runs" / run["name"]


def baseline_eval_dir(args, dataset: str, tree: str) -> Path:
    return Path(args.out) / "eval_baselines" / f"{dataset}_{tree}"


def real_baseline_dir(args) -> Path:
    """Where the guide and classical matting are scored once on the real photographs (``real_alpha/`` in it)."""
    return Path(args.out) / "eval_baselines" / "real"


def _clear_stamp(out: Path) -> None:
    """Before a unit is scored again: its stale stamp and real-photo scores go first (evaluate.py replaces only
    a folder holding nothing but an evaluation), so a stamp never outlives the numbers it vouches for."""
    import shutil

    (out / "inputs.json").unlink(missing_ok=True)
    shutil.rmtree(out / "real_alpha", ignore_errors=True)


def _is_real_current(out: Path, stamp: dict) -> bool:
    return ((out / "real_alpha" / "per_item.csv").is_file() and (out / "inputs.json").is_file()
            and json.loads((out / "inputs.json").read_text()) == stamp)


def _eval_argv(args, dataset: str, tree: str, ckpts: list[str], labels: list[str], baselines: str,
               out: Path) -> list[str]:
    return ["--root", set_root(args, dataset), "--split", "test", "--tree", tree, "--ckpt", *ckpts,
            "--labels", *labels, "--baselines", baselines, "--eval_long_side", str(args.eval_long_side),
            "--max_frames", str(args.max_frames), "--out", str(out), "--gated_ring",
            "--no_coarse_band", *(["--no_ring_samples"] if args.no_ring_samples else [])]


def _stamp(argv: list[str], ckpts: list[str]) -> dict:
    return {"argv": argv, "ckpts": [[c, Path(c).stat().st_size, Path(c).stat().st_mtime_ns] for c in ckpts]}


def _is_current(out: Path, stamp: dict) -> bool:
    """An evaluation in ``out`` made from these inputs (flags, checkpoint files) exists."""
    return ((out / "per_frame.csv").is_file() and (out / "inputs.json").is_file()
            and json.loads((out / "inputs.json").read_text()) == stamp)


def run_eval_argv(args, run: dict) -> tuple[list[str], dict]:
    """One run's evaluation on its own set and tree (no baselines: those are scored once per set and tree) and its
    inputs stamp: the flags, the checkpoint file, the real-photo flags and the unit (``_unit``)."""
    ckpt = str(best_ckpt(run["dir"]))
    argv = _eval_argv(args, run["set"], run["tree"], [ckpt], [run["variant"]], "none", run_eval_dir(args, run))
    return argv, {**_stamp(argv, [ckpt]), "real": _real_argv(args, run_eval_dir(args, run), [ckpt]),
                  "unit": _unit(args, run)}


def _unit(args, run: dict) -> dict:
    """What a committed evaluation is of, machine-independent: the run and the grid's budget and evaluation
    settings. A later session (maybe on another machine, its checkpoints gone) reuses an evaluation with the same
    unit instead of training the run again."""
    return {"run": run["name"], "steps": args.steps, "batch_size": args.batch_size, "crop": args.crop,
            "base_channels": args.base_channels, "max_frames": args.max_frames, "eval_long_side": args.eval_long_side,
            "real_photos": _has_real(args)}


def _landed(args, run: dict) -> bool:
    """The run's evaluation is there for this unit: from these very checkpoints, or from checkpoints no longer
    here (an earlier session's, committed)."""
    out = run_eval_dir(args, run)
    if not (out / "per_frame.csv").is_file() or not (out / "inputs.json").is_file():
        return False
    try:
        saved = json.loads((out / "inputs.json").read_text())
    except ValueError:
        return False
    if not isinstance(saved, dict) or saved.get("unit") != _unit(args, run):
        return False
    return not best_ckpt(run["dir"]).is_file() or saved == run_eval_argv(args, run)[1]


def _has_real(args) -> bool:
    from bench.real_alpha import find_pairs

    return bool(args.real_root) and Path(args.real_root).is_dir() and bool(find_pairs(Path(args.real_root)))


def _real_argv(args, out: Path, ckpts: list[str]) -> list[str] | None:
    """bench/real_alpha.py's flags for ``ckpts`` (the classical methods only when there is none) into
    ``out/real_alpha``, or None without real photographs."""
    if not _has_real(args):
        return None
    return ["--root", str(args.real_root), "--out", str(out / "real_alpha"), "--no_panels", "--gated_ring",
            "--no_coarse_band", *(["--ckpt", *ckpts, "--baselines", "none"] if ckpts else [])]


def commit_paths(paths: list[Path], message: str) -> None:
    """``git add`` + ``git commit`` of exactly ``paths`` (files or folders) in the repository holding them;
    nothing when they are already committed as they are. One line of error when it is not a repository."""
    import subprocess

    top = Path(paths[0]).resolve()
    top = top if top.is_dir() else top.parent
    rel = [str(Path(p).resolve()) for p in paths]
    git = ["git", "-C", str(top)]
    if subprocess.run(git + ["rev-parse", "--show-toplevel"], capture_output=True).returncode:
        raise UserError(f"--commit: {top} is not inside a git repository")
    import time

    for attempt in range(20):  # another git process (work going on in the same repository) may hold its lock
        try:
            subprocess.run(git + ["add", "--", *rel], check=True, capture_output=True)
            if subprocess.run(git + ["diff", "--cached", "--quiet", "--", *rel]).returncode == 0:
                return  # nothing new
            subprocess.run(git + ["commit", "-q", "-m", message, "--", *rel], check=True, capture_output=True)
            break
        except subprocess.CalledProcessError as e:
            if b"index.lock" not in (e.stderr or b"") or attempt == 19:
                raise UserError(f"--commit: git failed: {(e.stderr or b'').decode(errors='replace').strip()}")
            time.sleep(1.0)
    log.info("committed %s", ", ".join(str(p) for p in paths))


def code_commit() -> tuple[str, bool]:
    """The commit of the code running this grid and whether its tracked files differ from it."""
    import subprocess

    here = Path(__file__).resolve().parent
    sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    return sha or "unknown", dirty


CODE_FILES = ("*.py", "*.yaml", "*.yml", "*.sh", "Makefile", "requirements.txt", "pyproject.toml")


def same_code(a: str, b: str, repo: Path | None = None) -> bool:
    """Commits ``a`` and ``b`` hold the same code (``CODE_FILES``): what results, notes and the grid's own
    commits change does not count, so a grid run inside the repository it commits to continues."""
    import subprocess

    here = repo or Path(__file__).resolve().parent
    return subprocess.run(["git", "-C", str(here), "diff", "--quiet", a, b, "--", *CODE_FILES],
                          capture_output=True).returncode == 0


def pin_grid(args) -> dict:
    """--commit: the grid runs from one recorded commit (``<out>/grid.json``, committed before the first unit): a
    later start from other code (``same_code``) is refused in one line, so every unit comes from the same code."""
    sha, dirty = code_commit()
    pin = Path(args.out) / "grid.json"
    if pin.is_file():
        saved = json.loads(pin.read_text())
        if saved.get("commit") != sha and not same_code(str(saved.get("commit")), sha):
            raise UserError(f"{pin}: this grid was started from commit {saved.get('commit')}, this code is {sha}: "
                            f"continue it from a worktree at that commit (git worktree add <dir> "
                            f"{str(saved.get('commit'))[:12]}) or give another --out")
        return saved
    saved = {"commit": sha, "dirty": dirty, "steps": args.steps, "argv": args._argv}
    write_json_atomic(pin, saved)
    commit_paths([pin], f"ablation {Path(args.out).name}: the grid starts from {sha[:12]}"
                        + (" (with uncommitted changes)" if dirty else ""))
    if dirty:
        log.warning("the code running this grid has uncommitted changes: %s records %s, which is not all of it",
                    pin, sha[:12])
    return saved


def _unit_files(folder: Path) -> list[Path]:
    """What of an evaluation folder is committed: its tables, CSVs and figure (never predictions)."""
    names = ("metrics.json", "per_clip.csv", "per_frame.csv", "table.md", "figure.png", "inputs.json",
             "real_alpha/table.md", "real_alpha/per_item.csv")  # real_alpha: numbers only, never the photos
    return [folder / f for f in names if (folder / f).is_file()]


def _commit_run_eval(args, run: dict) -> None:
    commit_paths(_unit_files(run_eval_dir(args, run)),
                 f"ablation {Path(args.out).name}: {run['name']} ({args.steps} steps), its evaluation")


def train_and_score_grid(args, runs: list[dict], extra: list[str]) -> None:
    """--per_run: the baselines of every (set, tree) first (cheap next to training), then every run: trained if not
    done, scored at once if its evaluation is missing or stale; each finished unit committed with --commit."""
    for ds in args.sets:
        for tree in args.trees:
            out = baseline_eval_dir(args, ds, tree)
            argv = _eval_argv(args, ds, tree, [], [], args.baselines, out)
            if _is_current(out, _stamp(argv, [])):
                log.info("%s/%s baselines: evaluated earlier, reusing %s", ds, tree, out)
                continue
            _clear_stamp(out)
            evaluate.main(argv)
            write_json_atomic(out / "inputs.json", _stamp(argv, []))
            if args.commit:
                commit_paths(_unit_files(out), f"ablation {Path(args.out).name}: baselines of {ds}/{tree}")
    real = _real_argv(args, real_baseline_dir(args), [])
    if real is not None:
        stamp = {"real": real}
        if not _is_real_current(real_baseline_dir(args), stamp):
            from bench import real_alpha

            real_alpha.main(real)
            write_json_atomic(real_baseline_dir(args) / "inputs.json", stamp)
            if args.commit:
                commit_paths(_unit_files(real_baseline_dir(args)),
                             f"ablation {Path(args.out).name}: classical matting on the real photographs")
    todo = []
    for run in runs:
        done = status(run["dir"], args.steps) == "done"
        if _landed(args, run):
            log.info("%s: trained and evaluated earlier, reusing %s", run["name"], run_eval_dir(args, run))
        else:
            todo.append((run, done))
    todo.sort(key=lambda t: t[0]["seed"])  # seed-major: a grid stopped midway has every cell at its first seeds
    if args.jobs <= 1:
        for run, done in todo:
            if not done:
                cfg, resume, overwrite = parse(solver_argv(args, run, extra), defaults_yaml="maggie.yaml")
                train(cfg, resume=resume, overwrite=overwrite)
            score_one_run(args, run["name"])
            if args.commit:
                _commit_run_eval(args, run)
        return
    one_thread = [] if "--threads" in extra else ["--threads", "1"]
    by_name = {run["name"]: run for run, _ in todo}
    tasks = []
    for run, done in todo:
        # the evaluation's arguments are fixed once the run has trained: built by a command after the solver
        cmds = [] if done else [[sys.executable, str(SOLVER), *solver_argv(args, run, extra + one_thread)]]
        cmds.append([sys.executable, str(Path(__file__).resolve()), "--_score_run", run["name"], *args._argv])
        tasks.append((run["name"], cmds, runs_root(args) / "logs" / f"{run['name']}.log"))

    run_parallel(tasks, args.jobs, (lambda name: _commit_run_eval(args, by_name[name])) if args.commit else None)


def score_one_run(args, name: str) -> int:
    """The per-run evaluation of the grid's run ``name`` and its inputs stamp (in this process with --jobs 1, a
    subprocess of --per_run --jobs N otherwise)."""
    run = next((r for r in grid(args) if r["name"] == name), None)
    if run is None:
        raise UserError(f"no run {name!r} in this grid")
    argv, stamp = run_eval_argv(args, run)
    _clear_stamp(run_eval_dir(args, run))
    evaluate.main(argv)
    if stamp["real"] is not None:
        from bench import real_alpha

        real_alpha.main(stamp["real"])
    write_json_atomic(run_eval_dir(args, run) / "inputs.json", stamp)
    return 0


def merge_run_evals(args, runs: list[dict]) -> None:
    """--per_run: each (set, tree)'s baseline and per-run CSVs concatenated into the folder the report reads
    (``eval_dir``), in grid order; runs not evaluated yet are left out (their absence shows in the tables)."""
    for ds in args.sets:
        for tree in args.trees:
            parts = [baseline_eval_dir(args, ds, tree)] + [run_eval_dir(args, r) for r in runs
                                                           if r["set"] == ds and r["tree"] == tree]
            out = eval_dir(args, ds, tree)
            for name in ("per_clip.csv", "per_frame.csv"):
                rows: list[dict] = []
                for part in parts:
                    if (part / name).is_file():
                        rows += list(csv.DictReader(open(part / name, newline="")))
                fields = list(dict.fromkeys(k for r in rows for k in r))
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=fields, restval="")
                writer.writeheader()
                writer.writerows(rows)
                write_bytes_atomic(out / name, buf.getvalue().encode())


def dry_run(args, runs: list[dict]) -> None:
    counts: dict[str, int] = {}
    for r in runs:
        st = status(r["dir"], args.steps)
        if args.per_run and _landed(args, r):
            st = "evaluated" if st == "done" else "evaluated (checkpoints elsewhere)"
        counts[st] = counts.get(st, 0) + 1
        print(f"{r['name']:<44} set={r['set']:<10} tree={r['tree']:<12} variant={r['variant']:<9} "
              f"seed={r['seed']}  {r['dir']}  {st}")
    print(f"{len(runs)} runs ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}); "
          f"{args.steps} steps, batch {args.batch_size}, crop {args.crop}, {args.jobs} at a time; roots: "
          + ", ".join(f"{ds} {set_root(args, ds)}" for ds in args.sets))


# ------------------------------------------------------------------------------------------- report
def load_frames(path: Path) -> dict:
    """per_frame.csv -> {method: {run: {(clip, frame): {metric: value}}}}."""
    out: dict = {}
    for r in csv.DictReader(open(path)):
        vals = {k: float(r[k]) if r.get(k, "") != "" else math.nan for k in (*PAIRED, "focus_sigma_spearman")}
        out.setdefault(r["method"], {}).setdefault(r["run"], {})[(r["clip"], r["frame"])] = vals
    return out


def seed_mean(runs: dict, metric: str) -> dict:
    """Per frame, the mean over runs (seeds) of ``metric`` (frames every run has)."""
    keys = set.intersection(*(set(v) for v in runs.values()))
    return {k: float(np.mean([runs[r][k][metric] for r in runs])) for k in keys}


def paired_tests(frames: dict, sets: list[str], trees: list[str], variants: list[str], n_boot: int) -> dict:
    """The statistics of the report (pipeline/stats.py): per set, tree, variant and metric the per-frame paired
    differences variant minus none (each frame's value averaged over the seeds first), and per set, variant and
    metric the interaction (variant minus none on the defocused frame) minus (the same on that clip and frame all
    in focus)."""
    out = {"paired": [], "interaction": []}
    for ds in sets:
        for v in variants:
            if v == "none":
                continue
            for m in PAIRED:
                diffs = {}
                for tree in trees:
                    fr = frames.get((ds, tree), {})
                    if "none" not in fr or v not in fr:
                        continue
                    diffs[tree] = S.paired_differences(seed_mean(fr[v], m), seed_mean(fr["none"], m))
                    out["paired"].append({"set": ds, "tree": tree, "variant": v, "metric": m,
                                          **S.paired_summary(list(diffs[tree].values()), n_boot)})
                if "frames" in diffs and "frames_sharp" in diffs:
                    inter = S.interaction(diffs["frames"], diffs["frames_sharp"])
                    out["interaction"].append({"set": ds, "variant": v, "metric": m,
                                               **S.paired_summary(list(inter.values()), n_boot)})
    return out


def stats_tables(tests: dict, n_boot: int = S.N_BOOT) -> str:
    head = "| mean (x1e3) | 95% CI (bootstrap) | Wilcoxon p | d_z | rank-biserial | frames |"
    sep = "---:|---:|---:|---:|---:|---:|"

    def cells(r):
        return (f"{r['mean']:+.3f} | [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | {S.fmt_p(r['p'])} | {r['dz']:+.2f} | "
                f"{r['rank_biserial']:+.2f} | {r['n']} |")
    lines = ["\n## Paired tests: variant minus none, per test frame\n",
             "Each test frame's MAD (whole frame, and the unknown region) is averaged over the seeds first, then "
             "paired with the same frame under `none`; negative = the variant's matte is better. p: two-sided "
             f"Wilcoxon signed-rank test (scipy); CI: percentile bootstrap of the mean difference ({n_boot} resamples "
             "of the frames, seed 0); d_z: mean / std of the differences; rank-biserial: matched-pairs, -1 = the "
             "variant better on every frame. Frames of one clip are not independent: read p as descriptive.\n",
             "| set | tree | variant | metric " + head, "|---|---|---|---|" + sep]
    lines += [f"| {r['set']} | {r['tree']} | {r['variant']} | {r['metric']} | " + cells(r) for r in tests["paired"]]
    if tests["interaction"]:
        lines += ["\n## Interaction: (variant minus none) on defocused minus on all-in-focus, per clip and frame\n",
                  "Negative = the variant gains more over `none` when the frame is defocused than when the same "
                  "frame is all in focus: the wavelet branch uses the depth-of-field cue.\n",
                  "| set | variant | metric " + head, "|---|---|---|" + sep]
        lines += [f"| {r['set']} | {r['variant']} | {r['metric']} | " + cells(r) for r in tests["interaction"]]
    return "\n".join(lines) + "\n"


def focus_table(frames: dict, sets: list[str], trees: list[str], variants: list[str]) -> str:
    """Spearman rho between the focus map and the true blur, per set, tree and variant: per run the mean over its
    frames, then mean +/- std over the seeds, and the range over clips (seed-averaged)."""
    rows = []
    for ds in sets:
        for tree in trees:
            for v in variants:
                runs = frames.get((ds, tree), {}).get(v, {})
                per_run = [np.nanmean([x["focus_sigma_spearman"] for x in fr.values()]) if any(
                    np.isfinite(x["focus_sigma_spearman"]) for x in fr.values()) else math.nan for fr in runs.values()]
                if not per_run or not np.isfinite(per_run).any():
                    continue
                clips: dict[str, list[float]] = {}
                for fr in runs.values():
                    for (clip, _), x in fr.items():
                        clips.setdefault(clip, []).append(x["focus_sigma_spearman"])
                by_clip = [float(np.nanmean(c)) for c in clips.values() if np.isfinite(c).any()]
                pr = np.array(per_run)
                rows.append(f"| {ds} | {tree} | {v} | {np.nanmean(pr):+.3f} ± "
                            f"{np.nanstd(pr, ddof=1) if np.isfinite(pr).sum() > 1 else 0:.3f} | "
                            f"{min(by_clip):+.3f} .. {max(by_clip):+.3f} | {len(per_run)} |")
    if not rows:
        return ("\n## Focus map vs the true blur\n\nNot available: these data roots hold no blur records "
                "(blurred/<split>/<clip>/meta.json and depth/<split>/<clip>.npz).\n")
    return ("\n## Focus map vs the true blur\n\nSpearman rho, per frame over its pixels, between the refiner's focus "
            "map and the blur sigma the depth-of-field stage gave each pixel (preprocess/dof_blur.py "
            "`true_sigma`), reported as is: a focus map that sees defocus is high where sigma is low, so rho < 0. "
            "On frames_sharp the frame has no blur; rho is taken against the sigma the same frame has in the "
            "defocused tree (what a map that only finds the person would also match). Per clip: evaluation "
            "folders, per_clip.csv.\n\n| set | tree | variant | rho, mean ± std over seeds | range over clips | "
            "runs |\n|---|---|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")


def results_table(results: dict, trees: list[str], variants: list[str], seeds: list[int]) -> str:
    """Markdown: one row per variant, mean +/- std over seeds per tree, and the DWT effect vs ``none``."""
    lines = []
    for tree in trees:
        head = [f"{evaluate.HEAD[k.split('_')[0]]}{' unk.' if k.endswith('unknown') else ''} "
                f"({M.SCALES[k.split('_')[0]]})" for k in REPORT]
        lines += [f"\n### {tree} ({'defocused' if tree == 'frames' else 'all-in-focus control'}), "
                  f"{len(seeds)} seed(s)\n", "| method | " + " | ".join(head) + " |",
                  "|---|" + "---:|" * len(REPORT)]
        for name in list(results[tree]):
            runs = results[tree][name]
            cells = []
            for k in REPORT:
                v = np.array([r[k] for r in runs])
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "none" in variants and len(trees) == 2 and all("none" in results[t] for t in trees):
        lines += ["\n### DWT effect on MAD in the unknown region (none minus variant; positive = the DWT helps)\n",
                  "| variant | " + " | ".join(trees) + " | defocused minus control |", "|---|---:|---:|---:|"]
        base = {t: np.mean([r["mad_unknown"] for r in results[t]["none"]]) for t in trees}
        for v in variants:
            if v == "none" or not all(v in results[t] for t in trees):
                continue
            gain = [base[t] - np.mean([r["mad_unknown"] for r in results[t][v]]) for t in trees]
            lines.append(f"| {v} | {gain[0]:.3f} | {gain[1]:.3f} | {gain[0] - gain[1]:.3f} |")
    return "\n".join(lines) + "\n"


LEARNED_RATIO = 0.8  # a variant has learned where its whole-frame MAD is at most this times its guide's


def learned(results: dict, ds: str, tree: str, v: str) -> float | None:
    """The variant's mean whole-frame MAD over its seeds divided by its guide's (None where either is missing)."""
    runs, guide = results.get(ds, {}).get(tree, {}).get(v), results.get(ds, {}).get(tree, {}).get("guide")
    if not runs or not guide:
        return None
    return float(np.mean([r["mad"] for r in runs]) / guide[0]["mad"])


def learned_table(results: dict, sets: list[str], trees: list[str], variants: list[str]) -> str:
    """Did each variant leave its guide? Per set, tree and variant: whole-frame MAD (mean +/- std over seeds), its
    ratio to the guide's, and whether it is at most ``LEARNED_RATIO`` (no conclusion is drawn otherwise)."""
    lines = ["\n## Did every variant learn? (whole-frame MAD x1e3, mask guides, relative to the guide's)\n",
             f"A variant whose MAD is above {LEARNED_RATIO}x its guide's has not left its guide: no conclusion about "
             "the DWT is drawn from it.\n", "| set | tree | guide | " + " | ".join(variants) + " |",
             "|---|---|---:|" + "---:|" * len(variants)]
    for ds in sets:
        for tree in trees:
            guide = results.get(ds, {}).get(tree, {}).get("guide")
            if not guide:
                continue
            cells = []
            for v in variants:
                ratio = learned(results, ds, tree, v)
                if ratio is None:
                    cells.append("-")
                    continue
                vals = np.array([r["mad"] for r in results[ds][tree][v]])
                spread = f" ± {vals.std(ddof=1):.2f}" if len(vals) > 1 else ""
                cells.append(f"{vals.mean():.2f}{spread} ({ratio:.2f}x{'' if ratio <= LEARNED_RATIO else ', not learned'}"
                             f", {len(vals)} seed{'s' if len(vals) > 1 else ''})")
            lines.append(f"| {ds} | {tree} | {guide[0]['mad']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdict(r: dict) -> str:
    if r["ci_lo"] > 0:
        return "worse than `none`"
    if r["ci_hi"] < 0:
        return "better than `none`"
    return "no difference detectable (the CI holds 0)"


def answers(results: dict, tests: dict, sets: list[str], trees: list[str], variants: list[str]) -> str:
    """The two answers, each with its CI and p on whole-frame MAD: (H1) each DWT variant against ``none`` on the
    defocused frames of each set; (H2) the interaction (DWT minus none, defocused minus all-in-focus) on the
    camouflage set, where only defocus separates person and background. A variant (or ``none``) that did not
    learn gets no conclusion."""
    lines = ["\n## The answers (whole-frame MAD x1e3, paired by test frame; statistics as in the tables below)\n"]
    for v in variants:
        if v == "none":
            continue
        for ds in sets:
            r = next((x for x in tests["paired"] if (x["set"], x["tree"], x["variant"], x["metric"])
                      == (ds, "frames", v, "mad")), None)
            if r is None:
                continue
            idle = [m for m in (v, "none") if (learned(results, ds, "frames", m) or 1.0) > LEARNED_RATIO]
            head = f"- **H1, {v} vs none, {ds}, defocused:** {r['mean']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}], p {S.fmt_p(r['p'])}, {r['n']} frames: "
            lines.append(head + (f"no conclusion ({' and '.join(idle)} did not learn)" if idle else _verdict(r)))
        r = next((x for x in tests["interaction"] if (x["set"], x["variant"], x["metric"])
                  == ("camouflage", v, "mad")), None)
        if r is not None:
            idle = [m for m in (v, "none") for t in trees
                    if (learned(results, "camouflage", t, m) or 1.0) > LEARNED_RATIO]
            head = (f"- **H2, {v}, camouflage, (DWT minus none) defocused minus all-in-focus:** {r['mean']:+.3f} "
                    f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}], p {S.fmt_p(r['p'])}, {r['n']} frames: ")
            what = ("the DWT gains more with defocus" if r["ci_hi"] < 0 else
                    "the DWT gains less with defocus" if r["ci_lo"] > 0 else "no interaction detectable (the CI holds 0)")
            lines.append(head + (f"no conclusion ({', '.join(dict.fromkeys(idle))} did not learn)" if idle else what))
    return "\n".join(lines) + "\n" if len(lines) > 1 else ""


def per_clip_table(frames: dict, sets: list[str], trees: list[str], variants: list[str]) -> str:
    """Per set, tree and test clip: each method's whole-frame MAD, per frame averaged over the seeds, then over the
    clip's frames."""
    lines = ["\n## Per clip (whole-frame MAD x1e3, seed-averaged)\n"]
    for ds in sets:
        for tree in trees:
            fr = frames.get((ds, tree), {})
            methods = [m for m in ("guide", "closed_form", "shared", *variants) if m in fr]
            if not methods:
                continue
            means = {m: seed_mean(fr[m], "mad") for m in methods}
            clips = sorted({c for m in methods for c, _ in means[m]})
            lines += [f"\n{ds} / {tree}:\n", "| clip | " + " | ".join(methods) + " |",
                      "|---|" + "---:|" * len(methods)]
            for c in clips:
                lines.append(f"| {c} | " + " | ".join(
                    f"{np.mean([x for (cc, _), x in means[m].items() if cc == c]):.2f}"
                    if any(cc == c for cc, _ in means[m]) else "-" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def returned_the_guide(results: dict, trees: list[str], variants: list[str]) -> list[str]:
    """The variants whose every run, in every tree, scored exactly what the guide baseline scores: they returned
    their guide unchanged (the gate never opened), so their rows and their DWT effect say nothing about the DWT."""
    def same(a: float, b: float) -> bool:
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0.0, abs_tol=1e-9)

    found = []
    for v in variants:
        if all("guide" in results[t] and v in results[t]
               and all(same(r[k], results[t]["guide"][0][k]) for r in results[t][v] for k in REPORT)
               for t in trees):
            found.append(v)
    return found


def plot(path: Path, results: dict, sets: list[str], trees: list[str], variants: list[str]) -> None:
    """One panel per set: MAD in the unknown region per variant and tree (bars: mean over seeds, whiskers: std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=((1.6 * len(variants) + 2) * len(sets), 3.5), squeeze=False)
    width = 0.8 / len(trees)
    for ax, ds in zip(axes[0], sets):
        for j, tree in enumerate(trees):
            vals = [[r["mad_unknown"] for r in results[ds][tree].get(v, [])] for v in variants]
            ax.bar(np.arange(len(variants)) + j * width, [np.mean(v) if v else np.nan for v in vals], width,
                   yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3, label=tree)
        ax.set_xticks(np.arange(len(variants)) + width * (len(trees) - 1) / 2, variants)
        ax.set_ylabel(f"MAD unknown region ({M.SCALES['mad']})")
        ax.set_title(f"{ds}: lower is better (mean, std over seeds)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The ablation's own flags (``--tiny`` / ``--cpu`` presets, explicit flags win) and the solver's flags after
    ``--``, with the preset's solver flags in front."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = build_parser()
    own = argv[: argv.index("--")] if "--" in argv else argv
    if "--tiny" in own:  # demo defaults; flags given explicitly still win
        parser.set_defaults(**TINY)
    if "--cpu" in own:
        parser.set_defaults(**CPU)
    if "--learned" in own:
        parser.set_defaults(**LEARNED)
    args = parser.parse_args(own)
    if args.commit and not args.per_run:
        parser.error("--commit needs --per_run (the units it commits are the per-run evaluations)")
    if args.report_only and not args.per_run:
        parser.error("--report_only needs --per_run (it reads the per-run evaluations)")
    args._argv = own  # what a per-run scoring subprocess is given to rebuild this grid
    if args.tiny:
        extra = ["--eval_every", str(args.steps), "--ckpt_every", str(args.steps), "--log_every", "10",
                 "--warmup_steps", "5", "--lr", "2e-3", "--num_workers", "0", "--val_max_frames", "4",
                 "--eval_long_side", "128", *extra]
    if args.cpu or args.learned:
        extra = [*CPU_SOLVER, "--eval_every", str(args.steps), *extra]
    return args, extra


def _check_inputs(args: argparse.Namespace) -> None:
    """Every set and tree has train and test clips: checked before the first (long) run."""
    for ds in args.sets:
        for tree in args.trees:
            for split in ("train", "test"):
                if not list_clips(set_root(args, ds), split, tree):
                    hint = (" (make it: python preprocess/frame_extraction.py --source composed)"
                            if tree == "frames_sharp" else "")
                    raise UserError(f"no clips in {Path(set_root(args, ds)) / tree / split / 'image'}{hint}")


def _collect(args: argparse.Namespace) -> tuple[dict, dict]:
    """Per-run summaries, recomputed from the per-clip CSVs so seeds stay separate, and the per-frame values of
    every (set, tree) for the paired tests."""
    results: dict[str, dict[str, dict[str, list[dict]]]] = {}
    frames: dict[tuple[str, str], dict] = {}
    for ds in args.sets:
        results[ds] = {}
        for tree in args.trees:
            rows = list(csv.DictReader(open(eval_dir(args, ds, tree) / "per_clip.csv")))
            results[ds][tree] = {}
            for run in dict.fromkeys(r["run"] for r in rows):
                mine = [{k: (v if k in ("method", "run", "clip") else float(v) if v != "" else math.nan)
                         for k, v in r.items()} for r in rows if r["run"] == run]
                results[ds][tree].setdefault(mine[0]["method"], []).append(evaluate.summarise(mine))
            frames[(ds, tree)] = load_frames(eval_dir(args, ds, tree) / "per_frame.csv")
    return results, frames


def _report(args: argparse.Namespace, runs: list, extra: list[str], results: dict, frames: dict, tests: dict) -> str:
    """RESULTS.md's text: the settings, a warning for each set the budget does not answer, the tables."""
    pin = Path(args.out) / "grid.json"
    code = (json.loads(pin.read_text()).get("commit", "unknown") if pin.is_file() else None)
    settings = (f"steps {args.steps}, batch {args.batch_size}, crop {args.crop}, base_channels {args.base_channels}, "
                f"seeds {args.seeds}, strategy pipeline/configs/maggie.yaml{', extra flags ' + ' '.join(extra) if extra else ''}")
    text = ("# DWT ablation\n\nSame budget for every run: " + settings + ".\n"
            f"{len(runs)} runs: variants {' '.join(args.variants)} x seeds {args.seeds} x trees {' '.join(args.trees)} "
            f"x sets {' '.join(args.sets)} (" + ", ".join(f"{ds}: {set_root(args, ds)}" for ds in args.sets) + "). "
            + (f"Every run from commit `{code}` (grid.json). " if code else "")
            + "Each run is scored on the test split of its own set and tree; baselines (" + args.baselines + ") need no "
            "training. Lower is better for every metric; scale factors in the headers. Evaluation "
            "details: " + (", ".join(str(eval_dir(args, ds, t) / "table.md") for ds in args.sets for t in args.trees)
                           if not args.per_run else f"{args.out}/eval_runs/<run>/table.md (each run) and "
                           f"{args.out}/eval_baselines/<set>_<tree>/table.md (the baselines)") + ".\n")
    for ds in args.sets:
        idle = returned_the_guide(results[ds], args.trees, args.variants)
        if idle:
            what = "every variant" if len(idle) == len(args.variants) else ", ".join(idle)
            text += (f"\n**This budget does not answer the question{' on ' + ds if len(args.sets) > 1 else ''}:** "
                     f"{what} returned its guide unchanged in every run (the guide's scores exactly): the gate "
                     f"never opened in {args.steps} steps, so {'their' if len(idle) > 1 else 'its'} rows and DWT "
                     "effect are the guide's by construction. `make ablation-cpu` is the budget that answers it.\n")
    if args.per_run:
        landed = sum((run_eval_dir(args, r) / "per_frame.csv").is_file() for r in runs)
        if landed < len(runs):
            text += (f"\n**Partial: {landed} of {len(runs)} runs have landed** (the grid trains seed-major); "
                     "every number below is over the runs that have.\n")
        text += answers(results, tests, args.sets, args.trees, args.variants)
        text += learned_table(results, args.sets, args.trees, args.variants)
        text += per_clip_table(frames, args.sets, args.trees, args.variants)
    for ds in args.sets:
        table = results_table(results[ds], args.trees, args.variants, args.seeds)
        text += (f"\n## Set: {ds}\n" + table.replace("\n### ", "\n### " + f"{ds} / ") if len(args.sets) > 1
                 else table)
    text += stats_tables(tests, args.n_boot) + focus_table(frames, args.sets, args.trees, args.variants)
    if args.per_run:
        text += real_table(args, runs)
    return text + "\n![ablation](ablation.png)\n"


def real_table(args: argparse.Namespace, runs: list) -> str:
    """The real photographs as a fifth evaluation of every run: per set, tree and variant the mean over seeds of
    each run's mean whole-item MAD x1e3 (its guide kind's rule: auto), beside the guide and classical matting, and
    how many items the refiner left worse than its guide (by more than 0.1), summed over the seeds."""
    base = real_baseline_dir(args) / "real_alpha" / "per_item.csv"
    if not base.is_file():
        return ""
    rows = list(csv.DictReader(open(base)))
    kinds = ("accurate", "coarse")
    guide = {(r["item"], r["guide_kind"]): float(r["mad"]) for r in rows if r["method"] == "guide"}
    mean = lambda vals: float(np.mean(vals)) if vals else math.nan  # noqa: E731
    lines = ["\n## Real photographs (a fifth evaluation of every run)\n",
             f"bench/real_alpha.py on {len({k[0] for k in guide})} items under {args.real_root} (accurate and coarse "
             "guides; the refiner's rule chosen by `--guide_quality auto`). Mean whole-item MAD x1e3; (n): items "
             "worse than their guide by more than 0.1, summed over the seeds.\n",
             "| set | tree | method | seeds | " + " | ".join(kinds) + " |", "|---|---|---|---:|" + "---:|" * len(kinds)]
    for m in ("guide", *(b for b in ("closed_form", "shared") if any(r["method"] == b for r in rows))):
        lines.append(f"| - | - | {m} | - | " + " | ".join(
            f"{mean([float(r['mad']) for r in rows if r['method'] == m and r['guide_kind'] == k]):.2f}"
            for k in kinds) + " |")
    for ds in args.sets:
        for tree in args.trees:
            for v in args.variants:
                mine = [r for r in runs if (r["set"], r["tree"], r["variant"]) == (ds, tree, v)
                        and (run_eval_dir(args, r) / "real_alpha" / "per_item.csv").is_file()]
                if not mine:
                    continue
                cells = []
                for k in kinds:
                    per_run, worse = [], 0
                    for r in mine:
                        got = [x for x in csv.DictReader(open(run_eval_dir(args, r) / "real_alpha" / "per_item.csv"))
                               if x["method"] == "refiner" and x["guide_kind"] == k]
                        per_run.append(mean([float(x["mad"]) for x in got]))
                        worse += sum(float(x["mad"]) > guide[(x["item"], k)] + 0.1 for x in got)
                    cells.append(f"{mean(per_run):.2f} ({worse})")
                lines.append(f"| {ds} | {tree} | {v} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parse(argv)
    if args._score_run:
        return score_one_run(args, args._score_run)
    runs = grid(args)
    if args.dry_run:
        dry_run(args, runs)
        return 0
    out = Path(args.out)
    if not args.report_only:
        _check_inputs(args)
        if args.commit:
            pin_grid(args)
    if args.per_run:
        if not args.report_only:
            train_and_score_grid(args, runs, extra)
        merge_run_evals(args, runs)
    else:
        train_grid(args, runs, extra)
        evaluate_grid(args, runs)
    results, frames = _collect(args)
    tests = paired_tests(frames, args.sets, args.trees, args.variants, args.n_boot)
    write_json_atomic(out / "stats.json", tests)
    text = _report(args, runs, extra, results, frames, tests)
    write_bytes_atomic(out / "RESULTS.md", text.encode())
    plot(out / "ablation.png", results, args.sets, args.trees, args.variants)
    if args.commit:
        merged = [eval_dir(args, ds, t) / f for ds in args.sets for t in args.trees for f in ("per_clip.csv",
                                                                                            "per_frame.csv")]
        landed = sum((run_eval_dir(args, r) / "per_frame.csv").is_file() for r in runs)
        commit_paths([p for p in (out / "RESULTS.md", out / "stats.json", out / "ablation.png", out / "grid.json",
                                  *merged) if p.is_file()],
                     f"ablation {out.name}: the report ({landed} of {len(runs)} runs, {args.steps} steps)")
    print(text)
    log.info("wrote %s, %s, %s", out / "RESULTS.md", out / "stats.json", out / "ablation.png")
    return 0

if __name__ == "__main__":
    run_main(main)
