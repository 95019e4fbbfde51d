"""Stage 3b: coarse guide masks for the refiner, one folder per clip in the per-frame layout.

```
<tree>/<split>/image/<clip>/frames/NNNN.png (+ alpha/ for perturb)
    -> <tree>/<split>/mask/<clip>/frames/NNNN.png      8-bit gray: 0/255, or soft for matanyone
       <tree>/<split>/mask/<clip>/video/<clip>.mp4      overlay preview (image, mask tinted red)
       <root>/predictions/matanyone[_<tree>]/<split>/<clip>/frames/NNNN.png   matanyone only: 16-bit alpha
```
``--mode first_frame`` writes the mask of the clip's first kept frame only; ``all_frames`` one per frame.

Backends (``--backend``):
- ``perturb`` (default, offline): the ground-truth alpha degraded the way mask-guided matting trains
  (``preprocess.perturb.perturb_guide``: random threshold, dilate/erode, 1/8 down-up sampling, copied/cut
  patches, dropped boxes), seeded per frame from ``--seed``, split, clip and frame index.
- ``yolo_sam2``: the original work's recipe. YOLOv8 (``--yolo_ckpt``, class 'person' only, ``--conf``/``--iou``) finds
  every person box; SAM2's image predictor (``--sam2_ckpt`` + ``--sam2_config``) segments all boxes in one call;
  the guide is the union of the instance masks. No person -> an empty mask and a warning. In ``all_frames``
  mode detection runs on every frame, or with ``--propagate sam2`` only on the first frame, whose boxes SAM2's
  video predictor then propagates through the clip (in chunks of ``--chunk_frames``, each seeded with the
  previous chunk's last mask, so memory stays flat in clip length).
- ``matanyone``: a first-frame mask (``--first_mask`` file or folder of ``<clip>.png``, else ``yolo_sam2``)
  -> MatAnyone video matting (local clone ``--matanyone_root``/``MATANYONE_ROOT``, ``--matanyone_ckpt``). Frames
  are streamed one at a time (MatAnyone's own script holds the whole clip in memory); its working memory is
  bounded by its config (``max_mem_frames``), so memory is flat in clip length. The alpha is the soft guide and
  also a baseline prediction for evaluation.

Weights load only from local paths; a missing or wrong file is one line naming it. Models load once per
process. Each clip is all-or-nothing (folders built under temporary names, renamed at the end) and recorded in
``<root>/.manifest/<tree>_mask/<split>/``; a rerun skips finished clips unless the settings or the input frames
changed (or ``--overwrite``).
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from preprocess.perturb import perturb_guide
from utils.atomic import Manifest, atomic_dir, clean_stale_temps, upstream_fingerprint
from utils.cli import (ArgumentParser, UserError, add_common_args, finite_float, nonneg_int, positive_int, run_main,
                       splits_of, unit_seed)
from utils.device import resolve_device
from utils.images import list_images, read_image, to_uint, write_png
from utils.paths import DataLayout, frame_index, make_repo_importable
from utils.stage import ClipRunner, open_stage
from utils.video import video_fps, write_video

log = logging.getLogger("guide_mask")

BACKENDS = ("perturb", "yolo_sam2", "matanyone")
DEFAULT_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
YOLO_HINT = "get e.g. yolov8n.pt from https://github.com/ultralytics/assets/releases and pass --yolo_ckpt"
SAM2_HINT = "get e.g. sam2.1_hiera_tiny.pt from https://github.com/facebookresearch/sam2 and pass --sam2_ckpt"
_MODELS: dict[tuple, object] = {}  # loaded models, once per process


class ModelError(UserError):
    """A missing or wrong checkpoint/config: a setting, so every clip would fail the same way (stop at once)."""


# ------------------------------------------------------------------------------------------------ YOLO + SAM2
def union_masks(masks: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """Union of instance masks (``(N,H,W)``, ``(N,1,H,W)``, bool or float > 0 is inside) as HxW float32 {0,1}."""
    if masks is None or np.size(masks) == 0:
        return np.zeros((height, width), np.float32)
    masks = np.asarray(masks).reshape(-1, height, width)
    return (masks > 0).any(axis=0).astype(np.float32)


def _force_yolo_safe_load() -> None:
    """Make ultralytics unpickle checkpoints with ``weights_only=True`` and its allow-list, whatever the order of
    imports: it reads ``ULTRALYTICS_SAFE_LOAD`` (set by utils.offline) once, at import, into module globals."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as ul_utils

    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    ul_utils.SAFE_LOAD = tasks.SAFE_LOAD = True
    if not tasks._SafeLoad.SUPPORTED:  # torch < 2.6: ultralytics would silently fall back to a full unpickle
        raise ModelError("this torch cannot load YOLO checkpoints safely (need torch >= 2.6)")


