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

They also carry the strong *internal* edges real people have, so that a network does not learn "high frequency
= edge of the matte": a face (eye whites, iris and pupil, lid lines, eyebrows, a nose shading line, lips and a
mouth line, a jaw shadow) that moves with the head, thin dark strands falling over the forehead and face and over
the shoulders, a round or V collar, fabric folds, a chest print (letters or a photo), buttons or a zip, and in
about half of the people a book, phone or printed page held up in front of the chest. All of it is painted
'atop' the already opaque subject (``Canvas.paint(..., atop=True)``): colour changes, alpha never does
(``render_clip(..., details=False)`` renders the same clip without it, with identical alpha). Clothing,
held objects and backgrounds use real photographs shipped with scikit-image (offline; astronaut and camera are
never used: they are held-out real test photos of people), so colour and texture statistics are real.
Backgrounds are a wall (bricks or a real surface photo, with framed photo posters), a ground plane in perspective
(tiles or a real surface photo laid on the plane) and boxes (striped or photo-wrapped) at several depths.

``--camouflage`` (its own root, e.g. ``data/camo``) makes the camouflage testbed: the same clips (same seed, same
people, byte for byte), but no
shared ``bg_NNN`` backgrounds; each clip gets its own ``backgrounds/<split>/<clip>.png`` (+ ``.disp.npy``) built
from that clip's person (mosaics of swatches of its hair, skin, face and clothing, the clothing laid on the ground
plane, posters that are crops of the person) with the usual depth structure, and compose puts the clip over it.
Colour statistics then cannot separate person and background: on the all-in-focus tree only shape and the guide
can, on the defocused tree the depth-of-field blur can too.

Everything is a pure function of ``--seed`` and the unit's name: the same seed gives byte-identical PNGs.
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.atomic import Manifest, atomic_dir, write_json_atomic
from utils.cli import (SPLITS, ArgumentParser, UserError, add_common_args, finite_float, positive_int, run_main,
                       shard_items, splits_of, unit_seed)
from utils.images import to_uint, write_png
from utils.paths import DataLayout, frame_name
from utils.video import write_video

log = logging.getLogger("make_demo_data")

GENERATOR_VERSION = 2  # 2: faces, hair over the face, clothing detail, held objects, real photo textures
SUPERSAMPLE = 3  # draw at 3x and area-average: a 1-px line at 3x covers a third of an output pixel
SUBFRAMES = 4  # sub-frames averaged per frame (open shutter) for motion blur
SHUTTER = 0.5  # fraction of the frame interval the shutter is open
CLIPS_PER_SPLIT = {"train": 6, "test": 3}
BACKGROUNDS_PER_SPLIT = {"train": 6, "test": 3}
BG_MARGIN = 1.3  # backgrounds are larger than clips so compositing can crop and pan


# ---------------------------------------------------------------------------------------- real photos
# Real photographs shipped inside scikit-image (offline), for clothing, held objects and backgrounds, so that
# colour and texture statistics are those of real images. astronaut and camera are deliberately absent: they
# are held-out real test photos of people and must never leak into training data.
COLOR_PHOTOS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
GRAY_PHOTOS = ("brick", "grass", "gravel", "coins", "text", "page")
SURFACE_PHOTOS = ("brick", "grass", "gravel")  # gray textures that read as a wall or a ground surface
PRINT_PHOTOS = COLOR_PHOTOS + ("coins", "text", "page", "logo")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as float32 RGB in [0, 1], loaded once per process (gray -> 3 channels;
    RGBA logo composited over white)."""
    if name in ("astronaut", "camera"):
        raise ValueError(f"{name} is reserved as a held-out real test photo")
    import skimage.data  # lazy: only the generator needs it

    img = np.asarray(getattr(skimage.data, name)()).astype(np.float32) / 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., 3:] * img[..., :3] + (1 - img[..., 3:])
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)  # shared by every caller
    return img


def photo_crop(rng: np.random.Generator, name: str, height: int, width: int, zoom: float = 1.0) -> np.ndarray:
    """A random crop of photo ``name`` resized to ``height x width``; ``zoom`` > 1 shows a smaller part of it
    (larger features). float32 RGB."""
    src = photo(name)
    sh, sw = src.shape[:2]
    scale = min(sh / height, sw / width) / max(zoom, 1.0)  # source pixels per output pixel, the crop fits
    ch, cw = max(int(height * scale), 2), max(int(width * scale), 2)
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    interp = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
    return cv2.resize(src[y:y + ch, x:x + cw], (width, height), interpolation=interp)


def photo_tiled(rng: np.random.Generator, name: str, height: int, width: int, period: int) -> np.ndarray:
    """Photo ``name`` as a seamless texture covering ``height x width``: a random ``period``-pixel patch,
    mirrored so that the tiles meet without seams."""
    patch = photo_crop(rng, name, period, period)
    block = np.concatenate([np.concatenate([patch, patch[:, ::-1]], 1),
                            np.concatenate([patch[::-1], patch[::-1, ::-1]], 1)], 0)
    reps = (height // block.shape[0] + 1, width // block.shape[1] + 1, 1)
    return np.ascontiguousarray(np.tile(block, reps)[:height, :width])


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
    # internal detail: colour edges inside the opaque subject (alpha never changes there)
    # (defaults are placeholders: ``random`` sets every one of them)
    hairline: float = 0.35  # where the hair cap's lower edge crosses the middle of the forehead (head radii up)
    iris: np.ndarray | None = None
    fringe: list | None = None  # strands over the face: (x on the hairline, length, bend, thickness, shade, wave)
    shoulder_strands: list | None = None  # over the shoulders: (side, start, length, bend, thickness, shade, wave)
    cloth_style: str = "stripes"  # stripes | photo | plain
    collar: str = "none"  # none | round | v
    collar_color: np.ndarray | None = None
    chest_print: str = "none"  # none | text | photo
    closure: str = "none"  # none | buttons | zip
    folds: list | None = None  # per fold: (vertical?, offset, slope, curvature, darkness), body-local
    holds: bool = False  # holds an object in one hand
    hold_side: int = 1
    object_kind: str = "book"  # book | phone | paper
    object_size: tuple = (1.2, 1.6)  # width, height in head radii
    object_tilt: float = 0.0

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
        person = Person(
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
        # internal detail, drawn whether or not it is painted, so the toggle never changes the random stream
        person.hairline = rng.uniform(0.2, 0.5)
        person.iris = np.array(rng.choice([[0.25, 0.14, 0.06], [0.12, 0.08, 0.05], [0.2, 0.35, 0.55],
                                           [0.25, 0.4, 0.25]]))
        n_fringe = int(rng.choice([0, 8, 20, 40]))
        person.fringe = [(rng.uniform(-0.8, 0.8), rng.uniform(0.25, 0.9), rng.uniform(-0.6, 0.6),
                          int(rng.choice([1, 2, 2, 3, 4])), rng.uniform(0.6, 1.3), rng.uniform(0, 2 * math.pi))
                         for _ in range(n_fringe)]
        n_shoulder = int(rng.integers(0, 30)) if person.hair_long > 0.45 else 0
        person.shoulder_strands = [(int(rng.choice([-1, 1])), rng.uniform(0, 1), rng.uniform(0.8, 2.5),
                                    rng.uniform(-0.4, 0.4), int(rng.choice([1, 2, 3, 4])), rng.uniform(0.6, 1.3),
                                    rng.uniform(0, 2 * math.pi)) for _ in range(n_shoulder)]
        person.cloth_style = str(rng.choice(["stripes", "photo", "photo", "plain"]))
        person.collar = str(rng.choice(["none", "round", "v"]))
        person.collar_color = rng.uniform(0.05, 0.95, 3)
        person.chest_print = str(rng.choice(["none", "text", "photo"]))
        person.closure = str(rng.choice(["none", "buttons", "zip"]))
        person.folds = [(bool(rng.random() < 0.6), rng.uniform(-1.6, 1.6), rng.uniform(-0.4, 0.4),
                         rng.uniform(-0.08, 0.08), rng.uniform(0.15, 0.45)) for _ in range(int(rng.integers(3, 8)))]
        person.holds = bool(rng.random() < 0.5)
        person.hold_side = int(rng.choice([-1, 1]))
        person.object_kind = str(rng.choice(["book", "phone", "paper"]))
        person.object_size = {"book": (rng.uniform(1.3, 1.9), rng.uniform(1.7, 2.4)),
                              "phone": (rng.uniform(0.6, 0.8), rng.uniform(1.1, 1.4)),
                              "paper": (rng.uniform(1.4, 2.0), rng.uniform(1.8, 2.6))}[person.object_kind]
        person.object_tilt = rng.uniform(-0.5, 0.5)
        return person


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 on the canvas


class Canvas:
    """Premultiplied colour + alpha at supersampled resolution; parts are composited back to front with 'over'.

    Internal detail (face features, strands over the face, collars, the texture of a held object) is painted
    with ``atop=True`` (Porter-Duff 'atop'): it recolours what is already there in proportion to its alpha and
    never writes alpha, so every internal edge it adds is, by construction, not a matte boundary.

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

    def paint(self, part: tuple[np.ndarray, Box] | None, color, atop: bool = False) -> None:
        """Composite a part ``(coverage, box)`` over the canvas; ``color`` is (3,) or a function of the box
        returning a per-pixel colour. ``atop``: recolour only, alpha untouched."""
        if part is None:
            return
        cov, box = part
        c = color(box) if callable(color) else np.asarray(color, np.float32)
        self.paint_premultiplied(cov[..., None] * c, cov, box, atop)

    def paint_premultiplied(self, color: np.ndarray, alpha: np.ndarray, box: Box, atop: bool = False) -> None:
        y0, y1, x0, x1 = box
        under = self.alpha[y0:y1, x0:x1]
        src = color * under[..., None] if atop else color  # 'atop': the source exists only where the canvas does
        self.color[y0:y1, x0:x1] = src + (1 - alpha[..., None]) * self.color[y0:y1, x0:x1]
        if not atop:
            self.alpha[y0:y1, x0:x1] = alpha + (1 - alpha) * under


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


