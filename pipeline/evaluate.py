"""Score mattes against ground truth with the standard metrics (pipeline/metrics.py).

(a) Checkpoints (one or many; several runs of one variant give mean +/- std over seeds) plus baselines that need
no training, on a split of the per-frame layout:

    python pipeline/evaluate.py --root data/demo --split test --ckpt runs/a/best.pt runs/b/best.pt --out runs/eval

(b) Any method's saved predictions (MatAnyone, RVM, your own), ``<dir>/<clip>/[frames/]NNNN.png``:

    python pipeline/evaluate.py --pred_dir preds/ --gt_dir data/demo/frames/test/alpha --out runs/eval_preds

Writes to ``--out``: ``metrics.json`` (mean of every metric per method), ``per_clip.csv``, ``table.md`` (whole-frame
and unknown-region columns, scale factors in the headers) and ``figure.png`` (image, guide, prediction, ground
truth, error, focus map on the worst and best frames). Baselines: ``guide`` (the guide mask itself),
``closed_form`` and ``shared`` (pymatting's closed-form and shared matting, ``pipeline/classical.py``, on a trimap
made from the guide: eroded guide = foreground, outside the dilated guide = background, the band between unknown,
2% of the frame's shorter side wide each way).

Image metrics are averaged over all frames, video metrics (dtSSD, MESSDdt) over clips. The unknown region is the
ground truth's 0 < alpha < 1 band grown by 1% of the frame's shorter side (at least 1 pixel).
"""
from __future__ import annotations

from pathlib import Path


import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import csv
import dataclasses
import io
import logging
from collections import defaultdict
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model.predictor import Predictor
from model.sparse import RATIO_HELP, ratio_arg
from pipeline import metrics as M
from pipeline.classical import METHODS as CLASSICAL, classical_alpha
from pipeline.data import Frame, MattingFrames, list_clips, list_frames
from utils.atomic import atomic_dir, atomic_path, write_bytes_atomic, write_json_atomic
from utils.cli import ArgumentParser, UserError, nonneg_int, run_main
from utils.device import resolve_device
from utils.images import check_frame_sizes, list_images, read_image, write_png
from utils.paths import repo_default

log = logging.getLogger("evaluate")
COLUMNS = ("sad", "mad", "mse", "grad", "conn")
HEAD = {"sad": "SAD", "mad": "MAD", "mse": "MSE", "grad": "Grad", "conn": "Conn", "dtssd": "dtSSD",
        "messddt": "MESSDdt"}
BASELINES = ("guide",) + CLASSICAL

Predict = Callable[[dict], tuple[np.ndarray, dict | None]]  # item -> (alpha HxW, {"focus", "gate": HxW} or None)


# ------------------------------------------------------------------------------------------ predictors
def classical_baseline(method: str) -> Predict:
    """pymatting's ``method`` (``pipeline.classical``) with a trimap of the guide +- 2% of the frame's shorter side."""
    def predict(item: dict) -> tuple[np.ndarray, None]:
        image = item["image"].numpy().transpose(1, 2, 0)
        guide = item["guide"][0].numpy()
        return classical_alpha(image, guide, method, max(2, round(0.02 * min(guide.shape)))), None
    return predict


def guide_baseline(item: dict) -> tuple[np.ndarray, None]:
    return item["guide"][0].numpy().astype(np.float32), None


def checkpoint_predictor(path: Path, device: torch.device, downsample_ratio: float | str = "auto",
                         dense: bool = False, ring_samples: bool = True,
                         ring_gate: bool = False, soft_zone: bool = False,
                         coarse_band: bool = True) -> tuple[Predict, dict]:
    """A checkpoint as a predictor: the sparse path (``model.sparse``: a coarse pass at ``downsample_ratio``, full
    resolution tiles where the refiner can act) unless ``dense``; a frame whose coarse pass is at full size
    (ratio 1) is the dense pass, which also gives the focus map and the gate for the figure."""
    predictor, ckpt = Predictor.from_checkpoint(path, device, downsample_ratio=downsample_ratio, dense=dense,
                                                ring_samples=ring_samples, ring_gate=ring_gate, soft_zone=soft_zone,
                                                coarse_band=coarse_band)

    def predict(item: dict):
        p = predictor(item["image"][None], item["guide"][None])
        alpha = p.alpha.float()[0, 0].cpu().numpy()
        if p.dense is None:  # the sparse path: where it changed the guide stands for the gate
            return alpha, {"gate": (alpha != item["guide"][0].numpy()).astype(np.float32)}
        out = p.dense
        maps = {"focus": out.focus_map.float()[0].mean(0).cpu().numpy(), "gate": out.gate.float()[0, 0].cpu().numpy()}
        return alpha, {k: cv2.resize(v, alpha.shape[::-1], interpolation=cv2.INTER_LINEAR) for k, v in maps.items()}

    return predict, ckpt


