"""The one device resolver: ``--device auto|cpu|cuda|cuda:N`` of every entry point."""
from __future__ import annotations

from typing import TYPE_CHECKING

from utils.cli import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> "torch.device":
    """``auto`` -> CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given. A name torch does not
    know, or CUDA on a machine without it, is a one-line ``UserError``."""
    import torch  # here, not at import: the data stages that never touch a device stay light

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device
