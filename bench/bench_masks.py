"""Per-frame time of each guide-mask backend at 720p, split into YOLO and SAM2, per device and SAM2 size.

Models have random weights built from the packages' own configs (YOLOv8n from ``yolov8n.yaml``; SAM2 from its
shipped configs), loaded through ``preprocess.guide_mask``'s real loading code, so the numbers are the
architectures' cost, not the quality. A random YOLO finds no person, so SAM2 is timed on one injected
person-sized box (the real pipeline runs SAM2 once per frame with all boxes, so the cost is the same). MatAnyone
is timed when ``MATANYONE_ROOT`` points to a clone (per streamed frame, after the first frame's mask encoding).
YOLO always gets an untimed warm-up call; SAM2 gets one on CUDA (kernel selection) or with ``--warmup`` (on CPU
its first call costs what later calls do, within noise, and each costs tens of seconds at 720p on a small CPU).

    python bench/bench_masks.py                      # CPU (+ CUDA when present), tiny and large SAM2, 1 frame
    python bench/bench_masks.py --frames 10 --warmup --sam2 t,s,b+,l --devices cpu
"""
from __future__ import annotations

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


from preprocess import guide_mask as gm
from preprocess.perturb import perturb_guide

CONFIGS = {"t": "configs/sam2.1/sam2.1_hiera_t.yaml", "s": "configs/sam2.1/sam2.1_hiera_s.yaml",
           "b+": "configs/sam2.1/sam2.1_hiera_b+.yaml", "l": "configs/sam2.1/sam2.1_hiera_l.yaml"}


def timed(fn, frames: list, warmup: bool = True) -> float:
    """Mean seconds per call of ``fn(frame)`` over ``frames`` (the first call is a warm-up when ``warmup``)."""
    if warmup:
        fn(frames[0])
    t = time.perf_counter()
    for f in frames:
        fn(f)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / len(frames)


def random_yolo(folder: Path) -> Path:
    """A YOLOv8n with random weights, built from ultralytics' ``yolov8n.yaml`` (COCO's class 0 named 'person')
    and saved the way ultralytics saves checkpoints, so ``guide_mask.load_yolo`` reads it. Returns its path."""
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml")
    yolo.model.names = {i: ("person" if i == 0 else f"class{i}") for i in range(80)}
    path = folder / "yolo.pt"
    yolo.save(path)
    return path