def load_yolo(path: str | os.PathLike, device: str = "cpu"):
    """A local YOLO detection checkpoint and the id of its 'person' class. Never downloads."""
    path = Path(path)
    # ultralytics treats a missing name such as 'yolov8n.pt' as an asset to download: check first
    if not path.is_file():
        raise ModelError(f"YOLO checkpoint not found: {path} ({YOLO_HINT})")
    if path.suffix != ".pt":
        raise ModelError(f"YOLO checkpoint must be a .pt file: {path}")
    from ultralytics import YOLO

    _force_yolo_safe_load()
    try:
        model = YOLO(str(path))
    except Exception as exc:  # ultralytics raises many types for a file that is not its checkpoint
        raise ModelError(f"not a YOLO checkpoint: {path} ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if model.task != "detect":
        raise ModelError(f"YOLO checkpoint {path} is a {model.task!r} model, need 'detect'")
    person = [i for i, name in model.names.items() if name == "person"]
    if not person:
        raise ModelError(f"YOLO checkpoint {path} has no 'person' class")
    return model, person[0]


@contextlib.contextmanager
def _sam2_hydra() -> Iterator[None]:
    """Make sam2's config module Hydra's search path for the duration (and restore whatever was there).

    sam2 initialises Hydra's global state at import; MatAnyone's model builder replaces it. This keeps the two
    independent of the order they load in.
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("sam2", version_base="1.2"):
            yield
    finally:
        restore_gh_from_backup(backup)


def load_sam2(config: str, ckpt: str | os.PathLike, device: str = "cpu", video: bool = False,
              image_size: int | None = None):
    """A SAM2 model (image) or video predictor built from a shipped config and a local ``{'model': ...}`` checkpoint.

    ``image_size`` overrides the config's input size (1024); smaller is faster and coarser (tests, benches).
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelError(f"SAM2 checkpoint not found: {ckpt} ({SAM2_HINT})")
    from hydra.errors import MissingConfigException

    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    overrides = [f"++model.image_size={image_size}"] if image_size else []
    build = build_sam2_video_predictor if video else build_sam2
    with _sam2_hydra():
        try:
            model = build(config, str(ckpt), device=device, hydra_overrides_extra=overrides)
        except MissingConfigException:
            raise ModelError(f"unknown SAM2 config {config!r} (e.g. {DEFAULT_SAM2_CONFIG})") from None
        except Exception as exc:  # pickle / key / shape errors: the file is not this model's checkpoint
            raise ModelError(f"not a SAM2 checkpoint for {config}: {ckpt} ({exc.__class__.__name__})") from None
    return model


class YoloSam2:
    """YOLO person boxes -> SAM2 masks of all boxes in one call -> their union. Times each part."""

    def __init__(self, yolo_ckpt, sam2_ckpt, sam2_config: str = DEFAULT_SAM2_CONFIG, device: str = "cpu",
                 conf: float = 0.25, iou: float = 0.7, sam2_image_size: int | None = None):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.device, self.conf, self.iou = device, conf, iou
        self.yolo, self.person = load_yolo(yolo_ckpt, device)
        sam = load_sam2(sam2_config, sam2_ckpt, device, image_size=sam2_image_size)
        self.predictor = SAM2ImagePredictor(sam)
        s = sam.image_size
        # the predictor assumes the 1024 input when it reshapes backbone features; follow the real size
        self.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        self.times = {"yolo": 0.0, "sam2": 0.0, "frames": 0}

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Person boxes ``(N,4)`` xyxy in pixels of an RGB uint8 image."""
        t = time.perf_counter()
        result = self.yolo.predict(np.ascontiguousarray(image[..., ::-1]), conf=self.conf, iou=self.iou,
                                   classes=[self.person], device=self.device, verbose=False)[0]
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
        self.times["yolo"] += time.perf_counter() - t
        return boxes

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Union of SAM2's masks of ``boxes`` (all in one call) as HxW float32 {0,1}; empty for no boxes."""
        import torch

        h, w = image.shape[:2]
        if len(boxes) == 0:
            return union_masks(None, h, w)
        t = time.perf_counter()
        with torch.inference_mode():
            self.predictor.set_image(image)
            masks, _, _ = self.predictor.predict(box=np.asarray(boxes, np.float32), multimask_output=False)
        self.times["sam2"] += time.perf_counter() - t
        return union_masks(masks, h, w)

    def __call__(self, image: np.ndarray, name: str = "") -> np.ndarray:
        """The guide of one RGB uint8 image."""
        boxes = self.boxes(image)
        if len(boxes) == 0:
            log.warning("no person found%s: empty mask", f" in {name}" if name else "")
        self.times["frames"] += 1
        return self.segment(image, boxes)


def get_yolo_sam2(yolo_ckpt, sam2_ckpt, sam2_config: str = DEFAULT_SAM2_CONFIG, device: str = "cpu",
                  conf: float = 0.25, iou: float = 0.7, sam2_image_size: int | None = None) -> YoloSam2:
    """A cached :class:`YoloSam2` (models load once per process)."""
    key = ("yolo_sam2", str(yolo_ckpt), str(sam2_ckpt), sam2_config, device, sam2_image_size)
    if key not in _MODELS:
        _MODELS[key] = YoloSam2(yolo_ckpt, sam2_ckpt, sam2_config, device, conf, iou, sam2_image_size)
    model = _MODELS[key]
    model.conf, model.iou = conf, iou
    return model


def yolo_sam2_guides(images: list[np.ndarray], yolo_ckpt, sam2_ckpt, sam2_config: str = DEFAULT_SAM2_CONFIG,
                     device: str = "cpu", conf: float = 0.25, iou: float = 0.7) -> list[np.ndarray]:
    """Guide masks (HxW float32 {0,1}) of RGB images (HxWx3 float in [0,1]) with YOLO person boxes + SAM2."""
    model = get_yolo_sam2(yolo_ckpt, sam2_ckpt, sam2_config, str(resolve_device(device)), conf, iou)
    return [model(to_uint(img, 8)) for img in images]


def propagate_sam2(frame_paths: list[Path], boxes: np.ndarray, predictor,
                   chunk_frames: int = 200) -> Iterator[np.ndarray]:
    """Masks of every frame: ``boxes`` of frame 0 (one object each) propagated by SAM2's video predictor.

    SAM2 reads a clip from a folder of JPEG files and keeps it in memory, so long clips go in chunks of
    ``chunk_frames`` (only one chunk is read at a time); each chunk starts on the previous chunk's last frame,
    prompted with its union mask.
    """
    import torch

    h, w = read_image(frame_paths[0], gray=True).shape
    if len(boxes) == 0:
        for _ in frame_paths:
            yield union_masks(None, h, w)
        return
    chunk_frames = max(2, chunk_frames)
    start, prompt = 0, None
    while start < len(frame_paths):
        stop = min(len(frame_paths), start + chunk_frames)
        with tempfile.TemporaryDirectory(prefix="sam2_chunk_") as tmp, torch.inference_mode():
            for k, path in enumerate(frame_paths[start:stop]):
                frame = to_uint(read_image(path, gray=False), 8)
                cv2.imwrite(os.path.join(tmp, f"{k:05d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            state = predictor.init_state(video_path=tmp, offload_video_to_cpu=True, offload_state_to_cpu=True)
            if prompt is None:
                for obj_id, box in enumerate(boxes, start=1):
                    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box)
            else:
                predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=prompt > 0)
            chunk = [None] * (stop - start)
            for idx, _, logits in predictor.propagate_in_video(state):
                chunk[idx] = union_masks(logits.float().cpu().numpy(), h, w)
            predictor.reset_state(state)
        # the first frame of a later chunk repeats the previous chunk's last frame
        yield from chunk[0 if start == 0 else 1:]
        if stop == len(frame_paths):
            return
        prompt, start = chunk[-1], stop - 1


# ------------------------------------------------------------------------------------------------ MatAnyone
def load_matanyone(ckpt, device: str, matanyone_root: str | None = None):
    """MatAnyone from a local clone and checkpoint, through this repository's get_default_model.py."""
    if matanyone_root:
        os.environ["MATANYONE_ROOT"] = str(matanyone_root)
    key = ("matanyone", str(ckpt), device, os.environ.get("MATANYONE_ROOT"))
    if key not in _MODELS:
        make_repo_importable()  # get_default_model.py lives at the repository's root
        import get_default_model

        try:
            _MODELS[key] = get_default_model.get_matanyone_model(ckpt, device)
        except get_default_model.MatAnyoneLoadError as exc:
            raise ModelError(str(exc)) from None
    return _MODELS[key]


def close_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate then erode a 0/1 mask with an elliptic kernel of size ``radius`` (MatAnyone's input clean-up)."""
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (radius, radius))
    return cv2.erode(cv2.dilate(mask.astype(np.float32), kernel), kernel)


def matanyone_alphas(model, frame_paths: list[Path], first_mask: np.ndarray, device: str, warmup: int = 10,
                     close_radius: int = 10) -> Iterator[np.ndarray]:
    """Alpha (HxW float32 [0,1]) of every frame, streamed: one frame in memory at a time.

    As MatAnyone's own script does: the first frame is repeated ``warmup`` times to settle the first alpha,
    and the first-frame mask is cleaned by a dilate + erode.
    """
    import torch
    from matanyone.inference.inference_core import InferenceCore

    processor = InferenceCore(model, cfg=model.cfg, device=device)
    mask = torch.from_numpy(close_mask(first_mask, close_radius) * 255.0).float().to(device)

    def tensor(path: Path):
        return torch.from_numpy(read_image(path, gray=False)).permute(2, 0, 1).contiguous().to(device)

    with torch.inference_mode():
        first = tensor(frame_paths[0])
        processor.step(first, mask, objects=[1])
        for _ in range(warmup):
            processor.step(first, first_frame_pred=True)
        for k, path in enumerate(frame_paths):
            image = first if k == 0 else tensor(path)
            prob = processor.step(image, first_frame_pred=(k == 0))
            yield processor.output_prob_to_mask(prob).float().clamp(0, 1).cpu().numpy()


# ------------------------------------------------------------------------------------------------ per clip
def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Preview frame: the mask tinted red over the image (float [0,1])."""
    red = np.array([1.0, 0.1, 0.1], np.float32)
    m = 0.5 * mask[..., None]
    return image * (1 - m) + red * m


def first_mask_for(args, clip: str, image: np.ndarray) -> np.ndarray:
    """The first-frame mask for MatAnyone: ``--first_mask`` (file, or folder of <clip>.png) or yolo_sam2."""
    if args.first_mask:
        src = Path(args.first_mask)
        path = src / f"{clip}.png" if src.is_dir() else src
        mask = read_image(path, gray=True)
        if mask.shape != image.shape[:2]:
            raise UserError(f"first mask {path} is {mask.shape}, frames are {image.shape[:2]}")
        return (mask > 0.5).astype(np.float32)
    return _yolo_sam2_from_args(args)(to_uint(image, 8), name=f"{clip} first frame")


def _yolo_sam2_from_args(args) -> YoloSam2:
    if not args.yolo_ckpt or not args.sam2_ckpt:
        raise ModelError(f"backend {args.backend} needs --yolo_ckpt and --sam2_ckpt ({YOLO_HINT}; {SAM2_HINT})")
    return get_yolo_sam2(args.yolo_ckpt, args.sam2_ckpt, args.sam2_config, args.device, args.conf, args.iou,
                         args.sam2_image_size)


def clip_guides(args, split: str, clip: str, layout: DataLayout,
                frame_paths: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """``(frame path, guide HxW float32)`` for each frame the mode asks for."""
    if args.backend == "perturb":
        alpha_dir = layout.frames(split, "alpha", clip, tree=args.tree)
        for path in frame_paths:
            alpha = read_image(alpha_dir / path.name, gray=True)
            rng = np.random.default_rng(unit_seed(args.seed, split, clip, frame_index(path)))
            yield path, perturb_guide(alpha, rng)
    elif args.backend == "yolo_sam2" and args.propagate == "sam2" and len(frame_paths) > 1:
        model = _yolo_sam2_from_args(args)
        predictor = _sam2_video_from_args(args)
        boxes = model.boxes(to_uint(read_image(frame_paths[0], gray=False), 8))
        if len(boxes) == 0:
            log.warning("no person found in %s/%s first frame: empty masks", split, clip)
        for path, mask in zip(frame_paths, propagate_sam2(frame_paths, boxes, predictor, args.chunk_frames)):
            yield path, mask
    elif args.backend == "yolo_sam2":
        model = _yolo_sam2_from_args(args)
        for path in frame_paths:
            yield path, model(to_uint(read_image(path, gray=False), 8), name=f"{split}/{clip}/{path.name}")
    else:  # matanyone
        model = load_matanyone(args.matanyone_ckpt, args.device, args.matanyone_root)
        first = first_mask_for(args, clip, read_image(frame_paths[0], gray=False))
        yield from zip(frame_paths, matanyone_alphas(model, frame_paths, first, args.device, args.warmup,
                                                     args.close_radius))


def process_clip(args, split: str, clip: str, layout: DataLayout, frame_paths: list[Path], fps: float) -> int:
    """Write one clip's masks (+ preview, + MatAnyone predictions); all-or-nothing. Returns the mask count."""
    mask_clip = layout.frames(split, "mask", clip, tree=args.tree).parent
    targets = [mask_clip]
    if args.backend == "matanyone":
        targets.append(prediction_dir(layout, args.tree, split, clip).parent)
    count = 0
    with contextlib.ExitStack() as stack:
        tmps = []
        for final in targets:
            clean_stale_temps(final.parent, final.name)
            tmps.append(stack.enter_context(atomic_dir(final, overwrite=True)))
        (tmps[0] / "frames").mkdir()
        if len(tmps) > 1:
            (tmps[1] / "frames").mkdir()

        def previews() -> Iterator[np.ndarray]:
            nonlocal count
            for path, guide in clip_guides(args, split, clip, layout, frame_paths):
                write_png(tmps[0] / "frames" / path.name, guide, bits=8)
                if len(tmps) > 1:
                    write_png(tmps[1] / "frames" / path.name, guide, bits=16)
                count += 1
                yield overlay(read_image(path, gray=False), guide) if args.preview else None

        if args.preview:
            write_video(tmps[0] / "video" / f"{clip}.mp4", previews(), fps=fps)
        else:
            for _ in previews():
                pass
    return count


def prediction_dir(layout: DataLayout, tree: str, split: str, clip: str) -> Path:
    """Where MatAnyone's alpha goes as a baseline prediction: ``<root>/predictions/matanyone/<split>/<clip>/frames``."""
    name = "matanyone" if tree == "frames" else f"matanyone_{tree}"
    return layout.root / "predictions" / name / split / clip / "frames"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--mode", default="all_frames", choices=("first_frame", "all_frames"),
                   help="a mask for the first kept frame of each clip only, or for every frame")
    p.add_argument("--backend", default="perturb", choices=BACKENDS)
    p.add_argument("--tree", default="frames", choices=("frames", "frames_sharp"), help="which per-frame tree")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--preview", dest="preview", action="store_true", default=True,
                   help="write the overlay mp4 (the default)")
    p.add_argument("--no_preview", dest="preview", action="store_false", help="skip the overlay mp4")
    g = p.add_argument_group("yolo_sam2")
    g.add_argument("--yolo_ckpt", default=os.environ.get("YOLO_CKPT"), help="local YOLOv8 .pt (env YOLO_CKPT)")
    g.add_argument("--sam2_ckpt", default=os.environ.get("SAM2_CKPT"), help="local SAM2 .pt (env SAM2_CKPT)")
    g.add_argument("--sam2_config", default=os.environ.get("SAM2_CONFIG", DEFAULT_SAM2_CONFIG),
                   help="SAM2 config name shipped with sam2 (default %(default)s)")
    g.add_argument("--sam2_image_size", type=positive_int, default=None, help="override SAM2's input size (1024)")
    g.add_argument("--conf", type=finite_float(0.0, 1.0), default=0.25, help="YOLO confidence threshold, in [0, 1]")
    g.add_argument("--iou", type=finite_float(0.0, 1.0), default=0.7, help="YOLO NMS IoU threshold, in [0, 1]")
    g.add_argument("--propagate", default="none", choices=("none", "sam2"),
                   help="all_frames: detect on every frame (none) or propagate the first frame with SAM2")
    g.add_argument("--chunk_frames", type=positive_int, default=200,
                   help="SAM2 propagation chunk length (memory; at least 2 are used)")
    g = p.add_argument_group("matanyone")
    g.add_argument("--matanyone_root", default=os.environ.get("MATANYONE_ROOT"), help="MatAnyone clone")
    g.add_argument("--matanyone_ckpt", default=os.environ.get("MATANYONE_CKPT"),
                   help="MatAnyone checkpoint (default <clone>/pretrained_models/matanyone.pth)")
    g.add_argument("--first_mask", default=None, help="first-frame mask PNG, or a folder of <clip>.png")
    g.add_argument("--warmup", type=nonneg_int, default=10, help="repeats of the first frame (MatAnyone's n_warmup)")
    g.add_argument("--close_radius", type=nonneg_int, default=10,
                   help="dilate+erode size for the first mask (0: none)")
    return p


