"""The solver's config: ``TrainConfig`` (every default), and the one mechanism that resolves it.

Layers, each overriding the one before: ``TrainConfig``'s defaults <- the strategy's YAML
(``pipeline/configs/*.yaml``) <- on ``--resume``, the run's saved ``config.yaml`` <- ``--config FILE`` <- flags.
Every key is a flag (``--batch_size 8``); the refiner's settings are the ``model:`` block
(``model.config.RefinerConfig``): ``--model.window 4``, and ``--model light`` for its variant. The older flat keys
(``base_channels``, ``gate_threshold``, ``flip_threshold``, ``accurate_gate_threshold``; ``model: light``; ``guide``)
still work, as flags and in older runs' saved configs. Values are checked once, here (exit 64 with one line);
the refiner's by ``RefinerConfig`` itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from model.config import VARIANTS, RefinerConfig
from pipeline.losses import DEFAULT_STRIDE_WEIGHTS, TERMS, LossWeights
from utils.cli import ArgumentParser, UsageError, UserError
from utils.paths import repo_default

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    """Every setting of a training run, with its default; ``model`` is the refiner trained."""

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
    degrade_prob: float = 0.0       # share of training crops given a real camera's flaws (pipeline/degrade.py)
    num_workers: int = 4
    cache_mb: float = 2048.0        # decoded training frames kept in memory per loader process (0: decode each time)
    # model: the refiner's settings (model.config.RefinerConfig), the YAML's `model:` block, flags --model.<key>
    model: RefinerConfig = field(default_factory=RefinerConfig)
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


# ---------------------------------------------------------------------------------------------- resolving
KEY_ALIASES = {"guide": "guide_mode"}  # older config key / flag -> its current name (old runs' config.yaml resume)
# older flat keys / flags of the refiner's settings -> their key in the model block
MODEL_ALIASES = {"base_channels": "base_channels", "gate_threshold": "gate_threshold",
                 "flip_threshold": "flip_threshold", "accurate_gate_threshold": "accurate_gate_threshold"}
KINDS = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple[int, int]": list,
         "RefinerConfig": dict}


def _kind(f: dataclasses.Field) -> type:
    return KINDS[f.type] if isinstance(f.type, str) else f.type


def _convert(key: str, value: Any, kind: type) -> Any:
    """A flag's text (or a YAML value of another type) as ``kind``; a usage error naming the key otherwise."""
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is list:
            return yaml.safe_load(text)
        return kind(text)
    except (ValueError, yaml.YAMLError):
        raise UsageError(f"--{key} expects {kind.__name__}, got {text!r}") from None


def build_parser(defaults_yaml: str | None = None) -> argparse.ArgumentParser:
    """Every ``TrainConfig`` key as ``--key``, every refiner setting as ``--model.key`` (and its older flag)."""
    p = ArgumentParser(description="Train the refiner. Every config key is a flag: --batch_size 8 --model heavy_db2")
    p.add_argument("--config", default=None, help="YAML file of overrides (applied after the strategy's defaults)")
    p.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start runs/<name> over, deleting its checkpoints")
    shown = {f.name: getattr(TrainConfig, f.name, None) for f in dataclasses.fields(TrainConfig)}
    shown_model = RefinerConfig().to_dict()
    if defaults_yaml and (CONFIG_DIR / defaults_yaml).is_file():
        flat, model = _split(yaml.safe_load((CONFIG_DIR / defaults_yaml).read_text()) or {}, "strategy")
        shown.update(flat)
        shown_model.update(model)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            continue
        value = "see the strategy YAML" if f.name == "phases" else shown[f.name]
        aliases = [f"--{old}" for old, new in KEY_ALIASES.items() if new == f.name]
        p.add_argument(f"--{f.name}", *aliases, dest=f.name, default=None, help=f"{f.type} (default: {value})")
    for f in dataclasses.fields(RefinerConfig):
        aliases = [f"--{old}" for old, new in MODEL_ALIASES.items() if new == f.name] + \
            (["--model"] if f.name == "variant" else [])
        help_ = f"{f.type} (default: {shown_model[f.name]})" + (f"; one of {', '.join(VARIANTS)}"
                                                                if f.name == "variant" else "")
        p.add_argument(f"--model.{f.name}", *aliases, dest=f"model.{f.name}", default=None, help=help_)
    p.set_defaults(strategy_yaml=defaults_yaml)
    return p


