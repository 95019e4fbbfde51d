"""TEST-ONLY stand-in for ``model/refiner.py`` (issue 6), used while the real refiner is not in this branch.

It satisfies the agreed contract (CONTRACTS.md): ``VARIANTS``, ``build_refiner(variant, base_channels)``,
``Refiner.forward(image, guide) -> RefinerOutput`` with ``alpha``, ``alpha_os`` {8,4,1}, ``logits_os``,
``focus_map``, ``uncertain_os``; ``Refiner.config``; ``save_refiner`` / ``load_refiner``. tests/conftest.py
selects it through ``DEFOCUS_REFINER_MODULE`` only when ``model.refiner`` cannot be imported. Never a training
model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.atomic import atomic_path
from utils.cli import UserError

VARIANTS = ("none", "light", "heavy_db1", "heavy_db2", "heavy_db4")
FORMAT = "defocused_segmentation/refiner"


@dataclass
class RefinerOutput:
    alpha: torch.Tensor
    alpha_os: dict = field(default_factory=dict)
    logits_os: dict = field(default_factory=dict)
    focus_map: torch.Tensor | None = None
    uncertain_os: dict = field(default_factory=dict)


class Refiner(nn.Module):
    def __init__(self, variant: str = "light", base_channels: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.variant, self.base_channels = variant, base_channels
        c = base_channels
        self.enc = nn.Sequential(nn.Conv2d(4, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({str(s): nn.Conv2d(c + 1, 1, 3, padding=1) for s in (8, 4, 1)})
        self.focus = nn.Conv2d(3, 1, 3, padding=1)

    @property
    def config(self) -> dict:
        return {"variant": self.variant, "base_channels": self.base_channels}

    def forward(self, image: torch.Tensor, guide: torch.Tensor) -> RefinerOutput:
        h, w = image.shape[-2:]
        x = torch.cat([image, guide], 1)
        logits_os, alpha_os, unc = {}, {}, {}
        for s in (8, 4, 1):
            xs = F.interpolate(x, scale_factor=1 / s, mode="bilinear", align_corners=False) if s > 1 else x
            f = self.enc(xs)
            g = F.interpolate(guide, size=f.shape[-2:], mode="bilinear", align_corners=False)
            lo = self.heads[str(s)](torch.cat([f, g], 1)) + 4 * (g - 0.5)
            lo = F.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False) if s > 1 else lo
            logits_os[s], alpha_os[s] = lo, torch.sigmoid(lo)
            unc[s] = ((alpha_os[s] > 0.05) & (alpha_os[s] < 0.95)).float()
        return RefinerOutput(alpha=alpha_os[1], alpha_os=alpha_os, logits_os=logits_os,
                             focus_map=torch.sigmoid(self.focus(image)), uncertain_os=unc)


def build_refiner(variant: str = "light", base_channels: int = 8, **kwargs) -> Refiner:
    return Refiner(variant, base_channels)


def save_refiner(path, model: Refiner, **extra) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "variant": model.variant, "config": model.config,
                    "model": model.state_dict(), **extra}, tmp)


def load_refiner(path, map_location="cpu"):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"not a refiner checkpoint: {path}")
    model = build_refiner(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model, ckpt
