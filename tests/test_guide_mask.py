"""Guide masks: yolo_sam2 for real (random weights from the packages' configs, sockets blocked), the union
logic, first_frame/all_frames, SAM2 propagation, perturb, resume, kill -9, bad inputs, MatAnyone (with a clone)."""
from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from preprocess import frame_extraction as fe
from preprocess import guide_mask as gm
from preprocess.perturb import perturb_guide
from tests.test_frame_extraction import assert_same_outputs, kill_when_output_appears, make_clip
from utils.cli import EXIT_UNITS_FAILED, UserError, unit_seed
from utils.images import read_image
from utils.paths import DataLayout

REPO = Path(__file__).resolve().parents[1]
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_SIZE = 256  # SAM2's input size in these tests (1024 by default): 10x faster on CPU, same code path


def _blocked(*args, **kwargs):
    raise OSError("network access attempted in an offline test")


@pytest.fixture(scope="module")
def no_network():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _blocked)
        mp.setattr(socket, "create_connection", _blocked)
        yield


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, no_network):
    """Randomly initialised YOLOv8n and SAM2-tiny, saved the way each package saves its checkpoints."""
    from sam2.build_sam import build_sam2
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")  # built from ultralytics' own config, random weights
    yolo.model.names = {i: ("person" if i == 0 else f"class{i}") for i in range(80)}  # COCO's class 0
    yolo.save(folder / "yolo_random.pt")
    with gm._sam2_hydra():
        sam = build_sam2(SAM2_CONFIG, None, device="cpu")
    torch.save({"model": sam.state_dict()}, folder / "sam2_random.pt")
    gm._MODELS.clear()
    return {"yolo": folder / "yolo_random.pt", "sam2": folder / "sam2_random.pt"}


@pytest.fixture()
def frames_root(tmp_path):
    """Two train clips (4 and 3 frames) and one test clip (2 frames) in the per-frame layout, 48x64."""
    root = tmp_path / "data"
    for split, clip, t in (("train", "a", 4), ("train", "b", 3), ("test", "c", 2)):
        make_clip(root / "blurred" / split / clip, t, h=48, w=64, seed=t)
    fe.main(["--root", str(root)])
    return root


def yolo_sam2_args(root, ckpts, *extra):
    return ["--root", str(root), "--backend", "yolo_sam2", "--yolo_ckpt", str(ckpts["yolo"]), "--sam2_ckpt",
            str(ckpts["sam2"]), "--sam2_image_size", str(SAM2_SIZE), "--device", "cpu", *extra]


def mask_files(root, split, clip, tree="frames"):
    folder = DataLayout(root).frames(split, "mask", clip, tree=tree)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------------ union logic
def test_union_masks():
    a = np.zeros((2, 1, 5, 6), np.float32)
    a[0, 0, :2, :2] = 1
    a[1, 0, 3:, 4:] = 1
    u = gm.union_masks(a, 5, 6)
    ref = np.zeros((5, 6), np.float32)
    ref[:2, :2] = 1
    ref[3:, 4:] = 1
    np.testing.assert_array_equal(u, ref)
    assert u.dtype == np.float32
    np.testing.assert_array_equal(gm.union_masks(np.ones((1, 5, 6), bool), 5, 6), np.ones((5, 6)))
    np.testing.assert_array_equal(gm.union_masks(None, 5, 6), np.zeros((5, 6)))
    np.testing.assert_array_equal(gm.union_masks(np.zeros((0, 5, 6)), 5, 6), np.zeros((5, 6)))


def test_two_boxes_one_sam2_call_union(ckpts):
    model = gm.get_yolo_sam2(ckpts["yolo"], ckpts["sam2"], SAM2_CONFIG, "cpu", sam2_image_size=SAM2_SIZE)
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    calls = []

    def fake_predict(box, multimask_output):  # SAM2's return shape for N boxes: (N, 1, H, W)
        calls.append(np.array(box))
        masks = np.zeros((len(box), 1, 40, 50), np.float32)
        for k, (x0, y0, x1, y1) in enumerate(box.astype(int)):
            masks[k, 0, y0:y1, x0:x1] = 1
        return masks, np.ones((len(box), 1)), None

    boxes = np.array([[0, 0, 10, 10], [30, 20, 50, 40]], np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model.predictor, "predict", fake_predict)
        mask = model.segment(image, boxes)
    assert len(calls) == 1 and calls[0].shape == (2, 4)  # all boxes in one call
    ref = np.zeros((40, 50), np.float32)
    ref[0:10, 0:10] = 1
    ref[20:40, 30:50] = 1
    np.testing.assert_array_equal(mask, ref)


