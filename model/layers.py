"""The refiner's building blocks: the DWT down/up operators every variant swaps, and its conv blocks."""
from __future__ import annotations

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
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


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