# ------------------------------------------------------------------------------------------ scoring
unknown_mask = M.eval_region  # 0 < alpha < 1 grown by 1% of the shorter side (at least 1 px)


def score_clip(preds: np.ndarray, gts: np.ndarray) -> tuple[list[dict], dict]:
    """Per-frame image metrics and the clip's video metrics, whole frame and unknown region."""
    unk = unknown_mask(gts)
    frames = []
    for p, g, u in zip(preds, gts, unk):
        row = M.frame_metrics(p, g)
        row.update({f"{k}_unknown": v for k, v in M.frame_metrics(p, g, u).items()})
        frames.append(row)
    video = {"dtssd": M.dtssd(preds, gts), "messddt": M.messddt(preds, gts),
             "dtssd_unknown": M.dtssd(preds, gts, unk), "messddt_unknown": M.messddt(preds, gts, unk)}
    return frames, video


def focus_sigma_spearman(focus: np.ndarray, sigma: np.ndarray) -> float:
    """Spearman's rho between the refiner's focus map and the true blur sigma over the pixels of one frame (as
    is: a focus map that sees defocus is high where sigma is low, so expect rho < 0). NaN when either is
    constant (e.g. sigma of an all-in-focus frame), where a rank correlation is undefined."""
    from scipy.stats import spearmanr

    f, s = np.asarray(focus, np.float64).ravel(), np.asarray(sigma, np.float64).ravel()
    if f.std() == 0 or s.std() == 0:
        return float("nan")
    return float(spearmanr(f, s).statistic)


def evaluate_method(name: str, predict: Predict, ds: MattingFrames, save_dir: Path | None = None,
                    sigma_fn: Callable[[Frame], np.ndarray | None] | None = None, frame_rows: list | None = None):
    """Run ``predict`` on every frame of ``ds``: (per-clip rows, per-frame (clip, index, mad) list).

    ``sigma_fn(frame)``: the frame's true blur map (or None); with it and a predictor that returns a focus map,
    each clip row gets ``focus_sigma_spearman``, the mean over its frames of :func:`focus_sigma_spearman`.
    ``frame_rows``: if given, one dict per frame is appended (clip, frame, mad, mad_unknown[, focus_sigma_spearman])."""
    by_clip: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(ds.frames):
        by_clip[f.clip].append(i)
    rows, frame_scores = [], []
    for clip, idx in tqdm(by_clip.items(), desc=name, leave=False, disable=None):  # a bar on a terminal only
        preds, gts, rhos = [], [], []
        for i in idx:
            item = ds[i]
            alpha, maps = predict(item)
            preds.append(alpha)
            gts.append(item["alpha"][0].numpy())
            if save_dir is not None:
                write_png(save_dir / clip / ds.frames[i].name, alpha, bits=16)
            sigma = sigma_fn(ds.frames[i]) if sigma_fn is not None and maps and "focus" in maps else None
            if sigma is not None:
                sigma = cv2.resize(sigma, alpha.shape[::-1], interpolation=cv2.INTER_AREA)
                rhos.append(focus_sigma_spearman(maps["focus"], sigma))
        frames, video = score_clip(np.stack(preds), np.stack(gts))
        frame_scores += [(i, fr["mad"]) for i, fr in zip(idx, frames)]
        mean = {k: float(np.mean([fr[k] for fr in frames])) for k in frames[0]}
        rows.append({"clip": clip, "frames": len(idx), **mean, **video})
        if rhos:
            rows[-1]["focus_sigma_spearman"] = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else float("nan")
        if frame_rows is not None:
            for j, (i, fr) in enumerate(zip(idx, frames)):
                frame_rows.append({"clip": clip, "frame": ds.frames[i].name, "mad": fr["mad"],
                                   "mad_unknown": fr["mad_unknown"],
                                   **({"focus_sigma_spearman": rhos[j]} if rhos else {})})
    return rows, frame_scores