def test_real_sam2_masks_of_injected_boxes(ckpts):
    """The real (random) SAM2: two boxes in one call == union of each box alone."""
    model = gm.get_yolo_sam2(ckpts["yolo"], ckpts["sam2"], SAM2_CONFIG, "cpu", sam2_image_size=SAM2_SIZE)
    image = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    b1, b2 = np.array([[2, 3, 30, 40]], np.float32), np.array([[35, 5, 60, 45]], np.float32)
    both = model.segment(image, np.concatenate([b1, b2]))
    assert both.shape == (48, 64) and both.dtype == np.float32 and set(np.unique(both)) <= {0.0, 1.0}
    union = np.maximum(model.segment(image, b1), model.segment(image, b2))
    assert np.mean(both == union) > 0.99  # batched prompts are independent (up to float rounding at 0)


def test_no_person_gives_empty_mask_and_warning(ckpts, caplog):
    model = gm.get_yolo_sam2(ckpts["yolo"], ckpts["sam2"], SAM2_CONFIG, "cpu", conf=0.99, sam2_image_size=SAM2_SIZE)
    caplog.set_level(logging.WARNING)
    image = (np.random.default_rng(2).random((48, 64, 3)) * 255).astype(np.uint8)
    assert len(model.boxes(image)) == 0  # a random detector is not confident at 0.99
    mask = model(image, name="x.png")
    np.testing.assert_array_equal(mask, np.zeros((48, 64), np.float32))
    assert "no person found in x.png" in caplog.text


def test_library_function_for_inference(ckpts):
    images = [np.random.default_rng(k).random((32, 40, 3)).astype(np.float32) for k in range(2)]
    gm._MODELS.clear()
    out = gm.yolo_sam2_guides(images, ckpts["yolo"], ckpts["sam2"], SAM2_CONFIG, device="cpu", conf=0.99)
    assert len(out) == 2 and all(m.shape == (32, 40) and m.dtype == np.float32 for m in out)
    key_count = len(gm._MODELS)
    gm.yolo_sam2_guides(images, ckpts["yolo"], ckpts["sam2"], SAM2_CONFIG, device="cpu", conf=0.99)
    assert len(gm._MODELS) == key_count  # cached: loaded once per process


# ------------------------------------------------------------------------------------------------ the stage
def _inject_boxes(mp, box=(4.0, 4.0, 40.0, 36.0)):
    """A random YOLO finds nobody: give every frame one person box so SAM2 really runs."""
    mp.setattr(gm.YoloSam2, "boxes", lambda self, image: np.array([box], np.float32))


