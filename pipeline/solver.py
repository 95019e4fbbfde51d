"""The training loop for the refiner, in one sitting (nanoGPT's train.py is the model).

Config: ``TrainConfig`` below holds every default; a strategy's YAML (``pipeline/configs/*.yaml``) overrides
them; ``--config FILE`` and then ``--key value`` flags override those. The resolved config is saved as
``runs/<name>/config.yaml``. Single process: ``python pipeline/solver_refiner_maggie.py ...``; several:
``torchrun --nproc_per_node N pipeline/solver_refiner_maggie.py ...`` (DDP; gloo on CPU, nccl on CUDA).

Run folder ``runs/<name>/``: ``config.yaml``, ``last.pt`` (every ``ckpt_every`` steps, atomic, with optimizer,
scheduler, scaler, step and RNG states), ``best.pt`` (best ``best_metric`` on the validation clips),
``train.csv``, ``val.csv``, ``tb/`` (TensorBoard). ``--resume`` continues from ``last.pt``; data order and
augmentation are a pure function of (seed, step), so the resumed run ends with the same weights on CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from model.sparse import refine_sparse
from pipeline import metrics as M
from pipeline.data import MattingFrames, StepBatchSampler, list_clips, list_frames, split_clips
from pipeline.losses import (DEFAULT_STRIDE_WEIGHTS, TERMS, LossWeights, gate_loss, logit_bce_loss, matting_losses,
                             trust_loss)
from utils.atomic import atomic_path, clean_stale_temps, write_bytes_atomic
from utils.cli import ArgumentParser, UsageError, UserError
from utils.device import resolve_device
from utils.images import check_frame_sizes
from utils.locks import hold_lock
from utils.paths import repo_default

log = logging.getLogger("solver")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def refiner_api():
    """The refiner module (``build_refiner``, ``load_refiner``, ``VARIANTS``): the one place the model comes from."""
    from model import refiner

    return refiner


@dataclass
class TrainConfig:
    # run
    name: str = "refiner"
    runs_dir: str = repo_default("runs")
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda
    threads: int = 0                # CPU threads per process (0: torch's default); 1 is fastest for tiny models
    # data
    root: str = repo_default("data/demo")
    tree: str = "frames"            # frames (defocused) | frames_sharp (all-in-focus control)
    split: str = "train"
    val_source: str = "holdout"     # holdout: whole clips of `split`; test: the test split
    val_fraction: float = 0.2
    val_max_frames: int = 32
    eval_long_side: int = 0         # validation at full resolution (0), the scale training crops see; >0 shrinks
    guide_mode: str = "perturb"     # perturb | files | mixed (--guide: the older name, an alias)
    accurate_guide_prob: float = 0.5  # share of training items whose guide is the ground truth, binarised, +-1 px
    crop: int = 512
    scale_min: float = 0.75
    scale_max: float = 1.25
    unknown_crop_prob: float = 0.7
    jitter: float = 0.15
    num_workers: int = 4
    cache_mb: float = 2048.0        # decoded training frames kept in memory per loader process (0: decode each time)
    # model
    model: str = "light"            # none | light | heavy_db1 | heavy_db2 | heavy_db4
    base_channels: int = 32
    gate_threshold: float = 0.7     # the guide gate (model.refiner): below it the guide passes as is
    flip_threshold: float = 0.95    # ... and below this no pixel crosses its guide's 0.5 level
    accurate_gate_threshold: float = 0.9  # the gate's threshold with a guide the trust head calls accurate
    # optimisation
    steps: int = 20000
    batch_size: int = 8
    lr: float = 2e-4
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    amp: str = "auto"               # auto (bf16 if supported, else fp16, on CUDA; off on CPU) | bf16 | fp16 | off
    # losses (base weights; phases scale them)
    w_l1: float = LossWeights.l1
    w_lap: float = LossWeights.lap
    w_grad: float = LossWeights.grad
    w_comp: float = LossWeights.comp
    w_wll: float = LossWeights.wll
    w_whigh: float = LossWeights.whigh
    whigh_floor: float = LossWeights.whigh_floor
    w_gate: float = LossWeights.gate  # BCE of the guide gate against where the refinement beats the guide
    w_bce: float = LossWeights.bce    # BCE with logits of each stride (gradient that survives the saturated prior)
    w_trust: float = LossWeights.trust  # BCE of the guide trust head against "this guide is accurate"
    stride8: float = DEFAULT_STRIDE_WEIGHTS[8]
    stride4: float = DEFAULT_STRIDE_WEIGHTS[4]
    stride1: float = DEFAULT_STRIDE_WEIGHTS[1]
    final: float = DEFAULT_STRIDE_WEIGHTS["final"]  # the gated output (what inference returns)
    phases: list = field(default_factory=list)  # [{name, until (fraction of steps), weights: {term: x}, strides: {8: w}}]
    # bookkeeping
    log_every: int = 20
    eval_every: int = 1000
    ckpt_every: int = 1000
    best_metric: str = "mad_unknown"


# ---------------------------------------------------------------------------------------------- configuration
KEY_ALIASES = {"guide": "guide_mode"}  # older config key / flag -> its current name (old runs' config.yaml resume)


def _convert(key: str, text: str, kind: Any) -> Any:
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list:
            return yaml.safe_load(text)
        return text
    except (ValueError, yaml.YAMLError):
        raise UsageError(f"--{key} expects {kind.__name__}, got {text!r}") from None


def build_parser(defaults_yaml: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(description="Train the refiner. Every config key is a flag: --batch_size 8 --model heavy_db2")
    p.add_argument("--config", default=None, help="YAML file of overrides (applied after the strategy's defaults)")
    p.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start runs/<name> over, deleting its checkpoints")
    shown = dataclasses.asdict(TrainConfig())
    if defaults_yaml and (CONFIG_DIR / defaults_yaml).is_file():
        shown.update(yaml.safe_load((CONFIG_DIR / defaults_yaml).read_text()) or {})
    for f in dataclasses.fields(TrainConfig):
        value = "see the strategy YAML" if f.name == "phases" else shown[f.name]
        aliases = [f"--{old}" for old, new in KEY_ALIASES.items() if new == f.name]
        p.add_argument(f"--{f.name}", *aliases, dest=f.name, default=None, help=f"{f.type} (default: {value})")
    p.set_defaults(strategy_yaml=defaults_yaml)
    return p


def _renamed(data: dict) -> dict:
    """A config mapping with older key names (``KEY_ALIASES``) under their current ones."""
    return {KEY_ALIASES.get(k, k): v for k, v in data.items()}


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    data = _renamed(yaml.safe_load(path.read_text()) or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown config key(s) {', '.join(unknown)}")
    return data


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- strategy YAML <- --config YAML <- --key flags."""
    values: dict[str, Any] = {}
    if args.strategy_yaml:
        values.update(_load_yaml(CONFIG_DIR / args.strategy_yaml))
    if getattr(args, "resume", False):  # the run's saved config, under --config and the flags given now
        values.update(_saved_config(args, values))
    if args.config:
        values.update(_load_yaml(Path(args.config)))
    kinds = {"int": int, "float": float, "bool": bool, "str": str, "list": list}
    for f in dataclasses.fields(TrainConfig):
        kind = kinds[f.type] if isinstance(f.type, str) else f.type
        if f.name in values and values[f.name] is not None and not isinstance(values[f.name], kind):
            if not (kind is float and isinstance(values[f.name], int)):  # YAML values: same check as flags
                values[f.name] = _convert(f.name, str(values[f.name]), kind)
        text = getattr(args, f.name)
        if text is not None:
            values[f.name] = _convert(f.name, text, kind)
    cfg = TrainConfig(**values)
    for f in dataclasses.fields(TrainConfig):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--{f.name} must be a finite number, got {v}")
    if cfg.guide_mode not in ("perturb", "files", "mixed"):
        raise UsageError(f"--guide_mode must be perturb, files or mixed, got {cfg.guide_mode!r}")
    if cfg.val_source not in ("holdout", "test"):
        raise UsageError(f"--val_source must be holdout or test, got {cfg.val_source!r}")
    _check_config(cfg)
    return cfg