def _grow_strands(start: np.ndarray, direction: np.ndarray, length_px: np.ndarray, bend: np.ndarray,
                  wave: np.ndarray, t: float, gravity: float = 0.45, steps: int = 8) -> np.ndarray:
    """Polylines ``(n, steps + 1, 2)`` of hair strands from ``start`` along ``direction``, each bending by its own
    ``bend`` (radians over its length), waving slowly in time, and pulled down by ``gravity``."""
    points = np.empty((len(start), steps + 1, 2))
    points[:, 0] = start
    direction = np.array(direction, np.float64)
    turn = (bend + 0.25 * np.sin(0.15 * t + wave)) / steps
    c, s_ = np.cos(turn), np.sin(turn)
    for k in range(steps):
        direction = np.stack([c * direction[:, 0] - s_ * direction[:, 1],
                              s_ * direction[:, 0] + c * direction[:, 1]], 1)
        direction[:, 1] += gravity
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        points[:, k + 1] = points[:, k] + direction * (length_px / steps)[:, None]
    return points


def _stroke_layer(canvas: Canvas, points: np.ndarray, thick: np.ndarray, colors: np.ndarray,
                  pad: float = 8) -> tuple[np.ndarray, np.ndarray, Box] | None:
    """Anti-aliased polylines as one premultiplied layer ``(colour, alpha, box)``.

    Drawn on uint8 canvases because cv2's anti-aliased lines blend exactly as premultiplied 'over' onto black.
    """
    if len(points) == 0:
        return None
    box = canvas.box(points.reshape(-1, 2), pad)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    color = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((points - [x0, y0]) * 16).astype(np.int32)
    for pts, th, col in zip(fixed, thick.astype(int), colors):
        c = tuple(float(v) for v in np.clip(col * 255, 0, 255))
        cv2.polylines(color, [pts], False, c, int(th), cv2.LINE_AA, shift=4)
        cv2.polylines(alpha, [pts], False, 255, int(th), cv2.LINE_AA, shift=4)
    return color.astype(np.float32) / 255, alpha.astype(np.float32) / 255, box


@dataclass
class Outfit:
    """Per-person images made once per clip, so that per-frame drawing only slices and warps them.

    ``cloth`` holds the garment's pattern (stripes or a real photo texture, weave, folds, chest print, buttons or
    zip) in the person's body frame at t=0: canvas pixel (x, y) at t=0 is ``cloth[y + pad, x + pad]``, and later
    frames shift the slice with the hip. ``held`` is the image of the held object (None when empty-handed).
    """

    cloth: np.ndarray
    pad: int
    held: np.ndarray | None


def _hip(person: Person, t: float) -> tuple[np.ndarray, float]:
    """Hip position in canvas pixels and the walk phase at time ``t``."""
    s = SUPERSAMPLE
    w_phase = 2 * math.pi * person.freq * t + person.phase
    hip = np.array([(person.x0 + person.vx * t) * s, (person.y0 + person.bob * math.sin(2 * w_phase)) * s])
    return hip, w_phase