def _split(data: Mapping[str, Any], where: str) -> tuple[dict, dict]:
    """A config mapping (a YAML file, a saved config) -> (its TrainConfig keys, its model block), older names
    under their current ones; unknown keys are refused in one line naming ``where``."""
    flat, model = {}, {}
    for key, value in data.items():
        key = KEY_ALIASES.get(key, key)
        if key == "model":
            if isinstance(value, str):  # the older form: `model: light`
                model["variant"] = value
            elif isinstance(value, Mapping):
                model.update(value)
            elif value is not None:
                raise UsageError(f"{where}: model must be a variant name or a mapping of its settings, got {value!r}")
        elif key in MODEL_ALIASES:
            model[MODEL_ALIASES[key]] = value
        else:
            flat[key] = value
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    known_model = {f.name for f in dataclasses.fields(RefinerConfig)}
    unknown = sorted(set(flat) - known) + sorted(f"model.{k}" for k in set(model) - known_model)
    if unknown:
        raise UserError(f"{where}: unknown config key(s) {', '.join(map(str, unknown))}")
    return flat, model


def _read_mapping(path: Path, what: str) -> dict:
    """A YAML file's mapping; one line naming ``what`` it is when it cannot be parsed or is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"unreadable {what} {path} ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise UserError(f"unreadable {what} {path} (not a mapping)")
    return dict(data)


def _load_yaml(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    return _split(_read_mapping(path, "config"), str(path))


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- strategy YAML <- (``--resume``: the run's saved config) <- --config YAML <- flags."""
    layers: list[tuple[dict, dict]] = []
    if args.strategy_yaml:
        layers.append(_load_yaml(CONFIG_DIR / args.strategy_yaml))
    if getattr(args, "resume", False):  # the run's saved config, under --config and the flags given now
        layers.append(_saved_config(args, {k: v for flat, _ in layers for k, v in flat.items()}))
    if args.config:
        layers.append(_load_yaml(Path(args.config)))
    given = vars(args)
    layers.append(({f.name: given[f.name] for f in dataclasses.fields(TrainConfig)
                    if f.name != "model" and given.get(f.name) is not None},
                   {f.name: given[f"model.{f.name}"] for f in dataclasses.fields(RefinerConfig)
                    if given.get(f"model.{f.name}") is not None}))
    values: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for flat, block in layers:
        values.update(flat)
        model.update(block)
    kinds = {f.name: _kind(f) for f in dataclasses.fields(TrainConfig)}
    values = {k: _convert(k, v, kinds[k]) for k, v in values.items()}
    model = {k: _convert(f"model.{k}", v, _kind(f)) for f in dataclasses.fields(RefinerConfig)
             for k, v in model.items() if k == f.name}
    cfg = TrainConfig(**values, model=_refiner_config(model))
    check_config(cfg)
    return cfg


