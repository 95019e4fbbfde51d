"""The data layout, written once. Every stage reads the previous stage's folder (see README, "Data layout").

```
<root>/raw/<split>/{fgr,pha}/<clip>.mp4 | <clip>/0000.png     VideoMatte240K-style sources
<root>/backgrounds/<split>/<name>.{png,jpg,mp4} [+ <name>.disp.npy (true disparity, optional)]
<root>/composed/<split>/<clip>/{fgr,pha,bgr}/0000.png + meta.json
<root>/depth/<split>/<clip>.npz
<root>/blurred/<split>/<clip>/{image,alpha,fgr,bgr}/0000.png + meta.json
<root>/frames/<split>/{image,alpha,fgr,bgr,mask}/<clip>/frames/0000.png  (+ video/<clip>.mp4)
<root>/frames_sharp/...   the same layout without depth-of-field blur (the ablation's control)
```
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

FRAME_LAYERS = ("image", "alpha", "fgr", "bgr")
REPO_ROOT = Path(__file__).resolve().parent.parent


def make_repo_importable() -> None:
    """Let a script run as ``python bench/x.py`` import the repository's top-level modules (``inference``) and
    ``bench`` itself: the editable install maps the packages (utils, preprocess, model, pipeline) only. The one
    place the project's own code edits ``sys.path`` for itself (the adapters add a clone's folder, to import
    MatAnyone or Video-Depth-Anything from it)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def repo_default(rel: str) -> str:
    """A default path inside the repository (data root, runs, outputs) as seen from the working directory:
    ``data/demo`` at the repository root, ``../data/demo`` from ``preprocess/``. Every entry point then works
    from the root and from its own folder, as the original README runs them; a path the user types stays
    relative to the working directory."""
    return os.path.relpath(REPO_ROOT / rel)


def frame_name(index: int) -> str:
    """File name of frame ``index`` (the original frame index is kept through every stage)."""
    return f"{index:04d}.png"


def frame_index(path: str | os.PathLike) -> int:
    """Inverse of :func:`frame_name`."""
    return int(Path(path).stem)


@dataclass(frozen=True)
class DataLayout:
    """Paths of every stage's outputs under one data root."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # sources
    def raw(self, split: str, layer: str) -> Path:
        return self.root / "raw" / split / layer

    def backgrounds(self, split: str) -> Path:
        return self.root / "backgrounds" / split

    # stage outputs, one folder per clip
    def composed(self, split: str, clip: str | None = None) -> Path:
        base = self.root / "composed" / split
        return base / clip if clip else base

    def depth(self, split: str, clip: str | None = None) -> Path:
        base = self.root / "depth" / split
        return base / f"{clip}.npz" if clip else base

    def blurred(self, split: str, clip: str | None = None) -> Path:
        base = self.root / "blurred" / split
        return base / clip if clip else base

    # the original work's per-frame layout
    def frames(self, split: str, layer: str, clip: str | None = None, tree: str = "frames") -> Path:
        """``<root>/<tree>/<split>/<layer>[/<clip>/frames]``; ``tree='frames_sharp'`` is the all-in-focus control."""
        base = self.root / tree / split / layer
        return base / clip / "frames" if clip else base

    def frames_video(self, split: str, layer: str, clip: str, tree: str = "frames") -> Path:
        return self.root / tree / split / layer / clip / "video" / f"{clip}.mp4"

    def manifest(self, stage: str, split: str) -> Path:
        """Folder of per-unit 'done' markers of a stage (see utils.atomic.Manifest)."""
        return self.root / ".manifest" / stage / split

    def clips(self, stage_dir: Path) -> list[str]:
        """Finished clip folders in a stage folder (hidden temp folders excluded), sorted."""
        if not stage_dir.is_dir():
            return []
        return sorted(p.name for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
