"""Drop-in replacement for MatAnyone's ``matanyone/utils/get_default_model.py``: an offline, CPU-capable loader.

Same function and signature as the original, ``get_matanyone_model(ckpt_path, device=None) -> MatAnyone``,
usable in two ways:
- from this repository (``preprocess/guide_mask.py --backend matanyone``): the MatAnyone clone is found through
  ``MATANYONE_ROOT`` (or is already importable);
- copied over the clone's own file (``cp get_default_model.py <clone>/matanyone/utils/``), so MatAnyone's
  scripts load local weights on any device.

Differences from the original, each fixing something that breaks offline or on CPU:
- the checkpoint is local only: ``ckpt_path``, else ``MATANYONE_CKPT``, else
  ``<clone>/pretrained_models/matanyone.pth`` (then ``./pretrained_models/matanyone.pth``); a missing file or a
  file that is not a MatAnyone state dict is one line naming it (``MatAnyoneLoadError``);
- ``cfg.model.pretrained_resnet = False``: building ``MatAnyone(cfg)`` would otherwise download ImageNet ResNet
  weights (the checkpoint holds all weights anyway);
- ``device=None`` means CUDA when available, else CPU (the original always calls ``.cuda()``);
- Hydra's global state is set up from MatAnyone's config folder by absolute path and restored afterwards, so
  the function can be called twice in one process and does not disturb other Hydra users (sam2);
- the checkpoint loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

try:  # inside this repository: a user error ends in one line via utils.cli.run_main
    from utils.cli import UserError as _BaseError
except ImportError:  # copied into a MatAnyone clone
    _BaseError = RuntimeError


class MatAnyoneLoadError(_BaseError):
    """A missing clone, a missing checkpoint, or a checkpoint that is not MatAnyone's."""


def _import_matanyone():
    """Import the ``matanyone`` package, from ``MATANYONE_ROOT`` if it is not importable already."""
    root = os.environ.get("MATANYONE_ROOT")
    if root and str(Path(root).resolve()) not in sys.path:
        if not (Path(root) / "matanyone" / "__init__.py").is_file():
            raise MatAnyoneLoadError(f"MATANYONE_ROOT is not a MatAnyone clone: {root} (no matanyone/__init__.py)")
        sys.path.insert(0, str(Path(root).resolve()))
    try:
        import matanyone
        from matanyone.model.matanyone import MatAnyone
    except ImportError as exc:
        raise MatAnyoneLoadError(f"cannot import MatAnyone ({exc}): clone https://github.com/pq-yang/MatAnyone "
                                 "and set MATANYONE_ROOT (or --matanyone_root)") from None
    return Path(matanyone.__file__).resolve().parent, MatAnyone


def _resolve_ckpt(ckpt_path, package_dir: Path) -> Path:
    if ckpt_path:
        return Path(ckpt_path)
    if os.environ.get("MATANYONE_CKPT"):
        return Path(os.environ["MATANYONE_CKPT"])
    in_clone = package_dir.parent / "pretrained_models" / "matanyone.pth"
    return in_clone if in_clone.is_file() else Path("pretrained_models") / "matanyone.pth"


def _compose_config(config_dir: Path):
    """MatAnyone's eval config, composed with Hydra's global state saved and restored around it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3.2", job_name="eval_our_config"):
            return compose(config_name="eval_matanyone_config")
    finally:
        restore_gh_from_backup(backup)


def get_matanyone_model(ckpt_path, device=None):
    """MatAnyone (single object, eval mode) on ``device`` with weights from a local checkpoint."""
    from omegaconf import open_dict

    package_dir, MatAnyone = _import_matanyone()
    ckpt = _resolve_ckpt(ckpt_path, package_dir)
    if not ckpt.is_file():
        raise MatAnyoneLoadError(f"MatAnyone checkpoint not found: {ckpt} (download matanyone.pth from "
                                 "https://github.com/pq-yang/MatAnyone/releases and pass its path)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = _compose_config(package_dir / "config")
    with open_dict(cfg):
        cfg["weights"] = str(ckpt)
        cfg.model["pretrained_resnet"] = False  # else MatAnyone(cfg) downloads ImageNet ResNet weights

    try:
        weights = torch.load(ckpt, map_location=device, weights_only=True)
    except Exception as exc:
        raise MatAnyoneLoadError(f"not a MatAnyone checkpoint: {ckpt} ({exc.__class__.__name__})") from None
    model = MatAnyone(cfg, single_object=True).to(device).eval()
    if not isinstance(weights, dict):
        raise MatAnyoneLoadError(f"not a MatAnyone checkpoint: {ckpt} (not a state dict)")
    # MatAnyone's load_weights is not strict: a wrong file would load nothing, silently
    expected = set(model.state_dict())
    missing = expected - set(weights)
    if missing:
        raise MatAnyoneLoadError(f"not a MatAnyone checkpoint: {ckpt} ({len(missing)} of {len(expected)} "
                                 f"weights missing, e.g. {sorted(missing)[0]})")
    try:
        model.load_weights(weights)
    except RuntimeError as exc:  # shapes that do not match this model
        raise MatAnyoneLoadError(f"not a MatAnyone checkpoint: {ckpt} ({str(exc).splitlines()[0][:100]})") from None
    return model
