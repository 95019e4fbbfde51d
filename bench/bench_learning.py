"""Learning curves: validation MAD against steps and wall time for the ``light`` and ``none`` refiners.

Both variants train with one recipe (by default ``make train-cpu``'s, shortened) through the real solver, on the
same data, and validate on held-out clips at full resolution (the scale the training crops see). The curves are
whole-frame MAD, MAD in the unknown band (0 < alpha < 1, grown by 1%) and MAD in the confident region (the rest,
where a refiner can only do harm), each beside the guide's own MAD on the same frames. Wall time is rebuilt from
the logged throughput of each interval (``train.csv``'s ``samples_per_s``), so it does not enter the logs.

    python bench/bench_learning.py --root data/train-cpu --steps 1500 --out runs/bench_learning
    python bench/bench_learning.py --plot_only --out runs/bench_learning    # replot finished runs
    python bench/bench_learning.py --reuse light=runs/train-cpu/s0 --steps 2400 --eval_every 400   # reuse a run

Finished runs are reused and killed ones resumed. Writes ``<out>/learning.png`` and ``<out>/learning.md`` (the
table of the last validation of each run). Flags after ``--`` go to every training run.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.cli import UserError, run_main
from utils.paths import repo_default

log = logging.getLogger("bench_learning")

# the make train-cpu recipe (Makefile TRAIN_CPU_ARGS), minus root / steps / name / threads
RECIPE = ["--guide_mode", "mixed", "--accurate_guide_prob", "0.5", "--batch_size", "4", "--crop", "128", "--base_channels",
          "16", "--num_workers", "0", "--threads", "1", "--warmup_steps", "100", "--lr", "1e-3", "--log_every", "50",
          "--val_max_frames", "16"]
CURVES = (("mad", "guide_mad", "whole frame"), ("mad_unknown", "guide_mad_unknown", "unknown band"),
          ("mad_confident", "guide_mad_confident", "confident region"))


def _rows(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) if k != "phase" else v for k, v in r.items()} for r in csv.DictReader(fh)]


def wall_time(train_rows: list[dict], batch_size: int) -> dict[int, float]:
    """Seconds of training up to each logged step, from the logged interval throughput."""
    out, t, prev = {0: 0.0}, 0.0, 0
    for r in train_rows:
        step = int(r["step"])
        t += (step - prev) * batch_size / max(1e-9, r["samples_per_s"])
        out[step], prev = t, step
    return out


def train_variant(variant: str, args, extra: Sequence[str]) -> Path:
    """Train (or reuse / resume) one variant's run; returns its folder."""
    from pipeline.solver_refiner_maggie import main as solver_main

    run = Path(args.out) / variant
    done = json.loads((run / "last.json").read_text()).get("step") if (run / "last.json").is_file() else None
    if done == args.steps:
        log.info("%s: finished run reused (%s)", variant, run)
        return run
    argv = ["--root", args.root, "--runs_dir", args.out, "--name", variant, "--model", variant, "--steps",
            str(args.steps), "--eval_every", str(args.eval_every), "--ckpt_every", str(args.eval_every),
            "--seed", str(args.seed), *RECIPE, *extra]
    solver_main(argv + (["--resume"] if (run / "last.pt").is_file() else ["--overwrite"]))
    return run


def plot(runs: dict[str, Path], out: Path) -> Path:
    """One figure: three panels of MAD vs steps (guide dashed), and whole-frame MAD vs wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for k, (variant, run) in enumerate(runs.items()):
        val = _rows(run / "val.csv")
        if not val:
            continue
        cfg = (run / "config.yaml").read_text()
        bs = int(next(line.split(":")[1] for line in cfg.splitlines() if line.startswith("batch_size:")))
        wall = wall_time(_rows(run / "train.csv"), bs)
        steps = [int(r["step"]) for r in val]
        color = f"C{k}"
        for ax, (key, guide_key, title) in zip(axes, CURVES):
            ax.plot(steps, [r[key] for r in val], color=color, marker="o", label=variant)
            ax.plot(steps, [r[guide_key] for r in val], color="gray", ls="--", label="guide" if k == 0 else None)
            ax.set_title(f"{title} MAD (x1e3)")
            ax.set_xlabel("step")
        axes[3].plot([wall.get(s, np.nan) / 60 for s in steps], [r["mad"] for r in val], color=color, marker="o",
                     label=variant)
    axes[3].set_title("whole-frame MAD vs wall time")
    axes[3].set_xlabel("minutes of training")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "learning.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def table(runs: dict[str, Path]) -> str:
    lines = ["| run | step | MAD | guide MAD | unknown MAD | guide unknown MAD | confident MAD | guide confident MAD |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, run in runs.items():
        for r in _rows(run / "val.csv"):
            lines.append(f"| {variant} | {int(r['step'])} | {r['mad']:.2f} | {r['guide_mad']:.2f} | "
                         f"{r['mad_unknown']:.2f} | {r['guide_mad_unknown']:.2f} | {r['mad_confident']:.2f} | "
                         f"{r['guide_mad_confident']:.2f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=repo_default("data/train-cpu"), help="data root with frames/train (make train-cpu-data)")
    p.add_argument("--variants", nargs="+", default=["light", "none"])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval_every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=repo_default("runs/bench_learning"))
    p.add_argument("--plot_only", action="store_true", help="only replot the runs under --out")
    p.add_argument("--reuse", nargs="*", default=[], metavar="VARIANT=RUN_DIR",
                   help="take a finished run of the same recipe instead of training that variant (e.g. light=runs/train-cpu/s0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    reuse = {}
    for item in args.reuse:
        variant, _, run = item.partition("=")
        if not run or not Path(run).is_dir():
            raise UserError(f"--reuse expects VARIANT=RUN_DIR with an existing folder, got {item!r}")
        reuse[variant] = Path(run)
    runs = {}
    for v in args.variants:
        if v in reuse:
            runs[v] = reuse[v]
        else:
            runs[v] = Path(args.out) / v if args.plot_only else train_variant(v, args, extra)
        if not (runs[v] / "val.csv").is_file():
            raise UserError(f"no validation log in {runs[v]}: train it first (without --plot_only)")
    path = plot(runs, Path(args.out))
    md = table(runs)
    (Path(args.out) / "learning.md").write_text(md)
    print(md, end="")
    log.info("wrote %s and %s", path, Path(args.out) / "learning.md")
    return 0


if __name__ == "__main__":
    run_main(main)
