"""Evidence from the image for what the model changes: do-no-harm rules that rest on neither the gate nor the
trust head.

``far_flip_evidence``: far flips need evidence.

The coarse output rule (``model.output_rule``) may flip a pixel far from the guide's boundary (a missing arm, a false
blob); on real photographs the trust head calls accurate guides coarse half the time and those flips then punch
holes deep inside people (bench/RESULTS.md, "Real photographs"). Here a flip more than ``near_px`` from the
guide's boundary is kept only where the image agrees: the pixel's colour is closer, by ``ratio``, to the colour
of the side it flips to than to the side it leaves, both measured around it (a ``window``-cell box at 1/``scale``
resolution) over the guide's pixels the model did not flip. A hole punched far inside a person has no background
around it to resemble, and a flip into colours that belong to the side it leaves is refused: every refused pixel
comes back to the guide, bit for bit. Changes within ``near_px`` of the boundary are the output rule's alone.

``ring_colour_evidence``: the accurate rule's ring changes rest on the image, not on the gate. With an accurate
guide only the guide's boundary ring may change (``model.output_rule``), and only where the gate is sure
(``accurate_gate_threshold``); on real photographs the gate is as miscalibrated as the trust head: it shuts where
the refinement is right and opens where it is wrong (bench/RESULTS.md, "The ring follows colour evidence"). So
the colour line judges each ring pixel: the pixel's colour projected on the line between the local foreground
and background colours (each the mean over a ``RING_WINDOW`` px box of the guide's own side, at least
``RING_INNER`` px from its boundary) gives an alpha, and the model's on-side refinement is taken where it lands
nearer that alpha than the guide does and the gate leans open (``RING_PROPOSAL``: the refiner proposes, the
image disposes; an untrained refiner, gate 0.27, still returns its guide exactly), refused (the guide) elsewhere.
Where the two sides' colours are closer than ``RING_SEPARATION`` (orange hair on a red wall) the line says
nothing and the gate decides, as before.

``ring_sampled_alpha``: the ring's values come from the image's own samples. The refiner's values in the ring are
worse than a pair of local colour samples on real photographs and on the embedded frames alike (bench/RESULTS.md,
"The ring's values from local samples"): for each ring pixel, the nearest pixel of each side (at least
``SAMPLE_KNOWN_PX`` from the guide's boundary) to the pixel and to the 8 points ``SAMPLE_REACH`` px around it give
9 foreground and 9 background samples; of the 81 pairs the one whose line explains the pixel's colour best (the
least distance from the colour to its projection on the pair's line, as in shared matting) gives the alpha. Where
the gate leans open (the refiner proposes) the ring takes that alpha, held on the guide's side of 0.5; every
variant of the refiner gets the same samples, and an untrained refiner (gate shut) still returns its guide.

``ring_agreement``: is the guide accurate? The image's answer, not the trust head's. At an accurate guide's ring
the colour line puts most pixels on the guide's own side of 0.5 (the truth is at the guide's 0.5 level); at a
coarse guide's ring (grown, shrunk or blocky, so its boundary runs through solid foreground or background) about
half of them. Measured over real photographs and the embedded test frames (bench/RESULTS.md, "The ring follows
colour evidence"): accurate guides 0.58-0.96, coarse ones 0.47-0.57 except embedded mask guides that are nearly
accurate. With ``--guide_quality auto`` a frame whose agreement reaches ``GUIDE_AGREEMENT`` gets the accurate
rule whatever the trust head says (the trust head called 12 of 27 real accurate guides coarse).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model.masks import boundary_distance, boundary_ring, dilate
from model.output_rule import on_guide_side

NEAR_PX = 11  # Chebyshev radius of the zone left to the output rule: 11 px square < 16 px Euclidean everywhere
SCALE = 4  # the colour statistics' resolution (1/4: a cell is 4x4 px)
WINDOW = 33  # cells: the box (132 px at full resolution) over which each side's local colour is averaged
RATIO = 0.7  # a flip must be at least this much closer (distance ratio) to the side it flips to
MIN_SHARE = 0.05  # a side needs this share of the box to have a local colour at all
RING_WINDOW = 31  # px: the box of the ring rule's local foreground and background colours
RING_INNER = 3  # px: only guide pixels this far (Chebyshev; a ring pixel is 1 px) from its boundary vouch for a side
RING_SEPARATION = 0.1  # the two sides' colours must be this far apart (RGB in [0, 1]) for their line to say anything
RING_PROPOSAL = 0.5  # the gate must lean open for the line to take a refinement (an untrained gate is 0.27); a
# model whose accurate_gate_threshold is lower (a test forcing its gates open) proposes at that
GUIDE_AGREEMENT = 0.6  # ring agreement at which a guide counts as accurate (real accurate >= 0.58, coarse <= 0.57)
SAMPLE_KNOWN_PX = 2.0  # a side's samples are guide pixels at least this far (L2 px) from the guide's boundary
SAMPLE_REACH = 6  # px: the 8 points around each ring pixel whose nearest samples it also takes
SAMPLE_CHUNK = 8192  # ring pixels judged at a time (81 pairs each)
SAMPLE_MARGIN = 48  # px around the ring's box where samples are looked for
ZONE_PX = 6.0  # the soft zone reaches at most this far (L2 px) from the guide's boundary, on either side
ZONE_KNOWN_PX = 7.0  # its samples lie beyond it: guide pixels at least this far from the boundary
ZONE_SOFT = 0.1  # a pixel is soft where its sampled alpha lies in (ZONE_SOFT, 1 - ZONE_SOFT)
ZONE_FIT = 0.05  # and its colour lies this close to its pair's line (distance over the pair's distance)
ZONE_STEPS = 8  # 8-connected growth steps from the seeds: the zone stays within 8 px (Chebyshev) of one
COARSE_BAND_PX = 8.0  # a coarse guide's trimap: unknown within this (L2 px) of its boundary (it is off by up to ~7)
COARSE_MODEL_PX = 2.0  # and within this of the refiner's own boundary
GUIDED_RADIUS = 2  # the coarse band's guided filter: 5x5 windows
GUIDED_EPS = 3e-4  # its ridge on the slope (colours in [0, 1]): small, so soft hair keeps its contrast
GUIDED_TILE = 64  # px: the band's filter runs in tiles of this side that hold band pixels


def box_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,C,H,W) -> the sum over each pixel's k x k box (k odd), zeros outside the frame; by cumulative sums, so
    the cost does not grow with k."""
    r = k // 2
    for dim in (-1, -2):
        pad = [0, 0, 0, 0]
        pad[0 if dim == -1 else 2] = r + 1
        pad[1 if dim == -1 else 3] = r
        c = F.pad(x, pad).cumsum(dim)
        n = x.shape[dim]
        x = c.narrow(dim, k, n) - c.narrow(dim, 0, n)
    return x