def _saved_config(args: argparse.Namespace, values: dict) -> dict:
    """``runs/<name>/config.yaml`` of the run ``--resume`` continues (``{}`` if none): a resumed run keeps the
    settings it was started with; only flags given again (and ``--config``) change them."""
    config = yaml.safe_load(Path(args.config).read_text()) if args.config and Path(args.config).is_file() else {}
    pick = lambda key: getattr(args, key) or (config or {}).get(key) or values.get(key) or getattr(TrainConfig, key)  # noqa: E731
    path = Path(pick("runs_dir")) / pick("name") / "config.yaml"
    if not path.is_file():
        return {}
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"unreadable run config {path} ({str(exc).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        raise UserError(f"unreadable run config {path} (not a mapping)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in _renamed(saved).items() if k in known}


# the keys validated as whole numbers >= 1 (a 0 would divide by zero or never log / evaluate / checkpoint)
_POSITIVE_INTS = ("steps", "batch_size", "log_every", "eval_every", "ckpt_every", "crop", "base_channels")


def _check_config(cfg: TrainConfig) -> None:
    """Every value a run could fail on later, checked before anything is written (one line each, a usage error:
    exit 64 like any bad command line)."""
    for key in _POSITIVE_INTS:
        if getattr(cfg, key) < 1:
            raise UsageError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("num_workers", "warmup_steps", "val_max_frames", "threads", "eval_long_side", "cache_mb"):
        if getattr(cfg, key) < 0:
            raise UsageError(f"--{key} must be >= 0, got {getattr(cfg, key)}")
    if not 0 <= cfg.val_fraction < 1:
        raise UsageError(f"--val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if not 0 <= cfg.accurate_guide_prob <= 1:
        raise UsageError(f"--accurate_guide_prob must be in [0, 1], got {cfg.accurate_guide_prob}")
    if not 0 <= cfg.accurate_gate_threshold < 1:
        raise UsageError(f"--accurate_gate_threshold must be in [0, 1), got {cfg.accurate_gate_threshold}")
    if not 0 <= cfg.gate_threshold <= cfg.flip_threshold < 1:
        raise UsageError(f"--gate_threshold and --flip_threshold need 0 <= gate <= flip < 1, got {cfg.gate_threshold}, "
                        f"{cfg.flip_threshold}")
    metrics = [f"{m}{suffix}" for suffix in ("", "_unknown") for m in ("sad", "mad", "mse", "grad", "conn")]
    if cfg.best_metric not in metrics:
        raise UsageError(f"--best_metric must be one of {', '.join(metrics)}, got {cfg.best_metric!r}")
    if not isinstance(cfg.phases, list):
        raise UsageError(f"--phases must be a list of {{name, until, weights, strides}}, got {cfg.phases!r}")
    for i, ph in enumerate(cfg.phases):
        if not isinstance(ph, dict) or not isinstance(ph.get("until"), (int, float)):
            raise UsageError(f"--phases[{i}] must be a mapping with a numeric 'until' (fraction of steps), got {ph!r}")
        weights, strides = ph.get("weights") or {}, ph.get("strides") or {}
        if not isinstance(weights, dict) or set(weights) - set(TERMS):
            raise UsageError(f"--phases[{i}].weights: keys must be among {', '.join(TERMS)}, got {weights!r}")
        if not isinstance(strides, dict) or {str(k) for k in strides} - {"8", "4", "1"}:
            raise UsageError(f"--phases[{i}].strides: keys must be among 8, 4, 1, got {strides!r}")
        for x in [*weights.values(), *strides.values()]:
            if not isinstance(x, (int, float)) or not math.isfinite(x):
                raise UsageError(f"--phases[{i}]: multipliers must be finite numbers, got {x!r}")


def phase_at(cfg: TrainConfig, step: int) -> tuple[str, LossWeights]:
    """The loss weights in force at ``step``: base weights x the current phase's multipliers."""
    base = {t: getattr(cfg, f"w_{t}") for t in TERMS}
    strides = {8: cfg.stride8, 4: cfg.stride4, 1: cfg.stride1, "final": cfg.final}
    name = "all"
    frac = step / max(1, cfg.steps)
    for ph in cfg.phases:
        if frac < float(ph["until"]) or ph is cfg.phases[-1]:
            name = ph.get("name", "phase")
            for t, x in (ph.get("weights") or {}).items():
                base[t] = base[t] * float(x)
            for s, x in (ph.get("strides") or {}).items():
                strides["final" if s == "final" else int(s)] = float(x)
            break
    return name, LossWeights(**base, whigh_floor=cfg.whigh_floor, gate=cfg.w_gate, bce=cfg.w_bce,
                             trust=cfg.w_trust, stride_weights=strides)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Multiplier of ``cfg.lr``: linear warmup, then cosine down to ``min_lr_ratio`` (any config with ``steps``,
    ``warmup_steps`` and ``min_lr_ratio``: ``pipeline.train_fine`` uses it too)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ---------------------------------------------------------------------------------------------- helpers
def _check_resumable(ckpt: dict, cfg: TrainConfig, path: Path) -> None:
    """The model a checkpoint holds must be the one this config builds (else a size-mismatch traceback)."""
    saved = ckpt.get("train_config") or {}
    for key in ("model", "base_channels"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise UserError(f"{path} was trained with {key}={saved[key]!r} but this run has --{key} "
                            f"{getattr(cfg, key)!r} (a resumed run keeps its saved config.yaml unless a flag changes it)")


def _loader_generator(cfg: TrainConfig) -> torch.Generator:
    """The data loader's own generator: starting an epoch draws a seed from it, never from the global RNG, so the
    global RNG state at a step is the same in an uninterrupted and a resumed run (and so is every checkpoint)."""
    return torch.Generator().manual_seed(cfg.seed)


def save_checkpoint(path: Path, model, cfg: TrainConfig, step: int, **state) -> None:
    """The refiner's own checkpoint dict (``save_refiner``: format, variant, config, model; atomic) plus the
    training state, so ``load_refiner`` and inference.py read solver checkpoints directly."""
    refiner_api().save_refiner(path, model, step=step, train_config=dataclasses.asdict(cfg), **state)


class _SupervisedOutputs(torch.nn.Module):
    """The model seen by DDP: returns only the outputs the current phase supervises, so DDP's search for
    unused parameters starts from tensors that really reach the loss (focus map, unsupervised strides do not):
    ``({stride or "final": alpha}, {stride: logit}, gate_logit, refined, trust_logit)``. Training always uses the
    coarse-guide rule (the gate learns where the refinement beats the guide, for every kind of guide; the
    accurate-guide rule is the same gate, cut stricter, at inference); measured: making each training image use
    the rule its guide needs made both kinds of guide worse (bench/RESULTS.md, "learning", run P)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.strides: tuple = (8, 4, 1, "final")

    def forward(self, image: torch.Tensor, guide: torch.Tensor) -> tuple:
        out = self.model(image, guide, guide_accurate=False)
        alphas = {s: a for s, a in out.alpha_os.items() if s in self.strides}
        if "final" in self.strides:
            alphas["final"] = out.alpha
        logits = {s: v for s, v in out.logits_os.items() if s in self.strides}
        return alphas, logits, out.gate_logit, out.refined, out.trust_logit


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validate(model, dataset: MattingFrames, device, amp_dtype=None) -> dict[str, float]:
    """Mean metrics over ``dataset``'s frames, whole frame and unknown band (``metrics.eval_region``)."""
    model.eval()
    rows = []
    for i in range(len(dataset)):
        item = _to({k: v[None] for k, v in dataset[i].items()}, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = refine_sparse(model, item["image"], item["guide"])  # inference's path (dense under 768 px)
        pred = out.alpha.float()[0, 0].cpu().numpy()
        gt = item["alpha"][0, 0].cpu().numpy()
        guide = item["guide"][0, 0].cpu().numpy()
        unk = M.eval_region(gt)
        row = {k: v for k, v in M.frame_metrics(pred, gt).items()}
        row.update({f"{k}_unknown": v for k, v in M.frame_metrics(pred, gt, unk).items()})
        # the guide's own score beside it: a refiner is only as good as what it beats
        row["mad_confident"] = M.mad(pred, gt, ~unk)  # where the truth is 0 or 1: a refiner may only lose here
        row.update({"guide_mad": M.mad(guide, gt), "guide_mad_unknown": M.mad(guide, gt, unk),
                    "guide_mad_confident": M.mad(guide, gt, ~unk)})
        # how often the trust head's call on this guide is right (validation guides are the mask stage's: coarse)
        row["trust_right"] = float(bool(out.accurate[0]) == bool(item["guide_accurate"].item() > 0.5))
        rows.append(row)
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def truncate_csv(path: Path, step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint, so a resumed log has each step once."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(r["step"]) <= step]
    if rows and len(keep) != len(rows):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    """What a finished run left: its folder, checkpoints, steps done and the best validation value."""

    run_dir: Path
    last: Path
    best: Path
    steps: int
    best_value: float


def parse(argv: Sequence[str] | None = None, defaults_yaml: str | None = None) -> tuple[TrainConfig, bool, bool]:
    """Command line -> (config, resume, overwrite): defaults <- strategy YAML <- --config <- flags."""
    args = build_parser(defaults_yaml).parse_args(argv)
    return resolve_config(args), bool(args.resume), bool(args.overwrite)


def main(argv: Sequence[str] | None = None, defaults_yaml: str | None = None) -> int:
    """The solver's command line (``solver_refiner_maggie.py`` and ``_v0001.py`` pass their strategy YAML)."""
    cfg, resume, overwrite = parse(argv, defaults_yaml)
    train(cfg, resume=resume, overwrite=overwrite)
    return 0


@dataclass
class _Place:
    """Where this process trains: world size, rank, device (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK)."""

    world: int
    rank: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def _place(cfg: TrainConfig) -> _Place:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if cfg.device not in ("auto", "cpu", "cuda"):  # the rank's CUDA index comes from LOCAL_RANK
        raise UsageError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    use_cuda = resolve_device(cfg.device).type == "cuda"
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return _Place(world, rank, device)


def _datasets(cfg: TrainConfig) -> tuple[MattingFrames, MattingFrames, str]:
    """Training and validation frames, checked before anything is written (bad input leaves the run folder
    untouched); returns them and a one-line summary for the log."""
    clips = list_clips(cfg.root, cfg.split, cfg.tree)
    if not clips:
        raise UserError(f"no clips in {Path(cfg.root) / cfg.tree / cfg.split / 'image'}")
    if cfg.val_source == "holdout":
        train_clips, val_clips = split_clips(clips, cfg.val_fraction, cfg.seed)
        val_split = cfg.split
    else:
        train_clips, val_split = clips, "test"
        val_clips = list_clips(cfg.root, "test", cfg.tree)
    need = ("alpha", "mask") if cfg.guide_mode in ("files", "mixed") else ("alpha",)
    train_frames = list_frames(cfg.root, cfg.split, train_clips, cfg.tree, need)
    val_frames = list_frames(cfg.root, val_split, val_clips, cfg.tree, need)
    if not train_frames:
        raise UserError(f"no frames in {Path(cfg.root) / cfg.tree / cfg.split}/image/<clip>/frames/")
    check_frame_sizes(cfg.root, train_frames + val_frames, cfg.tree, need)  # e.g. guides of another size
    if cfg.val_max_frames and len(val_frames) > cfg.val_max_frames:  # evenly spaced, deterministic
        val_frames = [val_frames[i] for i in np.linspace(0, len(val_frames) - 1, cfg.val_max_frames).astype(int)]
    train_set = MattingFrames(cfg.root, train_frames, cfg.tree, cfg.guide_mode, crop=cfg.crop,
                              scale_range=(cfg.scale_min, cfg.scale_max), unknown_crop_prob=cfg.unknown_crop_prob,
                              jitter=cfg.jitter, with_fb=cfg.w_comp > 0, seed=cfg.seed,
                              accurate_prob=cfg.accurate_guide_prob, cache_mb=cfg.cache_mb)
    val_set = MattingFrames(cfg.root, val_frames, cfg.tree, cfg.guide_mode, with_fb=False,
                            eval_long_side=cfg.eval_long_side, seed=cfg.seed)
    summary = (f"{len(train_frames)} train frames ({len(train_clips)} clips), {len(val_frames)} val frames "
               f"({len(val_clips)} clips)")
    return train_set, val_set, summary


def _resume_checkpoint(cfg: TrainConfig, last: Path, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint a resumed run continues from (None: a fresh run); refuses to start over a run silently."""
    if resume:
        ckpt = refiner_api().read_checkpoint(last)
        if ckpt["variant"] != cfg.model:
            raise UserError(f"{last} is a {ckpt['variant']!r} checkpoint but --model is {cfg.model!r}")
        _check_resumable(ckpt, cfg, last)
        if int(ckpt["step"]) > cfg.steps:  # it would exit 0 saying it finished, with its config rewritten
            raise UserError(f"{last} has trained {int(ckpt['step'])} steps, more than --steps {cfg.steps}: give "
                            f"--steps {int(ckpt['step'])} or more to continue it, or --overwrite to restart")
        return ckpt
    if last.exists() and not overwrite:
        raise UserError(f"{last.parent} already has a run: pass --resume to continue it or --overwrite to restart")
    return None


@dataclass
class _State:
    """Everything a step changes, and what a checkpoint saves."""

    model: torch.nn.Module  # the refiner itself
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    step: int = 0
    best_value: float = math.inf
    sums: dict = field(default_factory=dict)  # loss terms summed since the last log line (logged as interval means)


def _build_state(cfg: TrainConfig, place: _Place, ckpt: dict | None) -> _State:
    """Model (same initial weights on every rank), optimiser, schedule, AMP; restored from ``ckpt`` if given."""
    torch.manual_seed(cfg.seed)
    model = refiner_api().build_refiner(cfg.model, base_channels=cfg.base_channels,
                                        gate_threshold=cfg.gate_threshold, flip_threshold=cfg.flip_threshold,
                                        accurate_gate_threshold=cfg.accurate_gate_threshold).to(place.device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.fine.requires_grad_(False)  # the fine stage trains afterwards, on its own (pipeline/train_fine.py)
    # fused: one kernel over every parameter (on a CPU 3x faster than the per-tensor loop, equal to ~1e-8)
    opt = torch.optim.AdamW([p for _, p in model.trunk_named_parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(cfg, s))
    amp_dtype = None
    if place.cuda and cfg.amp != "off":
        amp_dtype = torch.float16 if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()) \
            else torch.bfloat16
    state = _State(model, opt, sched, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), amp_dtype)
    if ckpt is not None:
        opt.load_state_dict(_upgrade_optimizer_state(ckpt["optimizer"], ckpt["model"], model))
        for group in opt.param_groups:  # a state saved before the fused optimiser carries its older switches
            group.update(fused=True, foreach=None)
        sched.load_state_dict(ckpt["scheduler"])
        state.scaler.load_state_dict(ckpt["scaler"])
        state.step, state.best_value = int(ckpt["step"]), float(ckpt.get("best_value", math.inf))
        state.sums = dict(ckpt.get("log_sums") or {})  # the log interval the checkpoint fell inside
        torch.set_rng_state(ckpt["rng"]["torch"])
        if place.cuda and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    return state


def _upgrade_optimizer_state(opt_state: dict, saved_model: dict, model: torch.nn.Module) -> dict:
    """An optimiser state indexes parameters by position. One saved before the refiner's encoder/decoder split
    has them in the older order (the refiner's own ``guide_gain`` first): reorder it to this model's order, found
    from the saved state dict's key order. A current state passes unchanged."""
    names = [n for n, _ in model.trunk_named_parameters()]
    known = set(names)
    saved_order = [k for k in refiner_api().upgrade_state_dict_keys(saved_model) if k in known]
    if saved_order == names or sorted(saved_order) != sorted(names):
        return opt_state
    old_index = {name: i for i, name in enumerate(saved_order)}
    state = {j: opt_state["state"][old_index[n]] for j, n in enumerate(names) if old_index[n] in opt_state["state"]}
    return {**opt_state, "state": state}


def _open_run_dir(cfg: TrainConfig, run_dir: Path, fresh: bool, step: int):
    """The run folder with its config, logs cut back to ``step`` (a killed run logged past its checkpoint), and a
    TensorBoard writer."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(run_dir)  # a checkpoint write a kill cut short (the run's lock is held)
    if fresh:
        for old in ("last.pt", "best.pt", "train.csv", "val.csv"):
            (run_dir / old).unlink(missing_ok=True)
    write_bytes_atomic(run_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode())
    truncate_csv(run_dir / "train.csv", step)
    truncate_csv(run_dir / "val.csv", step)
    return SummaryWriter(str(run_dir / "tb"), purge_step=None if fresh else step)


def _step_loss(model, batch: dict, weights: LossWeights, amp_dtype) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch through the supervised outputs; the total loss and each term (floats, for the log). Losses in
    fp32: L1-type terms on alpha (probabilities), the BCEs on logits (sigmoid-ed once)."""
    with torch.autocast(batch["image"].device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        alpha_os, logits_os, gate_logit, refined, trust_logit = model(batch["image"], batch["guide"])
    loss, parts = matting_losses({s: a.float() for s, a in alpha_os.items()}, batch["alpha"], weights,
                                 batch["image"], batch.get("fgr"), batch.get("bgr"))
    extra = {"bce": (weights.bce, lambda: logit_bce_loss(logits_os, batch["alpha"], weights.stride_weights)),
             "gate": (weights.gate, lambda: gate_loss(gate_logit, batch["alpha"], batch["guide"], refined)),
             "trust": (weights.trust, lambda: trust_loss(trust_logit, batch["guide_accurate"]))}
    for name, (weight, term) in extra.items():
        if weight > 0:
            value = term()
            loss, parts[name] = loss + weight * value, float(value.detach())
    return loss, parts


def _checkpoint(path: Path, cfg: TrainConfig, state: _State, place: _Place) -> None:
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if place.cuda else None}
    save_checkpoint(path, state.model, cfg, state.step, optimizer=state.opt.state_dict(),
                    scheduler=state.sched.state_dict(), scaler=state.scaler.state_dict(), rng=rng,
                    best_value=state.best_value, log_sums=dict(state.sums))


def _log_row(cfg: TrainConfig, state: _State, phase: str, gnorm, seconds: float, world: int) -> dict:
    """The interval's mean of every loss term (``state.sums``, emptied) as one train.csv row."""
    n = state.sums.pop("n")
    row = {"step": state.step, "phase": phase, "lr": state.sched.get_last_lr()[0], "loss": state.sums["loss"] / n,
           **{t: state.sums.get(t, 0.0) / n for t in (*TERMS, "bce", "gate", "trust")},
           "grad_norm": float(gnorm) if gnorm is not None else 0.0,
           "samples_per_s": cfg.batch_size * world * n / max(1e-9, seconds)}
    state.sums = {}
    return row


def _evaluate(cfg: TrainConfig, state: _State, place: _Place, val_set: MattingFrames, run_dir: Path,
              writer) -> None:
    """Validate, log val.csv, and keep best.pt by ``cfg.best_metric``."""
    vals = validate(state.model, val_set, place.device, state.amp_dtype)
    append_csv(run_dir / "val.csv", {"step": state.step, **vals})
    for k, v in vals.items():
        writer.add_scalar(f"val/{k}", v, state.step)
    written = [str(run_dir / "val.csv")]
    if vals[cfg.best_metric] < state.best_value:
        state.best_value = vals[cfg.best_metric]
        _checkpoint(run_dir / "best.pt", cfg, state, place)
        written.append(f"{run_dir / 'best.pt'} (new best {cfg.best_metric}={state.best_value:.4g})")
    tqdm.write(f"eval step {state.step}: mad {vals['mad']:.3f} mse {vals['mse']:.3f} mad_unknown "
               f"{vals['mad_unknown']:.3f} (x1e3) -> wrote {', '.join(written)}")


def _lock_run(locks: contextlib.ExitStack, cfg: TrainConfig) -> None:
    """One training per run name at a time: a second one (same --runs_dir and --name) stops with one line instead
    of writing every CSV row twice. Held until the run ends; a killed run's lock goes with its process."""
    locks.enter_context(hold_lock(Path(cfg.runs_dir) / f".{cfg.name}.lock", f"a training run named {cfg.name!r}"))


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train ``cfg`` into ``<runs_dir>/<name>/`` (``resume``: continue its last.pt; ``overwrite``: start over)."""
    if cfg.model not in refiner_api().VARIANTS:
        raise UsageError(f"--model must be one of {', '.join(refiner_api().VARIANTS)}, got {cfg.model!r}")
    with contextlib.ExitStack() as locks:  # the run's lock is released however training ends
        place = _place(cfg)
        train_set, val_set, summary = _datasets(cfg)
        run_dir = Path(cfg.runs_dir) / cfg.name
        last, best = run_dir / "last.pt", run_dir / "best.pt"
        if place.master:
            _lock_run(locks, cfg)
        ckpt = _resume_checkpoint(cfg, last, resume, overwrite)
        state = _build_state(cfg, place, ckpt)
        model = supervised = _SupervisedOutputs(state.model)
        if place.world > 1:  # phases may leave a stride's head out of the loss: tolerate unused parameters
            model = torch.nn.parallel.DistributedDataParallel(
                supervised, device_ids=[place.device.index] if place.cuda else None, find_unused_parameters=True)
        writer = _open_run_dir(cfg, run_dir, ckpt is None, state.step) if place.master else None
        if place.master:
            log.info("run %s: %s, model %s, %s, world %d, from step %d", run_dir, summary, cfg.model, place.device,
                     place.world, state.step)
        train_set.fill_cache()  # after every check: a refused run decodes nothing
        sampler = StepBatchSampler(len(train_set), cfg.batch_size, cfg.seed, cfg.steps, state.step, place.rank,
                                   place.world)
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                             pin_memory=place.cuda, persistent_workers=False,
                                             generator=_loader_generator(cfg))

        bar = tqdm(total=cfg.steps, initial=state.step, disable=not place.master, desc=cfg.name, dynamic_ncols=True)
        t0 = time.time()
        for batch in loader:
            phase, weights = phase_at(cfg, state.step)
            supervised.strides = tuple(s for s, w in weights.stride_weights.items() if w > 0)
            loss, parts = _step_loss(model, _to(batch, place.device), weights, state.amp_dtype)
            finite = torch.tensor([float(torch.isfinite(loss))], device=place.device)
            if place.world > 1:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1:  # stop; do not scrub NaNs, do not overwrite the last good checkpoint
                raise UserError(f"non-finite loss at step {state.step} "
                                f"({', '.join(f'{k}={v:.4g}' for k, v in parts.items())}); "
                                f"stopped, last good checkpoint: {last if last.exists() else 'none yet'}")
            state.opt.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            state.scaler.unscale_(state.opt)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
            state.scaler.step(state.opt)
            state.scaler.update()
            state.sched.step()
            state.step += 1
            bar.update(1)
            for k, v in {"loss": loss.item(), **parts, "n": 1}.items():
                state.sums[k] = state.sums.get(k, 0.0) + v

            if place.master and (state.step % cfg.log_every == 0 or state.step == cfg.steps):
                row = _log_row(cfg, state, phase, gnorm, time.time() - t0, place.world)
                t0 = time.time()
                append_csv(run_dir / "train.csv", row)
                for k, v in row.items():
                    if k not in ("step", "phase"):
                        writer.add_scalar(f"train/{k}", v, state.step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", phase=phase)
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                if place.master and len(val_set):
                    _evaluate(cfg, state, place, val_set, run_dir, writer)
                if place.world > 1:
                    dist.barrier()
            if place.master and (state.step % cfg.ckpt_every == 0 or state.step == cfg.steps):
                _checkpoint(last, cfg, state, place)
                write_bytes_atomic(run_dir / "last.json", json.dumps({"step": state.step}).encode())
        bar.close()
        if place.master:
            writer.close()
            log.info("finished %d steps: checkpoints %s, %s; logs %s, %s, %s", state.step, last, best,
                     run_dir / "train.csv", run_dir / "val.csv", run_dir / "tb")
        if place.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return RunResult(run_dir, last, best, state.step, state.best_value)
