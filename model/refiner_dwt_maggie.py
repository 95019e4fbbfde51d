"""The light refiner: differentiable plain-torch Haar DWT (see model/refiner.py for the architecture).

    python model/refiner_dwt_maggie.py [--base_channels 32] [--size 512x512]

prints the parameter count and runs one forward pass on a random image.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import time
from typing import Sequence

import torch

from model.refiner import Refiner, build_refiner, count_parameters
from utils.cli import ArgumentParser, UsageError, UserError, run_main


def build_light(base_channels: int = 32, **kwargs) -> Refiner:
    """The light variant: Haar DWT in plain torch."""
    return build_refiner("light", base_channels, **kwargs)


def describe(model: Refiner, size: str) -> None:
    """Print the parameter count and the outputs of one forward pass on a random image of ``size`` (HxW)."""
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like HxW (e.g. 512x512), got {size!r}") from None
    model.eval()
    image, guide = torch.rand(1, 3, h, w), (torch.rand(1, 1, h, w) > 0.5).float()
    start = time.perf_counter()
    with torch.no_grad():
        out = model(image, guide)
    seconds = time.perf_counter() - start
    print(f"variant {model.variant}: {count_parameters(model):,} parameters, config {model.config}")
    print(f"forward on 1x3x{h}x{w} (CPU, random weights): {seconds:.2f} s; alpha {tuple(out.alpha.shape)} in "
          f"[{out.alpha.min():.3f}, {out.alpha.max():.3f}], focus map {tuple(out.focus_map.shape)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--size", default="512x512", help="HxW of the random test image")
    args = parser.parse_args(argv)
    try:
        model = build_light(args.base_channels)
    except ValueError as exc:  # a width the config refuses: a bad command line
        raise UsageError(f"--base_channels: {exc}") from None
    describe(model, args.size)
    return 0


if __name__ == "__main__":
    run_main(main)
