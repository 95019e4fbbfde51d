"""One predictor: a refiner, its device and how it runs (dense or sparse, coarse ratio, guide kind, precision),
decided once. Inference, evaluation, the solver's validation, the real-photograph check and the benches call it.

A frame runs dense (the whole refiner at full resolution) when ``dense`` is asked or when its coarse pass would be
at full size (``model.sparse.auto_ratio`` gives 1 below 768 px on the long side); otherwise the sparse path
(``model.sparse``: a coarse pass, the fine stage in tiles where the refiner can change the guide). Both give the
guide unchanged wherever the output rule keeps it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import torch

from model.checkpoint import load_refiner
from model.evidence import (GUIDE_AGREEMENT, coarse_band_alpha, colour_line_alpha, far_flip_evidence,
                            ring_agreement, ring_colour_evidence, ring_proposal, soft_zone_alpha)
from model.refiner import Refiner, RefinerOutput
from model.sparse import coarse_ratio, refine_sparse

# --guide_quality -> the refiner's guide_accurate: auto lets its trust head judge each guide
GUIDE_QUALITIES = {"auto": None, "accurate": True, "coarse": False}


@dataclasses.dataclass
class Prediction:
    """alpha (N,1,H,W) in [0,1]; accurate (N,) the rule each frame got; ratio: the coarse pass's downsample ratio
    (1.0: the frame ran dense); dense: the dense pass's whole output (focus map, gate...) when it ran dense."""

    alpha: torch.Tensor
    accurate: torch.Tensor
    ratio: float
    dense: RefinerOutput | None = None


