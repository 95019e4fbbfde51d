"""The refiner's building blocks: the DWT down/up operators every variant swaps, its conv blocks, bilinear
upsampling and the training step's convolution layout."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from model.wavelets import HaarDWT, HaarIDWT, WaveletDWT, WaveletIDWT


def _transform(kind: str, haar: type, wavelet: type, learned) -> nn.Module:
    """The operator of ``kind``: ``haar`` (plain torch), ``learned()`` for 'none', else the pytorch_wavelets
    ``wavelet`` of that name in periodization mode."""
    if kind == "haar":
        return haar()
    if kind == "none":
        return learned()
    return wavelet(kind, "periodization")


class Down(nn.Module):
    """(N,C,H,W) -> (ll (N,C,H/2,W/2), highs (N,C,3,H/2,W/2)): a fixed DWT, or a learned strided conv ('none')."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        # 'none': a 2x2 stride-2 depthwise conv, 4 outputs per channel: the shape of a DWT, learned
        self.op = _transform(kind, HaarDWT, WaveletDWT,
                             lambda: nn.Conv2d(channels, 4 * channels, 2, stride=2, groups=channels))

    def forward(self, x):
        if self.kind != "none":
            return self.op(x)
        y = self.op(x).unflatten(1, (-1, 4))
        return y[:, :, 0], y[:, :, 1:]


class Up(nn.Module):
    """(ll, highs) -> (N,C,2h,2w): the inverse DWT, or ('none') bilinear upsampling of ll + a learned mix of highs."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        self.op = _transform(kind, HaarIDWT, WaveletIDWT, lambda: nn.Conv2d(3 * channels, channels, 1, groups=channels))

    def forward(self, ll, highs):
        if self.kind != "none":
            return self.op(ll, highs)
        x = ll + self.op(highs.flatten(1, 2))
        return upsample_bilinear(x, 2, for_backward=self.training)


# ---------------------------------------------------------------------------------------- bilinear upsampling
MATMUL_UPSAMPLE_MAX = 512  # output sides up to this are upsampled by two small matrix products (see below)


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D bilinear interpolation, ``align_corners=False`` (PyTorch's convention: source
    coordinate ``(o + 0.5) * n_in / n_out - 0.5``, clamped at 0, the last sample repeated past the end)."""
    o = torch.arange(n_out, dtype=torch.float64)
    src = ((o + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), i0] += 1 - frac
    m[torch.arange(n_out), i1] += frac
    return m.to(dtype=dtype, device=device)


def upsample_bilinear(x: torch.Tensor, scale: int | None = None, size: tuple[int, int] | None = None,
                      for_backward: bool = False) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale or size=size, mode="bilinear", align_corners=False)`` of (N,C,H,W),
    equal to ~1e-7. Bilinear interpolation is separable, so on the small maps of a training crop it runs as
    ``A_h @ x @ A_w^T`` with the two interpolation matrices: forward and backward are then matrix products, 2-5x
    faster on a CPU than the interpolation kernel and its scatter-add backward (measured on 4x1x16x16 -> 128 and
    4x32x16x16 -> 32, one and two threads; bench/RESULTS.md, "bench_train"). Only where the caller says a
    backward will follow (``for_backward``: a module in training mode, the losses) and autograd records: otherwise
    (inference, validation, a model in eval mode) and for outputs with a side above ``MATMUL_UPSAMPLE_MAX`` it is
    the kernel itself, whose cost does not grow with the side, so inference outputs are bit for bit what they
    were."""
    h, w = x.shape[-2:]
    out = tuple(size) if size is not None else (h * scale, w * scale)
    if out == (h, w):
        return x
    if not (for_backward and x.requires_grad and torch.is_grad_enabled()) or max(out) > MATMUL_UPSAMPLE_MAX:
        return F.interpolate(x, size=out, mode="bilinear", align_corners=False)
    a_h = _bilinear_matrix(h, out[0], x.dtype, str(x.device))
    a_w = _bilinear_matrix(w, out[1], x.dtype, str(x.device))
    return a_h @ x @ a_w.T


# ---------------------------------------------------------------------------------- convolution memory layout
def channels_last_convs(module: nn.Module) -> list:
    """Run every ``nn.Conv2d`` of ``module`` on channels-last (NHWC) inputs (a forward pre-hook; the weights and
    the state dict are untouched); returns the hook handles (``handle.remove()`` undoes it).

    Why: oneDNN's NCHW convolutions reorder their few-channel full-resolution tensors into blocked layouts on
    every call, forward and backward; in NHWC they do not. Measured on ``make train-cpu``'s step (light, crop 128,
    two threads): 4 of the 42 convolutions, the decoder's full-resolution ones (4-11 channels), took 33 ms of
    ~140, and their forward + backward 24.8 -> 12.5 ms channels-last; the whole step ~150 -> ~120 ms (two
    threads), ~230 -> ~210 (one). The outputs equal the NCHW convolution's to ~1e-6 (another summation order)."""
    def to_channels_last(_mod, args):
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    return [m.register_forward_pre_hook(to_channels_last) for m in module.modules() if isinstance(m, nn.Conv2d)]


# ------------------------------------------------------------------------------------------------ building blocks
def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (groups of up to 8 channels), not BatchNorm: matting trains on small batches of crops around
    the subject's edge and infers on whole frames one at a time, where BatchNorm's running statistics do not
    hold (measured: far-field error nearly doubled in eval mode); GroupNorm behaves the same in both."""
    return nn.GroupNorm(max(1, channels // 8), channels)


class ConvNormReLU(nn.Sequential):
    """conv - GroupNorm - ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         norm(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """``k_in`` x ``k_in`` conv-norm-ReLU into ``cout`` channels, then ``extra`` residual 3x3 conv-norm-ReLU layers.

    After a DWT, ``k_in = 1`` already mixes a 2x2 neighbourhood (the four bands of a pixel are its 2x2 block),
    and for concatenations a 1x1 fuse is enough: both keep the deep, wide levels cheap.
    """

    def __init__(self, cin: int, cout: int, extra: int = 1, k_in: int = 3):
        super().__init__()
        self.inp = ConvNormReLU(cin, cout, k_in)
        self.res = nn.ModuleList(ConvNormReLU(cout, cout) for _ in range(extra))

    def forward(self, x):
        x = self.inp(x)
        for layer in self.res:
            x = x + layer(x)
        return x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (context at the deepest level): 1x1, three dilated 3x3, image pooling."""

    def __init__(self, channels: int, dilations=(2, 4, 6)):
        super().__init__()
        mid = channels // 4
        self.branches = nn.ModuleList([ConvNormReLU(channels, mid, 1)] +
                                      [ConvNormReLU(channels, mid, 3, d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True))
        self.project = ConvNormReLU(mid * (len(dilations) + 2), channels, 1)

    def forward(self, x):
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return x + self.project(torch.cat(feats, 1))

