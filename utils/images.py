"""Lossless image I/O. Arrays are float32 in [0, 1], HWC (RGB) or HW (one channel); uint8/uint16 only on disk.

Alpha keeps its precision: ``write_png(..., bits=16)`` stores 16-bit PNG and ``read_png`` scales by the
file's own bit depth, so a round trip is exact up to quantisation (1/65535).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from utils.atomic import atomic_path
from utils.cli import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def to_uint(img: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float in [0,1] -> uint8 or uint16 with rounding (values outside [0,1] are clipped)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    scale = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(img, 0.0, 1.0) * scale).astype(dtype)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0,1]; float input is returned as float32 unchanged."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32, copy=False)


def _imread(path: str | os.PathLike) -> np.ndarray:
    """The stored array of an image file (cv2 order, any depth); ``UserError`` naming a missing/unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    size = _header_size(path)
    if size and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"image too large: {path} claims {size[0]}x{size[1]} pixels (at most "
                        f"{MAX_IMAGE_PIXELS} are read; a corrupt header?)")
    try:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own limits (CV_IO_MAX_IMAGE_PIXELS) and decoder assertions
        raise UserError(f"not a readable image: {path} ({str(exc).strip().splitlines()[-1][:100]})") from None
    except MemoryError:
        raise UserError(f"image too large to decode: {path}") from None
    if raw is None:
        raise UserError(f"not a readable image: {path}")
    return raw


# A header claiming more pixels than this is refused before decoding (a 16384x16384 frame is 268M pixels; 8K
# video is 33M): a corrupt or hostile header would otherwise allocate gigabytes, or abort in the decoder.
MAX_IMAGE_PIXELS = 1 << 28


def _header_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header only (no decoding), or ``None`` if Pillow cannot tell."""
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # the size is checked by the caller, against MAX_IMAGE_PIXELS
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001  (not an image Pillow knows: cv2 decides)
        return None


def resize(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``img`` at ``size`` (H, W): area averaging when it shrinks (no aliasing), bilinear when it grows, nearest
    for a mask that must stay a mask; the same array when it already has that size."""
    if img.shape[:2] == tuple(size):
        return img
    down = size[0] * size[1] < img.shape[0] * img.shape[1]
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    return cv2.resize(img, (size[1], size[0]), interpolation=interp)


def read_image(path: str | os.PathLike, gray: bool | None = None) -> np.ndarray:
    """Read an image as float32 in [0,1]: RGB ``HxWx3`` (alpha channel dropped) or ``HxW`` for one channel.

    ``gray=True`` forces one channel (first channel of a colour file), ``gray=False`` forces RGB.
    Raises ``UserError`` naming the file if it is missing or not a readable image.
    """
    img = to_float(_imread(path))
    if img.ndim == 3:
        img = img[..., :3][..., ::-1]  # BGR(A) -> RGB
        if img.shape[2] == 1:
            img = img[..., 0]
    if gray is True and img.ndim == 3:
        img = img[..., 0] if np.allclose(img[..., 0], img[..., 1]) else cv2.cvtColor(
            np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    elif gray is False and img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img, dtype=np.float32)


def write_png(path: str | os.PathLike, img: np.ndarray, bits: int = 8) -> Path:
    """Write a float [0,1] (or uint8/uint16) RGB/gray/RGBA image as PNG, atomically. Returns the path."""
    path = Path(path)
    arr = img if img.dtype in (np.uint8, np.uint16) else to_uint(img, bits)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    with atomic_path(path) as tmp:
        # compression level 1: PNG is lossless at any level; level 1 is ~3x faster to write than the default
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"could not write {path}")
    return path


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden temp files excluded)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def read_image_native(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """Read an image in its stored integer type (uint8 or uint16): RGB ``HxWx3``, or ``HxW`` when ``gray``
    (the first stored channel of a colour file). For loaders that crop before converting (``to_float``) the pixels they keep.
    Raises ``UserError`` naming the file if it is missing or not a readable image."""
    raw = _imread(path)
    if raw.ndim == 3:
        raw = raw[..., 0] if gray else raw[..., :3][..., ::-1]
    elif not gray:
        raw = np.repeat(raw[..., None], 3, axis=2)
    return np.ascontiguousarray(raw)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header when possible (else by decoding it)."""
    size = _header_size(Path(path))
    if size is None:
        raw = _imread(path)
        size = (raw.shape[1], raw.shape[0])
    return size


def check_frame_sizes(root: str | os.PathLike, frames, tree: str, layers: tuple[str, ...]) -> None:
    """Every ``layers`` file of each frame (``.split/.clip/.name``) has its image's size, or a one-line
    ``UserError`` naming both files (a guide mask of another size would fail deep inside a crop)."""
    from utils.paths import DataLayout

    layout = DataLayout(root)
    for f in frames:
        image = layout.frames(f.split, "image", f.clip, tree=tree) / f.name
        want = image_size(image)
        for layer in layers:
            path = layout.frames(f.split, layer, f.clip, tree=tree) / f.name
            got = image_size(path)
            if got != want:
                raise UserError(f"{path} is {got[0]}x{got[1]} but its image {image} is {want[0]}x{want[1]}")