def test_yolo_sam2_first_frame_vs_all_frames(ckpts, frames_root, monkeypatch):
    _inject_boxes(monkeypatch)
    loads = []
    real_load = gm.load_sam2
    monkeypatch.setattr(gm, "load_sam2", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    gm._MODELS.clear()
    assert gm.main(yolo_sam2_args(frames_root, ckpts, "--mode", "first_frame", "--split", "train")) == 0
    assert mask_files(frames_root, "train", "a") == ["0000.png"]
    assert mask_files(frames_root, "train", "b") == ["0000.png"]
    assert DataLayout(frames_root).frames_video("train", "mask", "a").is_file()  # overlay preview
    assert gm.main(yolo_sam2_args(frames_root, ckpts, "--mode", "all_frames", "--split", "train")) == 0
    assert mask_files(frames_root, "train", "a") == [f"{i:04d}.png" for i in range(4)]
    assert mask_files(frames_root, "train", "b") == [f"{i:04d}.png" for i in range(3)]
    assert len(loads) == 1  # SAM2 built once for all clips and both runs
    m = cv2.imread(str(DataLayout(frames_root).frames("train", "mask", "a") / "0001.png"), cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint8 and m.ndim == 2 and set(np.unique(m)) <= {0, 255}


def test_yolo_sam2_propagation_chunks(ckpts, frames_root, monkeypatch):
    _inject_boxes(monkeypatch)
    gm._MODELS.clear()
    args = yolo_sam2_args(frames_root, ckpts, "--split", "train", "--propagate", "sam2", "--chunk_frames", "2",
                          "--no_preview")
    assert gm.main(args) == 0
    assert mask_files(frames_root, "train", "a") == [f"{i:04d}.png" for i in range(4)]
    assert mask_files(frames_root, "train", "b") == [f"{i:04d}.png" for i in range(3)]


def test_propagation_no_person_all_empty(tmp_path):
    from utils.images import write_png

    frames = [write_png(tmp_path / f"{i:04d}.png", np.full((16, 12, 3), 0.5, np.float32)) for i in range(3)]
    out = list(gm.propagate_sam2(frames, np.zeros((0, 4), np.float32), predictor=None))
    assert all(m.shape == (16, 12) for m in out)
    assert len(out) == 3 and all(not m.any() for m in out)


def test_perturb_backend_counts_seeding_and_resume(frames_root, caplog):
    caplog.set_level(logging.INFO)
    root = frames_root
    gm.main(["--root", str(root), "--mode", "first_frame", "--seed", "3"])
    assert [mask_files(root, s, c) for s, c in (("train", "a"), ("train", "b"), ("test", "c"))] == [["0000.png"]] * 3
    gm.main(["--root", str(root), "--mode", "all_frames", "--seed", "3"])
    assert mask_files(root, "train", "a") == [f"{i:04d}.png" for i in range(4)]
    assert mask_files(root, "test", "c") == ["0000.png", "0001.png"]
    lay = DataLayout(root)
    for i in range(4):  # guide i is perturb_guide of alpha i with the per-frame seed
        alpha = read_image(lay.frames("train", "alpha", "a") / f"{i:04d}.png", gray=True)
        ref = perturb_guide(alpha, np.random.default_rng(unit_seed(3, "train", "a", i)))
        got = cv2.imread(str(lay.frames("train", "mask", "a") / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, (ref * 255).astype(np.uint8))
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "frames").rglob("mask/**/*.png")}
    caplog.clear()
    gm.main(["--root", str(root), "--mode", "all_frames", "--seed", "3"])
    assert {p: p.stat().st_mtime_ns for p in (root / "frames").rglob("mask/**/*.png")} == mtimes
    assert "0 clip(s) written, 3 already done" in caplog.text


def test_ratio_half_masks_follow_frames(tmp_path):
    root = tmp_path / "data"
    make_clip(root / "blurred" / "train" / "a", 9, h=16, w=16)
    fe.main(["--root", str(root), "--ratio", "0.5", "--seed", "5", "--no_video"])
    gm.main(["--root", str(root), "--no_preview"])
    lay = DataLayout(root)
    names = sorted(p.name for p in lay.frames("train", "image", "a").iterdir())
    assert len(names) == 5 and mask_files(root, "train", "a") == names
    idx = [int(n[:4]) for n in names]
    assert idx == list(range(idx[0], idx[0] + 5))


def test_kill9_then_rerun_byte_identical(tmp_path):
    root = tmp_path / "data"
    for k in range(3):
        make_clip(root / "blurred" / "train" / f"c{k}", 12, h=64, w=64, seed=k)
    fe.main(["--root", str(root), "--no_video"])
    import shutil
    ref = tmp_path / "ref"
    shutil.copytree(root, ref)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "preprocess/guide_mask.py", "--seed", "1"]
    subprocess.run(cmd + ["--root", str(ref)], cwd=REPO, env=env, check=True, capture_output=True)
    kill_when_output_appears(cmd + ["--root", str(root)], env, root / "frames/train/mask")
    subprocess.run(cmd + ["--root", str(root)], cwd=REPO, env=env, check=True, capture_output=True)
    assert_same_outputs(root / "frames/train/mask", ref / "frames/train/mask")
    assert not list((root / "frames").rglob(".*"))


