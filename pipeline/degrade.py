"""What a camera and a codec do to a photograph, applied to training crops so the refiner sees real pixels' flaws.

The embedded data is rendered: noiseless, lossless, linear, perfectly sharp at the subject. Real photographs have
slight lens blur, a tone curve, colour fringes at high-contrast edges, sensor noise and JPEG blocks, and a refiner
that never saw them reads them as structure (the holes it punched in real hair and faces). ``degrade`` applies a
random subset, each with its own probability, in the order a camera does: optics (blur, fringes), sensor (noise),
tone curve (gamma), codec (JPEG).

What each step does to the training target, so the composition ``image = alpha*fgr + (1-alpha)*bgr`` still holds
as nearly as a real photo's annotation would:
- lens blur blurs image, fgr, bgr and alpha alike (a photo's annotated alpha is the matte of the blurred image);
- noise is one field added to image, fgr and bgr (the composition holds exactly);
- gamma is applied to image, fgr and bgr (exact where alpha is 0 or 1);
- fringes and JPEG touch the image only (they are what the model must learn to ignore).
Every draw comes from the caller's generator: the same generator state gives the same crop, bit for bit.
"""
from __future__ import annotations

import cv2
import numpy as np

RGB = ("image", "fgr", "bgr")
# the chance of each step per degraded crop (a real photo has most of them, seldom all)
PROBS = {"blur": 0.5, "fringe": 0.3, "noise": 0.6, "gamma": 0.5, "jpeg": 0.5}


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _shift(channel: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``channel`` moved by a sub-pixel (dx, dy), bilinear, edges replicated."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(channel, m, channel.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """An RGB image through an 8-bit JPEG at ``quality`` and back (OpenCV's codec takes BGR)."""
    u8 = np.clip(np.rint(image[..., ::-1] * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]).astype(np.float32) / 255.0


def degrade(d: dict[str, np.ndarray], rng: np.random.Generator,
            probs: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """A copy of the crop ``d`` (``image`` HxWx3 and ``alpha`` HxW float32 in [0, 1], optionally ``fgr``/``bgr``
    HxWx3 and any other layer, passed through) with a random camera's flaws; ``probs`` overrides ``PROBS``, the
    chance of each step. Every step draws its numbers whether it applies or not, so one step's chance never
    changes another step's draws."""
    p = {**PROBS, **(probs or {})}
    out = dict(d)
    rgb = [k for k in RGB if k in out]
    apply = {k: rng.random() < p[k] for k in PROBS}
    sigma = rng.uniform(0.3, 1.2)
    shift, angle = rng.uniform(0.3, 1.0), rng.uniform(0, 2 * np.pi)
    read, shot = rng.uniform(0.002, 0.02), rng.uniform(0.0, 0.03)
    gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
    quality = int(rng.integers(35, 96))
    if apply["blur"]:  # slight lens blur
        for k in (*rgb, "alpha"):
            out[k] = _blur(out[k], sigma)
    if apply["fringe"]:  # lateral chromatic aberration: red and blue pulled apart along one direction
        dx, dy = shift * np.cos(angle), shift * np.sin(angle)
        img = out["image"].copy()
        img[..., 0] = _shift(np.ascontiguousarray(img[..., 0]), dx, dy)
        img[..., 2] = _shift(np.ascontiguousarray(img[..., 2]), -dx, -dy)
        out["image"] = img
    field = rng.standard_normal(out["image"].shape).astype(np.float32)
    if apply["noise"]:  # sensor noise: read noise plus shot noise that grows with the signal
        noise = field * (read + shot * np.sqrt(np.clip(out["image"], 0, 1)))
        for k in rgb:
            out[k] = out[k] + noise
    if apply["gamma"]:  # a tone curve other than the renderer's
        for k in rgb:
            out[k] = np.power(np.clip(out[k], 0, 1), gamma)
    if apply["jpeg"]:  # the codec
        out["image"] = _jpeg(np.clip(out["image"], 0, 1), quality)
    for k in (*rgb, "alpha"):
        out[k] = np.clip(out[k], 0, 1).astype(np.float32)
    return out
