"""Checkpoints: the only code that writes or reads a refiner checkpoint or a training state.

A refiner checkpoint is ``{'format', 'variant', 'config', 'model', **extra}`` (``config``: ``RefinerConfig.to_dict()``;
the solver adds its training state, the fine stage's trainer its own config). A fine-stage training state
(``pipeline/train_fine.py``'s ``last.pt``) is a plain dict of tensors and numbers. Everything is read with
``weights_only=True`` through :func:`_load` (a checkpoint is untrusted input) and written atomically (temp +
rename) through :func:`_save`; every failure a user can cause is one ``UserError`` line. Checkpoints from before
the encoder/decoder split and from before the fine stage existed keep loading (:func:`load_weights`).
"""
from __future__ import annotations

import collections
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from model.config import RefinerConfig
from model.refiner import Refiner
from utils.atomic import atomic_path
from utils.cli import UserError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "defocused_segmentation/refiner"


def _load(path: Path, map_location: str | torch.device, what: str) -> Any:
    """The one ``torch.load`` of this project's checkpoints: ``weights_only=True``; a missing or unloadable file
    is one line naming ``what`` it should have been."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (untrusted file: any failure to load is the file's fault)
        raise UserError(f"not a loadable {what}: {path} ({exc.__class__.__name__})") from None


def _save(path: Path, obj: dict) -> Path:
    """Write ``obj`` to ``path`` atomically, its bytes a function of its values only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # through a file object: torch names the archive's top folder after a path (here the random temp name), so
    # identical states would give different bytes; a file object's archive is always named 'archive'
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(_canonical(obj), fh)
    return path


def _canonical(obj: Any) -> Any:
    """``obj`` rebuilt so that its pickle depends only on its values, not on which equal objects happen to be
    shared (pickle writes a back-reference for an object seen before, by identity): every string is interned
    (equal strings always shared), every dict, list and tuple is new (never shared). Tensors are kept."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, collections.OrderedDict):  # a state dict: keep its type and its _metadata
        out = collections.OrderedDict((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = _canonical(obj._metadata)
        return out
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_canonical(v) for v in obj)
    return obj


def upgrade_state_dict_keys(state: dict) -> dict:
    """State-dict keys of checkpoints written before the encoder and decoder were submodules ("s1.inp.0.weight"),
    renamed to their place now ("encoder.s1.inp.0.weight"); current keys pass unchanged."""
    out = type(state)()
    for key, value in state.items():
        top = key.split(".")[0]
        if top in DECODER_MODULES:
            key = f"decoder.{key}"
        elif top in ENCODER_MODULES:
            key = f"encoder.{key}"
        out[key] = value
    return out


ENCODER_MODULES = ("focus_down", "down0", "s1", "d1", "down_s1", "down_d1", "s2", "d2", "attn2", "down_s2", "down_d2",
                   "s3", "d3", "attn3", "down_s3", "s4", "aspp")
DECODER_MODULES = ("ctx", "f8", "head8", "ll4", "hi4", "up4", "f4", "head4", "head_gate", "head_trust", "ll2", "hi2",
                   "up2", "f2", "ll1", "hi1", "up1", "f1", "gate1", "guide_gain")


def load_weights(model: Refiner, state: dict, strict: bool = True):
    """``model.load_state_dict(state)``, also for states from before the encoder/decoder split (older keys) and
    from before the fine stage existed (its weights then stay as built, untrained: ``fine_steps`` 0)."""
    state = upgrade_state_dict_keys(state)
    if strict and not any(k.startswith("fine.") for k in state):
        own = {k: v for k, v in model.state_dict().items() if k.startswith("fine.") or k == "fine_steps"}
        state = {**state, **{k: torch.zeros_like(v) if k == "fine_steps" else v for k, v in own.items()}}
    return model.load_state_dict(state, strict=strict)


def save_refiner(path: str | os.PathLike, model: Refiner, **extra: Any) -> Path:
    """Write ``{'format', 'variant', 'config', 'model', **extra}`` to ``path`` atomically (temp + rename)."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return _save(Path(path), {"format": CHECKPOINT_FORMAT, "variant": model.config.variant,
                              "config": model.config.to_dict(), "model": model.state_dict(), **extra})


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dict of a refiner checkpoint (``save_refiner``'s, or the solver's with its training state). Raises
    ``UserError`` (one line) for a missing file, an unreadable file, or a checkpoint of something else."""
    path = Path(path)
    ckpt = _load(path, map_location, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a refiner checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
                        "train one or save it with model.checkpoint.save_refiner)")
    return ckpt


def load_refiner(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Refiner, dict]:
    """Rebuild a refiner from a checkpoint written by :func:`save_refiner` (or the training solver).

    Returns ``(model in eval mode, ckpt)``. Raises ``UserError`` (one line) for a missing file, an unreadable
    file, a checkpoint of something else, non-finite weights or a config the weights do not fit.
    """
    ckpt = read_checkpoint(path, map_location)
    state = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:  # a run that diverged: its alpha would be NaN, or cut to 0 in whole tiles
        raise UserError(f"refiner checkpoint {path} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s), "
                        f"e.g. {bad[0]}: retrain it (a smaller learning rate)")
    try:
        model = Refiner(RefinerConfig.from_dict(ckpt["config"]))
        load_weights(model, ckpt["model"])
    except Exception as exc:  # noqa: BLE001  (a config the model cannot be built from, e.g. window: 0)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"refiner checkpoint {path} does not match its config: {first}") from None
    return model.to(map_location).eval(), ckpt


def load_backbone(model: Refiner, path: str | os.PathLike) -> int:
    """Load encoder weights from a local file (a refiner checkpoint or a plain state dict) into ``model``; returns
    how many tensors matched by name and shape. Nothing is ever downloaded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained backbone weights not found: {path} (give a local file)")
    obj = _load(path, "cpu", "weights file")
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"no state dict in {path}")
    own = model.encoder_state_dict()
    matched = {k: v for k, v in upgrade_state_dict_keys(state).items()
               if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise UserError(f"no encoder weights of this refiner found in {path}")
    model.load_state_dict(matched, strict=False)  # keys already upgraded; the rest stays as built
    log.info("loaded %d/%d backbone tensors from %s", len(matched), len(own), path)
    return len(matched)


def save_training_state(path: str | os.PathLike, state: dict) -> Path:
    """A training state that is not a refiner checkpoint (the fine stage's ``last.pt``), written atomically."""
    return _save(Path(path), state)


def read_training_state(path: str | os.PathLike, keys: tuple[str, ...], what: str, hint: str) -> dict:
    """A state written by :func:`save_training_state` that must hold ``keys`` (and a whole ``step``); one line
    naming ``what`` it should be and ending in ``hint`` when it is missing, unreadable, truncated or else."""
    path = Path(path)
    try:
        state = _load(path, "cpu", what)
    except UserError as exc:
        raise UserError(f"{exc}; {hint}") from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing or not isinstance(state.get("step", 0), int):
        raise UserError(f"not a loadable {what}: {path} (no {', '.join(missing) or 'whole step'}); {hint}")
    return state
