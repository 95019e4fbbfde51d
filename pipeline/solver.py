"""The training loop for the refiner, in one sitting (nanoGPT's train.py is the model).

Config: ``pipeline.train_config`` (``TrainConfig`` holds every default, its ``model`` block the refiner's
``RefinerConfig``; a strategy's YAML, ``pipeline/configs/*.yaml``, overrides them; ``--config FILE`` and then
``--key value`` flags override those). The resolved config is saved as ``runs/<name>/config.yaml``; the run
folder is ``pipeline.run_folder``'s. Single process: ``python pipeline/solver_refiner_maggie.py ...``; several:
``torchrun --nproc_per_node N pipeline/solver_refiner_maggie.py ...`` (DDP; gloo on CPU, nccl on CUDA).

Run folder ``runs/<name>/``: ``config.yaml``, ``last.pt`` (every ``ckpt_every`` steps, atomic, with optimizer,
scheduler, scaler, step and RNG states), ``best.pt`` (best ``best_metric`` on the validation clips),
``train.csv``, ``val.csv``, ``tb/`` (TensorBoard). ``--resume`` continues from ``last.pt``; data order and
augmentation are a pure function of (seed, step), so the resumed run ends with the same weights on CPU.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from model.checkpoint import load_weights, read_checkpoint, save_refiner, upgrade_state_dict_keys
from model.config import RefinerConfig
from model.layers import channels_last_convs
from model.predictor import Predictor
from model.refiner import Refiner
from pipeline import metrics as M
from pipeline.data import MattingFrames, StepBatchSampler, list_clips, list_frames, split_clips
from pipeline.losses import TERMS, LossWeights, gate_loss, logit_bce_loss, matting_losses, trust_loss
from pipeline.run_folder import RunFolder, append_csv
from pipeline.train_config import TrainConfig, build_parser, check_config, config_dict, lr_at, phase_at, resolve_config
from utils.atomic import write_bytes_atomic
from utils.cli import UserError
from utils.device import resolve_device
from utils.images import check_frame_sizes

log = logging.getLogger("solver")


# ---------------------------------------------------------------------------------------------- helpers
def _check_resumable(ckpt: dict, cfg: TrainConfig, path: Path) -> None:
    """The model a checkpoint holds must be the one this config builds (else a size-mismatch traceback)."""
    # the checkpoint's own config dict (keys it leaves out have their defaults), compared as saved: not rebuilt
    # into a RefinerConfig, whose refusal of an odd value would be a traceback here
    saved = {**RefinerConfig().to_dict(), **ckpt["config"]} if isinstance(ckpt.get("config"), dict) else {}
    if saved and saved["variant"] != cfg.model.variant:
        raise UserError(f"{path} is a {saved['variant']!r} checkpoint but --model is {cfg.model.variant!r}")
    for key in ("base_channels", "window"):
        if key in saved and saved[key] != getattr(cfg.model, key):
            raise UserError(f"{path} was trained with model.{key}={saved[key]!r} but this run has --model.{key} "
                            f"{getattr(cfg.model, key)!r} (a resumed run keeps its saved config.yaml unless a flag "
                            "changes it)")


def _loader_generator(cfg: TrainConfig) -> torch.Generator:
    """The data loader's own generator: starting an epoch draws a seed from it, never from the global RNG, so the
    global RNG state at a step is the same in an uninterrupted and a resumed run (and so is every checkpoint)."""
    return torch.Generator().manual_seed(cfg.seed)


def save_checkpoint(path: Path, model, cfg: TrainConfig, step: int, **state) -> None:
    """The refiner's own checkpoint dict (``save_refiner``: format, variant, config, model; atomic) plus the
    training state, so ``load_refiner`` and inference.py read solver checkpoints directly."""
    save_refiner(path, model, step=step, train_config=config_dict(cfg), **state)


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
    predictor = Predictor(model, device, autocast=amp_dtype)  # inference's path (dense under 768 px)
    rows = []
    for i in range(len(dataset)):
        item = _to({k: v[None] for k, v in dataset[i].items()}, device)
        out = predictor(item["image"], item["guide"])
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
    use_cuda = resolve_device(cfg.device).type == "cuda"
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # the loader's OpenCV calls (crops of ~100-170 px) run on the calling thread: its thread pool cost more than it
    # gave and competed with torch's threads (measured: 3.1 -> 2.0 ms per make train-cpu item, the same items)
    cv2.setNumThreads(0)
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
                              accurate_prob=cfg.accurate_guide_prob, cache_mb=cfg.cache_mb,
                              degrade_prob=cfg.degrade_prob)
    val_set = MattingFrames(cfg.root, val_frames, cfg.tree, cfg.guide_mode, with_fb=False,
                            eval_long_side=cfg.eval_long_side, seed=cfg.seed)
    summary = (f"{len(train_frames)} train frames ({len(train_clips)} clips), {len(val_frames)} val frames "
               f"({len(val_clips)} clips)")
    return train_set, val_set, summary


def _resume_checkpoint(cfg: TrainConfig, folder: RunFolder, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint a resumed run continues from (None: a fresh run): one of the same model, and a budget not
    smaller than what it has trained; refuses to start over a run silently."""
    folder.check_start(resume, overwrite)
    if resume:
        last = folder.path / "last.pt"
        ckpt = read_checkpoint(last)
        _check_resumable(ckpt, cfg, last)
        if int(ckpt["step"]) > cfg.steps:  # it would exit 0 saying it finished, with its config rewritten
            raise UserError(f"{last} has trained {int(ckpt['step'])} steps, more than --steps {cfg.steps}: give "
                            f"--steps {int(ckpt['step'])} or more to continue it, or --overwrite to restart")
        return ckpt
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
    model = Refiner(cfg.model).to(place.device)
    if ckpt is not None:
        load_weights(model, ckpt["model"])
    model.fine.requires_grad_(False)  # the fine stage trains afterwards, on its own (pipeline/train_fine.py)
    if place.device.type == "cpu":  # NHWC convolutions: ~10-20% of a CPU step (model.layers); unmeasured on a GPU
        channels_last_convs(model)
    # fused: one kernel over every parameter (on a CPU 3x faster than the per-tensor loop, equal to ~1e-8)
    opt = torch.optim.AdamW([p for _, p in model.trunk_named_parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(cfg, s))
    amp_dtype = amp_dtype_for(cfg.amp, place.device)
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


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (one of ``AMP_MODES``, checked with the config) on ``device`` (the
    solver's and bench_train's step): none on a CPU; on CUDA bf16 where supported, else fp16 (``auto``), or as
    asked."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _upgrade_optimizer_state(opt_state: dict, saved_model: dict, model: torch.nn.Module) -> dict:
    """An optimiser state indexes parameters by position. One saved before the refiner's encoder/decoder split
    has them in the older order (the refiner's own ``guide_gain`` first): reorder it to this model's order, found
    from the saved state dict's key order. A current state passes unchanged."""
    names = [n for n, _ in model.trunk_named_parameters()]
    known = set(names)
    saved_order = [k for k in upgrade_state_dict_keys(saved_model) if k in known]
    if saved_order == names or sorted(saved_order) != sorted(names):
        return opt_state
    old_index = {name: i for i, name in enumerate(saved_order)}
    state = {j: opt_state["state"][old_index[n]] for j, n in enumerate(names) if old_index[n] in opt_state["state"]}
    return {**opt_state, "state": state}


def _open_run_dir(cfg: TrainConfig, folder: RunFolder, fresh: bool, step: int):
    """The run folder (``RunFolder.open``) with its config, and a TensorBoard writer."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = folder.open(fresh, step)
    write_bytes_atomic(run_dir / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False).encode())
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


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (the 2-norm over every gradient; scaled by ``max_norm / (norm + 1e-6)``
    where that is below 1), the norm taken over the gradients concatenated: one reduction instead of one per
    tensor (on a CPU torch's per-tensor path cost ~4.4 ms for the refiner's 149 tensors, this ~1.8). Equal to
    float rounding (another summation order). Returns the norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


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


def run_folder(cfg: TrainConfig) -> RunFolder:
    """``<runs_dir>/<name>/`` (``pipeline.run_folder``): a run is there once it has a ``last.pt``."""
    return RunFolder(cfg.runs_dir, cfg.name, "a training run", checkpoints=("last.pt",),
                     outputs=("best.pt", "last.json"), logs=("train.csv", "val.csv"))


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train ``cfg`` into ``<runs_dir>/<name>/`` (``resume``: continue its last.pt; ``overwrite``: start over)."""
    check_config(cfg)  # a config made in code is checked too
    folder = run_folder(cfg)
    with contextlib.ExitStack() as locks:  # the run's lock is released however training ends
        place = _place(cfg)
        train_set, val_set, summary = _datasets(cfg)
        if place.master:
            locks.enter_context(folder.lock())
        ckpt = _resume_checkpoint(cfg, folder, resume, overwrite)
        state = _build_state(cfg, place, ckpt)
        writer = _open_run_dir(cfg, folder, ckpt is None, state.step) if place.master else None
        if place.master:
            log.info("run %s: %s, model %s, %s, world %d, from step %d", folder.path, summary, cfg.model.variant,
                     place.device, place.world, state.step)
        train_set.fill_cache()  # after every check: a refused run decodes nothing
        _loop(cfg, place, state, train_set, val_set, folder.path, writer)
        last, best = folder.path / "last.pt", folder.path / "best.pt"
        if place.master:
            writer.close()
            log.info("finished %d steps: checkpoints %s, %s; logs %s, %s, %s", state.step, last, best,
                     folder.path / "train.csv", folder.path / "val.csv", folder.path / "tb")
        if place.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return RunResult(folder.path, last, best, state.step, state.best_value)


def _loop(cfg: TrainConfig, place: _Place, state: _State, train_set: MattingFrames, val_set: MattingFrames,
          run_dir: Path, writer) -> None:
    """The steps from ``state.step`` to ``cfg.steps``: one batch, one update; log, evaluate and checkpoint on
    their intervals (and at the last step)."""
    model = supervised = _SupervisedOutputs(state.model)
    if place.world > 1:  # phases may leave a stride's head out of the loss: tolerate unused parameters
        model = torch.nn.parallel.DistributedDataParallel(
            supervised, device_ids=[place.device.index] if place.cuda else None, find_unused_parameters=True)
    sampler = StepBatchSampler(len(train_set), cfg.batch_size, cfg.seed, cfg.steps, state.step, place.rank,
                               place.world)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=place.cuda, persistent_workers=False,
                                         generator=_loader_generator(cfg))
    last = run_dir / "last.pt"
    bar = tqdm(total=cfg.steps, initial=state.step, disable=not place.master, desc=cfg.name, dynamic_ncols=True)
    t0 = time.time()
    for batch in loader:
        phase, weights = phase_at(cfg, state.step)
        supervised.strides = tuple(s for s, w in weights.stride_weights.items() if w > 0)
        gnorm = _update(cfg, place, state, model, _to(batch, place.device), weights, last)
        bar.update(1)
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


def _update(cfg: TrainConfig, place: _Place, state: _State, model, batch: dict, weights: LossWeights, last: Path):
    """One optimisation step (stopped, in one line, on a non-finite loss on any rank); returns the gradient
    norm before clipping (None without clipping). The loss terms are summed into ``state.sums`` for the log."""
    loss, parts = _step_loss(model, batch, weights, state.amp_dtype)
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
    gnorm = clip_grad_norm(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
    state.scaler.step(state.opt)
    state.scaler.update()
    state.sched.step()
    state.step += 1
    for k, v in {"loss": loss.item(), **parts, "n": 1}.items():
        state.sums[k] = state.sums.get(k, 0.0) + v
    return gnorm
