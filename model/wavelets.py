"""Differentiable 2-D discrete wavelet transforms with one interface.

``dwt = HaarDWT(); ll, highs = dwt(x)`` for ``x`` of shape (N, C, H, W) gives ``ll`` (N, C, h, w) and
``highs`` (N, C, 3, h, w) with ``h = ceil(H/2)``, ``w = ceil(W/2)``; the three detail bands are ordered
horizontal (cH), vertical (cV), diagonal (cD), exactly ``pywt.dwt2(x, 'haar')``'s ``cA, (cH, cV, cD)`` (the
convention pytorch_wavelets uses too), so numbers compare with the literature. ``HaarIDWT()(ll, highs, size)``
inverts it and crops to ``size``.

* ``HaarDWT`` / ``HaarIDWT``: the light transform, plain torch. Haar is orthonormal, so the backward of the
  forward transform is the inverse transform (and vice versa): a custom autograd Function saves no tensors.
  Odd sizes: the last row/column is repeated once (edge padding), which is exactly how PyWavelets extends an odd
  signal in its default 'symmetric' mode and in 'periodization', so odd sizes equal pywt too; the inverse crops
  the padded row/column away.
* ``WaveletDWT(wave, mode)`` / ``WaveletIDWT``: the heavy transform, pytorch_wavelets' DWTForward/DWTInverse
  (db1, db2, db4, ...). It runs in float32 with autocast disabled (pytorch_wavelets fails on fp16 input and in
  AMP backward) and casts the result back to the input's dtype. In 'periodization' mode (the default, and what
  the refiner uses) odd sizes are edge-padded like Haar and band sizes are exactly ``ceil(H/2)``; in the
  size-growing modes ('zero', 'symmetric', 'reflect') the bands are larger, as in pywt, and the inverse crops
  back to ``size``.

With ``levels > 1`` a DWT returns ``(ll, [highs_1, ..., highs_J])`` (finest first, like pytorch_wavelets and the
reverse of ``pywt.wavedec2``'s order) and the IDWT takes that list.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Highs = torch.Tensor | list[torch.Tensor]


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Repeat the last row/column once when H/W is odd (pywt's extension of odd signals)."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def _crop(x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    if size is None:
        return x
    return x[..., : size[0], : size[1]]


# ----------------------------------------------------------------------------------------------- Haar kernels
def _haar_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One orthonormal Haar level of an even-sized (N, C, H, W) tensor.

    With a, b the top-left/right and c, d the bottom-left/right pixel of each 2x2 block:
    ll = (a+b+c+d)/2, cH = (a+b-c-d)/2, cV = (a-b+c-d)/2, cD = (a-b-c+d)/2. Computed as a row pass then a
    column pass of sums and differences (4 elementwise ops over half-size tensors: memory-bound, no conv).
    """
    n, c, hh, ww = x.shape
    h, w = hh // 2, ww // 2
    x6 = x.reshape(n, c, h, 2, w, 2)
    top, bot = x6[:, :, :, 0], x6[:, :, :, 1]  # (n, c, h, w, 2): pixel pairs (a, b) and (c, d)
    lo = (top + bot).mul_(0.5)  # (a+c)/2, (b+d)/2
    hi = (top - bot).mul_(0.5)  # (a-c)/2, (b-d)/2
    ll = lo[..., 0] + lo[..., 1]
    highs = torch.empty((n, c, 3, h, w), dtype=x.dtype, device=x.device)
    torch.add(hi[..., 0], hi[..., 1], out=highs[:, :, 0])  # cH
    torch.sub(lo[..., 0], lo[..., 1], out=highs[:, :, 1])  # cV
    torch.sub(hi[..., 0], hi[..., 1], out=highs[:, :, 2])  # cD
    return ll, highs