def _load_models(args) -> None:
    """Load the backend's models once, up front."""
    if args.backend == "yolo_sam2" or (args.backend == "matanyone" and not args.first_mask):
        _yolo_sam2_from_args(args)
    if args.backend == "yolo_sam2" and args.propagate == "sam2" and args.mode == "all_frames":
        _sam2_video_from_args(args)
    if args.backend == "matanyone":
        load_matanyone(args.matanyone_ckpt, args.device, args.matanyone_root)


def _sam2_video_from_args(args):
    key = ("sam2_video", args.sam2_config, str(args.sam2_ckpt), args.device, args.sam2_image_size)
    if key not in _MODELS:
        _MODELS[key] = load_sam2(args.sam2_config, args.sam2_ckpt, args.device, video=True,
                                 image_size=args.sam2_image_size)
    return _MODELS[key]


def _params(args) -> dict:
    keys = ["mode", "backend", "seed"]
    if args.backend != "perturb":
        keys += ["yolo_ckpt", "sam2_ckpt", "sam2_config", "sam2_image_size", "conf", "iou", "propagate"]
    if args.backend == "matanyone":
        keys += ["matanyone_ckpt", "first_mask", "warmup", "close_radius"]
    return {k: (str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k)) for k in keys}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.device = str(resolve_device(args.device))  # the flags first: nothing is read or written on a wrong one
    if args.backend == "matanyone" and args.mode != "all_frames":
        raise UserError("the matanyone backend mattes whole clips: use --mode all_frames")
    with open_stage(args.root, f"{args.tree}_mask", args.shard) as layout:  # the root checked, the lock held
        return run(args, layout)


