"""The refiner's decoder: encoder features + guide -> alpha at strides 8, 4, 1, their progressive merge, the guide
gate's logit and the guide trust logit (the lower half of ``model.refiner``'s diagram)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from model.encoder import EncoderFeatures
from model.layers import Block, ConvNormReLU, Up, upsample_bilinear
from model.masks import uncertain

GUIDE_LOGIT_GAIN = 6.0  # initial logit of a guide pixel: sigmoid(+-6) = 0.9975 / 0.0025
GATE_INIT_BIAS = -1.0  # sigmoid(-1) = 0.27: the gate starts closed (below the default threshold 0.5), yet near
# enough to it that Adam (steps of about lr per parameter) can open it within a CPU run (from -4 it took >1500 steps)


@dataclasses.dataclass
class DecoderOutput:
    """The decoder's predictions at the padded size: each stride's logit (``logit8``, ``logit4`` at their own
    stride, ``logit1`` full), the progressive refinement and its bands, the gate's logit (full resolution) and
    the trust logit (N,)."""

    logit8: torch.Tensor
    logit4: torch.Tensor
    logit1: torch.Tensor
    u8: torch.Tensor
    u4: torch.Tensor
    refined: torch.Tensor
    gate_logit: torch.Tensor
    trust_logit: torch.Tensor
    hidden: torch.Tensor


class Decoder(nn.Module):
    """Encoder features + guide -> alpha at strides 8, 4, 1 (inverse DWT up: its LL from the decoder state, its
    high bands from the detail branch; every head a correction of the guide's logit), their progressive merge,
    the guide gate's logit and the guide trust logit (module docstring, the lower half)."""

    def __init__(self, kind: str, widths: tuple[int, ...]):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        self.ctx = nn.Conv2d(c4, c3, 1)
        self.f8 = Block(3 * c3, c3, k_in=1)
        self.head8 = nn.Conv2d(c3, 1, 1)
        self.ll4, self.hi4, self.up4 = nn.Conv2d(c3, c2, 1), nn.Conv2d(c3, 3 * c2, 3, padding=1), Up(kind, c2)
        self.f4 = Block(3 * c2, c2, k_in=1)
        self.head4 = nn.Conv2d(c2, 1, 1)
        # the guide gate sees the stride-4 decoder state (structure, detail, context) and the guide itself
        self.head_gate = nn.Sequential(ConvNormReLU(c2 + 1, c2), nn.Conv2d(c2, 1, 1))
        # guide trust: per-pixel evidence at stride 4 (does the guide's edge sit where the network's own alpha
        # puts it?), averaged over the guide's boundary into one logit per image of "this guide is accurate"
        self.head_trust = nn.Sequential(ConvNormReLU(c2 + 2, c2), ConvNormReLU(c2, c2), nn.Conv2d(c2, 1, 1))
        self.ll2, self.hi2, self.up2 = nn.Conv2d(c2, c1, 1), nn.Conv2d(c2, 3 * c1, 3, padding=1), Up(kind, c1)
        self.f2 = Block(3 * c1, c1, extra=0)
        self.ll1, self.hi1, self.up1 = nn.Conv2d(c1, c0, 1), nn.Conv2d(c1, 3 * c0, 3, padding=1), Up(kind, c0)
        self.f1 = nn.Sequential(ConvNormReLU(c0 + 4, c0), nn.Conv2d(c0, 1, 1))
        # the gate's full-resolution correction: the stride-4 gate is blurry at pixel scale, and an accurate
        # guide's soft band is 1-2 px wide; opening the gate on the confident pixels beside it would only do harm
        # it also sees the refinement itself and how far it moves from the guide (detached: the gate's loss judges
        # the refinement, it does not train it)
        self.gate1 = nn.Sequential(ConvNormReLU(c0 + 7, 2 * c0), ConvNormReLU(2 * c0, c0),
                                   nn.Conv2d(c0, 1, 3, padding=1))
        # Residual on the guide: every head predicts a correction of the guide's logit, so an untrained refiner
        # returns about its guide (its random corrections are small next to the prior's +-4) and training only
        # has to learn where the guide is wrong.
        self.guide_gain = nn.Parameter(torch.tensor(GUIDE_LOGIT_GAIN))
        # The decoder's predicted high bands start at zero: the inverse DWT then begins as plain upsampling of
        # the LL band, and detail is added only where training finds it (random high bands would stamp a
        # checkerboard onto every level's output).
        for hi in (self.hi4, self.hi2, self.hi1):
            nn.init.zeros_(hi.weight)
            nn.init.zeros_(hi.bias)
        # The gate's last layers start small but not zero: with zero weights the layers before them get no
        # gradient, the mostly-negative targets drive the weights negative on every (non-negative, post-ReLU)
        # feature, and the gate ends up only able to close (measured: its maximum stuck at sigmoid(bias) for
        # 600 steps). Scaled by 0.1 the initial logits stay within ~0.1 of the bias: closed.
        for last in (self.head_gate[-1], self.gate1[-1]):
            with torch.no_grad():
                last.weight.mul_(0.1)
        nn.init.constant_(self.head_gate[-1].bias, GATE_INIT_BIAS)
        nn.init.zeros_(self.gate1[-1].bias)

    def prior(self, guide: torch.Tensor, stride: int) -> torch.Tensor:
        """The guide's logit at ``stride``: gain * (2 * guide - 1), the guide average-pooled to the stride."""
        return self.guide_gain * (2 * (F.avg_pool2d(guide, stride) if stride > 1 else guide) - 1)

    def trust(self, f4: torch.Tensor, logit4: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(N,) logit of "this guide is accurate": per-cell evidence averaged over the guide's boundary.

        Its inputs are detached: the trust head learns to read the refiner, it does not train it (measured: its
        gradient in the shared decoder cost the coarse-guide results ~15%; bench/RESULTS.md, "learning")."""
        guide4 = F.avg_pool2d(guide, 4)
        disagreement = (torch.sigmoid(logit4.detach()) - guide4).abs()
        evidence = self.head_trust(torch.cat([f4.detach(), guide4 * 2 - 1, disagreement], 1))
        # the guide's boundary at stride 4 (cells neither all in nor all out, grown by two cells); a guide with no
        # boundary is judged on the whole frame
        boundary = uncertain(guide4, 2, eps=0.01) + 1e-3
        return (evidence * boundary).sum((1, 2, 3)) / boundary.sum((1, 2, 3))

    def forward(self, e: EncoderFeatures, guide: torch.Tensor, radius: tuple[int, int]) -> DecoderOutput:
        context = upsample_bilinear(self.ctx(e.context), 2, for_backward=self.training)  # smooth: plain upsampling
        f = self.f8(torch.cat([e.s3, e.d3, context], 1))
        logit8 = self.head8(f) + self.prior(guide, 8)
        up = self.up4(self.ll4(f), self.hi4(e.d3).unflatten(1, (-1, 3)))
        f = self.f4(torch.cat([up, e.s2, e.d2], 1))
        logit4 = self.head4(f) + self.prior(guide, 4)
        gate_logit = self.head_gate(torch.cat([f, F.avg_pool2d(guide, 4) * 2 - 1], 1))
        trust_logit = self.trust(f, logit4, guide)
        up = self.up2(self.ll2(f), self.hi2(e.d2).unflatten(1, (-1, 3)))
        f = self.f2(torch.cat([up, e.s1, e.d1], 1))
        up = self.up1(self.ll1(f), self.hi1(e.d1).unflatten(1, (-1, 3)))
        hidden = self.f1[0](torch.cat([up, e.x], 1))  # the stride-1 hidden state (the fine stage's input)
        logit1 = self.f1[1](hidden) + self.prior(guide, 1)
        gate_logit = upsample_bilinear(gate_logit, 4, for_backward=self.training)

        # progressive refinement: a finer prediction replaces the coarser one only in the uncertain band
        r8, r4 = radius
        a8 = torch.sigmoid(logit8)
        u8 = F.interpolate(uncertain(a8, r8), scale_factor=2.0, mode="nearest")
        merged4 = torch.where(u8 > 0, torch.sigmoid(logit4), upsample_bilinear(a8, 2, for_backward=self.training))
        u4 = F.interpolate(uncertain(merged4, r4), scale_factor=4.0, mode="nearest")
        merged4_full = upsample_bilinear(merged4, 4, for_backward=self.training)
        refined = torch.where(u4 > 0, torch.sigmoid(logit1), merged4_full)
        r = refined.detach()
        gate_logit = gate_logit + self.gate1(torch.cat([up, e.x, gate_logit, 2 * r - 1, (r - guide).abs()], 1))
        return DecoderOutput(logit8, logit4, logit1, u8, u4, refined, gate_logit, trust_logit, hidden)

