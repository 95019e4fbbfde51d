"""Train the sparse path's fine stage (``model.fine``) on top of a trained refiner, in one sitting.

The refiner (the trunk) is trained at crop size by the solver and stays frozen here. What this trains is the small
full-resolution stage that ``model.sparse`` runs in tiles on frames of 768 px and more on the long side: each step
takes large-frame crops (``--crop`` px, the trunk's context), runs the trunk's coarse pass on them downsampled by an
integer factor drawn from ``--factors`` (what ``auto`` picks at 1152x768, 1080p and 4K: 2, 4, 8), and trains the
fine stage on a ``--fine_crop`` px window of each, through the very functions inference uses (gathered windows with
their context, the refiner's output rule under the coarse pass's upsampled gate). Losses: L1 of the fine stage's
refined alpha and of the ruled output against the truth, and the Laplacian-pyramid loss of the refined alpha.

Output: ``<runs_dir>/<name>/`` (default ``runs/fine/fine``) holds ``fine.pt`` (the refiner checkpoint with its trained fine
stage: use it like any refiner checkpoint), ``last.pt`` (to resume: ``--resume``), ``train.csv``. Data order,
crops and factors are a pure function of (seed, step), so a resumed run ends with the same weights on CPU.

    python pipeline/train_fine.py --ckpt runs/train-cpu/s0/best.pt --root data/hires-train --name s0
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import load_refiner, read_training_state, save_refiner, save_training_state
from model.masks import boundary_ring
from model.refiner import Refiner
from model.sparse import coarse_pass, refine_windows, upsample_coarse
from pipeline.data import MattingFrames, list_clips, list_frames
from pipeline.losses import gate_target, laplacian_loss
from pipeline.run_folder import RunFolder, append_csv
from pipeline.train_config import lr_at
from utils.cli import ArgumentParser, UsageError, UserError, run_main, unit_seed
from utils.paths import repo_default

log = logging.getLogger("train_fine")


@dataclass
class FineConfig:
    """Every setting of a fine-stage run (each a flag: ``--name value``)."""

    ckpt: str = ""  # the trained refiner (its trunk stays frozen)
    root: str = "data/hires-train"  # a data root with large frames (make train-fine-data)
    split: str = "train"
    tree: str = "frames"
    name: str = "fine"
    runs_dir: str = "runs/fine"
    steps: int = 2000
    batch_size: int = 4
    crop: int = 768  # px square of a frame the coarse pass sees (scale-augmented like the solver's crops)
    fine_crop: int = 192  # px square of it the fine stage is trained on (a multiple of 16)
    factors: tuple[int, ...] = (2, 3, 4, 6, 8)  # the coarse pass's downsampling, drawn per batch
    accurate_prob: float = 0.5  # items with an accurate guide (the rest perturbed ground truth)
    region_only: bool = True  # L1 terms over the pixels the rule lets change (False: over the whole window)
    gate_weight: float = 0.3  # the gate correction's BCE (coarse-rule windows, their band); 1.0 measured worse
    lr: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the solver's schedule (pipeline.solver.lr_at): warmup, then cosine to lr * this
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1
    log_every: int = 25
    ckpt_every: int = 100


def fine_window(model: Refiner, item: dict, factor: int, fine_crop: int,
                rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One training example: the coarse pass over the item's whole crop, then the fine stage on a
    ``fine_crop``-px window of it centred near the guide's boundary (its context gathered from the crop, as the
    tiles of ``model.sparse`` gather theirs). Returns refined, gate logit, ruled alpha, guide and truth there."""
    image, guide, gt = item["image"][None], item["guide"][None], item["alpha"][None]
    accurate = bool(item["guide_accurate"] > 0.5)
    h, w = image.shape[-2:]
    with torch.no_grad():
        coarse, _, covers = coarse_pass(model, image, guide, 1.0 / factor, guide_accurate=accurate)
        maps = upsample_coarse(coarse, covers, (h, w))
    ring = boundary_ring(guide)[0, 0].nonzero()
    cy, cx = ring[rng.integers(len(ring))].tolist() if len(ring) else (h // 2, w // 2)
    y = int(np.clip(cy - fine_crop // 2, 0, h - fine_crop)) // 16 * 16
    x = int(np.clip(cx - fine_crop // 2, 0, w - fine_crop)) // 16 * 16
    win = refine_windows(model, image, guide, maps, torch.tensor([y]), torch.tensor([x]), fine_crop, accurate)
    return {"refined": win.refined, "gate": win.gate, "alpha": win.alpha, "guide": win.guide, "region": win.region,
            "coarse_rule": torch.full_like(win.region, float(not accurate)),
            "gt": gt[..., y:y + fine_crop, x:x + fine_crop]}


def fine_loss(batch: dict[str, torch.Tensor], region_only: bool = True,
              gate_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The fine stage's loss on a batch of windows, and its terms. ``region_only``: the L1 terms are means over
    what the rule lets change (elsewhere the output is the guide whatever the stage predicts), not the window.
    The gate's binary cross-entropy (against "the refinement beats the guide here") is taken over the band of the
    coarse-rule windows only: the accurate rule keeps the coarse pass's gate."""
    gt = batch["gt"]
    weight = batch["region"] if region_only else torch.ones_like(gt)

    def mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (err * w).sum() / w.sum().clamp(min=1.0)

    gate_bce = F.binary_cross_entropy_with_logits(batch["gate"], gate_target(gt, batch["guide"], batch["refined"]),
                                                  reduction="none")
    terms = {"l1": mean((batch["refined"] - gt).abs(), weight),
             "lap": laplacian_loss(batch["refined"], gt, levels=4),
             "out": mean((batch["alpha"] - gt).abs(), weight),
             "gate": mean(gate_bce, batch["region"] * batch["coarse_rule"])}
    total = terms["l1"] + terms["lap"] + terms["out"] + gate_weight * terms["gate"]
    return total, {k: float(v.detach()) for k, v in terms.items()}


def check_config(cfg: FineConfig) -> None:
    """Every value a run could fail on later, checked before anything is written: ``UsageError`` (exit 64)."""
    for key in ("steps", "batch_size", "crop", "fine_crop", "log_every", "ckpt_every", "threads"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.fine_crop % 16 or cfg.fine_crop > cfg.crop:
        raise UsageError(f"--fine_crop must be a multiple of 16 and at most --crop ({cfg.crop}), got {cfg.fine_crop}")
    if not cfg.factors or any(f < 1 for f in cfg.factors):
        raise UsageError(f"--factors must be integers >= 1, got {' '.join(map(str, cfg.factors))}")
    if cfg.warmup_steps < 0:
        raise UsageError(f"--warmup_steps must be >= 0, got {cfg.warmup_steps}")
    for key, low, high in (("lr", 0.0, 1.0), ("weight_decay", 0.0, 1.0), ("gate_weight", 0.0, 1e4),
                           ("accurate_prob", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0)):
        value = getattr(cfg, key)
        if not math.isfinite(value) or not low <= value <= high or (key == "lr" and value == 0):
            bound = f"in (0, {high:g}]" if key == "lr" else (f"in [{low:g}, {high:g}]" if math.isfinite(high)
                                                                 else f">= {low:g}")
            raise UsageError(f"--{key} must be a finite number {bound}, got {value}")


def trunk_fingerprint(model: Refiner) -> str:
    """sha256 of the trunk's weights (every tensor but the fine stage's): which refiner a fine stage belongs to."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        if not key.startswith("fine"):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_folder(cfg: FineConfig) -> RunFolder:
    """``<runs_dir>/<name>/`` (``pipeline.run_folder``): a run is there once it has a ``last.pt`` or ``fine.pt``."""
    return RunFolder(cfg.runs_dir, cfg.name, "a fine-stage training", checkpoints=("last.pt", "fine.pt"),
                     logs=("train.csv",))


def _resume_state(out: Path, cfg: FineConfig, fingerprint: str) -> dict | None:
    """``last.pt`` of the run (None if there is none yet): refused in one line when unreadable, made on another
    refiner, or past this run's ``--steps``."""
    path = out / "last.pt"
    if not path.is_file():
        return None
    state = read_training_state(path, ("fine", "optimizer", "step"), "fine-stage checkpoint",
                                "rerun with --overwrite to start over")
    if state.get("trunk") not in (None, fingerprint):
        raise UserError(f"{path} was trained on another refiner than --ckpt {cfg.ckpt}: resume with the refiner it "
                        "was started on, or --overwrite")
    if int(state["step"]) > cfg.steps:
        raise UserError(f"{path} has trained {int(state['step'])} steps, more than --steps {cfg.steps}: give "
                        f"--steps {int(state['step'])} or more, or --overwrite")
    return state


def _finite_or_stop(bad: list[str], step: int, last: Path) -> None:
    """Stop (one line, the last good checkpoint untouched) when ``bad`` names a non-finite loss term or weight."""
    if bad:
        raise UserError(f"non-finite {', '.join(bad)} at step {step}; stopped, last good checkpoint: "
                        f"{last if last.exists() else 'none yet'} (a smaller --lr?)")


def train(cfg: FineConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train the fine stage of ``cfg.ckpt``'s refiner; returns the path of the checkpoint written (fine.pt)."""
    check_config(cfg)
    folder = run_folder(cfg)
    with folder.lock():
        return _train(cfg, folder, resume, overwrite)


def _train(cfg: FineConfig, folder: RunFolder, resume: bool, overwrite: bool) -> Path:
    torch.set_num_threads(cfg.threads)
    model, _ = load_refiner(cfg.ckpt)
    model.eval().requires_grad_(False)
    model.fine.requires_grad_(True)
    root = Path(cfg.root)
    frames = list_frames(root, cfg.split, list_clips(root, cfg.split, cfg.tree), cfg.tree)
    if not frames:
        raise UserError(f"no frames under {root}/{cfg.tree}/{cfg.split}: make train-fine-data writes them")
    data = MattingFrames(root, frames, cfg.tree, guide="perturb", crop=cfg.crop, with_fb=False, seed=cfg.seed,
                         accurate_prob=cfg.accurate_prob)
    opt = torch.optim.AdamW(model.fine.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    folder.check_start(resume, overwrite)
    fingerprint = trunk_fingerprint(model)
    step = 0
    state = _resume_state(folder.path, cfg, fingerprint) if resume else None
    if state is not None:
        model.fine.load_state_dict(state["fine"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resumed %s at step %d", folder.path / "last.pt", step)
    out = folder.open(fresh=state is None, step=step)
    csv_path = out / "train.csv"
    sums: dict[str, float] = {}
    t0 = time.time()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_at(cfg, step)
        rng = np.random.default_rng(unit_seed(cfg.seed, "fine", step))
        factor = int(rng.choice(cfg.factors))
        picks = rng.integers(len(data), size=cfg.batch_size)
        windows = [fine_window(model, data[(int(i), unit_seed(cfg.seed, "item", step, j))], factor, cfg.fine_crop,
                               rng) for j, i in enumerate(picks)]
        batch = {k: torch.cat([wd[k] for wd in windows]) for k in windows[0]}
        loss, terms = fine_loss(batch, cfg.region_only, cfg.gate_weight)
        _finite_or_stop([k for k, v in terms.items() if not math.isfinite(v)], step, out / "last.pt")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        _finite_or_stop([f"weight {n}" for n, p in model.fine.named_parameters() if not bool(p.isfinite().all())],
                        step, out / "last.pt")  # an update that overflowed is never saved
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            means = {k: v / n for k, v in sums.items()}
            append_csv(csv_path, {"step": step, **means})
            log.info("step %d/%d  %s  (%.1f s/step)", step, cfg.steps,
                     "  ".join(f"{k} {v:.4f}" for k, v in means.items()), (time.time() - t0) / max(1, n))
            sums, t0 = {}, time.time()
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_training_state(out / "last.pt", {"fine": model.fine.state_dict(), "optimizer": opt.state_dict(),
                                                  "step": step, "trunk": fingerprint})
    model.fine_steps.fill_(step)
    path = save_refiner(out / "fine.pt", model, fine_config=dataclasses.asdict(cfg))
    log.info("wrote %s (the refiner of %s with its fine stage trained %d steps)", path, cfg.ckpt, step)
    return path


HELP = {"ckpt": "the trained refiner checkpoint (its trunk stays frozen; required)",
        "root": "data root with large frames (make train-fine-data)", "split": "split of the data root",
        "tree": "frames (defocused) or frames_sharp", "name": "run name: <runs_dir>/<name>/",
        "runs_dir": "folder of the runs", "steps": "training steps", "batch_size": "windows per step",
        "crop": "px square of a frame the coarse pass sees", "fine_crop": "px square the fine stage trains on "
        "(a multiple of 16, at most --crop)", "factors": "the coarse pass's downsampling factors, one drawn per step",
        "accurate_prob": "share of items with an accurate guide", "region_only": "L1 terms over the pixels the "
        "rule lets change", "gate_weight": "weight of the gate correction's BCE", "lr": "peak learning rate",
        "warmup_steps": "linear warmup steps", "min_lr_ratio": "the cosine ends at lr * this",
        "weight_decay": "AdamW weight decay", "seed": "data order, crops and factors", "threads": "CPU threads",
        "log_every": "train.csv interval", "ckpt_every": "last.pt interval"}


def build_parser() -> argparse.ArgumentParser:
    """Every ``FineConfig`` field as ``--name value`` (with its default in the help), ``--resume``, ``--overwrite``."""
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(FineConfig):
        default = repo_default(f.default) if f.name in ("root", "runs_dir") else f.default  # from any folder
        if isinstance(default, bool):
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=default, help=HELP[f.name])
        elif isinstance(default, tuple):
            p.add_argument(f"--{f.name}", type=int, nargs="+", default=list(default), help=HELP[f.name])
        else:
            p.add_argument(f"--{f.name}", type=type(default), default=None if f.name == "ckpt" else default,
                           required=f.name == "ckpt", help=HELP[f.name])
    p.add_argument("--resume", action="store_true", help="continue <runs_dir>/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start <runs_dir>/<name>/ over, deleting its run")
    return p


def parse(argv: Sequence[str] | None = None) -> tuple[FineConfig, bool, bool]:
    """Command line -> (config, resume, overwrite); a bad value is a usage error (exit 64) and a missing
    checkpoint one error line, both before anything is written."""
    args = vars(build_parser().parse_args(argv))
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    args["factors"] = tuple(args["factors"])
    cfg = FineConfig(**args)
    check_config(cfg)
    if not Path(cfg.ckpt).is_file():
        raise UserError(f"refiner checkpoint not found: {cfg.ckpt}")
    return cfg, resume, overwrite


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume, overwrite = parse(argv)
    train(cfg, resume, overwrite)
    return 0


if __name__ == "__main__":
    run_main(main)
