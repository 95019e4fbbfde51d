"""Tiny VideoMatte240K-shaped inputs for the synthesis tests (a few small clips, stills with true disparity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.images import write_png
from utils.paths import frame_name
from utils.video import write_video


def subject_frames(n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A textured soft-edged ellipse drifting sideways: fgr ``TxHxWx3`` and alpha ``TxHxW`` float32."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = rng.uniform(0.2, 0.9, size=(h, w, 3)).astype(np.float32)
    fgr, pha = [], []
    for t in range(n):
        cx, cy = w * (0.4 + 0.2 * t / max(n - 1, 1)), h * 0.55
        r = np.sqrt(((xx - cx) / (0.22 * w)) ** 2 + ((yy - cy) / (0.35 * h)) ** 2)
        pha.append(np.clip((1.0 - r) * 6.0, 0.0, 1.0))  # soft edge: alpha ramps over ~1/6 of the radius
        fgr.append(np.roll(tex, t, axis=1))
    return np.stack(fgr), np.stack(pha).astype(np.float32)


def make_raw(root: Path, clips=("a", "b", "c"), split: str = "train", n: int = 5, h: int = 40, w: int = 56,
             folders: bool = True, n_backgrounds: int = 2, seed: int = 0) -> Path:
    """Write ``raw/<split>/{fgr,pha}/<clip>.mp4`` (+ lossless frame folders) and backgrounds with disparity."""
    rng = np.random.default_rng(seed)
    for clip in clips:
        fgr, pha = subject_frames(n, h, w, rng)
        write_video(root / "raw" / split / "fgr" / f"{clip}.mp4", fgr, fps=24)
        write_video(root / "raw" / split / "pha" / f"{clip}.mp4", pha, fps=24)
        if folders:
            for t in range(n):
                write_png(root / "raw" / split / "fgr" / clip / frame_name(t), fgr[t])
                write_png(root / "raw" / split / "pha" / clip / frame_name(t), pha[t], bits=16)
    bg_dir = root / "backgrounds" / split
    bg_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_backgrounds):
        bh, bw = 2 * h + 7 * i, 2 * w + 5 * i
        img = rng.uniform(0, 1, size=(bh, bw, 3)).astype(np.float32)
        write_png(bg_dir / f"bg{i}.png", img)
        disp = np.tile(np.linspace(0.1, 0.9, bh, dtype=np.float32)[:, None], (1, bw))  # ground-plane-like ramp
        np.save(bg_dir / f"bg{i}.disp.npy", disp)
    return root


def make_composed(root: Path, clips=("a", "b"), n: int = 4, h: int = 32, w: int = 48) -> Path:
    """A raw root (``make_raw``) already through the compose stage (train split, seed 1): the input of blur."""
    from preprocess import compose_video_bg

    make_raw(root, clips=clips, n=n, h=h, w=w)
    assert compose_video_bg.main(["--root", str(root), "--split", "train", "--seed", "1"]) == 0
    return root


def fresh_copy(src: Path, dst: Path) -> Path:
    """A private copy of a module-scoped root, so a test may damage it."""
    import shutil

    shutil.copytree(src, dst)
    return dst


def composed_root_fixtures(prefix: str, **sizes):
    """Two fixtures for a test module: ``composed_root`` (one composed root per module, ``make_composed(**sizes)``)
    and ``root`` (a fresh copy of it per test). Assign both: ``composed_root, root = composed_root_fixtures(...)``."""
    @pytest.fixture(scope="module")
    def composed_root(tmp_path_factory) -> Path:
        return make_composed(tmp_path_factory.mktemp(prefix) / "d", **sizes)

    @pytest.fixture
    def root(composed_root, tmp_path) -> Path:
        return fresh_copy(composed_root, tmp_path / "root")

    return composed_root, root
