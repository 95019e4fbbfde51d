"""The refiner's encoder: image + guide -> the DWT's structure and detail branches at strides 2, 4, 8, cross-band
attention at 4 and 8, ASPP context at 16, and the focus maps (the upper half of ``model.refiner``'s diagram)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import CrossBandAttention, attention_heads
from model.config import IMAGENET_MEAN, IMAGENET_STD
from model.layers import ASPP, Block, Down


@dataclasses.dataclass
class EncoderFeatures:
    """The encoder's output: the network input ``x`` (normalised image + guide, stride 1), the structure (s) and
    detail (d) branches at strides 2, 4, 8, the context (stride 8, upsampled from 16) and the focus maps."""

    x: torch.Tensor
    s1: torch.Tensor
    d1: torch.Tensor
    s2: torch.Tensor
    d2: torch.Tensor
    s3: torch.Tensor
    d3: torch.Tensor
    context: torch.Tensor
    focus: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Encoder(nn.Module):
    """Image + guide -> the DWT's structure (LL) and detail (LH/HL/HH) branches, cross-band attention at strides 4
    and 8, ASPP context at stride 16, and the focus maps (module docstring, the upper half of the diagram)."""

    def __init__(self, kind: str, widths: tuple[int, ...], window: int, focus_tau: float):
        super().__init__()
        _, c1, c2, c3, c4 = widths
        self.focus_tau = focus_tau
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # focus maps: the variant's transform applied to the luminance, three levels
        self.focus_down = nn.ModuleList(Down(kind, 1) for _ in range(3))
        self.down0 = Down(kind, 4)
        self.s1, self.d1 = Block(4 + 1, c1, extra=0), Block(12 + 1, c1, extra=0)
        self.down_s1, self.down_d1 = Down(kind, c1), Down(kind, c1)
        self.s2, self.d2 = Block(c1 + 1, c2, k_in=1), Block(4 * c1 + 1, c2, k_in=1)
        self.attn2 = CrossBandAttention(c2, attention_heads(c2), window, shift=0)
        self.down_s2, self.down_d2 = Down(kind, c2), Down(kind, c2)
        self.s3, self.d3 = Block(c2 + 1, c3, k_in=1), Block(4 * c2 + 1, c3, k_in=1)
        self.attn3 = CrossBandAttention(c3, attention_heads(c3), window, shift=window // 2)
        # context: the LL band of the structure branch once more (stride 16), ASPP at this deepest level
        self.down_s3 = Down(kind, c3)
        self.s4 = Block(c3, c4, k_in=1)
        self.aspp = ASPP(c4)

    def focus_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Focus maps at strides 2, 4, 8: log(1 + local mean of the squared high bands / tau^2)."""
        gray = (0.299 * image[:, :1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3])
        maps, ll = [], gray
        for down in self.focus_down:
            ll, highs = down(ll)
            energy = highs.pow(2).mean(dim=2)
            energy = F.avg_pool2d(energy, 3, stride=1, padding=1, count_include_pad=False)
            maps.append(torch.log1p(energy / self.focus_tau ** 2))
            ll = ll * 0.5  # orthonormal LL grows x2 per level: keep the next level's scale comparable
        return maps[0], maps[1], maps[2]

    def forward(self, image: torch.Tensor, guide: torch.Tensor) -> EncoderFeatures:
        f2, f4, f8 = self.focus_maps(image)
        x = torch.cat([(image - self.mean) / self.std, guide * 2 - 1], 1)
        ll, highs = self.down0(x)
        s1 = self.s1(torch.cat([ll, f2], 1))
        d1 = self.d1(torch.cat([highs.flatten(1, 2), f2], 1))
        ll_s, hi_s = self.down_s1(s1)
        ll_d, _ = self.down_d1(d1)
        s2 = self.s2(torch.cat([ll_s, f4], 1))
        d2 = self.d2(torch.cat([hi_s.flatten(1, 2), ll_d, f4], 1))
        s2, d2 = self.attn2(s2, d2)
        ll_s, hi_s = self.down_s2(s2)
        ll_d, _ = self.down_d2(d2)
        s3 = self.s3(torch.cat([ll_s, f8], 1))
        d3 = self.d3(torch.cat([hi_s.flatten(1, 2), ll_d, f8], 1))
        s3, d3 = self.attn3(s3, d3)
        context = self.aspp(self.s4(self.down_s3(s3)[0]))
        return EncoderFeatures(x, s1, d1, s2, d2, s3, d3, context, (f2, f4, f8))