def _head_centre(person: Person, t: float) -> np.ndarray:
    """Centre of the head in canvas pixels at time ``t`` (it leans with the sway and shifts as the body turns)."""
    hip, w_phase = _hip(person, t)
    r = person.scale * SUPERSAMPLE
    squash = 1.0 - person.turn * (0.5 + 0.5 * math.sin(0.5 * w_phase))
    local = np.array([[0.15 * person.turn * math.sin(0.5 * w_phase) * r * squash, -6.5 * r]])
    return _rot(local, person.sway * math.sin(w_phase))[0] + hip


def _cloth_at(outfit: Outfit, person: Person, t: float, box: Box) -> np.ndarray:
    """The outfit's cloth under canvas ``box`` at time ``t`` (the pattern moves with the hip)."""
    y0, y1, x0, x1 = box
    shift = np.round(_hip(person, t)[0] - _hip(person, 0.0)[0]).astype(int)
    ys, xs = y0 - shift[1] + outfit.pad, x0 - shift[0] + outfit.pad
    ch, cw = outfit.cloth.shape[:2]
    if 0 <= ys and ys + (y1 - y0) <= ch and 0 <= xs and xs + (x1 - x0) <= cw:
        return outfit.cloth[ys:ys + y1 - y0, xs:xs + x1 - x0]
    rows = np.arange(ys, ys + y1 - y0) % ch  # moved further than planned (longer clip than the outfit): wrap
    return outfit.cloth[rows][:, np.arange(xs, xs + x1 - x0) % cw]


def draw_person(canvas: Canvas, person: Person, t: float, outfit: Outfit, details: bool = True) -> None:
    """Draw ``person`` at time ``t`` (frames, fractional for sub-frames) onto ``canvas``.

    ``details=False`` leaves out the internal detail painted 'atop' (face, strands over face and shoulders,
    collar, the held object's texture): alpha is then identical, only colour differs.
    """
    s = SUPERSAMPLE
    r = person.scale * s
    hip, w_phase = _hip(person, t)
    sway = person.sway * math.sin(w_phase)
    squash = 1.0 - person.turn * (0.5 + 0.5 * math.sin(0.5 * w_phase))  # turning narrows the body

    def body(points):  # body-local (x right, y up, hip at origin, units of head radius) -> canvas pixels
        local = np.asarray(points, np.float64) * [r * squash, -r]
        return _rot(local, sway) + hip

    def cloth(box: Box) -> np.ndarray:
        return _cloth_at(outfit, person, t, box)

    torso = _poly_coverage(canvas, body([[-2.3, 4.6], [2.3, 4.6], [2.5, 4.0], [1.9, 0.0], [1.9, -8.0], [-1.9, -8.0],
                                         [-1.9, 0.0], [-2.5, 4.0]]))
    neck = _limb_coverage(canvas, body([[0, 4.3], [0, 5.6]]), 0.9 * r * squash)
    head_c = _head_centre(person, t)
    head = _poly_coverage(canvas, _ellipse_points(head_c, (0.82 * r * squash, r), math.degrees(sway)))
    canvas.paint(torso, cloth)
    swing = 0.35 * math.sin(w_phase)  # arms: shoulder -> elbow -> wrist
    for side, sign in ((-1, 1), (1, -1)):
        shoulder = np.array([side * 2.55, 4.0])
        spread = 0.22 + 0.1 * math.sin(w_phase + side)  # arms hang beside the torso, swinging with the gait
        elbow = shoulder + 2.7 * np.array([side * math.sin(spread) + 0.3 * sign * swing, -math.cos(spread)])
        wrist = elbow + 2.5 * np.array([side * 0.5 * math.sin(spread) + 0.5 * sign * swing, -1.0])
        holding = outfit.held is not None and side == person.hold_side
        if holding:  # the forearm comes up in front of the chest, holding the object there
            lift = 0.45 + 0.08 * math.sin(w_phase)
            wrist = elbow + 2.4 * np.array([-side * math.cos(lift), math.sin(lift)])
        pts = body([shoulder, elbow, wrist])
        canvas.paint(_limb_coverage(canvas, pts[:2], 1.05 * r), lambda box: cloth(box) * 0.85)
        canvas.paint(_limb_coverage(canvas, pts[1:], 0.85 * r), person.skin * 0.95)
        if holding:
            up = body([[0.0, 1.0]])[0] - body([[0.0, 0.0]])[0]
            _draw_held_object(canvas, person, outfit.held, pts[2], up / np.linalg.norm(up), details)
        canvas.paint(_poly_coverage(canvas, _ellipse_points(pts[2], (0.45 * r, 0.55 * r), 0)), person.skin)
    canvas.paint(neck, person.skin * 0.9)
    if details:
        _draw_collar(canvas, person, body)
    canvas.paint(head, person.skin)
    if details:
        look = 0.3 * person.turn * math.sin(0.5 * w_phase)  # the face slides sideways as the head turns
        _draw_face(canvas, person, head_c, r * squash, r, sway, look, t)
    _draw_hair(canvas, person, head_c, r * squash, r, sway, t, details)


