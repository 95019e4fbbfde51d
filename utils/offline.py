"""Offline by construction: every entry point imports this module first.

Nothing may download at run time. This sets the switches the libraries read (ultralytics, Hugging Face hub,
matplotlib) and gives ultralytics a project-local config folder that already holds the fonts it would
otherwise fetch from the internet the first time it draws a label.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("DEFOCUS_CACHE_DIR", REPO_ROOT / ".cache"))

# ultralytics looks for these font files in its config folder before it tries to download them
_YOLO_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def _place_fonts(config_dir: Path) -> None:
    missing = [name for name in _YOLO_FONTS if not (config_dir / name).exists()]
    if not missing:
        return
    try:  # matplotlib ships DejaVuSans: a free TTF that stands in for Arial
        import matplotlib

        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:
        return
    if source.is_file():
        for name in missing:
            shutil.copyfile(source, config_dir / name)


def setup_offline_env() -> None:
    """Set the offline switches; idempotent, and a user's own ``YOLO_CONFIG_DIR``/``MPLCONFIGDIR`` wins."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    # a checkpoint is untrusted input: ultralytics unpickles a .pt in full (any code) unless this is set; with it,
    # only its known model classes load (weights_only + an allow-list). Forced, never left to the user's env.
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    os.environ["YOLO_VERBOSE"] = os.environ.get("YOLO_VERBOSE", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    cache = _writable_cache_dir()
    yolo_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(cache / "ultralytics")))
    mpl_dir = Path(os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib")))
    os.environ.setdefault("TORCH_HOME", str(cache / "torch"))
    ultralytics_dir = yolo_dir / "Ultralytics"  # ultralytics appends this sub-folder to YOLO_CONFIG_DIR
    try:
        for d in (ultralytics_dir, mpl_dir):
            d.mkdir(parents=True, exist_ok=True)
        _place_fonts(ultralytics_dir)
    except OSError:  # a user's own read-only YOLO_CONFIG_DIR/MPLCONFIGDIR: the libraries cope without fonts
        pass
    os.environ.setdefault("MPLBACKEND", "Agg")


def _writable_cache_dir() -> Path:
    """``CACHE_DIR`` (``DEFOCUS_CACHE_DIR``, else ``<repo>/.cache``) when it can be created; a read-only checkout
    falls back to the user's cache folder, then to the temporary folder (never a crash at import)."""
    import tempfile

    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "defocused_segmentation"
    for candidate in (CACHE_DIR, user, Path(tempfile.gettempdir()) / f"defocused_segmentation-{os.getuid()}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    return CACHE_DIR


setup_offline_env()
