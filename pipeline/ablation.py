"""The DWT ablation: the same refiner, data, budget and seeds with and without the wavelet branch, on defocused
frames and on the all-in-focus control.

    python pipeline/ablation.py --root data/demo --steps 20000 --batch_size 8 --crop 512
    python pipeline/ablation.py --root data/demo --tiny          # the demo: one seed, two variants, minutes on CPU

For every tree (``frames``: depth-of-field blurred; ``frames_sharp``: the same clips without blur) x variant
(``none light heavy_db1 heavy_db2 heavy_db4``) x seed it trains ``pipeline/solver_refiner_maggie.py`` with
identical flags (same steps, batch, crop, schedule: the same budget) into ``<out>/runs/<tree>_<variant>_s<seed>``,
scores every run's best checkpoint on the test split of its own tree (pipeline/evaluate.py, with the guide and
closed-form baselines), and writes ``<out>/RESULTS.md`` (table) and ``<out>/ablation.png`` (plot). Finished runs
are reused (a rerun skips them); a killed run is resumed. Extra solver flags go after ``--``.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python pipeline/ablation.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import utils.offline  # noqa: E402,F401  (first: offline switches)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402

from pipeline import evaluate, metrics as M  # noqa: E402
from pipeline.data import list_clips  # noqa: E402
from pipeline.solver import train  # noqa: E402
from utils.atomic import write_bytes_atomic  # noqa: E402
from utils.cli import ArgumentParser, UserError, run_main  # noqa: E402

log = logging.getLogger("ablation")
VARIANTS = ("none", "light", "heavy_db1", "heavy_db2", "heavy_db4")
TREES = ("frames", "frames_sharp")
REPORT = ("mad", "mse", "grad", "conn", "dtssd", "mad_unknown", "grad_unknown")
TINY = {"variants": ["none", "light"], "seeds": [0], "steps": 40, "batch_size": 4, "crop": 64,
        "base_channels": 8, "long_side": 128, "max_frames": 4}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="data/demo")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--trees", nargs="+", default=list(TREES), help="frames (defocused) and frames_sharp (control)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20000, help="training steps of every run (the shared budget)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--base_channels", type=int, default=32)
    p.add_argument("--long_side", type=int, default=0, help="evaluation: downscale frames to this long side")
    p.add_argument("--max_frames", type=int, default=0, help="evaluation: frames per test clip (0: all)")
    p.add_argument("--baselines", default="guide,closed_form")
    p.add_argument("--tiny", action="store_true",
                   help=f"demo defaults: {', '.join(f'{k}={v}' for k, v in TINY.items())} (explicit flags win)")
    return p


def run_name(tree: str, variant: str, seed: int) -> str:
    return f"{tree}_{variant}_s{seed}"


def train_one(args, tree: str, variant: str, seed: int, extra: list[str]) -> Path:
    """Train one run unless it already finished; resume it if it was killed. Returns its best checkpoint."""
    runs = Path(args.out) / "runs"
    name = run_name(tree, variant, seed)
    state = runs / name / "last.json"
    done = state.is_file() and json.loads(state.read_text()).get("step") == args.steps
    if done:
        log.info("%s: finished earlier, reusing %s", name, runs / name)
    else:
        argv = ["--root", args.root, "--tree", tree, "--model", variant, "--seed", str(seed), "--steps",
                str(args.steps), "--batch_size", str(args.batch_size), "--crop", str(args.crop), "--base_channels",
                str(args.base_channels), "--runs_dir", str(runs), "--name", name, *extra]
        if (runs / name / "last.pt").is_file():
            argv.append("--resume")
        train(argv, defaults_yaml="maggie.yaml")
    best = runs / name / "best.pt"
    return best if best.is_file() else runs / name / "last.pt"


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
    if "none" in variants and len(trees) == 2:
        lines += ["\n### DWT effect on MAD in the unknown region (none minus variant; positive = the DWT helps)\n",
                  "| variant | " + " | ".join(trees) + " | defocused minus control |", "|---|---:|---:|---:|"]
        base = {t: np.mean([r["mad_unknown"] for r in results[t]["none"]]) for t in trees}
        for v in variants:
            if v == "none":
                continue
            gain = [base[t] - np.mean([r["mad_unknown"] for r in results[t][v]]) for t in trees]
            lines.append(f"| {v} | {gain[0]:.3f} | {gain[1]:.3f} | {gain[0] - gain[1]:.3f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, results: dict, trees: list[str], variants: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(variants) + 2, 3.5))
    width = 0.8 / len(trees)
    for j, tree in enumerate(trees):
        vals = [[r["mad_unknown"] for r in results[tree][v]] for v in variants]
        ax.bar(np.arange(len(variants)) + j * width, [np.mean(v) for v in vals], width,
               yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3, label=tree)
    ax.set_xticks(np.arange(len(variants)) + width * (len(trees) - 1) / 2, variants)
    ax.set_ylabel(f"MAD unknown region ({M.SCALES['mad']})")
    ax.set_title("DWT ablation (lower is better; bars: mean, whiskers: std over seeds)")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = build_parser()
    own = argv[: argv.index("--")] if "--" in argv else argv
    if "--tiny" in own:  # demo defaults; flags given explicitly still win
        parser.set_defaults(**TINY)
    args = parser.parse_args(own)
    if args.tiny:
        extra = ["--eval_every", str(args.steps), "--ckpt_every", str(args.steps), "--log_every", "10",
                 "--warmup_steps", "5", "--lr", "2e-3", "--num_workers", "0", "--val_max_frames", "4",
                 "--eval_long_side", "128", *extra]
    for tree in args.trees:  # check every input before the first (long) run
        for split in ("train", "test"):
            if not list_clips(args.root, split, tree):
                hint = " (make it: python preprocess/frame_extraction.py --source composed)" if tree == "frames_sharp" else ""
                raise UserError(f"no clips in {Path(args.root) / tree / split / 'image'}{hint}")
    out = Path(args.out)
    results: dict[str, dict[str, list[dict]]] = {}
    for tree in args.trees:
        ckpts, labels = [], []
        for variant in args.variants:
            for seed in args.seeds:
                ckpts.append(str(train_one(args, tree, variant, seed, extra)))
                labels.append(variant)
        eval_dir = out / f"eval_{tree}"
        evaluate.main(["--root", args.root, "--split", "test", "--tree", tree, "--ckpt", *ckpts, "--labels", *labels,
                       "--baselines", args.baselines, "--long_side", str(args.long_side), "--max_frames",
                       str(args.max_frames), "--out", str(eval_dir)])
        # per-run summaries, recomputed from the per-clip CSV so seeds stay separate
        import csv
        rows = list(csv.DictReader(open(eval_dir / "per_clip.csv")))
        results[tree] = {}
        for run in dict.fromkeys(r["run"] for r in rows):
            mine = [{k: (float(v) if k not in ("method", "run", "clip") else v) for k, v in r.items()}
                    for r in rows if r["run"] == run]
            results[tree].setdefault(mine[0]["method"], []).append(evaluate.summarise(mine))
    settings = (f"steps {args.steps}, batch {args.batch_size}, crop {args.crop}, base_channels {args.base_channels}, "
                f"seeds {args.seeds}, strategy pipeline/configs/maggie.yaml{', extra flags ' + ' '.join(extra) if extra else ''}")
    text = ("# DWT ablation\n\nSame budget for every run: " + settings + ".\nEach run is scored on the test split of "
            "its own tree; baselines (guide mask, closed-form matting) need no training. Lower is better for every "
            "metric; scale factors in the headers. Evaluation details: "
            + ", ".join(str(out / f"eval_{t}" / "table.md") for t in args.trees) + ".\n"
            + results_table(results, args.trees, args.variants, args.seeds)
            + f"\n![ablation]({'ablation.png'})\n")
    write_bytes_atomic(out / "RESULTS.md", text.encode())
    plot(out / "ablation.png", results, args.trees, args.variants)
    print(text)
    log.info("wrote %s, %s", out / "RESULTS.md", out / "ablation.png")
    return 0


if __name__ == "__main__":
    run_main(main)
