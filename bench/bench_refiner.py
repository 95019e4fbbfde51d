"""Benchmarks of the DWT refiner, measured side by side in one run; prints markdown tables.

(a) light Haar DWT (model.wavelets) vs pytorch_wavelets db1 on the same tensor (default 1x32x1080x1920),
    forward + backward: results compared (max abs difference) and the speed ratio;
(b) refiner throughput (frames/s, batch 1) per variant at 512x512 and 1920x1080: CPU fp32 eager, and on a
    CUDA device fp16 autocast (``--compile`` adds torch.compile) when one is available; with ``RVM_ROOT``
    pointing to a RobustVideoMatting clone, its MobileNetV3 model runs beside ours in the same run;
(c) parameter counts and peak memory of one forward pass (CUDA: max allocated; CPU: peak RSS growth, sampled);
(d) the sparse path (``model.sparse``) beside the dense one and RVM on a typical person frame (one procedural
    person rendered natively at 1920x1080 by the demo generator over one of its backgrounds; 4K is the same
    frame upscaled 2x), with an accurate guide and a mask-stage-like (perturbed) one: GFLOP per frame
    (``torch.utils.flop_counter``, the same counter for every model), tiles and the fraction of pixels they
    cover, peak memory, frames/s side by side, and MAD against the frame's true alpha (dense vs sparse).
    ``--ckpt`` gives a trained refiner (a random one's gate never opens, so it runs no tiles); with its fine
    stage trained (``pipeline/train_fine.py``: runs/fine/s0/fine.pt) the sparse rows are the fine stage's
    16-px tiles, else the fallback's (the whole refiner in 64-px tiles); the row says which. With ``--device
    cuda`` the same table runs on the GPU, fp16 autocast (``--fp32`` for fp32), every frame timed, RVM beside it.

    python bench/bench_refiner.py                       # default: about 3 minutes on a 2-core CPU
    python bench/bench_refiner.py --repeats 10 --repeats_hd 5 --hd_variants all --dwt_channels 32
    RVM_ROOT=../rvm python bench/bench_refiner.py --skip_dwt --skip_models --ckpt runs/fine/s0/fine.pt
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import ctypes
import gc
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import psutil
import torch

from model.config import VARIANTS
from model.refiner import build_refiner, count_parameters
from model.wavelets import HaarDWT, _import_pytorch_wavelets
from utils.cli import run_main


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS growth measures the next block alone."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak growth of this process's resident memory while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


# ------------------------------------------------------------------------------------------------ (a) DWT
def measure_dwt(device: torch.device, channels: int, h: int, w: int, warmup: int, repeats: int) -> dict:
    """Light ``HaarDWT`` vs pytorch_wavelets db1, forward + backward on one 1xCxHxW tensor, timed alternately.

    Returns ``{'ms_light', 'ms_pytorch_wavelets', 'ratio', 'max_abs_diff'}`` (median ms; ratio = pytorch_wavelets
    / light; the difference is the largest over the low band, the high bands and the input gradient).
    """
    ptw = _import_pytorch_wavelets()
    torch.manual_seed(0)
    x = torch.rand(1, channels, h, w, device=device)
    g_ll = torch.randn(1, channels, h // 2, w // 2, device=device)
    g_hi = torch.randn(1, channels, 3, h // 2, w // 2, device=device)
    light = HaarDWT()
    heavy = ptw.DWTForward(J=1, wave="db1", mode="zero").to(device)

    def run(op):
        xi = x.detach().requires_grad_(True)
        if op is light:
            ll, hi = light(xi)
        else:
            ll, his = heavy(xi)
            hi = his[0]
        (gx,) = torch.autograd.grad((ll, hi), xi, (g_ll, g_hi))
        return ll, hi, gx

    a, b = run(light), run(heavy)
    diff = max((p - q).abs().max().item() for p, q in zip(a, b))
    del a, b
    times: dict[str, list[float]] = {"light": [], "heavy": []}
    for r in range(warmup + repeats):  # alternate, so load changes on a shared machine hit both alike
        for key, op in (("light", light), ("heavy", heavy)):
            seconds = time_it(lambda: run(op), device, 0, 1)
            if r >= warmup:
                times[key].append(seconds)
    t_light, t_heavy = (sorted(t)[len(t) // 2] for t in (times["light"], times["heavy"]))
    return {"ms_light": t_light * 1e3, "ms_pytorch_wavelets": t_heavy * 1e3, "ratio": t_heavy / t_light,
            "max_abs_diff": diff}


def bench_dwt(device: torch.device, channels: int, h: int, w: int, warmup: int, repeats: int) -> None:
    r = measure_dwt(device, channels, h, w, warmup, repeats)
    diff = r["max_abs_diff"]
    print(f"\n### (a) DWT forward+backward, 1x{channels}x{h}x{w} float32, {device.type}\n")
    print("| transform | ms (median of %d) | max abs diff (ll, highs, grad) |" % repeats)
    print("|---|---|---|")
    print(f"| light HaarDWT (model.wavelets) | {r['ms_light']:.1f} | {diff:.2e} |")
    print(f"| pytorch_wavelets DWTForward db1 | {r['ms_pytorch_wavelets']:.1f} | (reference) |")
    print(f"\nspeed ratio pytorch_wavelets / light: **{r['ratio']:.2f}x** "
          f"({'equal within 1e-5' if diff < 1e-5 else 'DIFFERENT: ' + str(diff)})")


# ----------------------------------------------------------------------------------------- (b, c) refiner
def load_rvm(root: str):
    """RobustVideoMatting's MattingNetwork('mobilenetv3') from a local clone (random weights), or None."""
    init = Path(root) / "model" / "__init__.py"
    if not init.is_file():
        print(f"RVM_ROOT={root}: no model/__init__.py there; skipping RVM")
        return None
    spec = importlib.util.spec_from_file_location("rvm_model", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["rvm_model"] = module  # its own package name differs from ours ('model')
    spec.loader.exec_module(module)
    return module.MattingNetwork("mobilenetv3").eval()


def bench_models(device: torch.device, sizes: list[tuple[int, int]], variants: list[str], hd_variants: list[str],
                 base: int, warmup: int, repeats: int, warmup_hd: int, repeats_hd: int, fp16: bool,
                 compile_: bool) -> None:
    models: dict[str, torch.nn.Module] = {v: build_refiner(v, base).eval().to(device) for v in variants}
    rvm_root = os.environ.get("RVM_ROOT")
    if rvm_root:
        rvm = load_rvm(rvm_root)
        if rvm is not None:
            models["RVM mobilenetv3"] = rvm.to(device)
    if compile_:
        models = {k: torch.compile(m) for k, m in models.items()}
    precision = "fp16 autocast" if fp16 else "fp32"
    print(f"\n### (b, c) refiner throughput, batch 1, {device.type} {precision}, eager"
          f"{' + torch.compile' if compile_ else ''}, random weights, base_channels={base}\n")
    print("| model | params | size | frames/s | ms/frame (median) | peak memory MiB |")
    print("|---|---|---|---|---|---|")
    for h, w in sizes:
        hd = h * w > 1024 * 1024
        names = [n for n in models if not (hd and n in VARIANTS and n not in hd_variants)]
        rounds_warm, rounds = (warmup_hd, repeats_hd) if hd else (warmup, repeats)
        rvm_ratio = 0.25 if hd else 1.0  # RVM's recommendation for HD; full resolution for small inputs
        for row in measure_models({n: models[n] for n in names}, device, h, w, rounds_warm, rounds, fp16, rvm_ratio):
            print(f"| {row['label']} | {row['params_m']:.2f} M | {w}x{h} | {row['fps']:.2f} | "
                  f"{row['ms']:.1f} | {row['peak_mib']:.0f} |", flush=True)


def measure_models(models: dict[str, torch.nn.Module], device: torch.device, h: int, w: int, warmup: int,
                   repeats: int, fp16: bool, rvm_ratio: float = 1.0) -> list[dict]:
    """Batch-1 forward (no grad) of each model on one random HxW image + binary guide, timed round-robin.

    Models named after a refiner variant are called ``model(image, guide).alpha``; any other is taken as RVM,
    ``model(image, downsample_ratio=rvm_ratio)``. The first call of each model (also a warm-up) measures its
    peak memory (CUDA: max allocated above what was allocated before; CPU: sampled RSS growth); then
    ``max(0, warmup - 1)`` untimed and ``repeats`` timed rounds. One row per model: name, label, params_m,
    fps, ms (median), peak_mib.
    """
    image = torch.rand(1, 3, h, w, device=device)
    guide = (torch.rand(1, 1, h, w, device=device) > 0.5).float()
    names = list(models)

    def step(name):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            if name in VARIANTS:
                return models[name](image, guide).alpha
            return models[name](image, downsample_ratio=rvm_ratio)[0]

    mem = {}
    for name in names:  # the first run of each model (also a warm-up) measures its peak memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step(name)
            mem[name] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        else:
            with PeakRSS() as peak:
                step(name)
            mem[name] = peak.mib
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(0, warmup - 1) + repeats):  # round-robin: load changes hit every model alike
        for name in names:
            seconds = time_it(lambda: step(name), device, 0, 1)
            if r >= max(0, warmup - 1):
                times[name].append(seconds)
    rows = []
    for name in names:
        seconds = sorted(times[name])[len(times[name]) // 2]
        rows.append({"name": name, "label": name if name in VARIANTS else f"{name} (downsample_ratio {rvm_ratio})",
                     "params_m": count_parameters(models[name]) / 1e6, "fps": 1 / seconds, "ms": seconds * 1e3,
                     "peak_mib": mem[name]})
    return rows


# ------------------------------------------------------------------------------------------ (d) sparse path
def person_frame(h: int, w: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A typical person frame at HxW: image (1,3,H,W), true alpha (1,1,H,W) and guides {"accurate", "mask"}
    (the truth binarised at 0.5; the mask stage's perturbed ground truth), rendered by the demo generator at
    ``min(H, 1080)`` rows and resized (so 4K is 1080p upscaled, a person of the same size in the frame)."""
    import cv2
    import numpy as np

    from preprocess.make_demo_data import ClipSpec, render_background, render_clip
    from preprocess.perturb import accurate_guide, perturb_guide

    rh, rw = (h, w) if h <= 1080 else (1080, round(w * 1080 / h))
    fgr, pha, _, _ = render_clip(seed, ClipSpec(rw, rh, 1, 25.0), 1)
    bgr, _ = render_background(seed, rw, rh)
    fgr, pha = fgr[0], pha[0]
    if (rh, rw) != (h, w):
        fgr, bgr, pha = (cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) for x in (fgr, bgr, pha))
    image = pha[..., None] * fgr + (1 - pha[..., None]) * bgr
    guides = {"accurate": accurate_guide(pha), "mask": perturb_guide(pha, np.random.default_rng(seed))}
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return (as_t(image).permute(2, 0, 1)[None], as_t(pha)[None, None],
            {k: as_t(g)[None, None] for k, g in guides.items()})


def gflop(fn: Callable[[], object]) -> float:
    """GFLOP of one call of ``fn`` (torch.utils.flop_counter: convolutions, matmuls, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def bench_sparse(ckpt: str | None, sizes: list[tuple[int, int]], base: int, repeats: int,
                 timed_max_pixels: int = 2_100_000, device: torch.device = torch.device("cpu"),
                 fp16: bool = False) -> list[dict]:
    """Section (d); prints one markdown table and returns its rows (name, size, guide, gflop, tiles, coverage,
    peak_mib, fps or None, mad or None). On the CPU, frames above ``timed_max_pixels`` are counted and measured
    for memory but not timed (on a 2-core CPU a dense 4K pass takes a minute); on CUDA every frame is timed, in
    fp16 autocast when ``fp16``."""
    import contextlib

    from model.checkpoint import load_refiner
    from model.sparse import refine_sparse

    model = (load_refiner(ckpt)[0] if ckpt else build_refiner("light", base).eval()).to(device)
    rvm = load_rvm(os.environ["RVM_ROOT"]) if os.environ.get("RVM_ROOT") else None
    rvm = rvm.to(device) if rvm is not None else None
    cuda = device.type == "cuda"
    where = f"CUDA {'fp16 autocast' if fp16 else 'fp32'}" if cuda else "CPU fp32, one thread unless --threads"
    print(f"\n### (d) sparse vs dense path, {where}, refiner "
          f"{ckpt or f'random light base_channels={base}'} (base_channels {model.config.base_channels})\n")

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if cuda and fp16 else contextlib.nullcontext()

    def peak_of(fn):  # (output, peak MiB of one call): CUDA max allocated above the start, CPU sampled RSS growth
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = fn()
            torch.cuda.synchronize(device)
            return out, (torch.cuda.max_memory_allocated(device) - before) / 2**20
        with PeakRSS() as peak:
            out = fn()
        return out, peak.mib

    print("| path | size | guide | GFLOP | tiles | pixels in tiles | peak MiB | frames/s | MAD x1e3 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for h, w in sizes:
        image, alpha, guides = person_frame(h, w)
        image, alpha = image.to(device), alpha.to(device)
        guides = {k: g.to(device) for k, g in guides.items()}
        calls: dict[str, Callable[[], object]] = {}
        info: dict[str, dict] = {}
        for gname, guide in guides.items():
            calls[f"dense/{gname}"] = lambda g=guide: model(image, g).alpha
            sparse_name = "sparse (fine stage)" if model.fine_trained else "sparse (fallback)"
            calls[f"{sparse_name}/{gname}"] = lambda g=guide: refine_sparse(model, image, g)
        if rvm is not None:
            calls["RVM mobilenetv3 (0.25)/-"] = lambda: rvm(image, downsample_ratio=0.25)[0]
        calls = {name: (lambda fn=fn: _autocast_call(fn, autocast)) for name, fn in calls.items()}
        with torch.no_grad():
            for name, fn in calls.items():
                out, peak_mib = peak_of(fn)
                row = {"name": name.split("/")[0], "size": f"{w}x{h}", "guide": name.split("/")[1],
                       "gflop": gflop(fn), "peak_mib": peak_mib, "tiles": "-", "coverage": "-", "fps": None,
                       "mad": None}
                if name.startswith("sparse"):
                    sp, out = out, out.alpha  # the measured call's own tiles: no extra pass
                    row["tiles"], row["coverage"] = int(sp.tiles[0]), f"{float(sp.coverage[0]) * 100:.1f}%"
                if not name.startswith("RVM"):
                    row["mad"] = float((out.float() - alpha).abs().mean()) * 1e3
                info[name] = row
            if cuda or h * w <= timed_max_pixels:
                times: dict[str, list[float]] = {n: [] for n in calls}
                for _ in range(repeats):  # round-robin: load changes hit every path alike
                    for name, fn in calls.items():
                        times[name].append(time_it(fn, device, 0, 1))
                for name in calls:
                    info[name]["fps"] = 1 / sorted(times[name])[len(times[name]) // 2]
        for row in info.values():
            fps = f"{row['fps']:.2f}" if row["fps"] is not None else "not timed"
            mad = f"{row['mad']:.2f}" if row["mad"] is not None else "-"
            print(f"| {row['name']} | {row['size']} | {row['guide']} | {row['gflop']:.2f} | {row['tiles']} | "
                  f"{row['coverage']} | {row['peak_mib']:.0f} | {fps} | {mad} |", flush=True)
            rows.append(row)
    return rows


def _autocast_call(fn: Callable[[], object], autocast: Callable[[], object]) -> object:
    with autocast():
        return fn()


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--skip_dwt", action="store_true")
    p.add_argument("--skip_models", action="store_true")
    p.add_argument("--dwt_channels", type=int, default=32)
    p.add_argument("--dwt_size", default="1920x1080", help="WxH of the DWT tensor")
    p.add_argument("--dwt_repeats", type=int, default=None, help="default: 2 on CPU, 50 on CUDA")
    p.add_argument("--sizes", default="512x512,1920x1080", help="WxH list for the throughput table")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--hd_variants", default="light,none", help="variants timed at sizes above 1 MPix ('all')")
    p.add_argument("--base_channels", type=int, default=32)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per model at small sizes "
                                                             "(default: 2 on CPU, 100 on CUDA)")
    p.add_argument("--repeats_hd", type=int, default=None, help="timed runs above 1 MPix (default: 1 CPU, 100 CUDA)")
    p.add_argument("--skip_sparse", action="store_true")
    p.add_argument("--sparse_sizes", default="1920x1080,3840x2160", help="WxH list of the sparse-path table (d)")
    p.add_argument("--sparse_repeats", type=int, default=3, help="timed rounds of table (d)")
    p.add_argument("--ckpt", default=None, help="trained refiner checkpoint for table (d) (default: random weights)")
    p.add_argument("--fp32", action="store_true", help="on CUDA, time fp32 instead of fp16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the models (CUDA)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a loaded machine more threads than free cores make "
                        "OpenMP wait on each other; 0 = torch's choice)")
    args = p.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    print(f"machine: {psutil.cpu_count(logical=True)} CPU threads (torch uses {torch.get_num_threads()}), "
          f"{torch.cuda.get_device_name(device) if cuda else 'no GPU'}; torch {torch.__version__}")
    if not args.skip_dwt:
        w, h = (int(v) for v in args.dwt_size.lower().split("x"))
        reps = args.dwt_repeats or (50 if cuda else 2)
        bench_dwt(device, args.dwt_channels, h, w, warmup=10 if cuda else 1, repeats=reps)
    if not args.skip_models:
        variants = [v for v in args.variants.split(",") if v]
        hd_variants = variants if args.hd_variants == "all" else args.hd_variants.split(",")
        bench_models(device, [parse_size(s) for s in args.sizes.split(",")], variants, hd_variants,
                     args.base_channels, warmup=20 if cuda else 1, repeats=args.repeats or (100 if cuda else 2),
                     warmup_hd=20 if cuda else 0, repeats_hd=args.repeats_hd or (100 if cuda else 1),
                     fp16=cuda and not args.fp32, compile_=args.compile)
    if not args.skip_sparse:
        bench_sparse(args.ckpt, [parse_size(s) for s in args.sparse_sizes.split(",")], args.base_channels,
                     args.sparse_repeats if not cuda else max(args.sparse_repeats, 20), device=device,
                     fp16=cuda and not args.fp32)
    return 0


if __name__ == "__main__":
    run_main(main)