def run(args: argparse.Namespace, layout: DataLayout) -> int:
    """Guide masks of this shard's clips of ``args.split`` (the root open: :func:`utils.stage.open_stage`)."""
    params = _params(args)
    _load_models(args)  # a missing or wrong checkpoint fails here, before anything is written
    # a ModelError (a missing or wrong checkpoint) would fail every clip alike: it stops the stage at once
    runner = ClipRunner(log, args.shard, args.overwrite, fail_level=logging.ERROR, fail_format="%s/%s: %s",
                        fatal=(ModelError,))
    found_any = False
    for split in splits_of(args.split):
        clips = layout.clips(layout.frames(split, "image", tree=args.tree))
        if not clips:
            continue
        found_any = True
        manifest = Manifest(layout.manifest(f"{args.tree}_mask", split))
        upstream = Manifest(layout.manifest(args.tree, split))  # frame extraction's record of finished clips

        def frame_paths(clip: str) -> list[Path]:  # the frames that get a mask
            paths = list_images(layout.frames(split, "image", clip, tree=args.tree))
            return paths[:1] if args.mode == "first_frame" else paths

        def is_done(clip: str) -> bool:  # same settings and frames, made from the frames as they are now
            info, up = manifest.info(clip), upstream.fingerprint(clip)
            return bool(info and info.get("params") == params and up is not None and info.get("upstream") == up
                        and info.get("frames") == [p.name for p in frame_paths(clip)]
                        and layout.frames(split, "mask", clip, tree=args.tree).is_dir())

        def mask_one(clip: str) -> None:
            paths = frame_paths(clip)
            up = upstream_fingerprint(upstream, clip, "rerun run_frame_extraction.sh")
            if not paths:
                raise UserError(f"no frames in {layout.frames(split, 'image', clip, tree=args.tree)}")
            video = layout.frames_video(split, "image", clip, tree=args.tree)
            fps = video_fps(video) if video.is_file() else 25.0
            count = process_clip(args, split, clip, layout, paths, fps)
            manifest.mark_done(clip, params=params, frames=[p.name for p in paths], upstream=up)
            log.info("%s/%s: %d %s mask(s) -> %s", split, clip, count, args.backend,
                     layout.frames(split, "mask", clip, tree=args.tree))

        runner.run(split, clips, manifest, mask_one, is_done, desc=f"mask/{split}", leave=False)
    if not found_any:
        raise UserError(f"no clips under {layout.root / args.tree} (run run_frame_extraction.sh first)")
    log.info("masks (%s, %s): %d clip(s) written, %d already done (skipped)", args.backend, args.mode, runner.done,
             runner.skipped)
    for key, model in _MODELS.items():
        if isinstance(model, YoloSam2) and model.times["frames"]:
            n = model.times["frames"]
            log.info("yolo_sam2 per frame: yolo %.3fs, sam2 %.3fs", model.times["yolo"] / n, model.times["sam2"] / n)
    return runner.exit_code()


if __name__ == "__main__":
    run_main(main)
