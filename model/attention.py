"""Cross-band windowed attention: the structure (LL) and detail (high-band) branches query each other inside
local windows (Swin-style shifted windows with their mask)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _window_partition(x: torch.Tensor, win: int) -> torch.Tensor:
    """(N,H,W,C) -> (N, nW, win*win, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // win) * (w // win), win * win, c)


def _window_merge(x: torch.Tensor, win: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (N, nW, win*win, C) -> (N,H,W,C)."""
    n, _, _, c = x.shape
    x = x.view(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def shifted_window_mask(h: int, w: int, win: int, shift: int, device=None) -> torch.Tensor | None:
    """Boolean (nW, 1, T, T) mask, True where a query may attend a key, for windows shifted by ``shift``.

    After rolling the map by ``-shift``, the last row/column of windows holds pixels from opposite borders of
    the image; they must not attend each other (Swin Transformer's mask). ``None`` when ``shift == 0``.
    """
    if shift == 0:
        return None
    region = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws] = label
            label += 1
    ids = _window_partition(region, win)[0, :, :, 0]  # (nW, T)
    return (ids[:, :, None] == ids[:, None, :])[:, None]


class CrossBandAttention(nn.Module):
    """Each branch (structure S, detail D) queries the other inside local windows; one residual per branch.

    ``shift = win // 2`` gives shifted windows (with their mask), so alternating levels connect neighbouring
    windows. Features whose size is not a multiple of ``win`` are edge-padded to one for the windows and cropped
    back: the refiner pads its input to whole windows (what training sees) unless told to pad less (the sparse
    path's coarse pass pads to 16: whole windows at stride 8 cost a 1080p frame's 480x270 coarse pass 26% more
    pixels through every layer).
    """

    def __init__(self, dim: int, heads: int, win: int, shift: int = 0):
        super().__init__()
        self.heads, self.win, self.shift = heads, win, shift
        self.norm_s, self.norm_d = nn.LayerNorm(dim), nn.LayerNorm(dim)
        # keys without bias: a key bias adds the same q.b to every logit of a query, which the softmax cancels (its
        # true gradient is zero, so an optimiser would only drift it on rounding noise)
        self.q_s, self.k_d, self.v_d = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.q_d, self.k_s, self.v_s = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.out_s, self.out_d = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}

    def _mask(self, h, w, device):
        key = (h, w, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = shifted_window_mask(h, w, self.win, self.shift, device)
        return self._mask_cache[key]

    def _attend(self, q, k, v, mask):
        n, nw, t, c = q.shape
        # 4-D (batch*windows, heads, T, d): the layout the fused CUDA attention kernels take
        split = lambda z: z.reshape(n * nw, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        if mask is not None:
            mask = mask.expand(n, -1, -1, -1, -1).reshape(n * nw, 1, t, t)
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return o.transpose(1, 2).reshape(n, nw, t, c)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = s.shape[-2:]
        ph, pw = (-h) % self.win, (-w) % self.win
        if ph or pw:
            pad = (0, pw, 0, ph)
            s, d = self._windowed(F.pad(s, pad, mode="replicate"), F.pad(d, pad, mode="replicate"))
            return s[..., :h, :w], d[..., :h, :w]
        return self._windowed(s, d)

    def _windowed(self, s: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = s.shape
        ts, td = s.permute(0, 2, 3, 1), d.permute(0, 2, 3, 1)
        if self.shift:
            ts = torch.roll(ts, (-self.shift, -self.shift), dims=(1, 2))
            td = torch.roll(td, (-self.shift, -self.shift), dims=(1, 2))
        ts, td = _window_partition(ts, self.win), _window_partition(td, self.win)
        ns, nd = self.norm_s(ts), self.norm_d(td)
        mask = self._mask(h, w, s.device)
        upd_s = self.out_s(self._attend(self.q_s(ns), self.k_d(nd), self.v_d(nd), mask))  # structure asks detail
        upd_d = self.out_d(self._attend(self.q_d(nd), self.k_s(ns), self.v_s(ns), mask))  # detail asks structure
        upd = torch.cat([_window_merge(upd_s, self.win, h, w), _window_merge(upd_d, self.win, h, w)], dim=-1)
        if self.shift:
            upd = torch.roll(upd, (self.shift, self.shift), dims=(1, 2))
        upd = upd.permute(0, 3, 1, 2)
        return s + upd[:, :c], d + upd[:, c:]



def attention_heads(channels: int) -> int:
    """Heads of a cross-band attention of this width: one per 32 channels, at least one."""
    return max(1, channels // 32)