def summarise(rows: list[dict]) -> dict[str, float]:
    """Image metrics: mean over all frames (clip means weighted by frame count); video metrics: mean over clips."""
    n = np.array([r["frames"] for r in rows], float)
    out = {}
    for k in rows[0]:
        if k in ("clip", "frames", "method", "run"):
            continue
        v = np.array([r.get(k, np.nan) for r in rows], float)
        if k == "focus_sigma_spearman":  # mean over the clips that have it (NaN: undefined)
            out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            continue
        out[k] = float(v.mean() if k.split("_")[0] in M.VIDEO_METRICS else (v * n).sum() / n.sum())
    return out


def markdown_table(groups: dict[str, list[dict[str, float]]]) -> str:
    """One row per method: mean, or mean +/- std over runs (seeds) when a method has several."""
    cols = [(k, f"{HEAD[k]} ({M.SCALES[k]})") for k in (*COLUMNS, "dtssd", "messddt")]
    cols += [(f"{k}_unknown", f"{HEAD[k]} unk. ({M.SCALES[k]})") for k in (*COLUMNS, "dtssd")]
    lines = ["| method | runs | " + " | ".join(h for _, h in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for name, runs in groups.items():
        cells = []
        for k, _ in cols:
            v = np.array([r[k] for r in runs])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_figure(path: Path, picks: list[tuple[str, int]], loader: Callable[[int], dict]) -> None:
    """Rows (worst, best frame): image, guide, prediction, ground truth, |error|, |guide error|, the refiner's
    guide gate (where it replaced the guide), focus map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("image", "guide", "prediction", "ground truth", "|error|", "|guide error|", "gate", "focus map")
    fig, axes = plt.subplots(len(picks), len(titles), figsize=(20, 2.8 * len(picks)), squeeze=False)
    for r, (label, i) in enumerate(picks):
        item = loader(i)
        alpha, maps, gt, guide = item["pred"], item.get("maps") or {}, item["alpha"], item.get("guide")
        guide_err = np.abs(guide - gt) if guide is not None else None
        panels = (item.get("image"), guide, alpha, gt, np.abs(alpha - gt), guide_err, maps.get("gate"),
                  maps.get("focus"))
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.axis("off")
            if img is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center")
            else:
                ax.imshow(img, cmap=None if img.ndim == 3 else ("magma" if c >= 4 else "gray"),
                          vmin=0, vmax=1 if titles[c] != "focus map" else None)
            ax.set_title(f"{titles[c]}" + (f"\n{label}" if c == 0 else ""), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def true_sigma_fn(root: str, frames: list[Frame]) -> Callable[[Frame], np.ndarray | None] | None:
    """The true blur map of a frame (preprocess/dof_blur.py ``true_sigma``), or None when the root holds no blur
    records for these clips. For either tree the map is the defocused tree's: on ``frames`` the blur the frame
    has, on ``frames_sharp`` the blur the same frame has in the defocused tree (its own sigma is 0 everywhere,
    where a correlation is undefined), so the two correlations are comparable."""
    from preprocess.dof_blur import true_sigma
    from utils.paths import frame_index

    if not any((Path(root) / "blurred" / f.split / f.clip / "meta.json").is_file() for f in frames[:50]):
        return None
    return lambda f: true_sigma(root, f.split, f.clip, frame_index(f.name))


# ------------------------------------------------------------------------------------------ prediction folders
def _clip_frames(folder: Path) -> Path:
    return folder / "frames" if (folder / "frames").is_dir() else folder


def read_pred_dir(pred_dir: Path, gt_dir: Path) -> list[tuple[str, list[Path], list[Path]]]:
    """Matching (clip, prediction paths, ground-truth paths); a missing prediction is a UserError."""
    if not gt_dir.is_dir():
        raise UserError(f"ground-truth folder not found: {gt_dir}")
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder not found: {pred_dir}")
    out = []
    for clip in sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        gts = list_images(_clip_frames(gt_dir / clip))
        if not gts:
            continue
        pdir = _clip_frames(pred_dir / clip)
        preds = [pdir / g.name for g in gts]
        for p in preds:
            if not p.is_file():
                raise UserError(f"no prediction for {clip}/{p.name}: {p} is missing")
        out.append((clip, preds, gts))
    if not out:
        raise UserError(f"no ground-truth frames in {gt_dir}/<clip>/[frames/]NNNN.png")
    return out


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default=repo_default("data/demo"), help="data root (mode a)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--tree", default="frames", help="frames (defocused) or frames_sharp (all-in-focus control)")
    p.add_argument("--guide_mode", "--guide", dest="guide_mode", default="auto", choices=("auto", "files", "perturb", "accurate"),
                   help="guide masks: the mask layer (files), perturbed GT (perturb), files when present (auto), or "
                        "the ground truth binarised at 0.5 (accurate: what a good segmenter gives on a clean frame)")
    p.add_argument("--ckpt", nargs="*", default=[], help="checkpoint(s) to score")
    p.add_argument("--labels", nargs="*", default=None,
                   help="method name per checkpoint (default: its variant); equal labels are averaged as seeds")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"comma list of {', '.join(BASELINES)}, or none")
    p.add_argument("--pred_dir", default=None, help="mode b: folder of predictions <clip>/[frames/]NNNN.png")
    p.add_argument("--gt_dir", default=None, help="mode b: folder of ground-truth alpha <clip>/[frames/]NNNN.png")
    p.add_argument("--name", default=None, help="method name for --pred_dir (default: the folder name)")
    p.add_argument("--eval_long_side", "--long_side", dest="eval_long_side", type=nonneg_int, default=0,
                   help="downscale frames so the long side is at most this (0: full resolution)")
    p.add_argument("--downsample_ratio", type=ratio_arg, default="auto",
                   help=RATIO_HELP)
    p.add_argument("--dense", action="store_true", help="the dense path (every pixel at full resolution)")
    p.add_argument("--no_ring_samples", action="store_true",
                   help="the ring keeps the refiner's values (model.evidence.ring_sampled_alpha off; only to "
                        "measure what the local samples do, or to compare variants by their own ring values)")
    p.add_argument("--gated_ring", action="store_true",
                   help="the ring's local samples only where the gate leans open, so that an untrained refiner "
                        "returns its guide exactly (Predictor ring_gate; the ablation's evaluations)")
    p.add_argument("--soft_zone", action="store_true",
                   help="grow the soft zone beyond the ring from local samples (model.evidence.soft_zone_alpha)")
    p.add_argument("--no_coarse_band", action="store_true",
                   help="coarse-ruled frames keep the refiner's band (model.evidence.coarse_band_alpha off), so that "
                        "an untrained refiner returns its guide exactly (the ablation's evaluations)")
    p.add_argument("--max_frames", type=nonneg_int, default=0, help="at most this many frames per clip (0: all)")
    p.add_argument("--save_pred", action="store_true", help="also write predictions to <out>/pred/<method>/")
    p.add_argument("--out", default=repo_default("runs/eval"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of perturbed guides")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p


@dataclasses.dataclass
class Scores:
    """What scoring gathers before anything is written: per method the summary of each run, per-clip and
    per-frame rows, and the method whose worst and best frames the figure shows."""

    groups: dict = dataclasses.field(default_factory=lambda: defaultdict(list))  # method -> [summary per run]
    clip_rows: list = dataclasses.field(default_factory=list)
    frame_rows: list = dataclasses.field(default_factory=list)  # mode a: per-frame MAD and focus correlation
    worst_best: tuple | None = None  # (method, per-frame (index, MAD), index -> panels, is a baseline)


def score_pred_dir(pred_dir: Path, gt_dir: Path, name: str) -> Scores:
    """Mode (b): saved predictions ``<dir>/<clip>/[frames/]NNNN.png`` against ground truth of the same names."""
    scores = Scores()
    rows, frame_scores, flat = [], [], []
    for clip, preds, gts in tqdm(read_pred_dir(pred_dir, gt_dir), desc=name, disable=None):
        p_list, g_list = [read_image(x, gray=True) for x in preds], [read_image(x, gray=True) for x in gts]
        for pred_path, gt_path, a, b in zip(preds, gts, p_list, g_list):
            if a.shape != b.shape:
                raise UserError(f"{pred_path} is {a.shape[1]}x{a.shape[0]} but its ground truth {gt_path} is "
                                f"{b.shape[1]}x{b.shape[0]}")
        p, g = np.stack(p_list), np.stack(g_list)
        frames, video = score_clip(p, g)
        for j, fr in enumerate(frames):
            frame_scores.append((len(flat), fr["mad"]))
            flat.append((preds[j], gts[j]))
        rows.append({"clip": clip, "frames": len(frames),
                     **{k: float(np.mean([fr[k] for fr in frames])) for k in frames[0]}, **video})
    scores.groups[name].append(summarise(rows))
    scores.clip_rows += [{"method": name, "run": str(pred_dir), **r} for r in rows]

    def loader(i):
        return {"pred": read_image(flat[i][0], gray=True), "alpha": read_image(flat[i][1], gray=True)}

    scores.worst_best = (name, frame_scores, loader, False)
    return scores


def _methods(args, device: torch.device) -> list[tuple[str, str, Predict]]:
    """(name, run, predictor) of every baseline and checkpoint asked for."""
    methods: list[tuple[str, str, Predict]] = []
    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    for b in baselines:
        if b not in BASELINES:
            raise UserError(f"unknown baseline {b!r}: use {', '.join(BASELINES)} or none")
        methods.append((b, b, guide_baseline if b == "guide" else classical_baseline(b)))
    if not baselines and not args.ckpt:
        raise UserError(f"nothing to score: give --ckpt FILE(s) and/or --baselines ({', '.join(BASELINES)})")
    if args.labels is not None and len(args.labels) != len(args.ckpt):
        raise UserError(f"--labels needs one name per checkpoint ({len(args.ckpt)}), got {len(args.labels)}")
    for j, path in enumerate(args.ckpt):
        predict, ckpt = checkpoint_predictor(Path(path), device, args.downsample_ratio, args.dense,
                                             not args.no_ring_samples, args.gated_ring, args.soft_zone,
                                             not args.no_coarse_band)
        methods.append((args.labels[j] if args.labels else str(ckpt["variant"]), str(path), predict))
    return methods


def score_split(args) -> Scores:
    """Mode (a): checkpoints and baselines on a split of a data root."""
    clips = list_clips(args.root, args.split, args.tree)
    mask_dir = Path(args.root) / args.tree / args.split / "mask"
    guide = ("files" if mask_dir.is_dir() else "perturb") if args.guide_mode == "auto" else args.guide_mode
    need = ("alpha", "mask") if guide == "files" else ("alpha",)
    frames: list[Frame] = []
    for clip in clips:
        fr = list_frames(args.root, args.split, [clip], args.tree, need)
        frames += fr[: args.max_frames] if args.max_frames else fr
    if not frames:
        raise UserError(f"no frames in {Path(args.root) / args.tree / args.split}/image/<clip>/frames/")
    check_frame_sizes(args.root, frames, args.tree, need)  # e.g. guide masks of another size
    ds = MattingFrames(args.root, frames, args.tree, guide, with_fb=False, eval_long_side=args.eval_long_side,
                       seed=args.seed)
    methods = _methods(args, resolve_device(args.device))
    log.info("scoring %d method(s) on %d frames of %s/%s (%s guides)", len(methods), len(frames), args.tree,
             args.split, guide)
    sigma_fn = true_sigma_fn(args.root, frames) if args.ckpt else None
    scores = Scores()
    for name, run, predict in methods:
        save = None
        if args.save_pred:
            save = Path(args.out) / "pred" / (name if run == name else f"{name}_{len(scores.groups[name])}")
        fr_rows: list[dict] = []
        rows, frame_scores = evaluate_method(name, predict, ds, save, sigma_fn if run != name else None, fr_rows)
        scores.frame_rows += [{"method": name, "run": run, **r} for r in fr_rows]
        scores.groups[name].append(summarise(rows))
        scores.clip_rows += [{"method": name, "run": run, **r} for r in rows]

        def loader(i, predict=predict):
            item = ds[i]
            alpha, maps = predict(item)
            return {"image": item["image"].numpy().transpose(1, 2, 0), "guide": item["guide"][0].numpy(),
                    "alpha": item["alpha"][0].numpy(), "pred": alpha, "maps": maps}

        # the figure shows the first trained model (a baseline only when no checkpoint is given)
        if scores.worst_best is None or (run != name and scores.worst_best[3]):
            scores.worst_best = (name, frame_scores, loader, run == name)
    return scores


# everything an evaluation writes in its --out: the folder is replaced whole, so nothing of an earlier one survives
EVAL_OUTPUTS = ("metrics.json", "per_clip.csv", "per_frame.csv", "table.md", "figure.png", "pred")


def _check_out(out: Path) -> None:
    """An existing ``--out`` is replaced whole: it may hold an earlier evaluation's files only."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    other = sorted(p.name for p in out.iterdir() if p.name not in EVAL_OUTPUTS and not p.name.startswith("."))
    if other:
        raise UserError(f"--out {out} holds files that are not an evaluation's ({', '.join(other[:3])}"
                        f"{', ...' if len(other) > 3 else ''}): give a new or empty folder")


def write_outputs(out: Path, scores: Scores) -> dict:
    """metrics.json, per_clip.csv, per_frame.csv, table.md and figure.png in ``out``; returns the summary
    (method -> mean of every metric over its runs, ``_std`` over runs when there are several, ``runs``)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, runs in scores.groups.items():
        summary[name] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        if len(runs) > 1:
            summary[name].update({f"{k}_std": float(np.std([r[k] for r in runs], ddof=1)) for k in runs[0]})
        summary[name]["runs"] = len(runs)
    write_json_atomic(out / "metrics.json", {"scales": M.SCALES, "methods": summary})
    for path, rows in ((out / "per_clip.csv", scores.clip_rows), (out / "per_frame.csv", scores.frame_rows)):
        if not rows:
            continue
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
            w.writeheader()
            w.writerows(rows)
    table = markdown_table(scores.groups)
    rho = {n: s["focus_sigma_spearman"] for n, s in summary.items() if "focus_sigma_spearman" in s}
    if rho:
        table += ("\nFocus map vs the true blur sigma (Spearman rho over the pixels of each frame, mean over frames "
                  "and clips; negative = the focus map is high where the frame is sharp; on frames_sharp: against "
                  "the sigma the defocused tree has): " + ", ".join(f"{n} {v:.3f}" for n, v in rho.items()) + "\n")
    write_bytes_atomic(out / "table.md", table.encode())
    name, ranked, loader = scores.worst_best[0], sorted(scores.worst_best[1], key=lambda t: t[1]), scores.worst_best[2]
    picks = [(f"{name}: worst MAD {ranked[-1][1]:.1f}", ranked[-1][0]),
             (f"{name}: best MAD {ranked[0][1]:.1f}", ranked[0][0])]
    draw_figure(out / "figure.png", picks, loader)
    print(table, end="")
    return summary


def run(args: argparse.Namespace) -> dict:
    """Score (mode a or b, by ``args``) and write every output; returns the summary (see :func:`write_outputs`).
    The outputs (predictions too, with ``--save_pred``) go to a temporary folder that then replaces ``--out``
    whole: a new evaluation never leaves an earlier one's files beside its own, and a failed one changes nothing."""
    out = Path(args.out)
    _check_out(out)
    if (args.pred_dir or args.gt_dir) and not (args.pred_dir and args.gt_dir):
        raise UserError("--pred_dir and --gt_dir go together")
    with atomic_dir(out, overwrite=True) as tmp:
        if args.pred_dir:
            scores = score_pred_dir(Path(args.pred_dir), Path(args.gt_dir), args.name or Path(args.pred_dir).name)
        else:
            scores = score_split(argparse.Namespace(**{**vars(args), "out": str(tmp)}))
        summary = write_outputs(tmp, scores)
    log.info("wrote %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    run_main(main)
