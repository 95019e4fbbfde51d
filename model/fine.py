"""The fine stage: full-resolution detail on top of a coarse pass, in the wavelet domain.

A coarse pass of the refiner (the frame downsampled to ~512 px on the long side, ``model.sparse``) decides where
the person is, which rule the guide gets and where the guide may change; what it cannot give is pixel-scale
detail at 1080p or 4K. The fine stage adds it, only where it is needed (``model.sparse`` runs it in tiles), with a
network small enough that the whole frame costs less than RobustVideoMatting's (BackgroundMattingV2's refiner is
the model: a few 3x3 convolutions on full-resolution patches, fed the coarse network's hidden state).

Why in the wavelet domain: one Haar level turns a full-resolution patch into four half-resolution bands without
losing anything (the inverse is exact), so the convolutions run on a quarter of the pixels and still see every
pixel's value; the network predicts corrections of the four Haar bands of the upsampled coarse alpha, and the
inverse transform puts the detail back at full resolution. The image's own high bands (what a sharp, in-focus
edge keeps and a defocused one loses) are its input.

Input per half-resolution pixel (``in_channels`` = 22 + c0): the Haar bands of the ImageNet-normalised image
(12), of the guide (4) and of the upsampled coarse alpha (4: also the base the prediction corrects), the coarse
pass's guide-gate logit (1), how far the coarse alpha's LL band is from the guide's (1) and the coarse pass's
stride-1 hidden state (c0). Output (8): the corrections of the alpha's four bands, and a correction of the coarse
pass's upsampled gate logit on a 2x2 sub-pixel grid. The gate correction is used for coarse guides only: trained
and used for both rules it gained 13% on mask-stage guides and lost 3% on accurate ones, whose rule changes only
the 1-px ring (bench/RESULTS.md, (d2)).

Every convolution is unpadded (``valid``): an output pixel depends on the ``RADIUS`` half-resolution pixels
around it and on nothing else, so a tile run with that much context gives exactly what a pass over the whole
frame gives (tested), and there is no normalisation layer that would see the tile's extent. The last layer starts
at zero: an untrained fine stage returns the upsampled coarse pass (up to the rounding of a Haar round trip).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import IMAGENET_MEAN, IMAGENET_STD
from model.wavelets import haar_dwt, haar_idwt

RADIUS = 3  # half-resolution pixels of context per side: three unpadded 3x3 convolutions


def bands(x: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W), H and W even -> (N,4C,H/2,W/2): the Haar LL band of every channel, then its three high bands."""
    ll, highs = haar_dwt(x)
    return torch.cat([ll, highs.flatten(1, 2)], 1)


def unbands(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`bands` for one channel: (N,4,h,w) -> (N,1,2h,2w)."""
    return haar_idwt(x[:, :1], x[:, 1:4].unsqueeze(1))


class FineStage(nn.Module):
    """Half-resolution input (N, in_channels, h + 2R, w + 2R) -> (N, 8, h, w): four Haar-band corrections of the
    alpha and the gate logit's correction per 2x2 block (module docstring). ``hidden`` is the coarse pass's
    stride-1 hidden width (the refiner's c0)."""

    def __init__(self, hidden: int, width: int = 32):
        super().__init__()
        self.hidden = hidden
        self.in_channels = 12 + 4 + 4 + 2 + hidden
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3), nn.ReLU(inplace=True),
            nn.Conv2d(width, 3 * width // 4, 3), nn.ReLU(inplace=True),
            nn.Conv2d(3 * width // 4, 8, 3))
        nn.init.zeros_(self.net[-1].weight)  # untrained: the upsampled coarse pass, exactly
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def inputs(self, image: torch.Tensor, guide: torch.Tensor, base: torch.Tensor, gate_logit: torch.Tensor,
               hidden: torch.Tensor) -> torch.Tensor:
        """The half-resolution input of a frame (or a tile). ``image`` (N,3,H,W), ``guide`` and ``base`` (the
        coarse alpha upsampled; N,1,H,W) at full resolution, H and W even; ``gate_logit`` (N,1,H/2,W/2) and
        ``hidden`` (N,hidden,H/2,W/2): the coarse pass's, upsampled to half resolution."""
        # one Haar call over every full-resolution channel (the same numbers as one call each, fewer passes)
        ll, highs = haar_dwt(torch.cat([(image - self.mean) / self.std, guide * 2 - 1, base, guide], 1))
        return torch.cat([ll[:, :3], highs[:, :3].flatten(1, 2), ll[:, 3:4], highs[:, 3], ll[:, 4:5], highs[:, 4],
                          gate_logit * 0.25, (ll[:, 4:5] - ll[:, 5:6]).abs(), hidden], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: on a CPU a batch of hundreds of small tiles convolves ~30% faster in this layout
        return self.net(x.contiguous(memory_format=torch.channels_last))


def fine_output(base: torch.Tensor, gate: torch.Tensor, delta: torch.Tensor,
                correct_gate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine stage's prediction at full resolution: (refined alpha in [0,1], gate logit). The refined alpha: the
    Haar bands of the upsampled coarse alpha ``base`` (N,1,H,W) corrected by the network's ``delta[:, :4]``
    (N,4,H/2,W/2), transformed back; the gate: the upsampled coarse gate logit ``gate`` (N,1,H,W), plus
    ``delta[:, 4:]`` on the 2x2 sub-pixel grid when ``correct_gate``."""
    refined = unbands(bands(base) + delta[:, :4]).clamp(0.0, 1.0)
    return refined, gate + F.pixel_shuffle(delta[:, 4:], 2) if correct_gate else gate
