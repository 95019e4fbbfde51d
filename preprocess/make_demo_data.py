"""The embedded default data set: a small, procedurally generated, VideoMatte240K-shaped set of people clips.

It lets the whole pipeline run end to end on a fresh machine in minutes, and its ground truth is exact.

Written under ``--root`` (default ``data/demo``):
```
raw/<split>/fgr/<clip>.mp4          foreground video (as VideoMatte240K ships it; lossy)
raw/<split>/pha/<clip>.mp4          alpha video (lossy)
raw/<split>/fgr/<clip>/0000.png     the same frames, lossless (8-bit RGB); stages prefer these
raw/<split>/pha/<clip>/0000.png     lossless alpha (16-bit)
raw/<split>/meta/<clip>.json        how the clip was made (subjects, motions, seeds)
backgrounds/<split>/<name>.png      textured scenes with depth structure
backgrounds/<split>/<name>.disp.npy their true disparity (float32 HxW, larger = nearer)
contact_sheet.png                   an overview a person can look at
```
Subjects are 2-D puppets that read as people: head, neck, shoulders, a textured torso running off the bottom
of the frame (VideoMatte240K framing), two jointed arms, and hair made of many anti-aliased strands 0.3-2 px
wide, so the alpha holds the thin semi-transparent structures matting is about. They walk, sway and turn
smoothly; each frame averages sub-frames over an open shutter, which gives motion-blurred soft edges. Some clips
hold two people at different distances. Shapes are drawn at ``SUPERSAMPLE`` x resolution and area-averaged,
so edges carry exact fractional coverage.

Everything is a pure function of ``--seed`` and the unit's name: the same seed gives byte-identical PNGs.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.atomic import Manifest, atomic_dir, write_json_atomic
from utils.cli import SPLITS, UserError, add_common_args, run_main, shard_items, splits_of, unit_seed
from utils.images import to_uint, write_png
from utils.paths import DataLayout, frame_name
from utils.video import write_video

log = logging.getLogger("make_demo_data")

SUPERSAMPLE = 3  # draw at 3x and area-average: a 1-px line at 3x covers a third of an output pixel
SUBFRAMES = 4  # sub-frames averaged per frame (open shutter) for motion blur
SHUTTER = 0.5  # fraction of the frame interval the shutter is open
CLIPS_PER_SPLIT = {"train": 6, "test": 3}
BACKGROUNDS_PER_SPLIT = {"train": 6, "test": 3}
BG_MARGIN = 1.3  # backgrounds are larger than clips so compositing can crop and pan


# --------------------------------------------------------------------------------------------- people
@dataclass
class Person:
    """One puppet: appearance and motion parameters, all drawn from one seeded generator."""

    x0: float  # hip centre at t=0, output pixels
    y0: float  # hip height (may be below the frame: half-body framing)
    scale: float  # head radius, output pixels
    vx: float  # walking speed, px/frame
    bob: float  # vertical bob amplitude, px
    sway: float  # body sway amplitude, radians
    turn: float  # turn amplitude (0..1 squash of the body's width)
    freq: float  # motion frequency, cycles/frame
    phase: float
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    shirt2: np.ndarray
    stripe_period: float
    stripe_angle: float
    strands: list  # per strand: (root angle, length, bend, thickness, shade, wave phase)
    hair_long: float  # how far the hair mass falls down the sides (0..1)

    @staticmethod
    def random(rng: np.random.Generator, width: int, height: int, distance: float) -> "Person":
        """``distance`` 1 = near (large), 2 = farther (smaller, higher in frame)."""
        scale = height * rng.uniform(0.075, 0.095) / distance
        n_strands = int(rng.integers(140, 240))
        strands = [(rng.uniform(-math.pi * 0.97, -math.pi * 0.03), rng.uniform(0.6, 2.6), rng.uniform(-0.5, 0.5),
                    int(rng.choice([1, 1, 2, 2, 3, 4, 5, 6])), rng.uniform(0.75, 1.25), rng.uniform(0, 2 * math.pi))
                   for _ in range(n_strands)]
        hair_base = rng.choice([[0.12, 0.08, 0.05], [0.35, 0.22, 0.1], [0.8, 0.65, 0.35], [0.05, 0.05, 0.05],
                                [0.55, 0.25, 0.1]])
        return Person(
            x0=rng.uniform(0.3, 0.7) * width, y0=height * rng.uniform(0.95, 1.15) - (distance - 1) * height * 0.15,
            scale=scale, vx=rng.uniform(-1.2, 1.2) / distance, bob=rng.uniform(0.5, 2.0),
            sway=rng.uniform(0.02, 0.08), turn=rng.uniform(0.0, 0.35), freq=rng.uniform(0.02, 0.06),
            phase=rng.uniform(0, 2 * math.pi),
            skin=np.array(rng.choice([[0.95, 0.78, 0.66], [0.78, 0.57, 0.44], [0.55, 0.38, 0.28],
                                      [0.36, 0.24, 0.17]])) * rng.uniform(0.9, 1.05),
            hair=np.array(hair_base), shirt=rng.uniform(0.1, 0.9, 3), shirt2=rng.uniform(0.1, 0.9, 3),
            stripe_period=rng.uniform(4, 12), stripe_angle=rng.uniform(0, math.pi),
            strands=strands, hair_long=rng.uniform(0.2, 1.0),
        )


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 on the canvas


class Canvas:
    """Premultiplied colour + alpha at supersampled resolution; parts are composited back to front with 'over'.

    Parts are painted inside their bounding box only: a part covers a small fraction of the frame, and
    full-canvas blending would dominate the generator's run time.
    """

    def __init__(self, width: int, height: int):
        self.w, self.h = width * SUPERSAMPLE, height * SUPERSAMPLE
        self.color = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)

    def box(self, points: np.ndarray, pad: float) -> Box | None:
        """Bounding box of ``points`` grown by ``pad`` pixels, clipped to the canvas (None if outside)."""
        y0 = max(int(np.floor(points[:, 1].min() - pad)), 0)
        y1 = min(int(np.ceil(points[:, 1].max() + pad)) + 1, self.h)
        x0 = max(int(np.floor(points[:, 0].min() - pad)), 0)
        x1 = min(int(np.ceil(points[:, 0].max() + pad)) + 1, self.w)
        return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None

    def paint(self, part: tuple[np.ndarray, Box] | None, color) -> None:
        """Composite a part ``(coverage, box)`` over the canvas; ``color`` is (3,) or a function of the box
        returning a per-pixel colour."""
        if part is None:
            return
        cov, (y0, y1, x0, x1) = part
        c = color((y0, y1, x0, x1)) if callable(color) else np.asarray(color, np.float32)
        cov3 = cov[..., None]
        self.color[y0:y1, x0:x1] = cov3 * c + (1 - cov3) * self.color[y0:y1, x0:x1]
        self.alpha[y0:y1, x0:x1] = cov + (1 - cov) * self.alpha[y0:y1, x0:x1]

    def paint_premultiplied(self, color: np.ndarray, alpha: np.ndarray, box: Box) -> None:
        y0, y1, x0, x1 = box
        self.color[y0:y1, x0:x1] = color + (1 - alpha[..., None]) * self.color[y0:y1, x0:x1]
        self.alpha[y0:y1, x0:x1] = alpha + (1 - alpha) * self.alpha[y0:y1, x0:x1]


def _poly_coverage(canvas: Canvas, poly: np.ndarray) -> tuple[np.ndarray, Box] | None:
    box = canvas.box(poly, 2)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255, box


def _limb_coverage(canvas: Canvas, points: np.ndarray, thickness: float) -> tuple[np.ndarray, Box] | None:
    box = canvas.box(points, thickness / 2 + 3)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((points - [x0, y0]) * 16).astype(np.int32)
    for a, b in zip(pts[:-1], pts[1:]):
        cv2.line(mask, tuple(map(int, a)), tuple(map(int, b)), 255, max(1, int(round(thickness))), cv2.LINE_AA,
                 shift=4)
    return mask.astype(np.float32) / 255, box


def _ellipse_points(center, axes, angle_deg: float, start: float = 0, end: float = 360) -> np.ndarray:
    pts = cv2.ellipse2Poly((0, 0), (int(axes[0] * 16), int(axes[1] * 16)), int(angle_deg), int(start), int(end), 3)
    return pts.astype(np.float64) / 16 + np.asarray(center, np.float64)


def draw_person(canvas: Canvas, person: Person, t: float, texture: np.ndarray) -> None:
    """Draw ``person`` at time ``t`` (frames, fractional for sub-frames) onto ``canvas``."""
    s = SUPERSAMPLE
    r = person.scale * s
    w_phase = 2 * math.pi * person.freq * t + person.phase
    hip = np.array([(person.x0 + person.vx * t) * s, (person.y0 + person.bob * math.sin(2 * w_phase)) * s])
    sway = person.sway * math.sin(w_phase)
    squash = 1.0 - person.turn * (0.5 + 0.5 * math.sin(0.5 * w_phase))  # turning narrows the body

    def body(points):  # body-local (x right, y up, hip at origin, units of head radius) -> canvas pixels
        local = np.asarray(points, np.float64) * [r * squash, -r]
        return _rot(local, sway) + hip

    def cloth(box: Box) -> np.ndarray:  # striped cloth with fine weave noise, moving with the body
        y0, y1, x0, x1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = (xx - hip[0]) * math.cos(person.stripe_angle + sway) + (yy - hip[1]) * math.sin(person.stripe_angle + sway)
        stripes = (np.sin(2 * math.pi * u / (person.stripe_period * s)) > 0).astype(np.float32)[..., None]
        weave = texture[y0:y1, x0:x1, None]
        return np.clip((stripes * person.shirt + (1 - stripes) * person.shirt2) * weave, 0, 1)

    torso = _poly_coverage(canvas, body([[-2.3, 4.6], [2.3, 4.6], [2.5, 4.0], [1.9, 0.0], [1.9, -8.0], [-1.9, -8.0],
                                         [-1.9, 0.0], [-2.5, 4.0]]))
    neck = _limb_coverage(canvas, body([[0, 4.3], [0, 5.6]]), 0.9 * r * squash)
    head_c = body([[0.15 * person.turn * math.sin(0.5 * w_phase), 6.5]])[0]
    head = _poly_coverage(canvas, _ellipse_points(head_c, (0.82 * r * squash, r), math.degrees(sway)))
    canvas.paint(torso, cloth)
    swing = 0.35 * math.sin(w_phase)  # arms: shoulder -> elbow -> wrist
    for side, sign in ((-1, 1), (1, -1)):
        shoulder = np.array([side * 2.55, 4.0])
        spread = 0.22 + 0.1 * math.sin(w_phase + side)  # arms hang beside the torso, swinging with the gait
        elbow = shoulder + 2.7 * np.array([side * math.sin(spread) + 0.3 * sign * swing, -math.cos(spread)])
        wrist = elbow + 2.5 * np.array([side * 0.5 * math.sin(spread) + 0.5 * sign * swing, -1.0])
        pts = body([shoulder, elbow, wrist])
        canvas.paint(_limb_coverage(canvas, pts[:2], 1.05 * r), lambda box: cloth(box) * 0.85)
        canvas.paint(_limb_coverage(canvas, pts[1:], 0.85 * r), person.skin * 0.95)
        canvas.paint(_poly_coverage(canvas, _ellipse_points(pts[2], (0.45 * r, 0.55 * r), 0)), person.skin)
    canvas.paint(neck, person.skin * 0.9)
    canvas.paint(head, person.skin)
    _draw_hair(canvas, person, head_c, r * squash, r, sway, t)


def _draw_hair(canvas: Canvas, person: Person, head_c: np.ndarray, rx: float, ry: float, sway: float,
               t: float) -> None:
    """A hair cap over the top of the head plus many thin anti-aliased strands."""
    # the crown: the upper half of a slightly larger ellipse; two locks fall down the sides, leaving the face
    cap_pts = _ellipse_points(head_c, (1.08 * rx, 1.1 * ry), math.degrees(sway), 180, 360)
    canvas.paint(_poly_coverage(canvas, cap_pts), person.hair * 0.9)
    drop = person.hair_long * 1.6 * ry
    for end, inward in ((cap_pts[0], 1.0), (cap_pts[-1], -1.0)):
        lock = np.array([end + [0, -0.2 * ry], end + [inward * 0.3 * rx, -0.1 * ry], end + [inward * 0.22 * rx, drop],
                         end + [-inward * 0.08 * rx, drop]])
        canvas.paint(_poly_coverage(canvas, lock), person.hair * 0.85)
    # strands, all at once: outwards from the scalp, bending with gravity and their own bend, waving slowly
    angle, length, bend, thick, shade, wave = (np.array(v, np.float64) for v in zip(*person.strands))
    a = angle + sway
    steps = 8
    points = np.empty((len(a), steps + 1, 2))
    points[:, 0] = head_c + np.stack([1.02 * rx * np.cos(a), 1.05 * ry * np.sin(a)], axis=1)
    direction = np.stack([np.cos(a), np.sin(a)], axis=1)
    turn = (bend + 0.25 * np.sin(0.15 * t + wave)) / steps
    for k in range(steps):
        c, s_ = np.cos(turn), np.sin(turn)
        direction = np.stack([c * direction[:, 0] - s_ * direction[:, 1], s_ * direction[:, 0] + c * direction[:, 1]], 1)
        direction[:, 1] += 0.45  # gravity: strands leave the scalp outwards, then fall
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        points[:, k + 1] = points[:, k] + direction * (length * ry / steps)[:, None]
    box = canvas.box(points.reshape(-1, 2), 8)
    if box is None:
        return
    y0, y1, x0, x1 = box
    # uint8 canvases, because cv2's anti-aliased lines blend exactly as premultiplied 'over' onto black
    color = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((points - [x0, y0]) * 16).astype(np.int32)
    for pts, th, sh in zip(fixed, thick.astype(int), shade):
        c = tuple(float(v) for v in np.clip(person.hair * sh * 255, 0, 255))
        cv2.polylines(color, [pts], False, c, int(th), cv2.LINE_AA, shift=4)
        cv2.polylines(alpha, [pts], False, 255, int(th), cv2.LINE_AA, shift=4)
    canvas.paint_premultiplied(color.astype(np.float32) / 255, alpha.astype(np.float32) / 255, box)


def _downsample(img: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks (exact coverage; INTER_AREA at an integer factor is a box mean)."""
    h, w = img.shape[0] // SUPERSAMPLE, img.shape[1] // SUPERSAMPLE
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _cloth_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Fine weave noise around 1, at supersampled resolution."""
    noise = rng.normal(1.0, 0.12, (height * SUPERSAMPLE, width * SUPERSAMPLE)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 1.2)


def render_frame(people: Sequence[Person], t: float, width: int, height: int,
                 textures: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (premultiplied colour HxWx3, alpha HxW) float32, averaged over the open shutter."""
    color = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    for k in range(SUBFRAMES):
        ts = t + SHUTTER * (k / SUBFRAMES - 0.5)
        canvas = Canvas(width, height)
        for person, texture in zip(people, textures):  # far to near
            draw_person(canvas, person, ts, texture)
        color += _downsample(canvas.color)
        alpha += _downsample(canvas.alpha)
    return color / SUBFRAMES, alpha / SUBFRAMES


