"""The heavy refiner: pytorch_wavelets DWT with a choice of wavelet (db1, db2, db4); same architecture.

    python model/refiner_dwt_maggie_heavydwt.py --wave db2 [--base_channels 32] [--size 512x512]

prints the parameter count and runs one forward pass on a random image.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

from typing import Sequence

from model.refiner import Refiner, build_refiner
from model.refiner_dwt_maggie import describe
from utils.cli import ArgumentParser, UsageError, run_main

WAVES = ("db1", "db2", "db4")


def build_heavy(wave: str = "db1", base_channels: int = 32, **kwargs) -> Refiner:
    """The heavy variant with wavelet ``wave`` (pytorch_wavelets, periodization mode, float32)."""
    if wave not in WAVES:
        raise ValueError(f"wave must be one of {WAVES}, got {wave!r}")
    return build_refiner(f"heavy_{wave}", base_channels, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wave", default="db1", choices=WAVES)
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--size", default="512x512", help="HxW of the random test image")
    args = parser.parse_args(argv)
    try:
        model = build_heavy(args.wave, args.base_channels)
    except ValueError as exc:  # a width the config refuses: a bad command line
        raise UsageError(f"--base_channels: {exc}") from None
    describe(model, args.size)
    return 0


if __name__ == "__main__":
    run_main(main)