# ------------------------------------------------------------------------------------------------ bad inputs
def test_missing_root_and_no_frames(tmp_path):
    with pytest.raises(UserError, match="data root not found"):
        gm.main(["--root", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no clips under"):
        gm.main(["--root", str(tmp_path / "empty")])


def test_missing_checkpoints_name_the_file_and_download_nothing(ckpts, frames_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gm._MODELS.clear()
    args = ["--root", str(frames_root), "--backend", "yolo_sam2", "--device", "cpu"]
    with pytest.raises(UserError, match=r"YOLO checkpoint not found: yolov8n\.pt"):
        gm.main(args + ["--yolo_ckpt", "yolov8n.pt", "--sam2_ckpt", str(ckpts["sam2"])])
    assert not (tmp_path / "yolov8n.pt").exists()
    with pytest.raises(UserError, match="SAM2 checkpoint not found: /no/sam2.pt"):
        gm.main(args + ["--yolo_ckpt", str(ckpts["yolo"]), "--sam2_ckpt", "/no/sam2.pt"])
    with pytest.raises(UserError, match="needs --yolo_ckpt and --sam2_ckpt"):
        gm.main(args)
    with pytest.raises(UserError, match="unknown SAM2 config"):
        gm.main(args + ["--yolo_ckpt", str(ckpts["yolo"]), "--sam2_ckpt", str(ckpts["sam2"]),
                        "--sam2_config", "configs/sam2.1/nope.yaml"])
    assert not (frames_root / "frames/train/mask").exists() and not (frames_root / "frames/test/mask").exists()


def test_wrong_model_checkpoints(ckpts, frames_root):
    gm._MODELS.clear()
    with pytest.raises(UserError, match=f"not a YOLO checkpoint: {ckpts['sam2']}"):
        gm.load_yolo(ckpts["sam2"])
    with pytest.raises(UserError, match=f"not a SAM2 checkpoint for {SAM2_CONFIG}: {ckpts['yolo']}"):
        gm.load_sam2(SAM2_CONFIG, ckpts["yolo"])
    # the right file type but another SAM2 size: shapes do not match
    with pytest.raises(UserError, match="not a SAM2 checkpoint for configs/sam2.1/sam2.1_hiera_s.yaml"):
        gm.load_sam2("configs/sam2.1/sam2.1_hiera_s.yaml", ckpts["sam2"])
    assert not (frames_root / "frames/train/mask").exists()


def test_unreadable_frame_leaves_nothing(frames_root, capsys):
    lay = DataLayout(frames_root)
    (lay.frames("train", "image", "b") / "0001.png").write_bytes(b"garbage")
    assert gm.main(["--root", str(frames_root)]) == EXIT_UNITS_FAILED
    assert re.search(r"error: 1 clip\(s\) failed: train/b: .*not a readable image", capsys.readouterr().err)
    assert mask_files(frames_root, "train", "a") and mask_files(frames_root, "test", "c")
    assert not (lay.frames("train", "mask") / "b").exists()
    assert not [p for p in lay.frames("train", "mask").iterdir() if p.name.startswith(".")]


def test_cli_missing_checkpoint_one_line(tmp_path, frames_root):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "preprocess/guide_mask.py", "--root", str(frames_root), "--backend",
                        "yolo_sam2", "--yolo_ckpt", str(tmp_path / "missing.pt"), "--sam2_ckpt", "x.pt"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: YOLO checkpoint not found: {tmp_path / 'missing.pt'}")


# ------------------------------------------------------------------------------------------------ MatAnyone
MATANYONE_ROOT = os.environ.get("MATANYONE_ROOT")
needs_matanyone = pytest.mark.skipif(
    not MATANYONE_ROOT or not Path(MATANYONE_ROOT, "matanyone").is_dir(),
    reason="MATANYONE_ROOT does not point to a MatAnyone clone (git clone https://github.com/pq-yang/MatAnyone)")


@pytest.fixture(scope="module")
def matanyone_ckpt(tmp_path_factory, no_network):
    """A randomly initialised MatAnyone built from the clone's own config, saved as a plain state dict."""
    import get_default_model as gdm
    from omegaconf import open_dict

    package_dir, MatAnyone = gdm._import_matanyone()
    cfg = gdm._compose_config(package_dir / "config")
    with open_dict(cfg):
        cfg.model["pretrained_resnet"] = False
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ma") / "matanyone_random.pth"
    torch.save(MatAnyone(cfg, single_object=True).state_dict(), path)
    return path


@needs_matanyone
def test_matanyone_loader_twice_cpu_and_errors(matanyone_ckpt, ckpts, tmp_path):
    import get_default_model as gdm

    m1 = gdm.get_matanyone_model(str(matanyone_ckpt), "cpu")
    m2 = gdm.get_matanyone_model(str(matanyone_ckpt), device="cpu")  # a second call in one process
    assert m1.device.type == "cpu" and not m2.training
    assert m1.cfg.model.pretrained_resnet is False
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(UserError, match=f"MatAnyone checkpoint not found: {tmp_path / 'none.pth'}"):
        gdm.get_matanyone_model(str(tmp_path / "none.pth"), "cpu")
    with pytest.raises(UserError, match="not a MatAnyone checkpoint"):
        gdm.get_matanyone_model(str(ckpts["sam2"]), "cpu")
    # sam2 still builds after MatAnyone used Hydra (its global state is restored)
    gm.load_sam2(SAM2_CONFIG, ckpts["sam2"], "cpu", image_size=SAM2_SIZE)


@needs_matanyone
def test_matanyone_backend_masks_and_predictions(matanyone_ckpt, tmp_path):
    # MatAnyone reads the top 30 of its memory tokens (one per 16x16 patch): frames need >= 30 patches
    root = tmp_path / "data"
    make_clip(root / "blurred" / "test" / "c", 3, h=96, w=128, seed=4)
    fe.main(["--root", str(root), "--no_video"])
    first = np.zeros((96, 128), np.float32)
    first[20:80, 30:100] = 1
    from utils.images import write_png

    write_png(tmp_path / "first.png", first)
    gm._MODELS.clear()
    assert gm.main(["--root", str(root), "--split", "test", "--backend", "matanyone", "--device", "cpu",
                    "--matanyone_ckpt", str(matanyone_ckpt), "--first_mask", str(tmp_path / "first.png"),
                    "--warmup", "2"]) == 0
    names = ["0000.png", "0001.png", "0002.png"]
    assert mask_files(root, "test", "c") == names
    pred = gm.prediction_dir(DataLayout(root), "frames", "test", "c")
    assert sorted(p.name for p in pred.iterdir()) == names
    a16 = cv2.imread(str(pred / "0002.png"), cv2.IMREAD_UNCHANGED)
    m8 = cv2.imread(str(DataLayout(root).frames("test", "mask", "c") / "0002.png"), cv2.IMREAD_UNCHANGED)
    assert a16.dtype == np.uint16 and m8.dtype == np.uint8 and a16.shape == (96, 128)
    np.testing.assert_array_equal(np.round(a16 / 65535 * 255).astype(np.uint8), m8)  # one alpha, two precisions
    with pytest.raises(UserError, match="use --mode all_frames"):
        gm.main(["--root", str(root), "--backend", "matanyone", "--mode", "first_frame"])


def test_launchers_ratio_half_then_first_frame_and_all_frames(tmp_path):
    """The original README's commands: RATIO=0.5 ./run_frame_extraction.sh, ./run_mask_extraction.sh first_frame|all_frames."""
    root = tmp_path / "data"
    make_clip(root / "blurred" / "train" / "a", 6, h=16, w=16)
    make_clip(root / "blurred" / "test" / "b", 3, h=16, w=16)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHON=sys.executable, ROOT=str(root), RATIO="0.5", SEED="2")
    subprocess.run(["./run_frame_extraction.sh"], cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run(["./run_mask_extraction.sh", "first_frame"], cwd=REPO, env=env, check=True, capture_output=True)
    a = sorted(p.name for p in DataLayout(root).frames("train", "image", "a").iterdir())
    assert len(a) == 3 and mask_files(root, "train", "a") == a[:1]
    assert len(mask_files(root, "test", "b")) == 1  # 3 * 0.5 = 1.5 -> 2 frames, first one masked
    subprocess.run(["./run_mask_extraction.sh", "all_frames"], cwd=REPO, env=env, check=True, capture_output=True)
    assert mask_files(root, "train", "a") == a and len(mask_files(root, "test", "b")) == 2
    r = subprocess.run(["./run_mask_extraction.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 64 and "usage" in r.stderr  # EXIT_USAGE, not 2 ("some clips failed")


def test_propagation_chunk_stitching(tmp_path):
    """Chunks overlap by one frame, later chunks are prompted with the previous chunk's last mask, one mask out
    per frame in order, at most chunk_frames frames in SAM2's memory at once."""
    from utils.images import write_png

    paths = [write_png(tmp_path / f"{i:04d}.png", np.full((8, 10, 3), i / 10, np.float32)) for i in range(7)]

    class FakePredictor:
        def __init__(self):
            self.states, self.prompts = [], []

        def init_state(self, video_path, **kw):
            files = sorted(os.listdir(video_path))
            # the mean grey of each JPEG tells which original frame it is
            ids = [int(round(cv2.imread(os.path.join(video_path, f)).mean() / 255 * 10)) for f in files]
            self.states.append(ids)
            return {"ids": ids}

        def add_new_points_or_box(self, state, frame_idx, obj_id, box):
            self.prompts.append(("box", obj_id))

        def add_new_mask(self, state, frame_idx, obj_id, mask):
            self.prompts.append(("mask", int(mask.sum())))

        def propagate_in_video(self, state):
            for k, orig in enumerate(state["ids"]):
                logits = -np.ones((2, 1, 8, 10), np.float32)
                logits[0, 0, 0, :orig + 1] = 1  # object 1 covers orig+1 pixels; object 2 one more pixel
                logits[1, 0, 1, 0] = 1
                yield k, [1, 2], torch.from_numpy(logits)

        def reset_state(self, state):
            pass

    fake = FakePredictor()
    boxes = np.array([[0, 0, 4, 4], [5, 5, 9, 7]], np.float32)
    out = list(gm.propagate_sam2(paths, boxes, fake, chunk_frames=3))
    assert [int(m.sum()) for m in out] == [i + 2 for i in range(7)]  # frame i's union, in order, once each
    assert fake.states == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert fake.prompts == [("box", 1), ("box", 2), ("mask", 2 + 2), ("mask", 4 + 2)]


@needs_matanyone
def test_matanyone_streams_one_frame_at_a_time(tmp_path, monkeypatch):
    """Memory flat in clip length: frame k+1 is read only after alpha k was handed out, and the processor sees
    MatAnyone's first-frame sequence (mask, warm-up repeats, first prediction) then one step per frame."""
    import get_default_model as gdm

    gdm._import_matanyone()
    import matanyone.inference.inference_core as core
    from utils.images import write_png

    paths = [write_png(tmp_path / f"{i:04d}.png", np.full((8, 8, 3), 0.1 * i, np.float32)) for i in range(5)]
    steps, reads = [], []

    class FakeCore:
        def __init__(self, network, cfg=None, device=None):
            pass

        def step(self, image, mask=None, objects=None, first_frame_pred=False):
            steps.append(("mask" if mask is not None else "first" if first_frame_pred else "next",
                          round(float(image.mean()) * 10)))
            return torch.full((2, 8, 8), float(image.mean()))

        def output_prob_to_mask(self, prob):
            return prob[1]

    real_read = gm.read_image
    monkeypatch.setattr(core, "InferenceCore", FakeCore)
    monkeypatch.setattr(gm, "read_image", lambda p, gray=None: reads.append(Path(p).name) or real_read(p, gray=gray))
    model = type("M", (), {"cfg": None})()
    stream = gm.matanyone_alphas(model, paths, np.ones((8, 8), np.float32), "cpu", warmup=2)
    for k in range(5):
        alpha = next(stream)
        assert len(reads) == k + 1  # nothing read ahead
        assert alpha.shape == (8, 8) and np.allclose(alpha, 0.1 * k, atol=1 / 255)
    assert steps == [("mask", 0), ("first", 0), ("first", 0), ("first", 0), ("next", 1), ("next", 2), ("next", 3),
                     ("next", 4)]


@needs_matanyone
def test_get_default_model_drop_in_inside_a_clone(matanyone_ckpt, tmp_path):
    """Copied over the clone's own file, MatAnyone's import path loads a local checkpoint on CPU, twice."""
    import shutil

    clone = tmp_path / "MatAnyone"
    shutil.copytree(Path(MATANYONE_ROOT) / "matanyone", clone / "matanyone",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "get_default_model.py", clone / "matanyone/utils/get_default_model.py")
    code = ("from matanyone.utils.get_default_model import get_matanyone_model\n"
            f"a = get_matanyone_model({str(matanyone_ckpt)!r}, 'cpu')\n"
            f"b = get_matanyone_model({str(matanyone_ckpt)!r}, device='cpu')\n"
            "print('ok', a.device, type(b).__name__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MATANYONE_ROOT", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok cpu MatAnyone")