def unpremultiply(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colour from premultiplied colour; where alpha is ~0, extend nearby colour outwards
    (normalised convolution), as VideoMatte240K's foregrounds have colour everywhere."""
    fgr = color / np.maximum(alpha, 1e-6)[..., None]
    weight = cv2.GaussianBlur(alpha, (0, 0), 6) + 1e-6
    spread = cv2.GaussianBlur(color, (0, 0), 6) / weight[..., None]
    blend = np.clip(alpha * 20, 0, 1)[..., None]
    return np.clip(blend * fgr + (1 - blend) * spread, 0, 1).astype(np.float32)


@dataclass
class ClipSpec:
    width: int
    height: int
    frames: int
    fps: float


def make_people(rng: np.random.Generator, spec: ClipSpec, n_people: int) -> list[Person]:
    """``n_people`` puppets, far to near (the first is drawn first)."""
    distances = sorted([1.0] + [float(rng.uniform(1.4, 2.0)) for _ in range(n_people - 1)], reverse=True)
    people = [Person.random(rng, spec.width, spec.height, d) for d in distances]
    if n_people > 1:  # spread them across the frame
        xs = np.linspace(0.25, 0.75, n_people)
        rng.shuffle(xs)
        for p, x in zip(people, xs):
            p.x0 = float(x * spec.width)
    return people


def render_clip(seed: int, spec: ClipSpec, n_people: int) -> tuple[np.ndarray, np.ndarray, list[dict], list]:
    """A whole clip: (fgr TxHxWx3, alpha TxHxW, per-person descriptions, people) from one seed."""
    rng = np.random.default_rng(seed)
    people = make_people(rng, spec, n_people)
    textures = [_cloth_texture(rng, spec.width, spec.height) for _ in people]
    fgr = np.zeros((spec.frames, spec.height, spec.width, 3), np.float32)
    pha = np.zeros((spec.frames, spec.height, spec.width), np.float32)
    for t in range(spec.frames):
        color, alpha = render_frame(people, float(t), spec.width, spec.height, textures)
        fgr[t] = unpremultiply(color, alpha)
        pha[t] = alpha
    info = [{"head_radius_px": round(p.scale, 2), "speed_px_per_frame": round(p.vx, 3), "sway_rad": round(p.sway, 3),
             "turn": round(p.turn, 3), "strands": len(p.strands)} for p in people]
    return fgr, pha, info, people


# ----------------------------------------------------------------------------------------- backgrounds
def render_background(seed: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured scene with depth structure and its true disparity (float32, larger = nearer, in (0, 1]).

    A back wall at a far depth, a ground plane in perspective (tiles shrink towards the horizon), and boxes and
    pillars standing on the ground at several depths, drawn far to near. Fine texture everywhere so that
    defocus visibly removes high frequencies.
    """
    rng = np.random.default_rng(seed)
    horizon = height * rng.uniform(0.35, 0.6)
    tilt = rng.uniform(-0.08, 0.08)  # camera roll: the horizon is not quite level
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2
    horizon_y = horizon + tilt * (xx - cx)
    focal = float(width)
    cam_h = 1.6  # camera height above the ground, metres
    z_wall = rng.uniform(8, 20)
    below = np.maximum(yy - horizon_y, 1e-3)
    z_ground = np.minimum(focal * cam_h / below, z_wall)  # ground depth, capped where it meets the wall
    depth = np.where(yy > horizon_y, z_ground, z_wall).astype(np.float32)

    # ground: perspective tiles + grain; wall: bricks + grain
    gx = (xx - cx) * depth / focal
    tile = rng.uniform(0.4, 1.0)
    checker = ((np.floor(gx / tile) + np.floor(depth / tile)) % 2).astype(np.float32)
    ground_a, ground_b = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    ground = checker[..., None] * ground_a + (1 - checker[..., None]) * ground_b
    brick_h = rng.uniform(6, 12)
    row = np.floor(yy / brick_h)
    brick = ((np.floor((xx + (row % 2) * brick_h) / (2 * brick_h)) + row) % 2).astype(np.float32)
    mortar = ((yy % brick_h) < 1.2).astype(np.float32)
    wall_col = rng.uniform(0.3, 0.9, 3)
    wall = (wall_col * (0.85 + 0.15 * brick[..., None])) * (1 - 0.5 * mortar[..., None])
    is_wall = depth >= z_wall - 1e-3
    image = np.where(is_wall[..., None], wall, ground).astype(np.float32)

    # objects standing on the ground at several depths, far to near
    n_obj = int(rng.integers(3, 7))
    zs = np.sort(rng.uniform(2.5, z_wall * 0.9, n_obj))[::-1]
    for z in zs:
        base_y = horizon + focal * cam_h / z
        x = rng.uniform(0, width)
        w_m, h_m = rng.uniform(0.3, 1.5), rng.uniform(0.5, 2.5)
        w_px, h_px = w_m * focal / z, h_m * focal / z
        x0, x1 = int(x - w_px / 2), int(x + w_px / 2)
        y0, y1 = int(base_y - h_px), int(base_y)
        x0c, x1c, y0c, y1c = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
        if x1c <= x0c or y1c <= y0c:
            continue
        col = rng.uniform(0.1, 0.95, 3)
        stripes = 0.8 + 0.2 * np.sin(2 * math.pi * xx[y0c:y1c, x0c:x1c] / rng.uniform(3, 9))[..., None]
        image[y0c:y1c, x0c:x1c] = col * stripes
        depth[y0c:y1c, x0c:x1c] = z
    grain = cv2.GaussianBlur(rng.normal(1.0, 0.1, (height, width)).astype(np.float32), (0, 0), 0.7)
    image = np.clip(image * grain[..., None], 0, 1).astype(np.float32)
    disparity = (1.0 / depth).astype(np.float32)
    disparity /= disparity.max()
    return image, disparity


# ---------------------------------------------------------------------------------------------- stage
def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], tile_h: int = 128) -> np.ndarray:
    """Tile images (float RGB or gray) into a labelled sheet, one row per clip/background set."""
    out_rows = []
    for row, label in zip(rows, labels):
        tiles = []
        for img in row:
            img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
            scale = tile_h / img.shape[0]
            tiles.append(cv2.resize(img, (int(img.shape[1] * scale), tile_h), interpolation=cv2.INTER_AREA))
        strip = np.ascontiguousarray(to_uint(np.concatenate(tiles, axis=1)))
        cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 50), 1, cv2.LINE_AA)
        out_rows.append(strip)
    width = max(r.shape[1] for r in out_rows)
    out_rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in out_rows]
    return np.concatenate(out_rows, axis=0)


def _checker(h: int, w: int, size: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // size + xx // size) % 2)[..., None] == 0, 0.8, 0.55).astype(np.float32) * np.ones(3)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like WIDTHxHEIGHT (e.g. 384x256), got {text!r}") from None
    if w < 32 or h < 32:
        raise UserError(f"--size {text}: at least 32x32")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--size", default="384x256", help="clip size WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--frames", type=int, default=24, help="frames per clip (default: %(default)s)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--scale", type=int, default=1, help="multiply the number of clips and backgrounds")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    width, height = parse_size(args.size)
    if args.frames < 1 or args.scale < 1:
        raise UserError("--frames and --scale must be at least 1")
    layout = DataLayout(args.root)
    spec = ClipSpec(width, height, args.frames, args.fps)
    settings = {"seed": args.seed, "size": [width, height], "frames": args.frames, "fps": args.fps}
    made = skipped = 0
    for split in splits_of(args.split):
        manifest = Manifest(layout.manifest("make_demo_data", split))
        bg_names = [f"bg_{i:03d}" for i in range(BACKGROUNDS_PER_SPLIT[split] * args.scale)]
        for name in shard_items(bg_names, args.shard):
            unit = f"background/{name}"
            if manifest.done(unit) and manifest.info(unit).get("settings") == settings and not args.overwrite:
                skipped += 1
                continue
            bw, bh = int(round(width * BG_MARGIN)), int(round(height * BG_MARGIN))
            image, disp = render_background(unit_seed(args.seed, "background", split, name), bw, bh)
            folder = layout.backgrounds(split)
            write_png(folder / f"{name}.png", image)
            np.save(folder / f"{name}.disp.npy", disp)  # np.save is not atomic: the marker below is what counts
            manifest.mark_done(unit, settings=settings)
            made += 1
        clips = [f"clip_{i:04d}" for i in range(CLIPS_PER_SPLIT[split] * args.scale)]
        for clip in tqdm(shard_items(clips, args.shard), desc=f"demo clips ({split})", unit="clip"):
            unit = f"clip/{clip}"
            info = manifest.info(unit) if manifest.done(unit) else None
            if info and info.get("settings") == settings and not args.overwrite:
                skipped += 1
                continue
            seed = unit_seed(args.seed, "clip", split, clip)
            n_people = 2 if clips.index(clip) % 3 == 2 else 1  # every third clip holds two people
            fgr, pha, people, _ = render_clip(seed, spec, n_people)
            write_clip(layout, split, clip, fgr, pha, args.fps, overwrite=True)
            write_json_atomic(layout.raw(split, "meta") / f"{clip}.json",
                              {"clip": clip, "split": split, "seed": seed, "people": people, **settings})
            manifest.mark_done(unit, settings=settings)
            made += 1
    log.info("demo data: %d units written, %d already there (same settings) under %s", made, skipped, layout.root)
    if made or not (layout.root / "contact_sheet.png").exists():
        write_sheet(layout, args.split)
    return 0


def write_clip(layout: DataLayout, split: str, clip: str, fgr: np.ndarray, pha: np.ndarray, fps: float,
               overwrite: bool = False) -> None:
    """Lossless frame folders (fgr 8-bit, pha 16-bit) and the lossy mp4s VideoMatte240K ships, each atomic."""
    with atomic_dir(layout.raw(split, "fgr") / clip, overwrite=overwrite) as tmp:
        for t, frame in enumerate(fgr):
            write_png(tmp / frame_name(t), frame)
    with atomic_dir(layout.raw(split, "pha") / clip, overwrite=overwrite) as tmp:
        for t, frame in enumerate(pha):
            write_png(tmp / frame_name(t), frame, bits=16)
    write_video(layout.raw(split, "fgr") / f"{clip}.mp4", fgr, fps)
    write_video(layout.raw(split, "pha") / f"{clip}.mp4", pha, fps)


def write_sheet(layout: DataLayout, split: str) -> Path:
    """Contact sheet of what is on disk: up to 4 clips per split and the backgrounds with their disparity."""
    from utils.images import list_images, read_image
    from utils.video import clip_sources

    rows, labels = [], []
    for sp in splits_of(split) if split != "all" else SPLITS:
        for clip, src in list(clip_sources(layout.raw(sp, "fgr")).items())[:4]:
            pha_src = layout.raw(sp, "pha") / clip
            if not (src.is_dir() and pha_src.is_dir()):
                continue
            frames = list_images(src)
            mid = len(frames) // 2
            f0, fm = read_image(frames[0]), read_image(frames[mid])
            a0, am = read_image(list_images(pha_src)[0], gray=True), read_image(list_images(pha_src)[mid], gray=True)
            bg = _checker(*am.shape)
            rows.append([f0, a0, am, am[..., None] * fm + (1 - am[..., None]) * bg])
            labels.append(f"{sp}/{clip}: fgr | alpha t=0 | alpha t={mid} | composite over checker")
        bgs = list_images(layout.backgrounds(sp))[:4]
        if bgs:
            row = []
            for p in bgs:
                row.append(read_image(p))
                disp = np.load(p.with_suffix(".disp.npy"))
                row.append(cv2.applyColorMap(np.round(disp * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
                           .astype(np.float32) / 255)
            rows.append(row)
            labels.append(f"{sp} backgrounds | true disparity (bright = near)")
    if not rows:
        raise UserError(f"nothing to put on a contact sheet under {layout.root}")
    path = write_png(layout.root / "contact_sheet.png", contact_sheet(rows, labels))
    log.info("contact sheet: %s", path)
    return path


if __name__ == "__main__":
    run_main(main)
