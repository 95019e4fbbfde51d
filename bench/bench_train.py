"""Training throughput (samples/s) per variant: the data loader alone, the model step alone, and the full step,
measured side by side in one run so the bottleneck shows.

    python bench/bench_train.py                                  # 512x512 crops, batch 8, every variant
    python bench/bench_train.py --quick                          # a CPU-sized run (128x128, batch 2, 3 steps)
    python bench/bench_train.py --root data/demo --variants light heavy_db2 --num_workers 8

``--recipe`` instead times the real solver (``make train-cpu``'s flags, its strategy and data loader) as whole
training runs, for the working tree and, with ``--baseline REF``, for an older commit checked out as a git
worktree, side by side in one run (alternating, so drift of the machine hits both), in two thread layouts:
one process on two threads (``1x2``) and two processes at once on one thread each (``2x1``, their rates added):

    python bench/bench_train.py --recipe --baseline HEAD~3 --root data/train-cpu --variants light none heavy_db2

``--profile VARIANT`` profiles one step of that recipe (torch.profiler): its time split and top operators.

Without ``--root`` it writes synthetic frames (``--frame_size``, PNG like the real layout) to a temporary folder,
so PNG decoding, resizing, cropping and guide perturbation cost what they cost on real data. On CUDA the model
step runs under AMP (bf16 when supported, else fp16), as the solver does; on CPU in fp32.
"""
from __future__ import annotations

import utils.offline  # noqa: F401

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data import MattingFrames, StepBatchSampler, list_clips, list_frames
from pipeline.losses import LossWeights, matting_losses
from model.config import VARIANTS
from model.refiner import build_refiner
from pipeline.solver import amp_dtype_for
from utils.cli import run_main
from utils.images import write_png
from utils.paths import DataLayout