def _cells(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over scale x scale cells, the frame padded (replicated) to a whole number of cells."""
    h, w = x.shape[-2:]
    ph, pw = math.ceil(h / scale) * scale - h, math.ceil(w / scale) * scale - w
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, scale)


def far_flip_evidence(image: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, near_px: int = NEAR_PX,
                      scale: int = SCALE, window: int = WINDOW, ratio: float = RATIO,
                      min_share: float = MIN_SHARE) -> torch.Tensor:
    """``alpha`` (N,1,H,W) with every change farther than ``near_px`` (Chebyshev) from the guide's 0.5 boundary
    that the image does not support put back to ``guide``; see the module docstring. ``image`` (N,3,H,W)."""
    h, w = guide.shape[-2:]
    inside = guide >= 0.5
    far = dilate(boundary_ring(guide) > 0, near_px) == 0
    changed = far & (alpha != guide)
    if not bool(changed.any()):
        return alpha
    flipped = (alpha >= 0.5) != inside  # near ones too: a flipped blob's rim must not vouch for the blob
    flip = changed & flipped
    colour = _cells(image.float(), scale)
    n, _, y, x = flip.nonzero(as_tuple=True)  # judged one by one: far flips are few, the frame is large
    pixel = image.float()[n, :, y, x]  # (K,3): each flip's own colour
    cy, cx = y // scale, x // scale
    sides = []
    for side in (inside, ~inside):  # the guide's pixels of each side the model did not flip
        share = _cells((side & ~flipped).float(), scale)
        total = box_sum(share, window)
        mean = box_sum(colour * share, window) / total.clamp(min=1e-6)  # each side's local colour, per cell
        sides.append(((pixel - mean[n, :, cy, cx]).square().sum(1).sqrt(),
                      total[n, 0, cy, cx] >= min_share * window * window))
    (d_fg, has_fg), (d_bg, has_bg) = sides
    # fg -> bg: the background must be there and look like the pixel; a missing foreground colour counts as far
    to_bg = has_bg & (~has_fg | (d_bg < ratio * d_fg))
    to_fg = has_fg & (~has_bg | (d_fg < ratio * d_bg))
    ok = torch.zeros_like(flip)
    ok[n, 0, y, x] = torch.where(inside[n, 0, y, x], to_bg, to_fg)  # each flip by the side it leaves
    # far changes that do not flip (the coarse rule makes none) have nothing to vouch for them either
    return torch.where(changed & ~(flip & ok), guide, alpha)


def colour_line_alpha(image: torch.Tensor, guide: torch.Tensor, window: int = RING_WINDOW, inner: int = RING_INNER,
                      separation: float = RING_SEPARATION) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, valid), both (N,1,H,W): each pixel's colour projected on the line from its local background colour
    to its local foreground colour (0 at the background, 1 at the foreground, clipped), and where that says
    anything: both sides present in the ``window`` box and their colours at least ``separation`` apart. A side's
    colour is the mean over the box of the guide's pixels of that side at least ``inner`` px from its boundary."""
    image = image.float()
    inside = guide >= 0.5
    core = dilate(boundary_ring(guide) > 0, max(inner - 2, 0)) == 0  # >= inner px off (a ring pixel is 1 px off)
    means, counts = [], []
    for side in (inside & core, ~inside & core):
        weight = side.float()
        count = box_sum(weight, window)
        means.append(box_sum(image * weight, window) / count.clamp(min=1.0))
        counts.append(count)
    (fg, n_fg), (bg, n_bg) = zip(means, counts)
    line = fg - bg
    length2 = line.square().sum(1, keepdim=True)
    alpha = (((image - bg) * line).sum(1, keepdim=True) / length2.clamp(min=1e-8)).clamp(0, 1)
    valid = (n_fg > 0) & (n_bg > 0) & (length2 >= separation ** 2)
    return alpha, valid


def _nearest(known: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the nearest ``known`` pixel (bool HxW, at least one) to each query point (OpenCV's
    labels)."""
    _, label = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                               labelType=cv2.DIST_LABEL_PIXEL)
    # OpenCV numbers the known pixels 1, 2, ... in row-major order (tested against brute force)
    where = np.flatnonzero(known)[label[qy, qx] - 1]
    return where // known.shape[1], where % known.shape[1]


def ring_sampled_alpha(image: torch.Tensor, guide: torch.Tensor, ring: torch.Tensor | None = None,
                       known_px: float = SAMPLE_KNOWN_PX) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, valid), both (N,1,H,W): at each ``ring`` pixel (default: the guide's boundary ring) the alpha of the
    best of 81 pairs of local samples (see the module docstring), the samples guide pixels at least ``known_px``
    from its boundary, pairs of colours closer than ``RING_SEPARATION`` left out; valid where such a pair exists.
    Elsewhere alpha is 0 and valid False. ``image`` (N,3,H,W) in [0, 1], ``guide`` (N,1,H,W)."""
    alpha, valid, _ = _sampled_alpha_and_fit(image, guide, ring, known_px)
    return alpha, valid


def _sampled_alpha_and_fit(image: torch.Tensor, guide: torch.Tensor, ring: torch.Tensor | None,
                           known_px: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ring_sampled_alpha``'s (alpha, valid) and the best pair's misfit: the distance from the pixel's colour to
    the pair's line over the pair's distance (0 where the colour lies on the line; inf where not valid)."""
    n, _, h, w = guide.shape
    ring = boundary_ring(guide) > 0 if ring is None else ring
    alpha = torch.zeros(n, 1, h, w, dtype=torch.float32, device=guide.device)
    valid = torch.zeros(n, 1, h, w, dtype=torch.bool, device=guide.device)
    misfit = torch.full((n, 1, h, w), math.inf, dtype=torch.float32, device=guide.device)
    for i in range(n):
        full = (guide[i, 0] >= 0.5).cpu().numpy().astype(np.uint8)
        ys, xs = np.nonzero(ring[i, 0].cpu().numpy())
        if not len(ys) or full.all() or not full.any():
            continue
        # the samples are looked for in the ring's box grown by SAMPLE_MARGIN px: a frame's far corners cost
        # time and hold no sample nearer than that
        y0, x0, y1, x1 = _margin_box(ys, xs, h, w)
        inside = np.ascontiguousarray(full[y0:y1, x0:x1])
        known = [cv2.distanceTransform(side, cv2.DIST_L2, 5) >= known_px for side in (inside, 1 - inside)]
        if not (known[0].any() and known[1].any()):
            continue
        out, ok, fit = _best_pairs(image[i], ys, xs, known[0], known[1], (y0, x0))
        py, px = torch.from_numpy(ys[ok]).to(guide.device), torch.from_numpy(xs[ok]).to(guide.device)
        alpha[i, 0, py, px] = out[ok].to(guide.device)
        valid[i, 0, py, px] = True
        misfit[i, 0, py, px] = fit[ok].to(guide.device)
    return alpha, valid, misfit


def _margin_box(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1): the box of the query pixels grown by ``SAMPLE_MARGIN`` px, inside the HxW frame."""
    return (max(0, int(ys.min()) - SAMPLE_MARGIN), max(0, int(xs.min()) - SAMPLE_MARGIN),
            min(h, int(ys.max()) + SAMPLE_MARGIN + 1), min(w, int(xs.max()) + SAMPLE_MARGIN + 1))


def _best_pairs(image: torch.Tensor, ys: np.ndarray, xs: np.ndarray, fg_known: np.ndarray, bg_known: np.ndarray,
                origin: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The local samples' verdict on the query pixels ``(ys, xs)`` (frame coordinates) of one ``image`` (3,H,W):
    the nearest ``fg_known`` and ``bg_known`` pixel (bool maps of a box whose top-left corner is ``origin``) to
    each pixel and to the 8 points ``SAMPLE_REACH`` px around it, and of the 81 pairs the one whose line explains
    the colour best. Returns (alpha, ok, misfit), each (M,) on the CPU: the pair's alpha, whether a pair of colours
    at least ``RING_SEPARATION`` apart exists, and the colour's distance to the pair's line over the pair's
    distance."""
    y0, x0 = origin
    bh, bw = fg_known.shape
    step = (-SAMPLE_REACH, 0, SAMPLE_REACH)
    dy = np.array([a for a in step for _ in step])
    dx = np.array([b for _ in step for b in step])
    qy = np.clip(ys[:, None] + dy, y0, y0 + bh - 1) - y0  # (M,9) query points, in the box
    qx = np.clip(xs[:, None] + dx, x0, x0 + bw - 1) - x0
    (fy, fx), (by, bx) = [_nearest(known, qy, qx) for known in (fg_known, bg_known)]
    fy, fx, by, bx = (torch.from_numpy(v + o) for v, o in ((fy, y0), (fx, x0), (by, y0), (bx, x0)))
    img = image.float().cpu()
    py, px = torch.from_numpy(ys), torch.from_numpy(xs)
    out, ok, fit = torch.empty(len(ys)), torch.zeros(len(ys), dtype=torch.bool), torch.empty(len(ys))
    for a in range(0, len(ys), SAMPLE_CHUNK):
        sl = slice(a, a + SAMPLE_CHUNK)
        colour = img[:, py[sl], px[sl]].T[:, None, None, :]  # (m,1,1,3)
        fg = img[:, fy[sl], fx[sl]].permute(1, 2, 0)[:, :, None, :]  # (m,9,1,3)
        bg = img[:, by[sl], bx[sl]].permute(1, 2, 0)[:, None, :, :]  # (m,1,9,3)
        line = fg - bg
        pair_alpha = (((colour - bg) * line).sum(-1) / line.square().sum(-1).clamp(min=1e-8)).clamp(0, 1)
        miss = (colour - bg - pair_alpha[..., None] * line).square().sum(-1)  # (m,9,9)
        apart = line.square().sum(-1) >= RING_SEPARATION ** 2  # a pair of one colour says nothing
        miss = torch.where(apart, miss, torch.full_like(miss, math.inf))
        best = miss.flatten(1).argmin(1, keepdim=True)
        out[sl] = pair_alpha.flatten(1).gather(1, best)[:, 0]
        ok[sl] = apart.flatten(1).any(1)
        fit[sl] = (miss.flatten(1).gather(1, best)[:, 0]
                   / line.square().sum(-1).flatten(1).gather(1, best)[:, 0].clamp(min=1e-8)).sqrt()
    return out, ok, fit


def guided_filter(image: torch.Tensor, p: torch.Tensor, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS,
                  where: np.ndarray | None = None) -> torch.Tensor:
    """He, Sun and Tang's guided filter with a colour guide: ``image`` (3,H,W), ``p`` (H,W) -> (H,W). In every
    (2 radius + 1)^2 window (cut at the frame's edge) ``p`` is fitted as a linear function of the colour, ridge
    ``eps`` on the slope; each pixel gets the mean over the windows that hold it of their fits at its colour. An
    alpha that is locally a linear function of the colour (the colour-line model of closed-form matting) comes
    out as it went in; sample noise across a window is averaged away. ``where`` (bool HxW): only those pixels'
    values are wanted (the windows are solved only around them; elsewhere the output is ``p``). float64, box sums
    by OpenCV."""
    k = 2 * radius + 1
    x = image.double().cpu().permute(1, 2, 0).numpy()
    q = p.double().cpu().numpy()
    box = lambda v: cv2.boxFilter(v, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)  # noqa: E731
    count = box(np.ones_like(q))
    mean = lambda v: box(v) / (count[..., None] if v.ndim == 3 else count)  # noqa: E731
    mean_i, mean_p = mean(x), mean(q)
    cov_ip = mean(x * q[..., None]) - mean_i * mean_p[..., None]
    solve = np.ones(q.shape, bool) if where is None else dilate(torch.from_numpy(where)[None, None], radius)[0, 0].numpy() > 0
    ys, xs = np.nonzero(solve)
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    second = mean(np.stack([x[..., a] * x[..., b] for a, b in pairs], -1))[ys, xs]  # (M,6)
    var = np.empty((len(ys), 3, 3))
    for j, (a, b) in enumerate(pairs):
        var[:, a, b] = var[:, b, a] = second[:, j] - mean_i[ys, xs, a] * mean_i[ys, xs, b]
    slope = np.zeros(x.shape)
    slope[ys, xs] = np.linalg.solve(var + eps * np.eye(3), cov_ip[ys, xs][..., None])[..., 0]
    offset = mean_p - (slope * mean_i).sum(-1)
    out = (mean(slope) * x).sum(-1) + mean(offset)
    if where is not None:
        out = np.where(where, out, q)
    return torch.from_numpy(out).to(p.dtype)


def _guided_filter_near(image: torch.Tensor, p: torch.Tensor, where: np.ndarray, tile: int = GUIDED_TILE) -> torch.Tensor:
    """``guided_filter(image, p, where=where)``, computed only in the ``tile`` px squares that hold a ``where``
    pixel, each with a halo of twice the radius (a pixel's value depends on windows within the radius, their
    pixels within twice it, so the tiles' values are the whole frame's); elsewhere ``p``. A band around a person
    at 1080p touches about a quarter of the frame."""
    h, w = where.shape
    halo = 2 * GUIDED_RADIUS
    out = p.clone()
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            core = where[y:y + tile, x:x + tile]
            if not core.any():
                continue
            y0, x0, y1, x1 = max(0, y - halo), max(0, x - halo), min(h, y + tile + halo), min(w, x + tile + halo)
            part = guided_filter(image[:, y0:y1, x0:x1], p[y0:y1, x0:x1], where=where[y0:y1, x0:x1])
            out[y:y + tile, x:x + tile] = part[y - y0:y - y0 + core.shape[0], x - x0:x - x0 + core.shape[1]]
    return out


def coarse_band_alpha(image: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, accurate: torch.Tensor,
                      band_px: float = COARSE_BAND_PX, model_px: float = COARSE_MODEL_PX) -> torch.Tensor:
    """``alpha`` (N,1,H,W) with, in each coarse-ruled frame (``accurate`` (N,) False), a trimap band refined from
    local samples. Unknown: within ``band_px`` px of the guide's boundary (a coarse guide is off by up to that),
    within ``model_px`` of the refiner's own boundary (``alpha`` >= 0.5), and wherever the two disagree (a hole the
    refiner filled, a blob it removed). Known: where guide and refiner agree, outside it. Each unknown pixel takes
    the alpha of its best pair of local samples of the two known sides (``_best_pairs``, as the ring's), the band
    then smoothed by a guided filter on the image (``guided_filter``); known pixels are their side (0 or 1). The
    refiner decides the structure, the image the values: on real photographs the refiner's own band values were
    worse than its guide's and the samples' better than shared matting's; on the embedded frames the refiner's
    structure with the samples' values beats both (bench/RESULTS.md, "Coarse guides"). Accurate-ruled frames, and
    frames with no known pixel on a side: ``alpha`` exactly."""
    if bool(accurate.all()):
        return alpha
    out = alpha.clone()
    for i in torch.nonzero(~accurate.cpu()).flatten().tolist():
        side = (guide[i, 0] >= 0.5).cpu().numpy().astype(np.uint8)
        mine = (alpha[i, 0] >= 0.5).cpu().numpy().astype(np.uint8)
        unknown = (boundary_distance(side) <= band_px) | (boundary_distance(mine) <= model_px) | (side != mine)
        fg_known, bg_known = (side == 1) & (mine == 1) & ~unknown, (side == 0) & (mine == 0) & ~unknown
        if not (fg_known.any() and bg_known.any() and unknown.any()):
            continue
        ys, xs = np.nonzero(unknown)
        h, w = unknown.shape
        y0, x0, y1, x1 = _margin_box(ys, xs, h, w)
        value, ok, _ = _best_pairs(image[i], ys, xs, np.ascontiguousarray(fg_known[y0:y1, x0:x1]),
                                   np.ascontiguousarray(bg_known[y0:y1, x0:x1]), (y0, x0))
        band = torch.from_numpy(mine.astype(np.float32))
        band[ys[ok.numpy()], xs[ok.numpy()]] = value[ok]
        smooth = _guided_filter_near(image[i], band, unknown).clamp(0, 1)
        known = torch.from_numpy(mine.astype(np.float32))
        frame = torch.where(torch.from_numpy(unknown), smooth, known)
        out[i, 0] = frame.to(device=alpha.device, dtype=alpha.dtype)
    return out


def soft_zone_alpha(image: torch.Tensor, guide: torch.Tensor, alpha: torch.Tensor, accurate: torch.Tensor,
                    reach: float = ZONE_PX) -> torch.Tensor:
    """``alpha`` (N,1,H,W) with, in each accurate-ruled frame (``accurate`` (N,) bool), the soft zone beyond the
    boundary ring refined from local samples. The zone grows from the seeds (ring pixels the ring rule changed to
    a soft value: the refiner proposed there and the samples found a mixed pixel), ``ZONE_STEPS`` 8-connected
    steps at most, through pixels within ``reach`` px of the guide's boundary whose own sampled alpha
    (``ring_sampled_alpha`` with samples at least ``ZONE_KNOWN_PX`` px away) is soft (``ZONE_SOFT``), explained
    by its pair (misfit <= ``ZONE_FIT``) and no nearer the guide's side than a zone neighbour's (outside the guide
    alpha only falls going out, inside it only rises going in); each zone pixel takes that alpha. Hair that spreads
    past a binary edge is soft all the way out and the zone follows it; at a solid edge the samples say 0 or 1,
    there is no seed and nothing grows. No seed (an untrained refiner's gate is shut, so its ring is its guide's):
    ``alpha`` exactly. Coarse-ruled frames, ring pixels and pixels beyond the zone: ``alpha``."""
    if not bool(accurate.any()):
        return alpha
    ring = boundary_ring(guide) > 0
    soft = (alpha > ZONE_SOFT) & (alpha < 1 - ZONE_SOFT)
    seeds = ring & soft & ((alpha - guide).abs() > 1e-6) & accurate.view(-1, 1, 1, 1).to(guide.device)
    if not bool(seeds.any()):
        return alpha
    inside = guide >= 0.5
    band = torch.stack([torch.from_numpy(boundary_distance(inside[i, 0].cpu().numpy().astype(np.uint8)) <= reach)
                        for i in range(guide.shape[0])])[:, None].to(guide.device)
    candidates = band & ~ring & (dilate(seeds, ZONE_STEPS) > 0)
    sampled, valid, misfit = _sampled_alpha_and_fit(image, guide, candidates, ZONE_KNOWN_PX)
    passable = candidates & valid & (sampled > ZONE_SOFT) & (sampled < 1 - ZONE_SOFT) & (misfit <= ZONE_FIT)
    value = torch.where(seeds, alpha.float(), sampled)
    zone = seeds
    for _ in range(ZONE_STEPS):
        # the highest and the lowest value among each pixel's zone neighbours (3x3)
        high = F.max_pool2d(torch.where(zone, value, -1.0), 3, 1, 1)
        low = -F.max_pool2d(torch.where(zone, -value, -2.0), 3, 1, 1)
        falls = torch.where(inside, value >= low, value <= high)
        grown = zone | (passable & falls & (high >= 0))
        if torch.equal(grown, zone):
            break
        zone = grown
    return torch.where(zone & ~ring, sampled.to(alpha.dtype), alpha)


def ring_colour_evidence(image: torch.Tensor, guide: torch.Tensor, refined: torch.Tensor, gate_logit: torch.Tensor,
                         alpha: torch.Tensor, accurate: torch.Tensor, proposal: float = RING_PROPOSAL,
                         line: tuple[torch.Tensor, torch.Tensor] | None = None,
                         sampled: bool = True, ring_gate: bool = True) -> torch.Tensor:
    """``alpha`` (N,1,H,W) where, in each accurate-ruled frame (``accurate`` (N,) bool), the colour line judges
    the boundary ring: a ring pixel where it says anything is the on-side refinement (``refined`` held on the
    guide's side of 0.5) if the gate leans open there (its probability >= ``proposal``) and the
    refinement lands nearer the line's alpha than the guide does, else the guide; see the module docstring. Ring
    pixels where the line says nothing, other pixels and frames: ``alpha`` (the gate's call). ``line``: the
    frame's ``colour_line_alpha`` when the caller has it already. ``sampled``: where the gate leans open, the
    ring's value is then the local samples' alpha (``ring_sampled_alpha``, ``judge_ring``) wherever they say
    anything (``ring_gate`` False: at every ring pixel where they say anything); off only to measure what they
    do."""
    if not bool(accurate.any()):
        return alpha
    line_alpha, valid = colour_line_alpha(image, guide) if line is None else line
    ring = boundary_ring(guide) > 0
    sample = ring_sampled_alpha(image, guide, ring & accurate.view(-1, 1, 1, 1)) if sampled else None
    return judge_ring(guide, refined, gate_logit, alpha, line_alpha, valid & accurate.view(-1, 1, 1, 1), ring,
                      proposal, sample, ring_gate)


def judge_ring(guide: torch.Tensor, refined: torch.Tensor, gate_logit: torch.Tensor, alpha: torch.Tensor,
               line_alpha: torch.Tensor, valid: torch.Tensor, ring: torch.Tensor,
               proposal: float = RING_PROPOSAL,
               sample: tuple[torch.Tensor, torch.Tensor] | None = None, ring_gate: bool = True) -> torch.Tensor:
    """The colour line's verdict on ``ring`` pixels where it is ``valid``: the on-side refinement where the gate's
    probability is >= ``proposal`` and it lands nearer ``line_alpha`` than the guide does, else the guide; then,
    with ``sample`` (``ring_sampled_alpha``'s (alpha, valid)), every ring pixel where the gate leans open and the
    samples say something takes their alpha held on the guide's side; every other pixel: ``alpha``. All (N,1,H,W); the sparse path calls it on tiles with the full frame's line cut to
    them."""
    on_side = on_guide_side(guide, refined).to(alpha.dtype)
    leans_open = torch.sigmoid(gate_logit.float()) >= proposal
    take = ((on_side - line_alpha).abs() < (guide - line_alpha).abs()) & leans_open
    out = torch.where(ring & valid, torch.where(take, on_side, guide.to(alpha.dtype)), alpha)
    if sample is not None:  # where the refiner proposes, the ring's value is the local samples' alpha
        sampled = on_guide_side(guide, sample[0].to(alpha.dtype)).to(alpha.dtype)
        out = torch.where(ring & sample[1] & (leans_open if ring_gate else True), sampled, out)
    return out


def ring_agreement(image: torch.Tensor, guide: torch.Tensor,
                   line: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(N,) the share of each frame's boundary-ring pixels, among those where the colour line says anything
    (``colour_line_alpha``, or ``line`` when the caller has it), whose colour-line alpha is on the guide's side of
    0.5; 0 where it says nothing."""
    line_alpha, valid = colour_line_alpha(image, guide) if line is None else line
    judged = (boundary_ring(guide) > 0) & valid
    agree = judged & ((line_alpha >= 0.5) == (guide >= 0.5))
    return agree.flatten(1).sum(1) / judged.flatten(1).sum(1).clamp(min=1)


def ring_proposal(model: torch.nn.Module) -> float:
    """The gate probability at which a refiner's ring refinement is proposed to the colour line: ``RING_PROPOSAL``,
    or the refiner's ``accurate_gate_threshold`` where that is lower (a model without a config: the constant)."""
    threshold = getattr(getattr(model, "config", None), "accurate_gate_threshold", RING_PROPOSAL)
    return min(RING_PROPOSAL, float(threshold))
