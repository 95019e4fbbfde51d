"""The refiner's settings: one frozen ``RefinerConfig`` that validates itself.

Everything that decides what a refiner is (its architecture) and what its output rule does (the thresholds) lives
here and nowhere else: ``model.refiner.Refiner`` is built from one, checkpoints store ``to_dict()`` and rebuild it
with ``from_dict``, and the solver's ``TrainConfig`` holds one (its ``model:`` block, ``pipeline.train_config``). A value that would
only fail later, inside a forward pass, is refused when the config is made (``ValueError``, one line).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

VARIANTS = ("none", "light", "heavy_db1", "heavy_db2", "heavy_db4")  # none first: the ablation's baseline
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the image normalisation of the encoder and the fine stage
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUST_THRESHOLD = 0.25  # a guide gets the coarse rule only if P(accurate) < 0.25: calling an accurate guide coarse
# does harm (the wide band and flips), calling a coarse one accurate only forgoes a gain; at 3:1 costs the Bayes
# threshold on P(accurate) is 1 / (1 + 3) = 0.25 (bench/RESULTS.md, "learning": what it changes, measured)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class RefinerConfig:
    """variant: one of :data:`VARIANTS` (the wavelet op; ``none`` = the learned 2x2 down-sampling of the ablation);
    base_channels: the width (a positive multiple of 4); window: the attention's window (px at strides 4 and 8);
    uncertain_radius: the progressive merge's bands (stride-8, stride-4 cells); focus_tau: the focus maps' energy
    scale; the output rule's thresholds: gate (a change on the guide's side of 0.5), flip (across it), accurate
    (the gate with an accurate guide) and trust (P(accurate) below which a guide gets the coarse rule)."""

    variant: str = "light"
    base_channels: int = 32
    window: int = 8
    uncertain_radius: tuple[int, int] = (4, 4)
    focus_tau: float = 0.01
    gate_threshold: float = 0.7
    flip_threshold: float = 0.95
    accurate_gate_threshold: float = 0.9
    trust_threshold: float = TRUST_THRESHOLD

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown refiner variant {self.variant!r}: one of {', '.join(VARIANTS)}")
        if not _whole(self.base_channels) or self.base_channels < 4 or self.base_channels % 4:
            raise ValueError(f"base_channels must be a positive multiple of 4, got {self.base_channels}")
        if not _whole(self.window) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        radius = self.uncertain_radius
        if not isinstance(radius, (list, tuple)) or len(radius) != 2 or not all(_whole(r) and r >= 0 for r in radius):
            raise ValueError(f"uncertain_radius must be two integers >= 0, got {radius!r}")
        if not _number(self.focus_tau) or self.focus_tau <= 0:
            raise ValueError(f"focus_tau must be a finite number > 0, got {self.focus_tau!r}")
        gate, flip = self.gate_threshold, self.flip_threshold
        if not (_number(gate) and _number(flip) and 0.0 <= gate <= flip < 1.0):
            raise ValueError(f"gate_threshold and flip_threshold must satisfy 0 <= gate_threshold <= flip_threshold < 1,"
                             f" got {gate}, {flip}")
        if not _number(self.accurate_gate_threshold) or not 0.0 <= self.accurate_gate_threshold < 1.0:
            raise ValueError(f"accurate_gate_threshold must be in [0, 1), got {self.accurate_gate_threshold}")
        if not _number(self.trust_threshold) or not 0.0 < self.trust_threshold < 1.0:
            raise ValueError(f"trust_threshold must be in (0, 1), got {self.trust_threshold}")
        # one canonical form (a checkpoint's JSON list, YAML ints as floats): equal settings compare equal
        for name in ("focus_tau", "gate_threshold", "flip_threshold", "accurate_gate_threshold", "trust_threshold"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "uncertain_radius", tuple(int(r) for r in radius))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RefinerConfig:
        """The config a checkpoint's ``config`` dict (or any mapping of these keys) describes; unknown keys and
        bad values raise ``ValueError``. Keys a checkpoint leaves out take their defaults (older checkpoints)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a refiner config must be a mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown refiner config key(s) {', '.join(map(str, unknown))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what checkpoints store): ``RefinerConfig.from_dict(c.to_dict()) == c``."""
        out = dataclasses.asdict(self)
        out["uncertain_radius"] = list(self.uncertain_radius)
        return out

    def replace(self, **changes: Any) -> RefinerConfig:
        """A copy with ``changes`` (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    @property
    def wavelet(self) -> str:
        """The down/up operator's kind: ``haar`` (light), a pytorch_wavelets name (heavy_*) or ``none``."""
        return {"light": "haar", "none": "none"}.get(self.variant, self.variant.removeprefix("heavy_"))

    @property
    def widths(self) -> tuple[int, int, int, int, int]:
        """Channel widths C0..C4 at strides 1, 2, 4, 8, 16: most width where pixels are few; the full-resolution
        path has a few channels only."""
        b = self.base_channels
        return max(4, b // 4), b // 2, b, 4 * b, 8 * b

    @property
    def pad_multiple(self) -> int:
        """The input's padding: stride-8 features tile into whole windows, and stride 16 exists."""
        return max(16, 8 * self.window)