def synthetic_frames(root: Path, size: tuple[int, int], clips: int = 2, frames: int = 4) -> None:
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    layout = DataLayout(root)
    for c in range(clips):
        bgr = np.clip(rng.random((h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w], 0, 1)
        fgr = np.clip(0.6 + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
        for f in range(frames):
            r = np.hypot(yy - h / 2, xx - w / 2 - 4 * f)
            a = np.clip((min(h, w) / 3 - r) / 6 + 0.5, 0, 1).astype(np.float32)
            img = a[..., None] * fgr + (1 - a[..., None]) * bgr
            for layer, arr, bits in (("image", img, 8), ("alpha", a, 16), ("fgr", fgr, 8), ("bgr", bgr, 8)):
                write_png(layout.frames("train", layer, f"c{c}") / f"{f:04d}.png", arr.astype(np.float32), bits)


def rate(n_samples: int, seconds: float) -> float:
    return n_samples / max(seconds, 1e-9)


REPO = Path(__file__).resolve().parent.parent
# make train-cpu's solver flags (Makefile TRAIN_CPU_ARGS), less the data root, run name, steps and logging
RECIPE_ARGS = ["--guide_mode", "mixed", "--accurate_guide_prob", "0.5", "--batch_size", "4", "--crop", "128",
               "--base_channels", "16", "--num_workers", "0", "--warmup_steps", "100", "--lr", "1e-3",
               "--val_max_frames", "1", "--best_metric", "mad"]


def recipe_rate(tree: Path, root: str, variant: str, steps: int, log_every: int, runs: Path, procs: int,
                extra: list[str]) -> float:
    """samples/s of ``procs`` simultaneous solver runs of ``tree`` (one thread each when ``procs`` > 1, else two),
    added up; each run's rate is its train.csv rows after the first (start-up and first steps excluded)."""
    threads = "2" if procs == 1 else "1"
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": threads}
    jobs = []
    for i in range(procs):
        name = f"{tree.name}-{variant}-{procs}x{threads}-{i}"
        cmd = [sys.executable, str(tree / "pipeline" / "solver_refiner_maggie.py"), "--root", root,
               "--runs_dir", str(runs), "--name", name, "--model", variant, "--steps", str(steps),
               "--log_every", str(log_every), "--eval_every", str(10 * steps), "--ckpt_every", str(10 * steps),
               "--threads", threads, "--seed", str(i), "--overwrite", *RECIPE_ARGS, *extra]
        jobs.append((runs / name, subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.PIPE, text=True)))
    total = 0.0
    for run_dir, job in jobs:  # noqa: B007  (the last run folder is returned)
        _, err = job.communicate()
        if job.returncode:
            raise SystemExit(f"bench_train: {job.args[1]} exited {job.returncode}: {err.strip().splitlines()[-1:]}")
        with open(run_dir / "train.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))[1:]
        total += sum(float(r["samples_per_s"]) for r in rows) / len(rows)
    return total, jobs[0][0] / "train.csv"


def csv_difference(a: Path, b: Path) -> tuple[float, str]:
    """The largest relative difference between two train.csv files (every numeric column but the wall-clock
    samples_per_s; relative to the larger magnitude, floored at 1e-8) and the column it is in."""
    with open(a, newline="") as fa, open(b, newline="") as fb:
        rows_a, rows_b = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    if len(rows_a) != len(rows_b):
        return float("inf"), f"{len(rows_a)} vs {len(rows_b)} rows"
    worst, where = 0.0, "-"
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            if key in ("samples_per_s", "phase") or key not in rb:
                continue
            x, y = float(ra[key]), float(rb[key])
            rel = abs(x - y) / max(abs(x), abs(y), 1e-8)
            if rel > worst:
                worst, where = rel, f"{key} at step {ra['step']}"
    return worst, where


def bench_recipe(args) -> int:
    """The working tree against ``--baseline`` (if given), per variant and thread layout, alternating runs."""
    trees = {"new": REPO}
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        if args.baseline:
            base = tmp / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), args.baseline],
                           check=True)
            trees = {"baseline": base, "new": REPO}
        commit = {k: subprocess.run(["git", "-C", str(t), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() for k, t in trees.items()}
        print(f"recipe: make train-cpu's flags, {args.steps} steps per run (rate from the rows after the first "
              f"{args.log_every}), root {args.root}, {args.repeats} alternating repeats; trees "
              + ", ".join(f"{k} {t} ({commit[k]}{'+changes' if k == 'new' else ''})" for k, t in trees.items()))
        print(f"{'variant':<11}{'layout':<8}" + "".join(f"{k:>12}" for k in trees) + ("   new/baseline" if args.baseline
                                                                                    else ""))
        for variant in args.variants or ["light", "none", "heavy_db2"]:
            for layout in args.layouts:
                procs = {"1x2": 1, "2x1": 2}[layout]
                rates: dict[str, list[float]] = {k: [] for k in trees}
                logs: dict[str, Path] = {}
                for _ in range(args.repeats):
                    for k, tree in trees.items():
                        rate, logs[k] = recipe_rate(tree, args.root, variant, args.steps, args.log_every,
                                                    tmp / "runs", procs, args.solver_args)
                        rates[k].append(rate)
                best = {k: max(v) for k, v in rates.items()}  # the least disturbed of the repeats
                line = f"{variant:<11}{layout:<8}" + "".join(f"{best[k]:>12.2f}" for k in trees)
                if args.baseline:
                    line += f"   {best['new'] / best['baseline']:.2f}x  (all: " + ", ".join(
                        f"{k} {' '.join(f'{x:.1f}' for x in v)}" for k, v in rates.items()) + ")"
                    if procs == 1:  # the same seed in both trees: the same model should log the same numbers
                        rel, where = csv_difference(logs["baseline"], logs["new"])
                        line += f"; train.csv max rel. difference {rel:.2e} ({where})"
                print(line, flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def profile_step(args) -> int:
    """torch.profiler over the solver's own training step (``pipeline.solver``: model, fused optimiser where the
    code has it, ``_step_loss``) at make train-cpu's settings, a detail-phase step (every loss term on), one batch
    from the recipe's loader: the time split forward / losses / backward / optimiser, then the top operators by
    self time with their share of the step. Runs against another checkout with ``PYTHONPATH=<its root>``."""
    import statistics

    from torch.profiler import profile

    from pipeline import solver

    cfg = solver.resolve_config(solver.build_parser("maggie.yaml").parse_args(
        ["--root", args.root, "--model", args.profile, "--guide_mode", "mixed", "--accurate_guide_prob", "0.5",
         "--batch_size", "4", "--crop", "128", "--base_channels", "16", "--num_workers", "0", "--steps", "2400",
         "--threads", str(args.threads or 2)]))
    place = solver._place(cfg)
    train_set, _, _ = solver._datasets(cfg)
    state = solver._build_state(cfg, place, None)
    supervised = solver._SupervisedOutputs(state.model)
    _, weights = solver.phase_at(cfg, 1500)
    supervised.strides = tuple(k for k, w in weights.stride_weights.items() if w > 0)
    keys = StepBatchSampler(len(train_set), cfg.batch_size, cfg.seed, 1).batch(0)
    batch = torch.utils.data.default_collate([train_set[k] for k in keys])
    split = {"forward + losses": [], "backward": [], "optimiser": []}

    def step(timed: bool) -> None:
        t0 = time.perf_counter()
        loss, _ = solver._step_loss(supervised, batch, weights, None)
        t1 = time.perf_counter()
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        getattr(solver, "clip_grad_norm", torch.nn.utils.clip_grad_norm_)(supervised.parameters(), cfg.grad_clip)
        state.opt.step()
        if timed:
            for key, dt in zip(split, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                split[key].append(1e3 * dt)

    for i in range(8):
        step(i >= 3)
    with profile() as prof:
        for _ in range(5):
            step(False)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"{args.profile}, {torch.get_num_threads()} threads, model code {solver.__file__}")
    print("step (median ms): " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in split.items())
          + f", total {sum(statistics.median(v) for v in split.values()):.1f}")
    print("| operator | share of the step | ms per step | calls per step |\n|---|---:|---:|---:|")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"| {e.key[:60]} | {100 * e.self_cpu_time_total / total:.1f}% | {e.self_cpu_time_total / 5e3:.1f} | "
              f"{e.count // 5} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="a data root with frames/train (default: synthetic frames)")
    p.add_argument("--variants", nargs="+", default=None, help="default: every variant of model.refiner")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps (after 2 warm-up steps; default 10), or --recipe: steps per run (default 100)")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--base_channels", type=int, default=32)
    p.add_argument("--frame_size", type=int, nargs=2, default=(540, 960), help="synthetic frame H W")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--quick", action="store_true", help="crop 128, batch 2, 3 steps, 0 workers, 270x480 frames")
    p.add_argument("--recipe", action="store_true", help="time make train-cpu's solver runs (see the docstring)")
    p.add_argument("--baseline", default=None, help="--recipe: a git commit to time beside the working tree")
    p.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], choices=("1x2", "2x1"),
                   help="--recipe: processes x threads")
    p.add_argument("--log_every", type=int, default=20, help="--recipe: train.csv interval (the first is skipped)")
    p.add_argument("--repeats", type=int, default=1, help="--recipe: alternating runs per tree (the best counts)")
    p.add_argument("--profile", default=None, metavar="VARIANT",
                   help="profile the solver's step of VARIANT at make train-cpu's settings (needs --root)")
    p.add_argument("--top", type=int, default=12, help="--profile: how many operators to list")
    p.add_argument("--solver_args", nargs=argparse.REMAINDER, default=[],
                   help="--recipe: further solver flags, given last")
    args = p.parse_args(argv)
    if args.profile:
        if args.root is None:
            raise SystemExit("bench_train: --profile needs --root (e.g. data/train-cpu from make train-cpu-data)")
        return profile_step(args)
    if args.recipe:
        args.steps = args.steps or 100
        if args.steps < 2 * args.log_every:
            raise SystemExit("bench_train: --recipe needs --steps >= 2 * --log_every (the first interval is skipped)")
        if args.root is None:
            raise SystemExit("bench_train: --recipe needs --root (a data root with frames/train and masks, "
                             "e.g. data/train-cpu from make train-cpu-data)")
        args.root = str(Path(args.root).resolve())  # the runs start in each tree's folder
        return bench_recipe(args)
    args.steps = args.steps or 10
    if args.quick:
        args.crop, args.batch_size, args.steps, args.num_workers, args.frame_size = 128, 2, 3, 0, (270, 480)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants or list(VARIANTS)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = amp_dtype_for("auto", device)  # the solver's own choice, so the bench times the step it runs

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        synthetic_frames(Path(root), tuple(args.frame_size))
    frames = list_frames(root, "train", list_clips(root, "train"))
    ds = MattingFrames(root, frames, crop=args.crop, guide="perturb", with_fb=True)
    n = args.steps + 2

    def loader():
        return torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(len(ds), args.batch_size, 0, n),
                                           num_workers=args.num_workers, pin_memory=device.type == "cuda")

    t = None
    for i, _ in enumerate(loader()):  # loader alone
        if i == 1:
            t = time.perf_counter()
    loader_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)

    print(f"device {device}{' AMP ' + str(amp).split('.')[-1] if amp else ' fp32'}, crop {args.crop}, batch "
          f"{args.batch_size}, {args.steps} timed steps, {args.num_workers} loader workers, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'variant':<12}{'loader':>10}{'model step':>12}{'full step':>11}  (samples/s)  bottleneck")
    weights = LossWeights()
    for v in variants:
        torch.manual_seed(0)
        model = build_refiner(v, base_channels=args.base_channels).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

        def step(b):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(b["image"], b["guide"])
            loss, _ = matting_losses({s: a.float() for s, a in out.alpha_os.items()}, b["alpha"], weights,
                                     b["image"], b["fgr"], b["bgr"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        fixed = {k: v.to(device) for k, v in next(iter(loader())).items()}
        for i in range(n):  # model step alone, on one resident batch
            if i == 2:
                sync()
                t = time.perf_counter()
            step(fixed)
        sync()
        model_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)
        for i, b in enumerate(loader()):  # full step
            if i == 2:
                sync()
                t = time.perf_counter()
            step({k: x.to(device, non_blocking=True) for k, x in b.items()})
        sync()
        full_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)
        neck = "loader" if loader_rate < model_rate else "model"
        print(f"{v:<12}{loader_rate:>10.2f}{model_rate:>12.2f}{full_rate:>11.2f}  loader/model {loader_rate / model_rate:.2f}"
              f"  {neck}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