class Predictor:
    """``Predictor(model, device, ...)(image, guide) -> Prediction``; see the module docstring.

    ``downsample_ratio``: "auto" or a number in [1/64, 1] (the coarse pass's scale); ``dense``: always the dense
    pass; ``guide_quality``: one of :data:`GUIDE_QUALITIES`; ``autocast``: a dtype to run under autocast on
    ``device`` (float16 for inference's ``--fp16``, the solver's AMP dtype), or None for fp32; ``far_evidence``:
    flips far from the guide's boundary are kept only where the image supports them (``model.evidence``; off
    only to measure what it does); ``ring_evidence``: with the accurate rule, the image's colour line judges each
    boundary-ring pixel where it says anything, not the gate (``model.evidence``; the sparse path judges the ring
    in the tiles it runs); ``guide_check``: with ``guide_quality`` auto, the image calls each frame's guide, not
    the trust head: one whose boundary ring the colours agree with (``model.evidence.ring_agreement`` >=
    ``GUIDE_AGREEMENT``) gets the accurate rule, any other the coarse rule (off: the trust head calls every
    frame; on the 116 real items the image called 231 of their 232 guides right, the trust head 25 of the 116
    coarse guides accurate: bench/RESULTS.md, "Coarse guides"); ``coarse_band``: a coarse-ruled frame's trimap band (within
    8 px of the guide's boundary, 2 of the refiner's, and where they disagree) takes the alpha of local samples,
    smoothed by a guided filter (``model.evidence.coarse_band_alpha``: the refiner decides the structure, the image
    the values; off in the ablation's evaluations, where an untrained refiner must return its guide); ``ring_samples``: with the
    ring evidence, the ring's value is the alpha of local colour samples (``model.evidence.ring_sampled_alpha``),
    not the refiner's, at every ring pixel where they say anything (off only to measure what they do);
    ``ring_gate``: only where the gate leans open (the refiner proposes, the
    samples dispose), so that an untrained refiner returns its guide exactly (the ablation's evaluations; the
    ungated ring is better on the embedded and the real photographs alike: bench/RESULTS.md, "The ring without
    the gate, and a soft zone beyond it"); ``soft_zone``: with the accurate rule, the zone beyond the ring where
    the image shows soft structure grows from the ring's soft changes and takes the alpha of local samples
    (``model.evidence.soft_zone_alpha``; a measured option, off by default: it made 2 of 89 held-out real items
    worse than their guide)."""

    def __init__(self, model: Refiner, device: torch.device | str = "cpu", downsample_ratio: float | str = "auto",
                 dense: bool = False, guide_quality: str = "auto", autocast: torch.dtype | None = None,
                 far_evidence: bool = True, ring_evidence: bool = True, guide_check: bool = True,
                 ring_samples: bool = True, ring_gate: bool = False, soft_zone: bool = False,
                 coarse_band: bool = True):
        if guide_quality not in GUIDE_QUALITIES:
            raise ValueError(f"guide_quality must be one of {', '.join(GUIDE_QUALITIES)}, got {guide_quality!r}")
        if downsample_ratio != "auto" and not 0 < float(downsample_ratio) <= 1:
            raise ValueError(f"downsample_ratio must be 'auto' or in (0, 1], got {downsample_ratio!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.downsample_ratio, self.dense = downsample_ratio, dense
        self.guide_accurate = GUIDE_QUALITIES[guide_quality]
        self.autocast = autocast
        self.far_evidence, self.ring_evidence, self.guide_check = far_evidence, ring_evidence, guide_check
        self.ring_samples, self.ring_gate, self.soft_zone = ring_samples, ring_gate, soft_zone
        self.coarse_band = coarse_band

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device | str = "cpu",
                        **options) -> tuple[Predictor, dict]:
        """The predictor of a checkpoint (``model.checkpoint.load_refiner``) and the checkpoint's dict."""
        model, ckpt = load_refiner(path, map_location="cpu")
        return cls(model, device, **options), ckpt

    def ratio_for(self, h: int, w: int) -> float:
        """The coarse pass's ratio for an HxW frame: 1.0 (dense) when asked or when auto gives full size."""
        return coarse_ratio(h, w, self.downsample_ratio, self.dense)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, guide: torch.Tensor) -> Prediction:
        """image (N,3,H,W) RGB in [0,1], guide (N,1,H,W) in [0,1], on any device."""
        image, guide = image.to(self.device), guide.to(self.device)
        guide_accurate = self.guide_accurate
        line = None  # the frames' colour line, computed once for the guide check and the ring
        if guide_accurate is None and self.guide_check:
            line = colour_line_alpha(image, guide)
            by_image = ring_agreement(image, guide, line) >= GUIDE_AGREEMENT
            if bool(by_image.all()) or not bool(by_image.any()):
                guide_accurate = bool(by_image[0])
            else:  # a mixed batch: each frame with its own call
                return _cat([self._run(image[i:i + 1], guide[i:i + 1], bool(by_image[i]),
                                       (line[0][i:i + 1], line[1][i:i + 1])) for i in range(image.shape[0])])
        return self._run(image, guide, guide_accurate, line)

    def _run(self, image: torch.Tensor, guide: torch.Tensor, guide_accurate: bool | None,
             line: tuple[torch.Tensor, torch.Tensor] | None = None) -> Prediction:
        ratio = self.ratio_for(*image.shape[-2:])
        on = self.autocast is not None
        with torch.autocast(self.device.type, dtype=self.autocast) if on else contextlib.nullcontext():
            if ratio >= 1.0:
                out = self.model(image, guide, guide_accurate=guide_accurate)
                alpha, accurate, dense, ratio = out.alpha, out.accurate, out, 1.0
                if self.ring_evidence:
                    alpha = ring_colour_evidence(image, guide.to(alpha.dtype), out.refined, out.gate_logit, alpha,
                                                 accurate, ring_proposal(self.model), line, self.ring_samples,
                                                 self.ring_gate)
                    dense = dataclasses.replace(dense, alpha=alpha)
            else:
                sparse = refine_sparse(self.model, image, guide, ratio, guide_accurate,
                                       ring_evidence=self.ring_evidence, line=line,
                                       ring_samples=self.ring_samples, ring_gate=self.ring_gate)
                alpha, accurate, dense, ratio = sparse.alpha, sparse.accurate, None, sparse.ratio
        if self.soft_zone and self.ring_evidence:  # the frame's zone, whichever path refined its ring
            alpha = soft_zone_alpha(image, guide.to(alpha.dtype), alpha, accurate)
            if dense is not None:
                dense = dataclasses.replace(dense, alpha=alpha)
        if self.far_evidence:  # the accurate rule never changes a far pixel: only coarse-ruled frames can change
            alpha = far_flip_evidence(image, guide.to(alpha.dtype), alpha)
            if dense is not None:
                dense = dataclasses.replace(dense, alpha=alpha)
        if self.coarse_band:  # last: its structure is the refiner's output, far flips already judged
            alpha = coarse_band_alpha(image, guide, alpha, accurate)
            if dense is not None:
                dense = dataclasses.replace(dense, alpha=alpha)
        return Prediction(alpha, accurate, ratio, dense)

    def alpha(self, image: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """One HxWx3 float image in [0,1] and its HxW guide (numpy) -> alpha HxW float32."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        g = torch.from_numpy(np.ascontiguousarray(guide))[None, None]
        return self(x, g).alpha[0, 0].float().cpu().numpy()


def _cat(parts: list[Prediction]) -> Prediction:
    """One prediction of a batch run frame by frame (the frames share a size, so a ratio and a path)."""
    def cat(values):
        first = values[0]
        if isinstance(first, torch.Tensor):
            return torch.cat(values)
        if isinstance(first, dict):
            return {k: torch.cat([v[k] for v in values]) for k in first}
        return first
    dense = None
    if all(p.dense is not None for p in parts):
        kind = type(parts[0].dense)  # RefinerOutput (or a test's stand-in dataclass)
        dense = kind(**{f.name: cat([getattr(p.dense, f.name) for p in parts]) for f in dataclasses.fields(kind)})
    return Prediction(torch.cat([p.alpha for p in parts]), torch.cat([p.accurate for p in parts]), parts[0].ratio,
                      dense)