def _haar_inverse(ll: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_haar_forward` (its transpose, as the transform is orthonormal).

    ll + cV = a + c, ll - cV = b + d, cH + cD = a - c, cH - cD = b - d; each output pixel is half a sum or
    difference of two of these, written straight into its strided place in the output.
    """
    n, c, h, w = ll.shape
    ch, cv, cd = highs[:, :, 0], highs[:, :, 1], highs[:, :, 2]
    lo0, lo1, hi0, hi1 = ll + cv, ll - cv, ch + cd, ch - cd
    out = torch.empty((n, c, h, 2, w, 2), dtype=ll.dtype, device=ll.device)
    torch.add(lo0, hi0, out=out[:, :, :, 0, :, 0])  # a
    torch.add(lo1, hi1, out=out[:, :, :, 0, :, 1])  # b
    torch.sub(lo0, hi0, out=out[:, :, :, 1, :, 0])  # c
    torch.sub(lo1, hi1, out=out[:, :, :, 1, :, 1])  # d
    return out.mul_(0.5).reshape(n, c, 2 * h, 2 * w)


class _HaarDWTFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D401
        return _haar_forward(x)

    @staticmethod
    def backward(ctx, g_ll, g_highs):
        if g_ll is None:
            g_ll = torch.zeros_like(g_highs[:, :, 0])
        if g_highs is None:
            g_highs = torch.zeros((*g_ll.shape[:2], 3, *g_ll.shape[2:]), dtype=g_ll.dtype, device=g_ll.device)
        return _haar_inverse(g_ll.contiguous(), g_highs.contiguous())


class _HaarIDWTFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ll, highs):  # noqa: D401
        return _haar_inverse(ll, highs)

    @staticmethod
    def backward(ctx, g):
        return _haar_forward(g.contiguous())


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Haar level of (N, C, H, W) (odd sizes edge-padded) -> ``(ll, highs)``; differentiable."""
    return _HaarDWTFn.apply(_pad_even(x).contiguous())


def haar_idwt(ll: torch.Tensor, highs: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`; crops to ``size`` (H, W) when given (undoes odd-size padding)."""
    return _crop(_HaarIDWTFn.apply(ll.contiguous(), highs.contiguous()), size)


# ------------------------------------------------------------------------------------------- shared multilevel
class _DWTBase(nn.Module):
    """Multi-level driver: subclasses implement one level (``_level``)."""

    def __init__(self, levels: int = 1):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.levels = levels

    def _level(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Highs]:
        """(N, C, H, W) -> ``(ll, highs)``; ``highs`` is a list (finest first) when ``levels > 1``."""
        if x.dim() != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        all_highs = []
        ll = x
        for _ in range(self.levels):
            ll, highs = self._level(ll)
            all_highs.append(highs)
        return ll, (all_highs[0] if self.levels == 1 else all_highs)


class _IDWTBase(nn.Module):
    def _level(self, ll: torch.Tensor, highs: torch.Tensor, size) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, ll: torch.Tensor, highs: Highs, size: Sequence[int] | None = None) -> torch.Tensor:
        """Invert ``(ll, highs)``; ``size`` (H, W) crops the result (needed to undo odd-size padding)."""
        levels = highs if isinstance(highs, (list, tuple)) else [highs]
        for j in range(len(levels) - 1, -1, -1):
            h = levels[j]
            # like pywt.waverec2: an odd size one level up shows as a band one larger than that level's bands
            ll = ll[..., : h.shape[-2], : h.shape[-1]]
            target = size if j == 0 else (levels[j - 1].shape[-2], levels[j - 1].shape[-1])
            ll = self._level(ll, h, target)
        return ll


class HaarDWT(_DWTBase):
    """Light orthonormal Haar DWT (plain torch, no parameters); see the module docstring."""

    def _level(self, x):
        return haar_dwt(x)


class HaarIDWT(_IDWTBase):
    """Inverse of :class:`HaarDWT`."""

    def _level(self, ll, highs, size):
        out = haar_idwt(ll, highs)
        return _crop(out, size) if size is not None else out


# --------------------------------------------------------------------------------------- pytorch_wavelets wrap
def _import_pytorch_wavelets():
    with warnings.catch_warnings():  # it imports the deprecated pkg_resources at import time
        warnings.simplefilter("ignore")
        import pytorch_wavelets

    return pytorch_wavelets


class _Fp32Mixin:
    """Keep pytorch_wavelets' filter buffers in float32 even after ``model.half()``."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # type: ignore[misc]
        for name, buf in self.op.named_buffers():  # type: ignore[attr-defined]
            if buf.is_floating_point() and buf.dtype != torch.float32:
                mod_name, _, leaf = name.rpartition(".")
                mod = self.op.get_submodule(mod_name) if mod_name else self.op  # type: ignore[attr-defined]
                mod._buffers[leaf] = buf.float()
        return self


class WaveletDWT(_Fp32Mixin, _DWTBase):
    """pytorch_wavelets ``DWTForward`` (one level per call, ``levels`` times) with the Haar interface.

    ``wave``: any pywt wavelet name (the refiner uses db1, db2, db4); ``mode``: 'periodization' (default; band
    sizes ceil(H/2) like Haar, odd sizes edge-padded as pywt does), or 'zero' | 'symmetric' | 'reflect'
    (bands grow with the filter length, as in pywt).
    """

    def __init__(self, wave: str = "db1", mode: str = "periodization", levels: int = 1):
        super().__init__(levels)
        ptw = _import_pytorch_wavelets()
        self.wave, self.mode = wave, mode
        self.op = ptw.DWTForward(J=1, wave=wave, mode=mode)

    def _level(self, x):
        if self.mode == "periodization":
            x = _pad_even(x)
            if min(x.shape[-2:]) < self.op.h0_col.numel():
                # pytorch_wavelets wraps the signal only once: shorter than the filter it differs from pywt
                raise ValueError(f"{self.wave} periodization needs sizes >= {self.op.h0_col.numel()}, "
                                 f"got {tuple(x.shape[-2:])}")
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            ll, highs = self.op(x.float())
        return ll.to(dtype), highs[0].to(dtype)


class WaveletIDWT(_Fp32Mixin, _IDWTBase):
    """Inverse of :class:`WaveletDWT` (pytorch_wavelets ``DWTInverse``), cropped to ``size``."""

    def __init__(self, wave: str = "db1", mode: str = "periodization"):
        super().__init__()
        ptw = _import_pytorch_wavelets()
        self.wave, self.mode = wave, mode
        self.op = ptw.DWTInverse(wave=wave, mode=mode)

    def _level(self, ll, highs, size):
        dtype = ll.dtype
        with torch.autocast(device_type=ll.device.type, enabled=False):
            out = self.op((ll.float(), [highs.float()]))
        return _crop(out, size).to(dtype)


def make_dwt(wave: str = "haar", mode: str = "periodization", levels: int = 1) -> tuple[nn.Module, nn.Module]:
    """``(dwt, idwt)`` pair: ``wave='haar'`` -> the light Haar ops, otherwise the pytorch_wavelets wrappers."""
    if wave == "haar":
        return HaarDWT(levels), HaarIDWT()
    return WaveletDWT(wave, mode, levels), WaveletIDWT(wave, mode)