def _draw_held_object(canvas: Canvas, person: Person, image: np.ndarray, wrist: np.ndarray, up: np.ndarray,
                      details: bool) -> None:
    """A rigid, opaque object (book, phone, sheet of paper) held up by the hand at ``wrist`` in front of the chest,
    tilted a little from the body's ``up``. Where it overlaps the torso its outline is an internal edge too; where
    it sticks out it is part of the matte. Its texture (``details``) is internal edges only."""
    down = _rot(-up[None], person.object_tilt)[0]
    across = np.array([-down[1], down[0]])
    h, w = image.shape[:2]
    origin = wrist - 0.75 * h * down - 0.5 * w * across  # top-left corner: the hand grips the lower part
    corners = np.array([origin, origin + w * across, origin + w * across + h * down, origin + h * down])
    part = _poly_coverage(canvas, corners)
    if part is None:
        return
    if not details:
        canvas.paint(part, image.reshape(-1, 3).mean(0))
        return

    def texture(box: Box) -> np.ndarray:  # object pixel (u, v) -> canvas, sampled in one affine warp
        y0, y1, x0, x1 = box
        m = np.array([[across[0], down[0], origin[0] - x0], [across[1], down[1], origin[1] - y0]], np.float64)
        return cv2.warpAffine(image, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    canvas.paint(part, texture)


def _draw_collar(canvas: Canvas, person: Person, body) -> None:
    """A round or V collar in a contrasting colour at the neckline, painted atop the shirt and neck."""
    if person.collar == "round":
        arc = np.array([[-0.8 + 1.6 * k / 8, 4.55 - 0.45 * math.sin(math.pi * k / 8)] for k in range(9)])
        canvas.paint(_limb_coverage(canvas, body(arc), 0.28 * person.scale * SUPERSAMPLE), person.collar_color,
                     atop=True)
    elif person.collar == "v":
        canvas.paint(_poly_coverage(canvas, body([[-0.62, 4.7], [0.62, 4.7], [0.0, 3.3]])), person.skin * 0.9,
                     atop=True)  # the V shows skin
        canvas.paint(_limb_coverage(canvas, body([[-0.7, 4.7], [0.0, 3.25], [0.7, 4.7]]),
                                    0.2 * person.scale * SUPERSAMPLE), person.collar_color, atop=True)


def _draw_face(canvas: Canvas, person: Person, head_c: np.ndarray, rx: float, ry: float, sway: float, look: float,
               t: float) -> None:
    """Eyes (whites, iris, pupil, lid line), eyebrows, a nose shading line, lips and a mouth line, a jaw shadow:
    the strong internal edges of a real face, all painted atop the opaque head and moving with it."""
    def face(points):  # face-local (x right, y down, head centre at origin, units of head radius) -> canvas
        local = (np.asarray(points, np.float64) + [look, 0.0]) * [rx, ry]
        return _rot(local, sway) + head_c

    skin = person.skin
    dark = np.minimum(person.hair * 0.8, skin * 0.45)
    deg = math.degrees(sway)
    # jaw shadow: a soft darker crescent along the chin
    jaw = face([[0.55 * math.cos(a), 0.93 * math.sin(a)] for a in np.linspace(0.75, math.pi - 0.75, 7)])
    canvas.paint(_limb_coverage(canvas, jaw, 0.1 * ry), skin * 0.88, atop=True)
    gaze = 0.04 * math.sin(0.07 * t + person.phase)  # eyes wander a little
    for side in (-1, 1):
        centre = face([[side * 0.33, -0.02]])[0]
        canvas.paint(_poly_coverage(canvas, _ellipse_points(centre, (0.16 * rx, 0.075 * ry), deg)),
                     [0.93, 0.91, 0.88], atop=True)
        iris_c = face([[side * 0.33 + gaze, -0.02]])[0]
        canvas.paint(_poly_coverage(canvas, _ellipse_points(iris_c, (0.065 * rx, 0.068 * ry), deg)), person.iris,
                     atop=True)
        canvas.paint(_poly_coverage(canvas, _ellipse_points(iris_c, (0.03 * rx, 0.032 * ry), deg)),
                     [0.03, 0.03, 0.03], atop=True)
        lid = face([[side * 0.33 + 0.17 * c, -0.02 - 0.08 * math.sqrt(max(1 - c * c, 0))] for c in
                    np.linspace(-1, 1, 7)])
        canvas.paint(_limb_coverage(canvas, lid, 0.035 * ry), dark, atop=True)
        brow = face([[side * 0.14, -0.26], [side * 0.33, -0.33], [side * 0.54, -0.27]])
        canvas.paint(_limb_coverage(canvas, brow, 0.085 * ry), dark, atop=True)
    canvas.paint(_limb_coverage(canvas, face([[0.03, -0.02], [0.08, 0.27], [-0.06, 0.32]]), 0.05 * ry), skin * 0.68,
                 atop=True)
    canvas.paint(_poly_coverage(canvas, _ellipse_points(face([[0.0, 0.56]])[0], (0.24 * rx, 0.075 * ry), deg)),
                 skin * [0.82, 0.52, 0.5], atop=True)
    mouth = face([[-0.25, 0.55], [-0.1, 0.575], [0.1, 0.575], [0.25, 0.55]])
    canvas.paint(_limb_coverage(canvas, mouth, 0.035 * ry), skin * 0.3, atop=True)


def _draw_hair(canvas: Canvas, person: Person, head_c: np.ndarray, rx: float, ry: float, sway: float,
               t: float, details: bool = True) -> None:
    """A hair cap over the top of the head plus many thin anti-aliased strands; with ``details``, also thin
    strands falling over the forehead and face and over the shoulders, painted atop (colour, not alpha)."""
    # the crown: the upper half of a slightly larger ellipse whose lower edge is a curved hairline that leaves
    # the forehead free; two locks fall down the sides, leaving the face
    deg = math.degrees(sway)
    cap_pts = _ellipse_points(head_c, (1.08 * rx, 1.1 * ry), deg, 180, 360)
    hairline = _ellipse_points(head_c, (0.84 * rx, person.hairline * ry), deg, 180, 360)[::-1]
    canvas.paint(_poly_coverage(canvas, np.concatenate([cap_pts, hairline])), person.hair * 0.9)
    drop = person.hair_long * 1.6 * ry
    locks = []
    for end, inward in ((cap_pts[0], 1.0), (cap_pts[-1], -1.0)):
        lock = np.array([end + [0, -0.2 * ry], end + [inward * 0.3 * rx, -0.1 * ry], end + [inward * 0.22 * rx, drop],
                         end + [-inward * 0.08 * rx, drop]])
        canvas.paint(_poly_coverage(canvas, lock), person.hair * 0.85)
        locks.append(lock)
    # strands, all at once: outwards from the scalp, bending with gravity and their own bend, waving slowly
    angle, length, bend, thick, shade, wave = (np.array(v, np.float64) for v in zip(*person.strands))
    a = angle + sway
    start = head_c + np.stack([1.02 * rx * np.cos(a), 1.05 * ry * np.sin(a)], axis=1)
    points = _grow_strands(start, np.stack([np.cos(a), np.sin(a)], axis=1), length * ry, bend, wave, t)
    layer = _stroke_layer(canvas, points, thick, person.hair * shade[:, None])
    if layer is not None:
        canvas.paint_premultiplied(*layer)
    if details:
        _draw_inner_strands(canvas, person, head_c, rx, ry, sway, t, locks)


def _draw_inner_strands(canvas: Canvas, person: Person, head_c: np.ndarray, rx: float, ry: float, sway: float,
                        t: float, locks: list) -> None:
    """Strands over the forehead/face (a fringe falling from the hairline) and over the shoulders (from the
    bottom of the side locks): thin, dark, high-contrast lines where the subject is already opaque, which real
    hair has and a matte boundary does not. Painted atop, so they are cut where the subject ends."""
    parts = []
    if person.fringe:
        x, length, bend, thick, shade, wave = (np.array(v, np.float64) for v in zip(*person.fringe))
        y = -person.hairline * np.sqrt(np.clip(1 - (x / 0.84) ** 2, 0, 1)) - 0.08  # just above the hairline
        start = _rot(np.stack([x * rx, y * ry], 1), sway) + head_c
        down = _rot(np.stack([0.3 * x, np.ones_like(x)], 1), sway)
        parts.append((_grow_strands(start, down, length * ry, bend, wave, t, gravity=0.6), thick, shade))
    if person.shoulder_strands:
        side, where, length, bend, thick, shade, wave = (np.array(v, np.float64) for v in
                                                         zip(*person.shoulder_strands))
        left, right = locks[0], locks[1]
        top = np.where(side[:, None] < 0, left[1], right[1])  # along the inner edge of a lock, from top to bottom
        bottom = np.where(side[:, None] < 0, left[2], right[2])
        start = top + where[:, None] * (bottom - top)
        out = _rot(np.stack([0.35 * side, np.ones_like(side)], 1), sway)  # down and outwards, over the shoulder
        parts.append((_grow_strands(start, out, length * ry, bend, wave, t, gravity=0.3), thick, shade))
    for points, thick, shade in parts:
        layer = _stroke_layer(canvas, points, thick, person.hair * shade[:, None] * 0.8)
        if layer is not None:
            canvas.paint_premultiplied(*layer, atop=True)


def _downsample(img: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks (exact coverage; INTER_AREA at an integer factor is a box mean)."""
    h, w = img.shape[0] // SUPERSAMPLE, img.shape[1] // SUPERSAMPLE
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _blend_drawn(img: np.ndarray, color, draw) -> None:
    """Blend ``color`` into ``img`` (float RGB, in place) through an anti-aliased uint8 mask that ``draw(mask)``
    paints with 255 (cv2 anti-aliases only on 8-bit images)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    draw(mask)
    m = mask.astype(np.float32)[..., None] / 255
    img *= 1 - m
    img += m * np.asarray(color, np.float32)


def _contrast(color: np.ndarray) -> np.ndarray:
    """A colour that stands out against ``color`` (light on dark, dark on light)."""
    return np.array([0.95, 0.95, 0.9]) if float(np.mean(color)) < 0.5 else np.array([0.06, 0.06, 0.08])


def _text_patch(rng: np.random.Generator, height: int, width: int, ink: np.ndarray, paper) -> np.ndarray:
    """A few random capital letters filling a ``height x width`` patch (a printed slogan or a book title)."""
    patch = np.ones((height, width, 3), np.float32) * np.asarray(paper, np.float32)
    text = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"), int(rng.integers(2, 6))))
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = 0.85 * min(width / tw, height / (th * 1.4))
    weight = max(1, int(round(scale * 2.5)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, weight)
    org = ((width - tw) // 2, (height + th) // 2)
    _blend_drawn(patch, ink, lambda m: cv2.putText(m, text, org, font, scale, 255, weight, cv2.LINE_AA))
    return patch


def make_outfit(rng: np.random.Generator, person: Person, spec: ClipSpec, details: bool = True) -> Outfit:
    """The person's cloth pattern and held object for one clip (see ``Outfit``).

    Everything random is drawn whether or not ``details`` is set, so toggling it changes colour only, never the
    rest of the clip. The pattern is laid out in the body frame at t=0 (sway and squash are ignored: they are
    small, and the garment edges come from the silhouette, not from this image).
    """
    s = SUPERSAMPLE
    r = person.scale * s
    pad = int(math.ceil(s * (abs(person.vx) * (spec.frames + 1) + 2 * person.bob))) + 8
    th, tw = spec.height * s + 2 * pad, spec.width * s + 2 * pad
    hip0 = _hip(person, 0.0)[0] + pad  # the hip in cloth pixels
    weave = cv2.GaussianBlur(rng.normal(1.0, 0.12, (th, tw)).astype(np.float32), (0, 0), 1.2)
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    u, v = (xx - hip0[0]) / r, (hip0[1] - yy) / r  # body-local: x right, y up, head radii

    # base: stripes, a real photo texture (tinted when gray), or plain
    name = str(rng.choice(COLOR_PHOTOS + GRAY_PHOTOS))
    period = int(r * rng.uniform(1.5, 4.0))
    if person.cloth_style == "photo":
        tex = photo_tiled(rng, name, th, tw, max(period, 8))
        if name in GRAY_PHOTOS:  # map luminance, stretched to full contrast, between the two shirt colours
            lum = tex.mean(2, keepdims=True)
            lo, hi = np.percentile(lum[::7, ::7], [2, 98])
            lum = np.clip((lum - lo) / max(hi - lo, 1e-3), 0, 1)
            tex = lum * person.shirt + (1 - lum) * person.shirt2
        cloth = tex
    elif person.cloth_style == "stripes":
        along = (xx - hip0[0]) * math.cos(person.stripe_angle) + (yy - hip0[1]) * math.sin(person.stripe_angle)
        stripes = (np.sin(2 * math.pi * along / (person.stripe_period * s)) > 0).astype(np.float32)[..., None]
        cloth = stripes * person.shirt + (1 - stripes) * person.shirt2
    else:
        cloth = np.ones((th, tw, 3), np.float32) * person.shirt
    cloth = (cloth * weave[..., None]).astype(np.float32)

    # detail inside the garment: folds, a chest print, buttons or a zip (random draws first, painting after)
    print_name = str(rng.choice(PRINT_PHOTOS))
    print_w, print_h = rng.uniform(1.2, 2.2), rng.uniform(0.8, 1.4)
    print_u = rng.uniform(-0.3, 0.3) if person.closure == "none" else rng.choice([-1, 1]) * rng.uniform(0.9, 1.1)
    print_v = rng.uniform(1.8, 2.8)
    print_rng = np.random.default_rng(rng.integers(2**32))
    if details:
        shade = np.ones((th, tw), np.float32)
        for vertical, offset, slope, curve, darkness in person.folds:  # smooth dark creases of the fabric
            if vertical:  # from the armpits and shoulders down the torso
                dist = u - (offset + slope * (v - 2) + curve * (v - 2) ** 2)
            else:  # across the belly and chest
                dist = v - (1.0 + offset + slope * u + curve * u ** 2)
            shade *= 1 - darkness * np.exp(-(dist / 0.18) ** 2)
        cloth *= shade[..., None]
        ph, pw = int(print_h * r * (0.6 if person.closure != "none" else 1)), int(print_w * r)
        py, px = int(hip0[1] - print_v * r), int(hip0[0] + print_u * r - pw / 2)
        if person.chest_print != "none" and ph > 3 and pw > 3 and 0 <= py and py + ph <= th and 0 <= px \
                and px + pw <= tw:
            if person.chest_print == "text":
                ink = _contrast(person.shirt)
                paper = person.shirt2 if print_rng.random() < 0.5 else cloth[py:py + ph, px:px + pw]
                patch = _text_patch(print_rng, ph, pw, ink, paper)
            else:
                patch = photo_crop(print_rng, print_name, ph, pw)
            cloth[py:py + ph, px:px + pw] = patch * weave[py:py + ph, px:px + pw, None]
        _draw_closure(cloth, person, hip0, r)
    held = _held_object(rng, person, r) if person.holds else None
    return Outfit(np.clip(cloth, 0, 1).astype(np.float32), pad, held)


def _draw_closure(cloth: np.ndarray, person: Person, hip0: np.ndarray, r: float) -> None:
    """A button placket (edge line and buttons) or a zip down the middle of the shirt, into ``cloth``."""
    x = int(round(hip0[0]))
    top, bottom = int(hip0[1] - 4.2 * r), min(int(hip0[1] + 8 * r), cloth.shape[0] - 1)
    edge = person.shirt * 0.45
    if person.closure == "buttons":
        _blend_drawn(cloth, edge, lambda m: cv2.line(m, (x + int(0.12 * r), top), (x + int(0.12 * r), bottom), 255,
                                                       max(1, int(0.05 * r)), cv2.LINE_AA))
        button = _contrast(person.shirt) * 0.8 + person.collar_color * 0.2

        def buttons(m):
            for y in np.arange(top + 0.5 * r, bottom, 0.9 * r):
                cv2.circle(m, (x, int(y)), max(1, int(0.1 * r)), 255, -1, cv2.LINE_AA)
        _blend_drawn(cloth, button, buttons)
    elif person.closure == "zip":
        _blend_drawn(cloth, [0.25, 0.25, 0.27], lambda m: cv2.line(m, (x, top), (x, bottom), 255,
                                                                  max(2, int(0.09 * r)), cv2.LINE_AA))
        _blend_drawn(cloth, [0.75, 0.75, 0.72], lambda m: cv2.line(m, (x, top), (x, bottom), 255,
                                                                  max(1, int(0.03 * r)), cv2.LINE_AA))


def _held_object(rng: np.random.Generator, person: Person, r: float) -> np.ndarray:
    """The image of the held object at canvas resolution: a book (cover colour, photo or title, spine), a phone
    (black body, photo on the screen) or a printed sheet of paper (a real page of text)."""
    w, h = max(int(person.object_size[0] * r), 6), max(int(person.object_size[1] * r), 6)
    cover = rng.uniform(0.05, 0.95, 3)
    name = str(rng.choice(COLOR_PHOTOS))
    sub = np.random.default_rng(rng.integers(2**32))
    if person.object_kind == "paper":
        return photo_crop(sub, str(sub.choice(["page", "text"])), h, w, zoom=1.5)
    img = np.ones((h, w, 3), np.float32) * (cover if person.object_kind == "book" else np.float32(0.04))
    m = max(1, int(0.08 * w))
    ih, iw = h - 2 * m, w - 2 * m
    if ih > 2 and iw > 2:
        if person.object_kind == "book" and sub.random() < 0.4:
            img[m:m + ih, m:m + iw] = _text_patch(sub, ih, iw, _contrast(cover), cover)
        else:
            img[m:m + ih, m:m + iw] = photo_crop(sub, name, ih, iw)
    if person.object_kind == "book":
        img[:, :max(1, m // 2)] *= 0.5  # the spine
    return img


def render_frame(people: Sequence[Person], t: float, width: int, height: int,
                 outfits: Sequence[Outfit], details: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (premultiplied colour HxWx3, alpha HxW) float32, averaged over the open shutter."""
    color = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    for k in range(SUBFRAMES):
        ts = t + SHUTTER * (k / SUBFRAMES - 0.5)
        canvas = Canvas(width, height)
        for person, outfit in zip(people, outfits):  # far to near
            draw_person(canvas, person, ts, outfit, details)
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


def render_clip(seed: int, spec: ClipSpec, n_people: int,
                details: bool = True) -> tuple[np.ndarray, np.ndarray, list[dict], list]:
    """A whole clip: (fgr TxHxWx3, alpha TxHxW, per-person descriptions, people) from one seed.

    ``details=False`` renders the same clip without the internal detail (see ``draw_person``): same alpha."""
    rng = np.random.default_rng(seed)
    people = make_people(rng, spec, n_people)
    outfits = [make_outfit(rng, p, spec, details) for p in people]
    fgr = np.zeros((spec.frames, spec.height, spec.width, 3), np.float32)
    pha = np.zeros((spec.frames, spec.height, spec.width), np.float32)
    for t in range(spec.frames):
        color, alpha = render_frame(people, float(t), spec.width, spec.height, outfits, details)
        fgr[t] = unpremultiply(color, alpha)
        pha[t] = alpha
    info = [{"head_radius_px": round(p.scale, 2), "speed_px_per_frame": round(p.vx, 3), "sway_rad": round(p.sway, 3),
             "turn": round(p.turn, 3), "strands": len(p.strands), "fringe_strands": len(p.fringe),
             "cloth": p.cloth_style, "collar": p.collar, "print": p.chest_print, "closure": p.closure,
             "holds": p.object_kind if p.holds else None} for p in people]
    return fgr, pha, info, people


# ----------------------------------------------------------------------------------------- backgrounds
def render_background(seed: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured scene with depth structure and its true disparity (float32, larger = nearer, in (0, 1]).

    A back wall at a far depth (bricks or a real surface photo, with framed photo posters), a ground plane in
    perspective (tiles or a real surface photo, shrinking towards the horizon), and boxes and pillars (striped or
    wrapped in a photo) standing on the ground at several depths, drawn far to near. Fine texture everywhere so
    that defocus visibly removes high frequencies.
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

    # ground: perspective tiles or a real surface photo laid on the plane, + grain
    gx = (xx - cx) * depth / focal
    tile = rng.uniform(0.4, 1.0)
    ground_a, ground_b = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    if rng.random() < 0.5:
        checker = ((np.floor(gx / tile) + np.floor(depth / tile)) % 2).astype(np.float32)[..., None]
    else:  # the photo's luminance, in ground coordinates, so it shrinks towards the horizon like the tiles
        checker = _on_plane(rng, str(rng.choice(SURFACE_PHOTOS)), gx / (4 * tile), depth / (4 * tile))
    ground = checker * ground_a + (1 - checker) * ground_b
    # wall: synthetic bricks or a real surface photo, tinted
    wall_col = rng.uniform(0.3, 0.9, 3)
    if rng.random() < 0.5:
        brick_h = rng.uniform(6, 12)
        row = np.floor(yy / brick_h)
        brick = ((np.floor((xx + (row % 2) * brick_h) / (2 * brick_h)) + row) % 2).astype(np.float32)
        mortar = ((yy % brick_h) < 1.2).astype(np.float32)
        wall = (wall_col * (0.85 + 0.15 * brick[..., None])) * (1 - 0.5 * mortar[..., None])
    else:
        lum = photo_tiled(rng, str(rng.choice(SURFACE_PHOTOS)), height, width, int(rng.integers(48, 160)))
        wall = wall_col * (0.5 + 0.7 * lum.mean(2, keepdims=True))
    is_wall = depth >= z_wall - 1e-3
    image = np.where(is_wall[..., None], wall, ground).astype(np.float32)
    _hang_posters(rng, image, is_wall, int(rng.integers(0, 3)))

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
        if rng.random() < 0.4:  # a box wrapped in a real photo (a printed crate, a shop sign)
            image[y0c:y1c, x0c:x1c] = photo_crop(rng, str(rng.choice(PRINT_PHOTOS)), y1c - y0c, x1c - x0c)
        else:
            image[y0c:y1c, x0c:x1c] = col * stripes
        depth[y0c:y1c, x0c:x1c] = z
    grain = cv2.GaussianBlur(rng.normal(1.0, 0.1, (height, width)).astype(np.float32), (0, 0), 0.7)
    image = np.clip(image * grain[..., None], 0, 1).astype(np.float32)
    disparity = (1.0 / depth).astype(np.float32)
    disparity /= disparity.max()
    return image, disparity


def person_swatches(fgr: np.ndarray, pha: np.ndarray, patch: int) -> list[np.ndarray]:
    """Square ``patch``-pixel swatches cut from where the clip's subject is fully opaque (hair cap, face, skin,
    clothing with its pattern, print and held object) in its first, middle and last frame: the person's own
    colours and textures, for the camouflage backgrounds. Falls back to smaller swatches for small subjects."""
    out: list[np.ndarray] = []
    for size in (patch, patch // 2, patch // 4, 3):
        size, best = max(size, 3), out
        out = []
        kernel = np.ones((size, size), np.uint8)
        for t in sorted({0, len(fgr) // 2, len(fgr) - 1}):
            solid = cv2.erode((pha[t] >= 0.999).astype(np.uint8), kernel, anchor=(0, 0), borderValue=0)
            ys, xs = np.nonzero(solid[: solid.shape[0] - size + 1, : solid.shape[1] - size + 1])
            step = max(1, size // 2)
            keep = (ys % step == 0) & (xs % step == 0)
            out += [fgr[t, y:y + size, x:x + size] for y, x in zip(ys[keep], xs[keep])]
        if len(out) >= 8:
            return out
        out = out if len(out) > len(best) else best
    if not out:  # no opaque pixel at all: the subject's colours, one pixel each
        pix = fgr[pha >= pha.max() * 0.99]
        out = [np.ones((3, 3, 3), np.float32) * c for c in pix[:: max(1, len(pix) // 64)]]
    return out


def person_mosaic(rng: np.random.Generator, swatches: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """A ``height x width`` texture tiled from randomly chosen (and randomly flipped) person swatches."""
    size = swatches[0].shape[0]
    img = np.empty((height + size, width + size, 3), np.float32)
    for y in range(0, height, size):
        for x in range(0, width, size):
            sw = swatches[int(rng.integers(len(swatches)))]
            if rng.random() < 0.5:
                sw = sw[:, ::-1]
            img[y:y + sw.shape[0], x:x + sw.shape[1]] = sw
    return np.ascontiguousarray(img[:height, :width])


def render_camouflage_background(seed: int, width: int, height: int, fgr: np.ndarray,
                                 pha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A scene with the depth structure of :func:`render_background` (far wall, ground plane in perspective, boxes
    at several depths, framed posters) whose every surface is made of the clip's own person: mosaics of swatches
    cut from its opaque pixels (hair, skin, face, clothing pattern and print, held object), the clothing laid on
    the ground plane in perspective, and posters that are crops of the person itself. Colour statistics then
    cannot tell the person from the background; only shape, the guide and depth-of-field blur can.
    Returns (image, disparity) like :func:`render_background`."""
    rng = np.random.default_rng(seed)
    patch = int(rng.integers(12, 28))
    swatches = person_swatches(fgr, pha, patch)
    horizon = height * rng.uniform(0.35, 0.6)
    tilt = rng.uniform(-0.08, 0.08)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2
    horizon_y = horizon + tilt * (xx - cx)
    focal = float(width)
    cam_h = 1.6
    z_wall = rng.uniform(8, 20)
    below = np.maximum(yy - horizon_y, 1e-3)
    z_ground = np.minimum(focal * cam_h / below, z_wall)
    depth = np.where(yy > horizon_y, z_ground, z_wall).astype(np.float32)
    # ground: a person mosaic laid on the plane (it shrinks towards the horizon)
    gx = (xx - cx) * depth / focal
    tile = rng.uniform(0.4, 1.0)
    block = person_mosaic(rng, swatches, 256, 256)
    ground = cv2.remap(block, np.mod(gx / tile * 64, 256).astype(np.float32),
                       np.mod(depth / tile * 64, 256).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_WRAP)
    wall = person_mosaic(rng, swatches, height, width)
    is_wall = depth >= z_wall - 1e-3
    image = np.where(is_wall[..., None], wall, ground).astype(np.float32)
    # posters: framed crops of the person itself (face, hair, clothing), on the wall
    rows = np.flatnonzero(is_wall.any(axis=1))
    ys, xs = np.nonzero(pha[0] > 0.5)
    for _ in range(int(rng.integers(1, 4)) if len(rows) and len(ys) else 0):
        ph, pw = int(height * rng.uniform(0.15, 0.35)), int(width * rng.uniform(0.1, 0.25))
        cy, cx_ = int(rng.choice(ys)), int(rng.choice(xs))
        src = fgr[0, max(cy - ph // 2, 0):cy + ph // 2 + 1, max(cx_ - pw // 2, 0):cx_ + pw // 2 + 1]
        poster = cv2.resize(src, (pw, ph), interpolation=cv2.INTER_LINEAR)
        y0, x0 = int(rng.uniform(0, max(rows.max() - ph, 1))), int(rng.uniform(0, max(width - pw, 1)))
        fh, fw = min(ph, height - y0), min(pw, width - x0)
        region = image[y0:y0 + fh, x0:x0 + fw]
        region[:] = np.where(is_wall[y0:y0 + fh, x0:x0 + fw, None], poster[:fh, :fw], region)
    # boxes on the ground at several depths, far to near, wrapped in person mosaics
    for z in np.sort(rng.uniform(2.5, z_wall * 0.9, int(rng.integers(3, 7))))[::-1]:
        base_y = horizon + focal * cam_h / z
        x = rng.uniform(0, width)
        w_px, h_px = rng.uniform(0.3, 1.5) * focal / z, rng.uniform(0.5, 2.5) * focal / z
        x0c, x1c = max(int(x - w_px / 2), 0), min(int(x + w_px / 2), width)
        y0c, y1c = max(int(base_y - h_px), 0), min(int(base_y), height)
        if x1c <= x0c or y1c <= y0c:
            continue
        image[y0c:y1c, x0c:x1c] = person_mosaic(rng, swatches, y1c - y0c, x1c - x0c)
        depth[y0c:y1c, x0c:x1c] = z
    disparity = (1.0 / depth).astype(np.float32)
    disparity /= disparity.max()
    return np.clip(image, 0, 1).astype(np.float32), disparity


def _on_plane(rng: np.random.Generator, name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Luminance (HxWx1) of photo ``name`` laid on a plane with texture coordinates ``u, v`` (one unit = one
    copy of a seamless patch), sampled with ``cv2.remap``."""
    block = photo_tiled(rng, name, 256, 256, 128).mean(2)  # 2x2 mirrored patches: seamless with period 256
    map_x = np.mod(u * 128, 256).astype(np.float32)
    map_y = np.mod(v * 128, 256).astype(np.float32)
    return cv2.remap(block, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)[..., None]


def _hang_posters(rng: np.random.Generator, image: np.ndarray, is_wall: np.ndarray, n: int) -> None:
    """Up to ``n`` framed real photos on the back wall (in place; only where the wall is visible, so depth stays
    true): real colour statistics and strong edges in the background, at the wall's depth."""
    height, width = is_wall.shape
    rows = np.flatnonzero(is_wall.any(axis=1))
    if len(rows) == 0:
        return
    for _ in range(n):
        name = str(rng.choice(PRINT_PHOTOS))
        ph, pw = int(height * rng.uniform(0.12, 0.3)), int(width * rng.uniform(0.1, 0.25))
        y0, x0 = int(rng.uniform(0, max(rows.max() - ph, 1))), int(rng.uniform(0, width - pw))
        poster = photo_crop(rng, name, ph, pw)
        frame = max(1, min(ph, pw) // 20)
        framed = np.pad(poster, ((frame, frame), (frame, frame), (0, 0)), constant_values=rng.uniform(0.05, 0.3))
        fh, fw = min(framed.shape[0], height - y0), min(framed.shape[1], width - x0)
        region = image[y0:y0 + fh, x0:x0 + fw]
        region[:] = np.where(is_wall[y0:y0 + fh, x0:x0 + fw, None], framed[:fh, :fw], region)


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


MAX_FPS = 1000.0  # --fps upper bound; the lower is 1 (the mp4 rate is a fraction of denominator <= 1001: 1e-7 is 0)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--size", default="384x256", help="clip size WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--frames", type=positive_int, default=24, help="frames per clip (default: %(default)s)")
    p.add_argument("--fps", type=finite_float(1.0, MAX_FPS), default=25.0,
                   help=f"frame rate of the mp4 copies, in [1, {MAX_FPS:g}] (default: %(default)s)")
    p.add_argument("--scale", type=positive_int, default=1, help="multiply the number of clips and backgrounds")
    p.add_argument("--camouflage", action="store_true",
                   help="the camouflage testbed (use its own --root, e.g. data/camo): every clip gets its own "
                        "background, backgrounds/<split>/<clip>.png, built from that clip's person (hair, skin, "
                        "clothing pattern and print) at other depths, which compose uses for it; colour statistics "
                        "then cannot separate person and background, only shape, the guide and defocus can")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    width, height = parse_size(args.size)  # --frames, --scale and --fps were checked by the parser (exit 64)
    layout = DataLayout(args.root)
    spec = ClipSpec(width, height, args.frames, args.fps)
    # the generator's version is part of the settings: clips made by an older generator are made again
    settings = {"seed": args.seed, "size": [width, height], "frames": args.frames, "fps": args.fps,
                "generator": GENERATOR_VERSION}
    if args.camouflage:  # absent (not False) on the standard set, so existing standard roots stay current
        settings["camouflage"] = True
    made = skipped = 0
    for split in splits_of(args.split):
        manifest = Manifest(layout.manifest("make_demo_data", split))
        mixed = [u for u, info in manifest.done_units("").items()
                 if bool(info.get("settings", {}).get("camouflage")) != args.camouflage]
        if mixed:
            kind = "camouflage" if args.camouflage else "standard"
            raise UserError(f"{layout.root} already holds {'standard' if args.camouflage else 'camouflage'} demo "
                            f"data ({mixed[0]}); make the {kind} set under another --root")
        bg_names = [] if args.camouflage else [f"bg_{i:03d}" for i in range(BACKGROUNDS_PER_SPLIT[split] * args.scale)]
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
        for clip in tqdm(shard_items(clips, args.shard), desc=f"demo clips ({split})", unit="clip", disable=None):
            unit = f"clip/{clip}"
            info = manifest.info(unit) if manifest.done(unit) else None
            if info and info.get("settings") == settings and not args.overwrite:
                skipped += 1
                continue
            seed = unit_seed(args.seed, "clip", split, clip)
            n_people = 2 if clips.index(clip) % 3 == 2 else 1  # every third clip holds two people
            fgr, pha, people, _ = render_clip(seed, spec, n_people)
            if args.camouflage:  # this clip's own background, from its own person; compose picks it by name
                bw, bh = int(round(width * BG_MARGIN)), int(round(height * BG_MARGIN))
                image, disp = render_camouflage_background(unit_seed(args.seed, "camouflage", split, clip), bw, bh,
                                                           fgr, pha)
                write_png(layout.backgrounds(split) / f"{clip}.png", image)
                np.save(layout.backgrounds(split) / f"{clip}.disp.npy", disp)
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
