"""Video I/O: mp4 <-> uint8 RGB frames (PyAV), and clips given as folders of lossless frames.

mp4 is for previews and for reading VideoMatte240K-style sources; intermediate frames are PNG (see
utils.images). A clip source is either ``<clip>.mp4`` or a folder ``<clip>/`` of numbered PNG frames; the
folder wins when both exist because it is lossless.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from utils.atomic import atomic_path
from utils.cli import UserError
from utils.images import list_images, read_image, to_float

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def _av():
    """PyAV, imported when a video is opened: code that only imports this module (the GPU check, whose machine
    has no PyAV and whose carried wheels leave its 36 MB out) runs without it."""
    import av

    return av


def _open(path: Path):
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    av = _av()
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(f"corrupt or unreadable video: {path} ({exc.__class__.__name__})") from None


def video_info(path: str | os.PathLike) -> dict:
    """``{'frames', 'fps', 'width', 'height'}`` of a video; frames counted by decoding when the header lacks it."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(f"no video stream in {path}")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        width, height = stream.codec_context.width, stream.codec_context.height
    frames = sum(1 for _ in iter_video(path))
    return {"frames": frames, "fps": fps, "width": width, "height": height}


def iter_video(path: str | os.PathLike, gray: bool = False) -> Iterator[np.ndarray]:
    """Yield frames of a video as uint8 ``HxWx3`` RGB (or ``HxW`` with ``gray``), in order.

    Raises ``UserError`` naming the file if it cannot be opened, has no frames, or breaks off mid-stream
    (a truncated file).
    """
    path = Path(path)
    count = 0
    av = _av()
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(f"no video stream in {path}")
        try:
            for frame in container.decode(video=0):
                count += 1
                yield frame.to_ndarray(format="gray" if gray else "rgb24")
        except (av.error.FFmpegError, OSError) as exc:
            raise UserError(f"corrupt or truncated video: {path} (after {count} frames: {exc})") from None
    if count == 0:
        raise UserError(f"video has no decodable frames: {path}")


def read_video(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """All frames of a video as uint8 ``TxHxWx3`` (or ``TxHxW``)."""
    return np.stack(list(iter_video(path, gray=gray)))


def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else default


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, crf: int = 18) -> Path:
    """Write frames (uint8 or float [0,1], ``HxWx3`` or ``HxW``) as an H.264 mp4, atomically.

    Odd sizes are padded by one edge pixel (yuv420p needs even sizes). This is lossy: never the source of
    truth for alpha.
    """
    path = Path(path)
    frames = iter(frames)
    try:
        first = next(frames)
    except StopIteration:
        raise ValueError("write_video needs at least one frame") from None
    av = _av()
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            h, w = first.shape[:2]
            stream.width, stream.height = w + (w % 2), h + (h % 2)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for frame in _chain(first, frames):
                arr = frame
                if arr.dtype != np.uint8:
                    arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                if arr.shape[:2] != (h, w):
                    raise ValueError(f"frame size {arr.shape[:2]} differs from the first frame's {(h, w)}")
                arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def _chain(first, rest):
    yield first
    yield from rest


def clip_frame_paths(folder: str | os.PathLike) -> list[Path]:
    """The frame files of a clip folder (``<clip>/`` or ``<clip>/frames/``), sorted."""
    folder = Path(folder)
    if (folder / "frames").is_dir():
        folder = folder / "frames"
    return list_images(folder)


def read_clip(source: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """A clip as float32 frames in [0,1] (``TxHxWx3``, or ``TxHxW`` with ``gray``) from a folder or a video.

    Raises ``UserError`` if the source is missing, empty, corrupt, or its frames differ in size.
    """
    source = Path(source)
    if source.is_dir():
        paths = clip_frame_paths(source)
        if not paths:
            raise UserError(f"no frames in {source}")
        frames = [read_image(p, gray=gray) for p in paths]
        if len({f.shape for f in frames}) != 1:
            raise UserError(f"frames of {source} differ in size")
        return np.stack(frames)
    return to_float(read_video(source, gray=gray))


def clip_sources(folder: str | os.PathLike) -> dict[str, Path]:
    """Map clip name -> source in a layer folder holding ``<clip>.mp4`` files and/or ``<clip>/`` frame folders."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.setdefault(p.stem, p)
        elif p.is_dir():
            out[p.name] = p  # lossless frames win over the mp4
    return out


def iter_clip(source: str | os.PathLike, gray: bool = False) -> Iterator[np.ndarray]:
    """Like :func:`read_clip` but one float32 frame at a time, so a long 1080p clip never sits in memory whole.

    Raises ``UserError`` naming the source if it is missing, empty, corrupt or truncated (mid-iteration for a
    video that breaks off), or if a folder's frames differ in size.
    """
    source = Path(source)
    if source.is_dir():
        paths = clip_frame_paths(source)
        if not paths:
            raise UserError(f"no frames in {source}")
        shape = None
        for p in paths:
            frame = read_image(p, gray=gray)
            if shape is not None and frame.shape != shape:
                raise UserError(f"frames of {source} differ in size ({p.name})")
            shape = frame.shape
            yield frame
        return
    for frame in iter_video(source, gray=gray):
        yield to_float(frame)


def clip_fps(source: str | os.PathLike, default: float = 25.0) -> float:
    """Frame rate of a clip source: the video's own, or for a frame folder that of a sibling ``<clip>.mp4``."""
    source = Path(source)
    if source.is_dir():
        for ext in VIDEO_EXTS:
            sibling = source.with_name(source.name + ext)
            if sibling.is_file():
                return video_fps(sibling, default)
        return default
    return video_fps(source, default)