def random_sam2(folder: Path, size: str = "t") -> tuple[Path, str]:
    """A SAM2.1 of ``size`` (key of ``CONFIGS``) with random weights from its shipped config, saved as the
    ``{'model': state_dict}`` file ``guide_mask.load_sam2`` reads. Returns ``(checkpoint path, config)``."""
    from sam2.build_sam import build_sam2

    config = CONFIGS[size]
    with gm._sam2_hydra():
        sam = build_sam2(config, None, device="cpu")
    ckpt = folder / f"sam2_{size}.pt"
    torch.save({"model": sam.state_dict()}, ckpt)
    return ckpt, config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=1, help="timed frames per measurement")
    p.add_argument("--sam2", default="t,l", help="SAM2 sizes: comma list of t, s, b+, l")
    p.add_argument("--devices", default="auto", help="auto (cpu, + cuda when present) or a comma list")
    p.add_argument("--size", default="1280x720", help="WxH of the frames")
    p.add_argument("--warmup", action="store_true", help="an untimed warm-up call for SAM2/MatAnyone on CPU too")
    args = p.parse_args()
    w, h = map(int, args.size.split("x"))
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.devices == "auto" \
        else args.devices.split(",")
    rng = np.random.default_rng(0)
    frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(args.frames)]
    box = np.array([[w * 0.3, h * 0.1, w * 0.7, h * 0.95]], np.float32)  # one standing person
    print(f"frames {w}x{h}, {args.frames} timed per row, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, devices {devices}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        yolo_ckpt = random_yolo(Path(tmp))
        alpha = np.zeros((h, w), np.float32)
        alpha[int(h * 0.1):int(h * 0.95), int(w * 0.3):int(w * 0.7)] = 1
        seeds = iter(range(10**6))
        t_perturb = timed(lambda f: perturb_guide(alpha, np.random.default_rng(next(seeds))), frames * 20, True)
        rows.append(("perturb", "cpu", "-", t_perturb, 0.0, t_perturb))
        for size in args.sam2.split(","):
            ckpt, config = random_sam2(Path(tmp), size)
            for device in devices:
                warm = args.warmup or device != "cpu"
                model = gm.YoloSam2(yolo_ckpt, ckpt, config, device=device)
                t_yolo = timed(model.boxes, frames, True)
                t_sam = timed(lambda f: model.segment(f, box), frames, warm)
                rows.append((f"yolo_sam2 ({size})", device, config.split("/")[-1], t_yolo, t_sam, t_yolo + t_sam))
                print(f"  {rows[-1][0]:<18} {device:<5} yolo {t_yolo:7.3f}s  sam2 {t_sam:7.3f}s", flush=True)
                del model
        if os.environ.get("MATANYONE_ROOT"):
            rows += bench_matanyone(frames, devices, Path(tmp), args.warmup)
        else:
            print("  matanyone: skipped (set MATANYONE_ROOT to a clone to time it)")
    print()
    print(f"| backend | device | yolo s/frame | sam2 (or model) s/frame | total s/frame | frames/s |")
    print("|---|---|---|---|---|---|")
    for name, device, _, ty, ts, tt in rows:
        print(f"| {name} | {device} | {ty:.3f} | {ts:.3f} | {tt:.3f} | {1 / tt:.2f} |")
    by = {(r[0], r[1]): r for r in rows}
    for device in devices:
        t, l = by.get(("yolo_sam2 (t)", device)), by.get(("yolo_sam2 (l)", device))
        if t and l:
            print(f"{device}: SAM2 large / tiny = {l[4] / t[4]:.1f}x; tiny: SAM2 / YOLO = {t[4] / t[3]:.1f}x")
        if ("yolo_sam2 (t)", "cuda") in by and ("yolo_sam2 (t)", "cpu") in by and device == "cuda":
            print(f"tiny, cpu / cuda = {by[('yolo_sam2 (t)', 'cpu')][5] / by[('yolo_sam2 (t)', 'cuda')][5]:.1f}x")


def bench_matanyone(frames, devices, tmp: Path, warmup: bool) -> list:
    import get_default_model as gdm
    from omegaconf import open_dict

    package_dir, MatAnyone = gdm._import_matanyone()
    cfg = gdm._compose_config(package_dir / "config")
    with open_dict(cfg):
        cfg.model["pretrained_resnet"] = False
    ckpt = tmp / "matanyone.pth"
    torch.save(MatAnyone(cfg, single_object=True).state_dict(), ckpt)
    rows = []
    for device in devices:
        warm = warmup or device != "cpu"
        model = gdm.get_matanyone_model(str(ckpt), device)
        from utils.images import write_png

        paths = []
        for k, f in enumerate(frames):
            paths.append(write_png(tmp / f"f{k}.png", f))
        first = np.zeros(frames[0].shape[:2], np.float32)
        first[100:600, 400:900] = 1
        # the first frame (mask encoding + first prediction, warmup=0) is not the steady state: never timed
        stream = gm.matanyone_alphas(model, paths[:1] + paths, first, device, warmup=1 if warm else 0)
        next(stream)
        t = time.perf_counter()
        n = sum(1 for _ in stream)
        dt = (time.perf_counter() - t) / n
        rows.append(("matanyone", device, "-", 0.0, dt, dt))
        print(f"  matanyone          {device:<5} {dt:7.3f}s per frame", flush=True)
    return rows


if __name__ == "__main__":
    main()
