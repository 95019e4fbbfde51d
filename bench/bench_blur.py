"""Benchmark of dof_blur.render at 1920x1080, 16 layers, sigma_max 16.

Prints, measured side by side in one run: megapixels/s of ``render``; of one full-frame ``cv2.GaussianBlur``
of the largest sigma (the target: render costs at most 4x that); of the brute-force per-pixel reference on a
crop; their ratios; and render's peak memory (Python-tracked allocations and the process's peak RSS growth).

    python bench/bench_blur.py [--repeats 3] [--size 1080x1920] [--crop 48]
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import platform
import resource
import time
import tracemalloc

import cv2
import numpy as np
import psutil

from preprocess.dof_blur import render, render_reference


def scene(h: int, w: int, seed: int = 0):
    """A textured subject (ellipse, gentle tilt) in front of a textured plate receding to the top."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, (h // 8, w // 8, 3)).astype(np.float32)
    bgr = np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
    fgr = np.clip(rng.uniform(0, 1, (h, w, 3)), 0, 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (0.18 * w)) ** 2 + ((yy - 0.6 * h) / (0.35 * h)) ** 2)
    alpha = np.clip((1 - r) * 20, 0, 1)
    disp_bg = np.tile(np.linspace(0.0, 0.7, h, dtype=np.float32)[:, None], (1, w))
    disp_fg = 0.8 + 0.05 * (yy - 0.6 * h) / h
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return f32(fgr), f32(alpha), f32(bgr), f32(disp_fg), f32(disp_bg)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1080x1920")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--crop", type=int, default=48, help="side of the crop the brute-force reference runs on")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    mp = h * w / 1e6
    focus, coc, smax, layers = 0.8, 30.0, 16.0, 16
    fgr, alpha, bgr, disp_fg, disp_bg = scene(h, w)
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPU threads, "
          f"cv2 threads {cv2.getNumThreads()}, GPU timed below when present")
    print(f"scene {w}x{h}, n_layers {layers}, sigma_max {smax}, coc_scale {coc}, focus {focus}")

    run = lambda: render(fgr, alpha, bgr, disp_fg, disp_bg, focus, coc, smax, layers)  # noqa: E731
    inputs_mib = sum(a.nbytes for a in (fgr, alpha, bgr, disp_fg, disp_bg)) / 2**20
    # memory first, on the first call: the process's peak RSS has not been raised by an earlier render
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # ru_maxrss is KiB on Linux

    t_render = best_time(run, args.repeats)
    t_gauss = best_time(lambda: cv2.GaussianBlur(bgr, (0, 0), smax), args.repeats)
    c = args.crop
    y0, x0 = int(0.6 * h) - c // 2, int(0.5 * w - 0.18 * w) - c // 2  # a crop on the subject's edge
    crop = [a[y0:y0 + c, x0:x0 + c] for a in (fgr, alpha, bgr, disp_fg, disp_bg)]
    t0 = time.perf_counter()
    render_reference(*crop, focus, coc, smax)
    t_ref = time.perf_counter() - t0
    mp_crop = c * c / 1e6

    print(f"render                      {mp / t_render:8.2f} MP/s   {t_render * 1e3:8.1f} ms/frame")
    print(f"cv2.GaussianBlur sigma {smax:4.1f}  {mp / t_gauss:8.2f} MP/s   {t_gauss * 1e3:8.1f} ms/frame")
    print(f"brute-force reference       {mp_crop / t_ref:8.4f} MP/s   ({c}x{c} crop, {t_ref:.1f} s)")
    print(f"ratio render / one full-frame Gaussian of the largest sigma: {t_render / t_gauss:.2f}x (target <= 4x)")
    print(f"speed-up of render over the brute-force reference: {(mp / t_render) / (mp_crop / t_ref):.0f}x")
    try:
        import torch

        if torch.cuda.is_available():  # the torch path on the GPU, side by side
            gpu = lambda: (render(fgr, alpha, bgr, disp_fg, disp_bg, focus, coc, smax, layers, device="cuda"),  # noqa: E731
                           torch.cuda.synchronize())
            gpu()
            t_gpu = best_time(gpu, args.repeats)
            print(f"render on {torch.cuda.get_device_name()} {mp / t_gpu:8.2f} MP/s   {t_gpu * 1e3:8.1f} ms/frame "
                  f"({t_render / t_gpu:.1f}x the CPU path)")
        else:
            print("render on GPU: no CUDA device here")
    except ImportError:
        pass
    print(f"render working memory: peak {peak / 2**20:.0f} MiB of tracked (numpy) allocations, process peak RSS "
          f"+{rss_growth:.0f} MiB; plus the frame's inputs {inputs_mib:.0f} MiB. The worker renders the frames of a "
          f"chunk one at a time, so a 1080p chunk peaks at about {peak / 2**20 + inputs_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
