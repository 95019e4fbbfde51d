"""Training throughput (samples/s) per variant: the data loader alone, the model step alone, and the full step,
measured side by side in one run so the bottleneck shows.

    python bench/bench_train.py                                  # 512x512 crops, batch 8, every variant
    python bench/bench_train.py --quick                          # a CPU-sized run (128x128, batch 2, 3 steps)
    python bench/bench_train.py --root data/demo --variants light heavy_db2 --num_workers 8

Without ``--root`` it writes synthetic frames (``--frame_size``, PNG like the real layout) to a temporary folder,
so PNG decoding, resizing, cropping and guide perturbation cost what they cost on real data. On CUDA the model
step runs under AMP (bf16 when supported, else fp16), as the solver does; on CPU in fp32.
"""
from __future__ import annotations

from pathlib import Path


import utils.offline  # noqa: F401

import argparse
import tempfile
import time

import numpy as np
import torch

from pipeline.data import MattingFrames, StepBatchSampler, list_clips, list_frames
from pipeline.losses import LossWeights, matting_losses
from pipeline.solver import refiner_api
from utils.cli import run_main
from utils.images import write_png
from utils.paths import DataLayout


def synthetic_frames(root: Path, size: tuple[int, int], clips: int = 2, frames: int = 4) -> None:
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    layout = DataLayout(root)
    for c in range(clips):
        bgr = np.clip(rng.random((h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w], 0, 1)
        fgr = np.clip(0.6 + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
        for f in range(frames):
            r = np.hypot(yy - h / 2, xx - w / 2 - 4 * f)
            a = np.clip((min(h, w) / 3 - r) / 6 + 0.5, 0, 1).astype(np.float32)
            img = a[..., None] * fgr + (1 - a[..., None]) * bgr
            for layer, arr, bits in (("image", img, 8), ("alpha", a, 16), ("fgr", fgr, 8), ("bgr", bgr, 8)):
                write_png(layout.frames("train", layer, f"c{c}") / f"{f:04d}.png", arr.astype(np.float32), bits)


def rate(n_samples: int, seconds: float) -> float:
    return n_samples / max(seconds, 1e-9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="a data root with frames/train (default: synthetic frames)")
    p.add_argument("--variants", nargs="+", default=None, help="default: every variant of model.refiner")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--base_channels", type=int, default=32)
    p.add_argument("--frame_size", type=int, nargs=2, default=(540, 960), help="synthetic frame H W")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--quick", action="store_true", help="crop 128, batch 2, 3 steps, 0 workers, 270x480 frames")
    args = p.parse_args(argv)
    if args.quick:
        args.crop, args.batch_size, args.steps, args.num_workers, args.frame_size = 128, 2, 3, 0, (270, 480)
    if args.threads:
        torch.set_num_threads(args.threads)
    api = refiner_api()
    variants = args.variants or list(api.VARIANTS)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        synthetic_frames(Path(root), tuple(args.frame_size))
    frames = list_frames(root, "train", list_clips(root, "train"))
    ds = MattingFrames(root, frames, crop=args.crop, guide="perturb", with_fb=True)
    n = args.steps + 2

    def loader():
        return torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(len(ds), args.batch_size, 0, n),
                                           num_workers=args.num_workers, pin_memory=device.type == "cuda")

    t = None
    for i, _ in enumerate(loader()):  # loader alone
        if i == 1:
            t = time.perf_counter()
    loader_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)

    print(f"device {device}{' AMP ' + str(amp).split('.')[-1] if amp else ' fp32'}, crop {args.crop}, batch "
          f"{args.batch_size}, {args.steps} timed steps, {args.num_workers} loader workers, torch threads "
          f"{torch.get_num_threads()}, model {api.__name__}")
    print(f"{'variant':<12}{'loader':>10}{'model step':>12}{'full step':>11}  (samples/s)  bottleneck")
    weights = LossWeights()
    for v in variants:
        torch.manual_seed(0)
        model = api.build_refiner(v, base_channels=args.base_channels).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

        def step(b):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(b["image"], b["guide"])
            loss, _ = matting_losses({s: a.float() for s, a in out.alpha_os.items()}, b["alpha"], weights,
                                     b["image"], b["fgr"], b["bgr"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        fixed = {k: v.to(device) for k, v in next(iter(loader())).items()}
        for i in range(n):  # model step alone, on one resident batch
            if i == 2:
                sync()
                t = time.perf_counter()
            step(fixed)
        sync()
        model_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)
        for i, b in enumerate(loader()):  # full step
            if i == 2:
                sync()
                t = time.perf_counter()
            step({k: x.to(device, non_blocking=True) for k, x in b.items()})
        sync()
        full_rate = rate(args.steps * args.batch_size, time.perf_counter() - t)
        neck = "loader" if loader_rate < model_rate else "model"
        print(f"{v:<12}{loader_rate:>10.2f}{model_rate:>12.2f}{full_rate:>11.2f}  loader/model {loader_rate / model_rate:.2f}"
              f"  {neck}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
