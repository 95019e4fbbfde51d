"""Stage 2b: occlusion-aware thin-lens depth-of-field blur of composed clips (library ``render`` + per-clip worker).

The model (see README, "Depth and blur"):

* thin lens: a pixel at disparity ``d`` is blurred by a Gaussian of standard deviation, in pixels,
  ``sigma = min(coc_scale * |d - focus_disp|, sigma_max)`` (``kernel='disk'``: a pillbox of radius ``2 * sigma``);
* occlusion-aware layering: the background plate is blurred on its own by its own disparity (the full plate
  exists, so nothing of the subject bleeds into it); the subject is blurred as premultiplied colour and alpha
  together by its own disparity; then ``image = fgr_blur_premult + (1 - alpha_blur) * bgr_blur``. The outputs
  keep the compositing equation exact: ``alpha = alpha_blur``, ``fgr = fgr_blur_premult / alpha_blur``,
  ``bgr = bgr_blur``, so ``image = alpha * fgr + (1 - alpha) * bgr``;
* each pixel gathers the blur of its own sigma. Instead of one kernel per pixel, a layer is blurred once per
  sigma level (levels spaced evenly in ``log(1 + sigma)``, at most ``n_layers``, one level when the whole layer
  sits at one disparity) and each pixel interpolates between its two neighbouring levels linearly in the
  sampled kernel's variance (a mix of two blurs is a blur of the mixed variance). Levels with sigma >= 4 px are blurred at 1/2, 1/4 or 1/8
  resolution (keeping at least 2 px of sigma there, compensating the area filter's own variance) and upsampled.

Focus is on the subject by default: the median subject disparity over the whole clip, so it never flickers.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import functools
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from preprocess import depth as depth_stage
from utils import memory
from utils.atomic import Manifest, clean_stale_temps, write_json_atomic
from utils.cli import (EXIT_OOM, ArgumentParser, UsageError, UserError, add_common_args, finite_float, nonneg_int,
                       positive_int, run_main, splits_of, unit_seed)
from utils.images import read_image, write_png
from utils.paths import DataLayout, frame_name
from utils.stage import ClipRunner, open_stage

KERNELS = ("gaussian", "disk")
FULL_RES_BELOW = 4.0   # sigmas below this are blurred at full resolution
MIN_LOW_SIGMA = 2.0    # keep at least this sigma (px) at reduced resolution: less aliasing
MAX_FACTOR = 8
BORDER = cv2.BORDER_REFLECT_101


# -------------------------------------------------------------------------------------------------- kernels
def sigma_map(disp: np.ndarray, focus_disp: float | np.ndarray, coc_scale: float, sigma_max: float) -> np.ndarray:
    """Thin-lens blur in pixels: ``min(coc_scale * |disp - focus_disp|, sigma_max)`` (float32, disp's shape)."""
    return np.minimum(coc_scale * np.abs(disp.astype(np.float32) - np.float32(focus_disp)),
                      np.float32(sigma_max)).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised pillbox of ``radius`` px with a one-pixel anti-aliased rim."""
    r = int(math.ceil(radius + 0.5))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    k = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, sigma: float, kernel: str = "gaussian") -> np.ndarray:
    """One blur at full resolution: ``cv2.GaussianBlur(img, (0, 0), sigma)`` (reflect-101 border), or the disk.

    sigma < 0.05 px (disk radius < 0.1 px) is the identity.
    """
    if kernel == "gaussian":
        return img if sigma < 0.05 else cv2.GaussianBlur(img, (0, 0), float(sigma), borderType=BORDER)
    if kernel == "disk":
        return img if 2 * sigma < 0.1 else cv2.filter2D(img, -1, disk_kernel(2.0 * sigma), borderType=BORDER)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def reduction_factor(sigma: float) -> int:
    """Power-of-two downscale for blurring ``sigma`` cheaply: 1 below 4 px, and >= 2 px of sigma kept."""
    if sigma < FULL_RES_BELOW:
        return 1
    return int(min(MAX_FACTOR, 2 ** math.floor(math.log2(sigma / MIN_LOW_SIGMA))))


def low_res_sigma(sigma: float, factor: int) -> float:
    """Sigma to use at 1/factor resolution so that area-downscale + blur + upsample ~ blur by ``sigma``."""
    if factor == 1:
        return sigma
    # the area filter is a box of width `factor`, variance (factor^2 - 1) / 12 full-resolution px^2
    return math.sqrt(max(sigma * sigma - (factor * factor - 1) / 12.0, 0.0)) / factor


def sigma_levels(sig: np.ndarray, n_layers: int) -> np.ndarray:
    """At most ``n_layers`` sigma levels spanning ``sig``'s range, evenly spaced in ``log(1 + sigma)``.

    Dense near zero, where a small error in sigma is most visible; a single level when the range is empty.
    """
    lo, hi = float(sig.min()), float(sig.max())
    if hi - lo < 1e-4 or n_layers < 2:
        return np.array([0.5 * (lo + hi)], np.float32)
    # no more levels than one per 0.05 px of range
    n = int(min(n_layers, max(2, math.ceil((hi - lo) / 0.05) + 1)))
    levels = np.expm1(np.linspace(np.log1p(lo), np.log1p(hi), n))
    levels[0], levels[-1] = lo, hi
    return levels.astype(np.float32)


def kernel_variance(sigma: np.ndarray | float, kernel: str = "gaussian") -> np.ndarray:
    """Variance (px^2, along one axis) of the sampled kernel actually used for blur ``sigma``.

    For a Gaussian this is ~sigma^2 above 1 px but much smaller below 0.5 px (a sampled Gaussian of sigma 0.3
    barely reaches its neighbours), which is why levels are interpolated in this variance and not in sigma.
    Evaluated through a fine lookup table, so it costs one interpolation per pixel.
    """
    sig = np.asarray(sigma, np.float32)
    hi = max(float(sig.max(initial=0.0)), 0.05)
    grid = np.linspace(0.0, hi, 257)
    table = np.array([_variance_of(float(g), kernel) for g in grid])
    return np.interp(sig, grid, table).astype(np.float32)


def _variance_of(sigma: float, kernel: str) -> float:
    if kernel == "gaussian":
        if sigma < 0.05:
            return 0.0
        if sigma > 6.0:  # the sampled kernel is the continuous one here (cv2 truncates at 4 sigma: -0.3%)
            return sigma * sigma
        k = cv2.getGaussianKernel(int(round(sigma * 8 + 1)) | 1, sigma, cv2.CV_64F)[:, 0]
    else:
        if 2 * sigma < 0.1:
            return 0.0
        k = disk_kernel(2.0 * sigma).sum(axis=0).astype(np.float64)
    i = np.arange(len(k)) - len(k) // 2
    return float((k * i * i).sum())


def level_coordinate(sig: np.ndarray, levels: np.ndarray, kernel: str = "gaussian") -> np.ndarray:
    """Each pixel's position ``k + f`` between levels k and k+1, linear in the sampled kernel's variance.

    The pixel's weight on level k is the hat ``max(0, 1 - |t - k|)``. A mix of two blurs with weights 1-f and f
    is a blur whose variance is the same mix of theirs, so each pixel gets a kernel of exactly the variance of
    its own sigma's kernel.
    """
    if len(levels) == 1:
        return np.zeros(sig.shape, np.float32)
    v = kernel_variance(np.clip(sig.astype(np.float32), levels[0], levels[-1]), kernel)
    lv = kernel_variance(levels, kernel)
    idx = np.clip(np.searchsorted(lv, v, side="right") - 1, 0, len(levels) - 2)
    frac = np.clip((v - lv[idx]) / np.maximum(lv[idx + 1] - lv[idx], 1e-12), 0.0, 1.0)
    return (idx + frac).astype(np.float32)


def blur_plan(sig: np.ndarray, n_layers: int, kernel: str):
    """What to blur for a layer with sigma map ``sig``: yields, per reduction factor, ``(factor, jobs)`` with
    one job per level that some pixel uses: ``(sigma at that resolution, weights on the job's box, box, halo)``
    where box = (y0, y1, x0, x1) bounds the pixels with weight > 0 and halo = the box grown by the kernel's
    reach (clipped to the frame): blurring only the halo gives, on the box, exactly the full-frame blur.
    """
    levels = sigma_levels(sig, n_layers)
    t_full = level_coordinate(sig, levels, kernel)
    groups: dict[int, list[int]] = {}
    for k, s in enumerate(levels):
        groups.setdefault(reduction_factor(float(s)), []).append(k)
    for factor, ks in sorted(groups.items()):
        t = t_full if factor == 1 else _down(t_full, factor)
        h, w = t.shape
        jobs = []
        for k in ks:
            wk = np.maximum(1.0 - np.abs(t - np.float32(k)), 0.0) if len(levels) > 1 else np.ones_like(t)
            rows, cols = np.flatnonzero(wk.any(axis=1)), np.flatnonzero(wk.any(axis=0))
            if not len(rows):
                continue
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            s_res = low_res_sigma(float(levels[k]), factor) if kernel == "gaussian" else float(levels[k]) / factor
            r = _reach(s_res, kernel)
            halo = (max(0, y0 - r), min(h, y1 + r), max(0, x0 - r), min(w, x1 + r))
            jobs.append((s_res, wk[y0:y1, x0:x1], (y0, y1, x0, x1), halo))
        yield factor, jobs


def _reach(sigma: float, kernel: str) -> int:
    """How far (px) the kernel used for ``sigma`` reaches from its centre."""
    if kernel == "gaussian":
        return 0 if sigma < 0.05 else (int(round(sigma * 8 + 1)) | 1) // 2
    return 0 if 2 * sigma < 0.1 else disk_kernel(2.0 * sigma).shape[0] // 2


def _down(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, BORDER)
    return cv2.resize(img, ((w + pw) // factor, (h + ph) // factor), interpolation=cv2.INTER_AREA)


def _up(img: np.ndarray, factor: int, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    out = cv2.resize(img, (img.shape[1] * factor, img.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
    return out[:h, :w]


def blur_layer(layer: np.ndarray, sig: np.ndarray, n_layers: int = 16, kernel: str = "gaussian") -> np.ndarray:
    """Blur ``layer`` (HxWxC float32) so each pixel gets (approximately) the blur of its own ``sig`` (HxW).

    The layer is blurred once per sigma level, only where that level is used (plus the kernel's reach);
    levels sharing a reduction factor are blended at that resolution and upsampled once.
    """
    layer = np.ascontiguousarray(layer, dtype=np.float32)
    hw = layer.shape[:2]
    out = np.zeros_like(layer)
    for factor, jobs in blur_plan(sig, n_layers, kernel):
        if not jobs:
            continue
        src = layer if factor == 1 else _down(layer, factor)
        acc = np.zeros_like(src)
        for s_res, wk, (y0, y1, x0, x1), (hy0, hy1, hx0, hx1) in jobs:
            blurred = blur(np.ascontiguousarray(src[hy0:hy1, hx0:hx1]), s_res, kernel)
            acc[y0:y1, x0:x1] += blurred[y0 - hy0:y1 - hy0, x0 - hx0:x1 - hx0] * wk[..., None]
        out += acc if factor == 1 else _up(acc, factor, hw)
    return out


# ------------------------------------------------------------------------------- the same on torch (cuda)
def _reflect101_index(n: int, pad: int) -> np.ndarray:
    """Source indices of a reflect-101 padding of ``pad`` on both sides of a length-``n`` axis (any pad)."""
    i = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n - 2
    i = np.mod(i, period)
    return np.where(i < n, i, period - i)


def _torch_pad(x, pad: int):
    """Reflect-101 pad of the last two dims of an NCHW tensor, like cv2.BORDER_REFLECT_101, for any pad size."""
    import torch

    h, w = x.shape[-2:]
    iy = torch.as_tensor(_reflect101_index(h, pad), device=x.device)
    ix = torch.as_tensor(_reflect101_index(w, pad), device=x.device)
    return x.index_select(-2, iy).index_select(-1, ix)


def _torch_blur(x, sigma: float, kernel: str):
    """``blur`` on an NCHW float32 tensor: the same kernels as OpenCV's, by (separable) convolution."""
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    if kernel == "gaussian":
        if sigma < 0.05:
            return x
        k1 = cv2.getGaussianKernel(int(round(sigma * 8 + 1)) | 1, sigma, cv2.CV_32F)[:, 0]
        r = len(k1) // 2
        k = torch.as_tensor(k1, device=x.device)
        xp = _torch_pad(x, r)
        xp = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
        return F.conv2d(xp, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    if 2 * sigma < 0.1:
        return x
    k2 = torch.as_tensor(disk_kernel(2.0 * sigma), device=x.device)
    r = k2.shape[0] // 2
    return F.conv2d(_torch_pad(x, r), k2.expand(c, 1, -1, -1).contiguous(), groups=c)


def blur_layer_torch(layer: np.ndarray, sig: np.ndarray, n_layers: int = 16, kernel: str = "gaussian",
                     device: str = "cuda") -> np.ndarray:
    """:func:`blur_layer` with the blurs, resampling and blending in torch on ``device`` (the same plan)."""
    import torch
    import torch.nn.functional as F

    h, w = layer.shape[:2]
    x = torch.as_tensor(np.ascontiguousarray(layer.transpose(2, 0, 1)), device=device)[None]
    out = torch.zeros_like(x)
    for factor, jobs in blur_plan(sig, n_layers, kernel):
        if not jobs:
            continue
        src = x
        if factor > 1:  # reflect-pad to a multiple of the factor, then area-average (= cv2.INTER_AREA)
            ph, pw = (-h) % factor, (-w) % factor
            p = max(ph, pw)
            src = F.avg_pool2d(_torch_pad(x, p)[..., p:p + h + ph, p:p + w + pw], factor)
        acc = torch.zeros_like(src)
        for s_res, wk, (y0, y1, x0, x1), (hy0, hy1, hx0, hx1) in jobs:
            blurred = _torch_blur(src[..., hy0:hy1, hx0:hx1], s_res, kernel)
            acc[..., y0:y1, x0:x1] += (blurred[..., y0 - hy0:y1 - hy0, x0 - hx0:x1 - hx0]
                                       * torch.as_tensor(wk, device=device)[None, None])
        if factor > 1:
            acc = F.interpolate(acc, scale_factor=factor, mode="bilinear", align_corners=False)[..., :h, :w]
        out += acc
    return out[0].permute(1, 2, 0).cpu().numpy()


def _kernel_radius(sigma: float, kernel: str) -> int:
    # cv2's Gaussian for float images spans 4 sigma each side; the disk spans 2 sigma (+1 rim); +8 for the
    # reduced-resolution pads
    return int(math.ceil((4.0 if kernel == "gaussian" else 2.0) * sigma)) + 1 + 2 * MAX_FACTOR


# ---------------------------------------------------------------------------------------------------- render
def render(fgr: np.ndarray, alpha: np.ndarray, bgr: np.ndarray, disp_fg: np.ndarray, disp_bg: np.ndarray,
           focus_disp: float, coc_scale: float, sigma_max: float, n_layers: int = 16,
           kernel: str = "gaussian", device: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one defocused frame. Returns ``(image, alpha, fgr, bgr)`` float32 in [0, 1].

    fgr, bgr: HxWx3; alpha, disp_fg, disp_bg: HxW (disparity: larger = nearer, defined everywhere);
    ``focus_disp`` the in-focus disparity; ``coc_scale`` px of sigma per unit of disparity; ``sigma_max`` px.
    The returned alpha is the blurred alpha, fgr the un-premultiplied blurred subject (the sharp fgr where the
    blurred alpha is ~0), bgr the blurred plate, and ``image = alpha * fgr + (1 - alpha) * bgr``.
    ``device`` None: OpenCV on the CPU; 'cpu'/'cuda': the same computation in torch on that device.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    fgr, bgr = fgr.astype(np.float32, copy=False), bgr.astype(np.float32, copy=False)
    alpha = alpha.astype(np.float32, copy=False)
    h, w = alpha.shape
    sig_bg = sigma_map(disp_bg, focus_disp, coc_scale, sigma_max)
    sig_fg = sigma_map(disp_fg, focus_disp, coc_scale, sigma_max)
    if device is None:
        blur_fn = blur_layer
    else:
        def blur_fn(layer, sig, n, k):
            return blur_layer_torch(layer, sig, n, k, device)
    bgr_blur = np.clip(blur_fn(bgr, sig_bg, n_layers, kernel), 0.0, 1.0)

    # the subject: premultiplied colour and alpha together, only inside its bounding box plus the kernel reach
    prem = np.zeros((h, w, 3), np.float32)
    alpha_blur = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(alpha > 0)
    if len(ys):
        pad = _kernel_radius(float(sig_fg.max()), kernel)
        y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
        x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
        a = alpha[y0:y1, x0:x1]
        layer = np.concatenate([fgr[y0:y1, x0:x1] * a[..., None], a[..., None]], axis=2)
        out = blur_fn(layer, sig_fg[y0:y1, x0:x1], n_layers, kernel)
        alpha_blur[y0:y1, x0:x1] = np.clip(out[..., 3], 0.0, 1.0)
        # a blurred premultiplied colour never exceeds the blurred alpha (fgr <= 1, non-negative kernels)
        prem[y0:y1, x0:x1] = np.clip(out[..., :3], 0.0, alpha_blur[y0:y1, x0:x1, None])
    fgr_out = np.where(alpha_blur[..., None] > 1e-6, prem / np.maximum(alpha_blur[..., None], 1e-6), fgr)
    fgr_out = np.clip(fgr_out, 0.0, 1.0).astype(np.float32)
    image = np.clip(prem + (1.0 - alpha_blur[..., None]) * bgr_blur, 0.0, 1.0).astype(np.float32)
    return image, alpha_blur, fgr_out, bgr_blur.astype(np.float32)


def render_reference(fgr: np.ndarray, alpha: np.ndarray, bgr: np.ndarray, disp_fg: np.ndarray,
                     disp_bg: np.ndarray, focus_disp: float, coc_scale: float,
                     sigma_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, for tests and the benchmark: every pixel gathers its layer with a Gaussian of its own sigma.

    Each output pixel computes the sampled Gaussian of its own sigma (cv2's kernel size rule, reflect-101
    border) over the layer; O(pixels x kernel area). Returns ``(image, alpha)``.
    """
    h, w = alpha.shape
    sig_bg = sigma_map(disp_bg, focus_disp, coc_scale, sigma_max)
    sig_fg = sigma_map(disp_fg, focus_disp, coc_scale, sigma_max)
    fg_layer = np.concatenate([fgr * alpha[..., None], alpha[..., None]], axis=2).astype(np.float64)

    def gather(layer: np.ndarray, sig: np.ndarray) -> np.ndarray:
        out = np.empty(layer.shape, np.float64)
        r_max = max(1, int(round(float(sig.max()) * 4 * 2 + 1)) // 2)
        pad = cv2.copyMakeBorder(layer, r_max, r_max, r_max, r_max, BORDER) if r_max < min(h, w) else None
        if pad is None:
            pad = np.pad(layer, ((r_max, r_max), (r_max, r_max), (0, 0)), mode="reflect")
        for y in range(h):
            for x in range(w):
                s = float(sig[y, x])
                if s < 0.05:
                    out[y, x] = layer[y, x]
                    continue
                r = (int(round(s * 4 * 2 + 1)) | 1) // 2  # cv2's kernel size for float images
                k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * s * s))
                k2 = np.outer(k, k)
                k2 /= k2.sum()
                patch = pad[r_max + y - r:r_max + y + r + 1, r_max + x - r:r_max + x + r + 1]
                out[y, x] = np.tensordot(k2, patch, axes=([0, 1], [0, 1]))
        return out

    bg = gather(bgr.astype(np.float64), sig_bg)
    fg = gather(fg_layer, sig_fg)
    image = fg[..., :3] + (1.0 - fg[..., 3:]) * bg
    return image.astype(np.float32), fg[..., 3].astype(np.float32)


# ------------------------------------------------------------------------------------ the true blur of a frame
def true_sigma(root: str | Path, split: str, clip: str, t: int) -> np.ndarray | None:
    """The blur (Gaussian sigma, px) this stage gave frame ``t`` of ``clip``, per pixel, recomputed exactly from
    its records: ``sigma = alpha * sigma_subject + (1 - alpha) * sigma_background`` with
    ``sigma_layer = min(coc_scale * |disp_layer - focus_disp[t]|, sigma_max)`` (the clip's ``meta.json``), the
    layers' disparity from ``depth/<split>/<clip>.npz``, and ``alpha`` the blurred alpha (the frames tree's
    ground truth): each pixel of the defocused image is exactly ``alpha`` parts blurred subject and ``1 - alpha``
    parts blurred background. ``t`` is the original frame index (the name of ``frames/.../NNNN.png``).
    None when the clip was not blurred here (no meta.json or depth cache)."""
    layout = DataLayout(root)
    rec = _blur_record(str(layout.blurred(split, clip)), str(layout.depth(split, clip)))
    if rec is None:
        return None
    params, depth = rec
    focus, coc, smax = params["focus_disp"][t], params["coc_scale"], params["sigma_max"]
    alpha = read_image(layout.blurred(split, clip) / "alpha" / frame_name(t), gray=True)
    return (alpha * sigma_map(depth.fg(t), focus, coc, smax)
            + (1 - alpha) * sigma_map(depth.bg(t), focus, coc, smax)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _blur_record(blurred_dir: str, depth_path: str):
    import json

    meta, cache = Path(blurred_dir) / "meta.json", Path(depth_path)
    if not (meta.is_file() and cache.is_file()):
        return None
    return json.loads(meta.read_text()), depth_stage.ClipDepth(cache)


# ---------------------------------------------------------------------------------------- per-clip worker
# Outputs: <root>/blurred/<split>/<clip>/{image,alpha,fgr,bgr}/NNNN.png (alpha 16-bit) + meta.json + preview.png.
# Frames are rendered one at a time (each depends only on its own inputs and the clip-wide parameters), in
# chunks of frames; a chunk is recorded in the manifest once all its files were written atomically, so a rerun
# after a kill redoes only unfinished chunks and writes the same bytes whatever the chunk size.

log = logging.getLogger("dof_blur")
STAGE = "blur"
MAX_COC = 1e4     # --coc_range bound (px of sigma per unit disparity): beyond it float32 sigmas overflow
MAX_SIGMA = 1e3   # --sigma_max_range bound (px at --ref_height): a blur far wider than any frame
FOCUS_MODES = ("subject", "background", "rack")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Occlusion-aware thin-lens depth-of-field blur of composed clips.")
    add_common_args(p)
    depth_stage.add_depth_args(p)
    p.add_argument("--focus", default="subject",
                   help="subject (clip-wide median subject disparity, default), background (median background "
                        "disparity), rack (sweep from one to the other over the clip, seeded direction), or a "
                        "disparity value")
    p.add_argument("--coc_range", type=finite_float(0.0, MAX_COC), nargs=2, default=(12.0, 36.0),
                   metavar=("LO", "HI"), help=f"coc_scale drawn per clip from [LO, HI]: px of sigma per unit disparity "
                                              f"for a --ref_height-pixel-high frame, scaled to the clip's height, each "
                                              f"in [0, {MAX_COC:g}] (default %(default)s)")
    p.add_argument("--sigma_max_range", type=finite_float(0.0, MAX_SIGMA), nargs=2, default=(8.0, 16.0),
                   metavar=("LO", "HI"), help=f"sigma_max drawn per clip from [LO, HI] px at --ref_height, each in "
                                              f"[0, {MAX_SIGMA:g}] (default %(default)s)")
    p.add_argument("--ref_height", type=finite_float(1.0), default=1080.0,
                   help="frame height (px, at least 1) the blur ranges are given for (default %(default)s)")
    p.add_argument("--n_layers", type=positive_int, default=16,
                   help="most sigma levels per layer (default %(default)s)")
    p.add_argument("--kernel", default="gaussian", choices=KERNELS)
    p.add_argument("--chunk", type=nonneg_int, default=0,
                   help="frames per chunk; 0: from free memory (utils.memory), default %(default)s")
    p.add_argument("--chunk_divisor", type=positive_int, default=1,
                   help="divide the chunk size by this (run_blur.sh doubles it after each crash)")
    p.add_argument("--memory_safety", type=finite_float(0.0, 1.0, low_open=True), default=0.5,
                   help="fraction of free memory a chunk may use, in (0, 1] (default %(default)s)")
    p.add_argument("--no_preview", action="store_true", help="skip preview.png")
    return p


def clip_params(args: argparse.Namespace, split: str, clip: str, height: int, n_frames: int,
                depth: depth_stage.ClipDepth) -> dict:
    """Per-clip blur parameters, drawn from the seeded ranges, and the focus of every frame."""
    seed = unit_seed(args.seed, STAGE, split, clip)
    rng = np.random.default_rng(seed)
    scale = height / args.ref_height
    coc = float(rng.uniform(*args.coc_range)) * scale
    smax = float(rng.uniform(*args.sigma_max_range)) * scale
    rack_forward = bool(rng.integers(2))
    mode = args.focus
    if mode == "subject":
        focus = [depth.subject_median] * n_frames
    elif mode == "background":
        focus = [depth.background_median] * n_frames
    elif mode == "rack":
        a, b = depth.subject_median, depth.background_median
        if not rack_forward:
            a, b = b, a
        focus = [float(v) for v in np.linspace(a, b, n_frames)]
    else:
        try:
            value = float(mode)
        except ValueError:
            raise UserError(f"--focus must be one of {FOCUS_MODES} or a number, got {mode!r}") from None
        mode, focus = "value", [value] * n_frames
    return {"seed": seed, "base_seed": args.seed, "coc_scale": coc, "sigma_max": smax, "focus_mode": mode,
            "focus_disp": focus, "rack_forward": rack_forward if mode == "rack" else None,
            "coc_range": list(args.coc_range), "sigma_max_range": list(args.sigma_max_range),
            "ref_height": args.ref_height, "n_layers": args.n_layers, "kernel": args.kernel}


def _chunk_unit(clip: str, frames: Sequence[int]) -> str:
    return f"{clip}/chunk{frames[0]:04d}-{frames[-1]:04d}"


def done_frames(chunks: Manifest, clip: str) -> set[int]:
    """Frames of ``clip`` already written, from its finished chunks (whatever chunk size wrote them)."""
    out: set[int] = set()
    for info in chunks.done_units(f"{clip}/chunk").values():
        out.update(info["frames"])
    return out


def render_frame(clip_dir: Path, t: int, depth: depth_stage.ClipDepth, params: dict,
                 device: str = "cpu") -> tuple[np.ndarray, ...]:
    fgr = read_image(clip_dir / "fgr" / frame_name(t), gray=False)
    pha = read_image(clip_dir / "pha" / frame_name(t), gray=True)
    bgr = read_image(clip_dir / "bgr" / frame_name(t), gray=False)
    return render(fgr, pha, bgr, depth.fg(t), depth.bg(t), params["focus_disp"][t], params["coc_scale"],
                  params["sigma_max"], params["n_layers"], params["kernel"],
                  device=None if device == "cpu" else device)  # OpenCV on the CPU, torch on a GPU


def write_frame(out_dir: Path, t: int, outputs: tuple[np.ndarray, ...]) -> None:
    image, alpha, fgr, bgr = outputs
    write_png(out_dir / "image" / frame_name(t), image)
    write_png(out_dir / "alpha" / frame_name(t), alpha, bits=16)
    write_png(out_dir / "fgr" / frame_name(t), fgr)
    write_png(out_dir / "bgr" / frame_name(t), bgr)


def write_preview(path: Path, clip_dir: Path, out_dir: Path, t: int, depth: depth_stage.ClipDepth,
                  params: dict) -> None:
    """sharp composite | blurred image | blurred alpha | sigma map (visible layer's sigma / sigma_max)."""
    pha = read_image(clip_dir / "pha" / frame_name(t), gray=True)
    sharp = pha[..., None] * read_image(clip_dir / "fgr" / frame_name(t)) + (1 - pha[..., None]) * read_image(
        clip_dir / "bgr" / frame_name(t))
    focus, coc, smax = params["focus_disp"][t], params["coc_scale"], params["sigma_max"]
    sig = pha * sigma_map(depth.fg(t), focus, coc, smax) + (1 - pha) * sigma_map(depth.bg(t), focus, coc, smax)
    sig_rgb = cv2.applyColorMap(np.round(np.clip(sig / max(smax, 1e-6), 0, 1) * 255).astype(np.uint8),
                                cv2.COLORMAP_VIRIDIS)[..., ::-1].astype(np.float32) / 255.0
    alpha = read_image(out_dir / "alpha" / frame_name(t), gray=False)
    blurred = read_image(out_dir / "image" / frame_name(t))
    sep = np.ones((sharp.shape[0], 4, 3), np.float32)
    write_png(path, np.concatenate([sharp, sep, blurred, sep, alpha, sep, sig_rgb], axis=1))


def is_blurred(layout: DataLayout, split: str, clip: str) -> bool:
    """Whether ``clip`` is blurred (recorded, its meta.json written) from its composed clip and depth as they are
    now: the stage's skip check."""
    clips = Manifest(layout.manifest(STAGE, split))
    info = clips.info(clip)
    compose_fp = Manifest(layout.manifest("compose", split)).fingerprint(clip)
    if info is None or compose_fp is None or not (layout.blurred(split, clip) / "meta.json").is_file():
        return False
    up = {"compose": compose_fp, "depth": Manifest(layout.manifest(depth_stage.STAGE, split)).fingerprint(clip)}
    if "upstream" not in info:
        # recorded before records held fingerprints: it was complete (only complete clips were recorded); take it
        # as made from its inputs as they are now, rather than re-blurring a whole data set once
        extra = {k: v for k, v in info.items() if k not in ("unit", "status", "stamp")}
        clips.mark_done(clip, **extra, upstream=up)
        return True
    return info["upstream"] == up


def process_clip(layout: DataLayout, split: str, clip: str, args: argparse.Namespace, model_cache: dict) -> None:
    """Blur one clip (one that :func:`is_blurred` does not take as done), chunk by chunk, resuming after the last
    finished chunk."""
    clips = Manifest(layout.manifest(STAGE, split))
    chunks = Manifest(layout.manifest(STAGE, split) / "chunks")
    out_dir = layout.blurred(split, clip)
    # only a clip compositing finished is taken; a clip composed (or a depth computed) again since is redone
    compose_fp = depth_stage.compose_fingerprint(layout, split, clip)
    depth_manifest = Manifest(layout.manifest(depth_stage.STAGE, split))
    info = clips.info(clip)
    if args.overwrite or (info is not None and info.get("upstream") != {"compose": compose_fp,
                                                                         "depth": depth_manifest.fingerprint(clip)}):
        if not args.overwrite:
            log.info("blur %s/%s: its composed clip or depth changed since it was blurred; redoing it", split, clip)
        clips.clear(clip)
        for unit in chunks.done_units(f"{clip}/chunk"):
            chunks.clear(unit)
        shutil.rmtree(out_dir, ignore_errors=True)
    clip_dir = layout.composed(split, clip)
    cmeta = depth_stage.composed_meta(clip_dir)
    n, (h, w) = int(cmeta["frames"]), cmeta["size"]
    depth = depth_stage.ensure_clip_depth(layout, split, clip, args, model_cache)
    if depth.frames != n:
        raise UserError(f"{clip}: depth cache has {depth.frames} frames, composed clip {n}; rerun with --overwrite")
    params = clip_params(args, split, clip, h, n, depth)
    up = {"compose": compose_fp, "depth": depth_manifest.fingerprint(clip)}
    for unit, chunk in chunks.done_units(f"{clip}/chunk").items():
        if chunk.get("upstream") != up:  # rendered from inputs that changed since: render again
            chunks.clear(unit)
    for sub in ("image", "alpha", "fgr", "bgr"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out_dir / sub)  # files a killed run was writing: their chunk is redone
    clean_stale_temps(out_dir)
    todo = [t for t in range(n) if t not in done_frames(chunks, clip)]
    size = args.chunk or memory.frames_per_chunk(h, w, args.device, args.memory_safety)
    size = max(1, size // max(args.chunk_divisor, 1))
    if todo:
        log.info("blur %s/%s: %d of %d frames to render, %d per chunk", split, clip, len(todo), n, size)
    for i in range(0, len(todo), size):
        frames = todo[i:i + size]
        for t in frames:
            write_frame(out_dir, t, render_frame(clip_dir, t, depth, params, args.device))
        chunks.mark_done(_chunk_unit(clip, frames), frames=frames, upstream=up)
    if not args.no_preview:
        write_preview(out_dir / "preview.png", clip_dir, out_dir, n // 2, depth, params)
    meta = {"clip": clip, "split": split, "frames": n, "size": [h, w], "fps": cmeta.get("fps"),
            "source": str(clip_dir.relative_to(layout.root)), "background": cmeta.get("background"),
            "depth": {"backend": depth.backend, "path": str(layout.depth(split, clip).relative_to(layout.root)),
                      "subject_median": depth.subject_median, "background_median": depth.background_median,
                      "params": depth.params()},
            "model": "thin lens: sigma = min(coc_scale*|disp - focus_disp|, sigma_max); occlusion-aware layers",
            **params, "blur_device": args.device, "preview": None if args.no_preview else "preview.png"}
    write_json_atomic(out_dir / "meta.json", meta)
    clips.mark_done(clip, frames=n, upstream=up)
    log.info("blurred %s/%s: %d frames, coc_scale %.2f, sigma_max %.2f, focus %s -> %s", split, clip, n,
             params["coc_scale"], params["sigma_max"], params["focus_mode"], out_dir)


def run(args: argparse.Namespace, layout: DataLayout) -> int:
    """Blur this shard's composed clips of ``args.split`` (the root open: :func:`utils.stage.open_stage`)."""
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available here (use --device cpu)")
    if args.depth_backend == "video-depth-anything":  # fail before any work if the model is not there
        model_cache = {"vda": depth_stage.load_vda(args.vda_root, args.depth_ckpt, args.vda_encoder, args.device)}
    else:
        model_cache = {}
    runner = ClipRunner(log, args.shard, args.overwrite, fail_format="blur %s/%s failed: %s",
                        skip_format="blur %s: %d clip(s) already done, skipped (use --overwrite to redo)")
    for split in splits_of(args.split):
        runner.run(split, depth_stage.composed_clips(layout, split), Manifest(layout.manifest(STAGE, split)),
                   lambda clip: process_clip(layout, split, clip, args, model_cache),
                   lambda clip: is_blurred(layout, split, clip), desc=f"blur {split}")
    return runner.exit_code()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # numeric flags finite and in range (utils.cli types): else exit 64
    if args.focus not in FOCUS_MODES:
        try:
            focus = float(args.focus)
        except ValueError:
            focus = math.nan
        if not math.isfinite(focus):  # checked before anything is read, deleted (--overwrite) or written
            raise UsageError(f"--focus must be one of {FOCUS_MODES} or a finite number, got {args.focus!r}")
    try:
        with open_stage(args.root, STAGE, args.shard) as layout:  # the root checked, this stage's lock held
            return run(args, layout)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
            raise
        # run_blur.sh restarts the worker with half the chunk size on this exit code
        print("error: out of memory; rerun with a smaller --chunk (run_blur.sh halves it)", file=sys.stderr)
        return EXIT_OOM


if __name__ == "__main__":
    run_main(main)
