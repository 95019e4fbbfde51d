"""The DWT refiner: one architecture, parameterised by its wavelet op.

An image and a coarse guide mask go in, a high-fidelity alpha comes out. The idea: an in-focus subject keeps
its high-frequency energy while a defocused background loses it, so a wavelet transform separates what decides
*where* the person is (the low-frequency LL band: structure) from what decides *how* the edge looks (the
LH/HL/HH bands: hair, soft edges) and, via their local energy, *what is in focus*.

Data flow (strides relative to the input; widths C0..C4 = ``Refiner.widths``)::

    image (ImageNet-normalised) + guide --DWT--> LL ----> structure S1 (/2) --DWT--> LL --------> S2 (/4) --> S3 (/8)
                                         '-> highs --> detail    D1 (/2) -- highs(S1) + LL(D1) -> D2 (/4) --> D3 (/8)
    focus maps F2, F4, F8 (local energy of the image's own high bands) are concatenated into every level;
    at /4 and /8 cross-band windowed attention: S queries D and D queries S (plain, then shifted windows);
    context: LL of S3 (/16) -> ASPP.

    decoder: F8 = fuse(S3, D3, context)                                  -> alpha at stride 8
             IDWT(LL <- F8, highs <- D3) = /4, fused with S2, D2 -> F4  -> alpha at stride 4
             IDWT(LL <- F4, highs <- D2) = /2, fused with S1, D1 -> F2
             IDWT(LL <- F2, highs <- D1) = /1, + image and guide        -> alpha at stride 1 (C0 channels only)

    every head predicts a correction of the guide's logit (gain * (2 * guide - 1), the guide average-pooled to the
    head's stride); the heads start at zero, so an untrained refiner returns its guide.

    progressive refinement (MaGGIe / MGMatting): alpha = alpha/8, replaced by alpha/4 inside the uncertain band
    around its boundary, replaced by alpha/1 inside the uncertain band of that merge.

    do no harm (the guide gate): a head on the stride-4 decoder state, corrected at full resolution from the
    stride-1 features, predicts where the refinement beats the guide (like the error map of BackgroundMattingV2,
    supervised with |guide - gt| - |refined - gt| > ``GATE_MARGIN``); the output is
    ``guide + gate * (refined - guide)`` where ``gate`` is that probability cut to exactly 0 below
    ``gate_threshold`` (a straight-through cut: gradients pass as if uncut); a change that moves a pixel across
    the guide's 0.5 level (a structural fix: the guide is wrong there) needs the stricter ``flip_threshold``.
    Where the network does not believe the refinement beats the guide, the guide comes out unchanged, bit for
    bit; an untrained refiner (gate bias -1, probability 0.27) returns its guide exactly.

    two kinds of guide, two rules (guide trust): a head on the stride-8 decoder state, averaged over the guide's
    boundary, judges per image whether the guide is accurate (a segmenter's mask on a clean frame: wrong only in
    its soft pixels) or coarse (a propagated or perturbed mask: wrong by whole regions). A coarse guide gets the
    rule above (a band of ~7-10 px, flips where sure); an accurate one only its boundary ring, on its side of
    0.5, where the gate >= ``accurate_gate_threshold``, and never a flip. Trained with BCE against what the data
    loader knows; a caller who knows its guide can say so (``guide_accurate``).

In code, one module a piece: ``model.config`` (``RefinerConfig``: every setting, validated), ``model.layers``
(the down/up operators and conv blocks), ``model.attention`` (cross-band windowed attention), ``model.encoder``
(the upper half of the diagram: its weights are the backbone), ``model.decoder`` (heads, progressive refinement,
gate and trust logits), ``model.masks`` (dilation, the guide's ring and band), ``model.output_rule`` (what may
change, given the gate and the trust head's call), ``model.checkpoint`` (the one reader and writer of
checkpoints) and ``model.predictor`` (dense or sparse inference, decided once). This file joins them.

The input is edge-padded to a multiple of ``8 * window`` (stride-8 windows tile exactly; the sparse path's
coarse pass pads only to 16, the deepest stride, and the attention then pads its own features to whole windows)
and every output is cropped back, so any H, W works.

Variants (``build_refiner``): ``'light'`` the plain-torch Haar of ``model.wavelets``; ``'heavy_db1|2|4'``
pytorch_wavelets in periodization mode; ``'none'`` the ablation without a DWT: a learned strided depthwise
conv down (4 outputs per channel in place of the 4 bands) and bilinear up, with the same channel widths (its
focus maps are the energy of the learned "high" outputs).
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
from torch import nn

from model.config import RefinerConfig
from model.decoder import Decoder, DecoderOutput
from model.encoder import Encoder, EncoderFeatures
from model.fine import FineStage
from model.layers import upsample_bilinear
from model.output_rule import output_rule


@dataclasses.dataclass
class RefinerOutput:
    """Everything one forward pass gives; every map is cropped to the input's size unless said otherwise.

    alpha:        (N,1,H,W) final alpha in [0,1] (progressive refinement of the three strides).
    alpha_os:     {8, 4, 1: (N,1,H,W)} each stride's own prediction (sigmoid), upsampled to the input size.
    logits_os:    {8, 4, 1: (N,1,H,W)} the same before the sigmoid: use these with any ``*_with_logits`` loss.
    uncertain_os: {8, 4: (N,1,H,W) in {0,1}} where the stride-8 (resp. merged stride-4) alpha was replaced by
                  the finer prediction; MGMatting-style losses weight the finer strides by these.
    refined:      (N,1,H,W) the progressive refinement before the gate (what ``alpha`` would be without it).
    gate_logit:   (N,1,H,W) logit of "the refinement beats the guide here" (train it with a ``*_with_logits`` loss).
    gate:         (N,1,H,W) in {0} u [gate_threshold, 1], the gate applied to changes that keep a pixel on its
                  guide's side of 0.5; changes across it (flips) need the probability >= flip_threshold:
                  alpha = guide + gate * (on_side - guide) + flip * (refined - on_side).
    trust_logit:  (N,) logit of "this guide is accurate" (a segmenter's mask on a clean frame, not a coarse one).
    accurate:     (N,) bool, the rule each image's output was made with: True = the accurate-guide rule (only the
                  guide's boundary ring may change, on its side of 0.5, where the gate >= accurate_gate_threshold;
                  never a flip); the trust head decides unless the caller says (``guide_accurate``).
    focus_map:    (N,1,H,W) the defocus cue: local energy of the image's high-frequency subbands at stride 2,
                  log-scaled (0 = flat or blurred, larger = sharp texture), upsampled to the input size.
    focus_os:     {2, 4, 8: (N,1,ceil(H/s),ceil(W/s))} the focus maps at the strides the network sees them.
    hidden:       (N,C0,H,W) the decoder's stride-1 hidden state (what the fine stage of ``model.sparse`` reads).
    Wavelet-domain losses apply ``model.wavelets.HaarDWT`` to ``alpha`` and the ground truth (the same fixed
    transform for every variant, so the ablation compares like with like).
    """

    alpha: torch.Tensor
    alpha_os: dict[int, torch.Tensor]
    logits_os: dict[int, torch.Tensor]
    uncertain_os: dict[int, torch.Tensor]
    focus_map: torch.Tensor
    focus_os: dict[int, torch.Tensor]
    refined: torch.Tensor
    gate_logit: torch.Tensor
    gate: torch.Tensor
    trust_logit: torch.Tensor
    accurate: torch.Tensor
    hidden: torch.Tensor


class Refiner(nn.Module):
    """See the module docstring. Build it with :func:`build_refiner`; every setting is ``self.config``."""

    def __init__(self, config: RefinerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.wavelet, config.widths, config.window, config.focus_tau)  # built first: the
        self.decoder = Decoder(config.wavelet, config.widths)  # same initial weights per seed as before the split
        # the sparse path's full-resolution stage (model.fine), trained after the trunk (pipeline/train_fine.py);
        # built on a forked RNG so the trunk's training draws the same random numbers as before it existed
        with torch.random.fork_rng(devices=[]):
            self.fine = FineStage(config.widths[0])
        self.register_buffer("fine_steps", torch.zeros((), dtype=torch.long))  # its training steps; 0: untrained

    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def fine_trained(self) -> bool:
        """Whether the fine stage has been trained (a checkpoint of ``pipeline/train_fine.py``)."""
        return bool(self.fine_steps > 0)

    def trunk_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters the solver trains: all but the fine stage's (trained on its own, afterwards)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("fine.")]

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a pretrained backbone provides: the encoder's."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("encoder.")}

    def forward(self, image: torch.Tensor, guide: torch.Tensor, uncertain_radius: tuple[int, int] | None = None,
                guide_accurate: torch.Tensor | bool | None = None, pad_multiple: int | None = None) -> RefinerOutput:
        """image (N,3,H,W) RGB in [0,1] (not normalised), guide (N,1,H,W) in [0,1]; any H, W.

        ``guide_accurate``: which output rule to use, per image ((N,) bool or one bool for all); None lets the
        trust head decide (``sigmoid(trust_logit) >= trust_threshold``). ``pad_multiple``: the input is
        edge-padded to a multiple of it (default ``config.pad_multiple``, whole attention windows at stride 8,
        what training sees); any multiple of 16 works, the attention then pads its own features to whole windows
        (the sparse path's coarse pass: 16)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (N,3,H,W), got {tuple(image.shape)}")
        if guide.shape != (image.shape[0], 1, *image.shape[-2:]):
            raise ValueError(f"guide must be (N,1,H,W) matching the image, got {tuple(guide.shape)}")
        h, w = image.shape[-2:]
        multiple = pad_multiple or self.config.pad_multiple
        if multiple % 16:
            raise ValueError(f"pad_multiple must be a multiple of 16 (the deepest stride), got {multiple}")
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:  # edge padding, cropped from every output
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
            guide = F.pad(guide, (0, pw, 0, ph), mode="replicate")
        features = self.encoder(image, guide)
        d = self.decoder(features, guide, uncertain_radius or self.config.uncertain_radius)
        alpha, gate, accurate = self._guide_gate(guide, d, guide_accurate)
        return self._output(h, w, features, d, alpha, gate, accurate, self.training)

    def _guide_gate(self, guide: torch.Tensor, d: DecoderOutput, guide_accurate) -> tuple:
        """Do no harm: the output rule (``model.output_rule``) -> (alpha, the gate applied, the rule of each
        image)."""
        c = self.config
        if guide_accurate is None:
            accurate = torch.sigmoid(d.trust_logit.detach()) >= c.trust_threshold
        else:
            accurate = torch.as_tensor(guide_accurate, device=guide.device).to(torch.bool).expand(guide.shape[0])
        alpha, gate = output_rule(guide, d.refined, d.gate_logit, accurate, c.gate_threshold, c.flip_threshold,
                                  c.accurate_gate_threshold)
        return alpha, gate, accurate

    @staticmethod
    def _output(h: int, w: int, e: EncoderFeatures, d: DecoderOutput, alpha: torch.Tensor, gate: torch.Tensor,
                accurate: torch.Tensor, training: bool = False) -> RefinerOutput:
        """Every map cropped back to the input's HxW (strided ones upsampled first)."""
        def crop(t: torch.Tensor) -> torch.Tensor:
            return t[..., :h, :w]

        def full(t: torch.Tensor, stride: int) -> torch.Tensor:
            return crop(upsample_bilinear(t, stride, for_backward=training) if stride > 1 else t)

        logits_os = {8: full(d.logit8, 8), 4: full(d.logit4, 4), 1: crop(d.logit1)}
        f2, f4, f8 = e.focus
        return RefinerOutput(
            alpha=crop(alpha),
            alpha_os={s: torch.sigmoid(v) for s, v in logits_os.items()},
            logits_os=logits_os,
            uncertain_os={8: crop(F.interpolate(d.u8, scale_factor=4.0, mode="nearest")), 4: crop(d.u4)},
            focus_map=full(f2, 2),
            focus_os={s: f[..., : -(-h // s), : -(-w // s)] for s, f in ((2, f2), (4, f4), (8, f8))},
            refined=crop(d.refined), gate_logit=crop(d.gate_logit), gate=crop(gate),
            trust_logit=d.trust_logit, accurate=accurate, hidden=crop(d.hidden),
        )



def build_refiner(variant: str = "light", base_channels: int = 32, pretrained: str | os.PathLike | None = None,
                  **settings) -> Refiner:
    """Build a refiner: ``variant`` in ``model.config.VARIANTS``; ``settings`` any other ``RefinerConfig`` field
    (window, uncertain_radius, focus_tau, the thresholds); ``pretrained``: a local file of backbone weights."""
    model = Refiner(RefinerConfig(variant, base_channels, **settings))
    if pretrained:
        from model.checkpoint import load_backbone  # model.checkpoint builds refiners: imported here, not above

        load_backbone(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
