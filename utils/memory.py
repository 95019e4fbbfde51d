"""Memory budget: how many frames fit in one chunk, from free GPU memory or free RAM, with a safety factor.

Used by the blur worker (``./run_blur.sh``) to pick its chunk size; the launcher halves it after a crash.
"""
from __future__ import annotations

import argparse

import psutil

# bytes held per pixel for every frame of a chunk: fgr, bgr (3 float32 each), alpha, two disparities
CHUNK_BYTES_PER_PIXEL = 4 * (3 + 3 + 1 + 2)
# transient working memory per pixel while one frame renders: the subject and background layers, their
# per-level weights and blurred copies, and the four outputs. bench/bench_blur.py measured a peak of 237 MiB
# at 1920x1080 (~120 B/px); twice that here as a margin
WORK_BYTES_PER_PIXEL = 240


def free_bytes(device: str = "cpu") -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` for cuda, ``psutil`` available RAM otherwise."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return int(psutil.virtual_memory().available)


def frames_per_chunk(height: int, width: int, device: str = "cpu", safety: float = 0.5, max_frames: int = 32,
                     free: int | None = None, bytes_per_pixel: int = CHUNK_BYTES_PER_PIXEL,
                     work_bytes_per_pixel: int = WORK_BYTES_PER_PIXEL) -> int:
    """Frames per chunk so that ``safety`` x free memory holds the chunk plus one frame's working set.

    Always at least 1 (a chunk of one frame is the smallest unit of work) and at most ``max_frames``.
    """
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    free = free_bytes(device) if free is None else free
    pixels = height * width
    budget = free * safety - pixels * work_bytes_per_pixel
    return int(max(1, min(max_frames, budget // max(pixels * bytes_per_pixel, 1))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="print the frames per chunk that fit in free memory")
    p.add_argument("--size", default="1080x1920", help="HxW of a frame (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--safety", type=float, default=0.5)
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(frames_per_chunk(h, w, args.device, args.safety))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
