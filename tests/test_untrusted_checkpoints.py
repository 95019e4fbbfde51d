"""Checkpoints are untrusted input: a payload pickle (``__reduce__`` -> ``os.system``) loaded through every loader
the project uses (YOLO, SAM2, MatAnyone, Video-Depth-Anything, the refiner, the solver's --resume) runs nothing
and ends in one clear line. Fake MatAnyone / VDA clones stand in for the real ones (only the loader is under test)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.cli import UserError
from utils.images import write_png

REPO = Path(__file__).resolve().parent.parent


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    """``(checkpoint path, marker path)``: loading the checkpoint with full pickle creates the marker."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "ema": _Payload(marker), "format": "x"}, path)
    # the payload really is live: a full unpickle runs it (so a test passing below means it was refused)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text.strip(), text
    return text


def test_yolo_loader_refuses_payload(evil):
    from preprocess import guide_mask as gm

    path, marker = evil
    with pytest.raises(UserError, match="not a YOLO checkpoint") as info:
        gm.load_yolo(path)
    _one_line(info.value)
    assert not marker.exists()


def test_yolo_loader_refuses_payload_even_if_ultralytics_was_imported_without_the_switch(evil, monkeypatch):
    """ultralytics reads ULTRALYTICS_SAFE_LOAD once at import: the loader must force it whatever happened before."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as ul_utils

    from preprocess import guide_mask as gm

    monkeypatch.setattr(tasks, "SAFE_LOAD", False)
    monkeypatch.setattr(ul_utils, "SAFE_LOAD", False)
    monkeypatch.delenv("ULTRALYTICS_SAFE_LOAD", raising=False)
    path, marker = evil
    with pytest.raises(UserError):
        gm.load_yolo(path)
    assert not marker.exists()


def test_real_yolo_checkpoint_still_loads_safely(tmp_path):
    from ultralytics import YOLO

    from preprocess import guide_mask as gm

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    yolo.model.names = {i: ("person" if i == 0 else f"class{i}") for i in range(80)}
    yolo.save(tmp_path / "yolo.pt")
    model, person = gm.load_yolo(tmp_path / "yolo.pt")
    assert person == 0 and model.task == "detect"


def test_sam2_loader_refuses_payload(evil):
    from preprocess import guide_mask as gm

    path, marker = evil
    with pytest.raises(UserError, match="not a SAM2 checkpoint") as info:
        gm.load_sam2(gm.DEFAULT_SAM2_CONFIG, path, "cpu", image_size=256)
    _one_line(info.value)
    assert not marker.exists()


def test_guide_mask_cli_with_payload_yolo_runs_nothing(evil, tmp_path):
    """The exact command of the report: guide_mask.py --backend yolo_sam2 --yolo_ckpt evil.pt."""
    path, marker = evil
    from tests.test_frame_extraction import make_clip

    root = tmp_path / "data"
    make_clip(root / "blurred" / "train" / "a", 2, h=16, w=16)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "preprocess/frame_extraction.py", "--root", str(root), "--no_video"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "preprocess/guide_mask.py", "--root", str(root), "--backend", "yolo_sam2",
                        "--yolo_ckpt", str(path), "--sam2_ckpt", str(path), "--device", "cpu"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: not a YOLO checkpoint"), r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_inference_with_payload_yolo_runs_nothing(evil, tmp_path):
    """inference.py --yolo_ckpt evil.pt --sam2_ckpt ...: the guide-mask loader, through inference's own path."""
    import inference
    from model.checkpoint import save_refiner
    from model.refiner import build_refiner

    path, marker = evil
    ckpt = tmp_path / "tiny.pt"
    save_refiner(ckpt, build_refiner("light", base_channels=8).eval())
    write_png(tmp_path / "img.png", np.random.default_rng(0).random((32, 32, 3)).astype(np.float32))
    with pytest.raises(UserError, match="not a YOLO checkpoint"):
        inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--o", str(tmp_path / "o.png"),
                        "--yolo_ckpt", str(path), "--sam2_ckpt", str(path), "--device", "cpu"])
    assert not marker.exists() and not (tmp_path / "o.png").exists()


def test_refiner_inference_evaluate_and_resume_loaders_refuse_payload(evil):
    from model.checkpoint import load_backbone, load_refiner, read_checkpoint
    from model.refiner import build_refiner

    path, marker = evil
    with pytest.raises(UserError, match="not a loadable checkpoint") as info:
        load_refiner(path)
    _one_line(info.value)
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        read_checkpoint(path)  # what resuming a run reads
    with pytest.raises(UserError, match="not a loadable weights file"):
        load_backbone(build_refiner("light", base_channels=8), path)
    assert not marker.exists()


def _fake_vda_clone(root: Path) -> Path:
    pkg = root / "video_depth_anything"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "video_depth.py").write_text(
        "import torch\n"
        "class VideoDepthAnything(torch.nn.Module):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Linear(2, 2)\n")
    return root


def test_video_depth_anything_loader_refuses_payload(evil, tmp_path):
    from preprocess import depth

    path, marker = evil
    clone = _fake_vda_clone(tmp_path / "vda")
    with pytest.raises(UserError, match="cannot load Video-Depth-Anything checkpoint") as info:
        depth.load_vda(str(clone), str(path), "vits")
    _one_line(info.value)
    assert not marker.exists()


def _fake_matanyone_clone(root: Path) -> Path:
    pkg = root / "matanyone"
    (pkg / "model").mkdir(parents=True)
    (pkg / "config").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "matanyone.py").write_text(
        "import torch\n"
        "class MatAnyone(torch.nn.Module):\n"
        "    def __init__(self, cfg, single_object=False):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Linear(2, 2)\n"
        "    def load_weights(self, sd):\n"
        "        self.load_state_dict(sd)\n")
    (pkg / "config" / "eval_matanyone_config.yaml").write_text("model:\n  pretrained_resnet: true\n")
    return root


def test_matanyone_loader_refuses_payload(evil, tmp_path, monkeypatch):
    import get_default_model as gdm

    path, marker = evil
    clone = _fake_matanyone_clone(tmp_path / "ma")
    monkeypatch.setenv("MATANYONE_ROOT", str(clone))
    for name in [m for m in sys.modules if m == "matanyone" or m.startswith("matanyone.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(UserError, match="not a MatAnyone checkpoint") as info:
        gdm.get_matanyone_model(str(path), "cpu")
    _one_line(info.value)
    assert not marker.exists()
    # and the fake clone itself loads a plain state dict (the loader path is the real one)
    good = tmp_path / "good.pth"
    torch.save({"w.weight": torch.zeros(2, 2), "w.bias": torch.zeros(2)}, good)
    assert not gdm.get_matanyone_model(str(good), "cpu").training