def _refiner_config(values: dict) -> RefinerConfig:
    """The model block as a ``RefinerConfig``: its own checks, as a usage error (exit 64)."""
    variant = values.get("variant", RefinerConfig.variant)
    if variant not in VARIANTS:
        raise UsageError(f"--model must be one of {', '.join(VARIANTS)}, got {variant!r}")
    try:
        return RefinerConfig(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad refiner setting (--model.*): {exc}") from None


def _saved_config(args: argparse.Namespace, strategy: dict) -> tuple[dict, dict]:
    """``runs/<name>/config.yaml`` of the run ``--resume`` continues (empty if none): a resumed run keeps the
    settings it was started with; only flags given again (and ``--config``) change them."""
    config = _read_mapping(Path(args.config), "config") if args.config and Path(args.config).is_file() else {}
    pick = lambda key: getattr(args, key) or config.get(key) or strategy.get(key) or getattr(TrainConfig, key)  # noqa: E731
    path = Path(pick("runs_dir")) / pick("name") / "config.yaml"
    if not path.is_file():
        return {}, {}
    saved = _read_mapping(path, "run config")
    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(MODEL_ALIASES) | set(KEY_ALIASES)
    return _split({k: v for k, v in saved.items() if k in known}, str(path))


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as plain YAML/JSON-able data (what ``config.yaml`` and checkpoints' ``train_config`` hold)."""
    return {**dataclasses.asdict(cfg), "model": cfg.model.to_dict()}


# the range of every number (inclusive; "open" ends are in OPEN): a value outside is refused before anything is
# written. Whole numbers >= 1 where a 0 would divide by zero or never log / evaluate / checkpoint; the weights and
# sizes are bounded where a larger value only overflows (a loss weight of 1e30, a crop scaled 1e30 times).
RANGES: dict[str, tuple[float, float]] = {
    "steps": (1, math.inf), "batch_size": (1, 4096), "log_every": (1, math.inf), "eval_every": (1, math.inf),
    "ckpt_every": (1, math.inf), "crop": (16, 8192), "seed": (0, 2 ** 32 - 1), "threads": (0, 1024),
    "num_workers": (0, 256), "warmup_steps": (0, math.inf), "val_max_frames": (0, math.inf),
    "eval_long_side": (0, 16384), "cache_mb": (0, 1e7), "val_fraction": (0, 1), "accurate_guide_prob": (0, 1),
    "scale_min": (0.05, 8), "scale_max": (0.05, 8), "unknown_crop_prob": (0, 1), "jitter": (0, 1),
    "degrade_prob": (0, 1),
    "lr": (0, 1), "min_lr_ratio": (0, 1), "weight_decay": (0, 1), "grad_clip": (0, 1e6),
    **{k: (0, 1e4) for k in ("w_l1", "w_lap", "w_grad", "w_comp", "w_wll", "w_whigh", "w_gate", "w_bce", "w_trust",
                            "stride8", "stride4", "stride1", "final")},
    "whigh_floor": (0, 1),
}
OPEN = {("val_fraction", "high"), ("lr", "low")}  # val_fraction 1 leaves no training clip; lr 0 trains nothing


def check_config(cfg: TrainConfig) -> None:
    """Every value a run could fail on later, checked before anything is written (one line each, a usage error:
    exit 64 like any bad command line)."""
    for f in dataclasses.fields(TrainConfig):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--{f.name} must be a finite number, got {v}")
    for key, (low, high) in RANGES.items():
        v = getattr(cfg, key)
        if v < low or v > high or (v == low and (key, "low") in OPEN) or (v == high and (key, "high") in OPEN):
            left = "(" if (key, "low") in OPEN else "["
            right = ")" if (key, "high") in OPEN else "]"
            bound = f">= {low:g}" if high == math.inf else f"in {left}{low:g}, {high:g}{right}"
            raise UsageError(f"--{key} must be {bound}, got {v}")
    if cfg.scale_min > cfg.scale_max:
        raise UsageError(f"--scale_min must be at most --scale_max, got {cfg.scale_min} > {cfg.scale_max}")
    if not isinstance(cfg.model, RefinerConfig):
        raise UsageError(f"model must be a RefinerConfig, got {type(cfg.model).__name__}")
    choices = {"guide_mode": ("perturb", "files", "mixed"), "val_source": ("holdout", "test"), "amp": AMP_MODES,
               "device": ("auto", "cpu", "cuda"),
               "best_metric": tuple(f"{m}{s}" for s in ("", "_unknown") for m in ("sad", "mad", "mse", "grad", "conn"))}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise UsageError(f"--{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    _check_phases(cfg.phases)


def _check_phases(phases: Any) -> None:
    if not isinstance(phases, list):
        raise UsageError(f"--phases must be a list of {{name, until, weights, strides}}, got {phases!r}")
    for i, ph in enumerate(phases):
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


