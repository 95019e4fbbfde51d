"""One prepared GPU check: every CUDA path of the project run and timed by one short script.

    python bench/gpu_check.py OUT                  # a CUDA machine: about 6 minutes at most, nothing downloaded
    python bench/gpu_check.py OUT --cpu-dry-run    # every part at toy sizes on the CPU (tests/test_gpu_check.py)

Models have random weights from the packages' own configs, as in the tests, so nothing is downloaded; the numbers
are the architectures' cost, not their quality. Each part calls the code users run (``inference.predict_alpha``,
``preprocess.dof_blur.render``, ``pipeline.solver.train``, ``preprocess.guide_mask.YoloSam2``, ``model.refiner``)
through the bench scripts' own helpers. The parts, in the order they run (cheap numeric checks first; the
compiled refiner, whose compile time is the least predictable, last):

  numerics  refiner alpha through ``inference.predict_alpha``: fp16 autocast vs fp32, every variant, one 1080p
            frame, a binary guide and a flat 0.5 one (check: max |diff| <= 2e-2); on CUDA also CUDA fp32 vs CPU
            fp32 (informative, TF32 convs)
  dwt       light Haar DWT vs pytorch_wavelets db1, forward + backward, 1x32x1080x1920 (check <= 1e-4 in full
            fp32, no TF32; speed target on a GPU >= 3x, timed with the defaults)
  dof       depth-of-field ``render``: torch on CUDA vs OpenCV on the CPU, one 1080p frame (check <= 1/255)
  refiner   every variant (+ RobustVideoMatting when ``RVM_ROOT`` names a clone), fp32 and fp16 autocast, eager,
            1080p and 4K: frames/s and peak memory
  masks     YOLOv8n + SAM2.1-tiny per 720p frame (SAM2 at its native 1024 input, one injected person box)
  train     the training entry point (``pipeline/solver_refiner_maggie.py``, ``solver.train``): 50 AMP steps
            (bf16 where supported) + 20 fp16 steps (GradScaler) on 512x512 crops of synthetic 720p frames, batch 8:
            samples/s and peak memory
  compiled  the light refiner under ``torch.compile``: fp16 and fp32 x 1080p and 4K: compile seconds, frames/s

Each part is a function returning ``{'rows': [...], 'checks': [...], 'notes': [...]}``; an exception in a part
becomes an error entry and the next part runs. A global time budget (``--budget``, 330 s) and per-part caps bound
the run: a part skips what no longer fits and says so in a note; a watchdog ends the process ``WATCHDOG_GRACE_S``
after the budget (a compile that hangs), keeping the rows measured so far. ``OUT/gpu_check.json`` and
``OUT/gpu_check.md`` (device, versions, one table per part, the checks) are rewritten atomically after every part.

Exit codes: 0 every part ran (a part whose cap cut some rows is 'partial', its notes say which; one whose optional
package, ``OPTIONAL_MODULES``, is not installed is 'not available') and every check held; 1 a part raised, timed
out or was skipped for lack of time; 4 (``utils.cli.EXIT_MISMATCH``) a numeric check failed (wins over 1). Not 3:
that is out of memory everywhere else, and run_blur.sh restarts its worker on it.

On the lent GPU machine (its own Python 3.12 and torch, no package index) the packages it lacks travel as wheels:
``bash bench/gpu_env.sh`` here, then the device command of bench/RESULTS.md ("gpu_check") installs them there.
Without a CUDA device and without ``--cpu-dry-run`` the script prints the one line ``NO_CUDA_LINE``, writes
nothing and exits 0: there is nothing to measure, which is not a failure.
"""
from __future__ import annotations

from pathlib import Path

import utils.offline  # noqa: F401  (first: offline switches)

import argparse
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import subprocess
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import torch

from utils.cli import EXIT_MISMATCH  # 4: a numeric check failed (every exit code of the project is in utils.cli)
from utils.paths import make_repo_importable

make_repo_importable()  # its parts import bench.* and inference, and it runs as `python bench/gpu_check.py`
NO_CUDA_LINE = "gpu_check: no CUDA device; nothing measured (use --cpu-dry-run to test the script)"
EXIT_ERROR = 1  # a part raised, timed out or did not fit in the budget
# modules of the carried wheels (bench/gpu_wheels.txt) a part may find missing when bench/gpu_env.sh could not
# get their wheel: the part is then "not available" (not an error) and the others run
OPTIONAL_MODULES = ("sam2", "ultralytics", "hydra", "omegaconf", "antlr4", "iopath")
WATCHDOG_GRACE_S = 20.0  # after the budget: time for the part running to finish its row before the process ends
# stated tolerances of the numeric checks (max absolute difference)
TOL_FP16 = 2e-2        # refiner alpha, fp16 autocast vs fp32 (alpha in [0, 1])
TOL_HAAR = 1e-4        # light Haar DWT vs pytorch_wavelets db1 (low band, high bands, input gradient)
TOL_DOF = 1.0 / 255    # DoF render, torch path vs OpenCV path (image, alpha, fgr, bgr in [0, 1])
DWT_TARGET_CUDA, DWT_TARGET_CPU = 3.0, 2.0  # speed targets of the light DWT over pytorch_wavelets (bench/RESULTS.md)


@dataclasses.dataclass
class Settings:
    """Sizes and repeats of every part: ``for_cuda()`` the real check, ``for_dry_run()`` toy sizes on the CPU."""

    dry_run: bool
    device: str
    budget_s: float
    caps_s: dict[str, float]
    base_channels: int
    numerics_size: tuple[int, int]
    dwt_shape: tuple[int, int, int]           # C, H, W
    dwt_warmup: int
    dwt_repeats: int
    dof_size: tuple[int, int]
    dof_layers: int
    dof_sigma_max: float
    dof_repeats: int
    sizes: dict[str, tuple[int, int]]         # label -> (H, W) of the refiner timings
    warmup: dict[str, int]
    repeats: dict[str, int]
    mask_size: tuple[int, int]
    mask_frames: int
    sam2_image_size: int | None               # None: SAM2's native 1024
    train_frame_size: tuple[int, int]
    train_crop: int
    train_batch: int
    train_runs: list[tuple[str, int]]         # (solver --amp, steps)
    train_workers: int
    compile_backend: str
    compile_runs: list[tuple[str, str]]       # (fp16|fp32, size label)
    compile_min_s: float                      # a compile is started only with this much of the part's time left
    min_row_s: float                          # a row is started only with at least this much of the cap left

    @staticmethod
    def for_cuda(budget_s: float) -> "Settings":
        return Settings(
            dry_run=False, device="cuda", budget_s=budget_s,
            caps_s={"numerics": 30, "dwt": 25, "dof": 30, "refiner": 80, "masks": 40, "train": 60, "compiled": 150},
            base_channels=32, numerics_size=(1080, 1920), dwt_shape=(32, 1080, 1920), dwt_warmup=10, dwt_repeats=50,
            dof_size=(1080, 1920), dof_layers=16, dof_sigma_max=16.0, dof_repeats=3,
            sizes={"1080p": (1080, 1920), "4K": (2160, 3840)}, warmup={"1080p": 5, "4K": 3},
            repeats={"1080p": 20, "4K": 10}, mask_size=(720, 1280), mask_frames=10, sam2_image_size=None,
            train_frame_size=(720, 1280), train_crop=512, train_batch=8, train_runs=[("auto", 50), ("fp16", 20)],
            train_workers=max(0, min(8, (os.cpu_count() or 1) - 2)), compile_backend="inductor",
            compile_runs=[("fp16", "1080p"), ("fp16", "4K"), ("fp32", "1080p"), ("fp32", "4K")], compile_min_s=40.0,
            min_row_s=5.0)

    @staticmethod
    def for_dry_run(budget_s: float) -> "Settings":
        # toy sizes: the point is that every line of the script runs, not what it measures
        return Settings(
            dry_run=True, device="cpu", budget_s=budget_s,
            caps_s={"numerics": 30, "dwt": 20, "dof": 20, "refiner": 40, "masks": 60, "train": 60, "compiled": 60},
            base_channels=8, numerics_size=(64, 96), dwt_shape=(2, 32, 64), dwt_warmup=0, dwt_repeats=1,
            dof_size=(64, 96), dof_layers=8, dof_sigma_max=4.0, dof_repeats=1,
            sizes={"toy 64x96": (64, 96), "toy 96x128": (96, 128)}, warmup={"toy 64x96": 0, "toy 96x128": 0},
            repeats={"toy 64x96": 1, "toy 96x128": 1}, mask_size=(64, 96), mask_frames=1, sam2_image_size=128,
            train_frame_size=(48, 64), train_crop=32, train_batch=2, train_runs=[("auto", 2)], train_workers=0,
            # inductor would spend minutes compiling C++ on a small CPU; 'eager' still runs dynamo's tracing
            compile_backend="eager", compile_runs=[("fp32", "toy 64x96")], compile_min_s=0.0, min_row_s=0.0)


class Part:
    """What one part records while it runs (rows and checks), with its deadline; the watchdog reads it too."""

    def __init__(self, name: str, deadline: float, min_row_s: float = 0.0):
        self.name, self.deadline, self.min_row_s = name, deadline, min_row_s
        self.rows: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.skipped = False

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def row(self, **values: Any) -> None:
        self.rows.append(values)
        print(f"gpu_check: [{self.name}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()), flush=True)

    def note(self, text: str) -> None:
        """A remark that is not a measurement (what was skipped and why)."""
        self.notes.append(text)
        print(f"gpu_check: [{self.name}] {text}", flush=True)

    def check(self, name: str, value: float, tol: float) -> None:
        """A numeric check: ``value`` (a max abs difference) must be finite and at most ``tol``."""
        ok = bool(math.isfinite(value) and value <= tol)
        self.checks.append({"check": name, "value": value, "tolerance": tol, "ok": ok})
        print(f"gpu_check: [{self.name}] check {name}: {value:.3g} <= {tol:.3g}: {'ok' if ok else 'MISMATCH'}",
              flush=True)

    def fits(self, what: str, need_s: float | None = None) -> bool:
        """Whether a row (``need_s`` seconds, default ``min_row_s``) still fits in the part's time; if not, notes
        that ``what`` was skipped and marks the part 'partial' (a cap doing its job: not an error)."""
        if self.time_left() >= max(0.0, self.min_row_s if need_s is None else need_s):
            return True
        self.skipped = True
        self.note(f"skipped {what}: the part's time cap or the global budget was reached")
        return False

    def result(self) -> dict[str, Any]:
        return {"rows": self.rows, "checks": self.checks, "notes": self.notes}


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if v == 0 or not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 convolutions and matmuls for the duration (no TF32; a no-op on the CPU).

    cuDNN runs fp32 convolutions in TF32 by default (10-bit mantissa): pytorch_wavelets' filters are convolutions,
    the light Haar is plain arithmetic, so under the defaults the two differ by TF32's rounding, not by a bug.
    Only the legacy flags are touched: mixing them with torch's newer ``fp32_precision`` API is an error.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _test_frame(h: int, w: int):
    """An RGB frame (a subject composited over a textured plate) and a binary guide, float32 HWC / HW."""
    from bench.bench_blur import scene

    fgr, alpha, bgr, _, _ = scene(h, w)
    image = alpha[..., None] * fgr + (1 - alpha[..., None]) * bgr
    return image.astype("float32"), (alpha > 0.5).astype("float32")


# ------------------------------------------------------------------------------------------------------ parts
def part_numerics(s: Settings, part: Part) -> dict:
    """Refiner alpha through inference.predict_alpha, fp16 autocast vs fp32, every variant (+ CUDA vs CPU fp32)."""
    from inference import predict_alpha
    from model.config import VARIANTS
    from model.refiner import build_refiner

    h, w = s.numerics_size
    image, guide = _test_frame(h, w)
    flat = guide * 0 + 0.5
    device = torch.device(s.device)
    for variant in VARIANTS:
        if not part.fits(f"numerics {variant}"):
            continue
        torch.manual_seed(0)
        model = build_refiner(variant, base_channels=s.base_channels).eval().to(device)
        # random weights leave an untrained refiner's alpha close to a binary guide (its residual on the guide's
        # logit, through a saturated sigmoid), which hides rounding; a flat 0.5 guide leaves alpha to the network
        for guide_name, g in (("binary", guide), ("flat 0.5", flat)):
            a32 = predict_alpha(model, image, g, device, False, (h, w))
            a16 = predict_alpha(model, image, g, device, True, (h, w))
            diff = abs(a16 - a32)
            part.row(variant=variant, size=f"{w}x{h}", guide=guide_name, compare="fp16 autocast vs fp32",
                     max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), alpha_std=float(a32.std()))
            part.check(f"refiner {variant} fp16 vs fp32 alpha, {guide_name} guide", float(diff.max()), TOL_FP16)
        if device.type == "cuda" and variant == "light":  # informative: TF32 convs on CUDA, MKL-DNN on the CPU
            hs, ws = h // 4, w // 4
            small_img, small_guide = _test_frame(hs, ws)
            cpu = predict_alpha(model.cpu(), small_img, small_guide, torch.device("cpu"), False, (hs, ws))
            gpu = predict_alpha(model.to(device), small_img, small_guide, device, False, (hs, ws))
            d = abs(gpu - cpu)
            part.row(variant=variant, size=f"{ws}x{hs}", guide="binary", compare="cuda fp32 vs cpu fp32 (info, no "
                     "check)", max_abs_diff=float(d.max()), mean_abs_diff=float(d.mean()), alpha_std=float(gpu.std()))
        del model
        _free(s.device)
    return part.result()


def part_dwt(s: Settings, part: Part) -> dict:
    """Light Haar DWT vs pytorch_wavelets db1, forward + backward (bench_refiner.measure_dwt)."""
    from bench.bench_refiner import measure_dwt

    c, h, w = s.dwt_shape
    device = torch.device(s.device)
    with strict_fp32():  # the comparison in full fp32; the timing below with the defaults users run
        exact = measure_dwt(device, c, h, w, 0, 1)["max_abs_diff"]
    r = measure_dwt(device, c, h, w, s.dwt_warmup, s.dwt_repeats)
    target = DWT_TARGET_CUDA if s.device == "cuda" else DWT_TARGET_CPU
    part.row(tensor=f"1x{c}x{h}x{w}", ms_light=r["ms_light"], ms_pytorch_wavelets=r["ms_pytorch_wavelets"],
             ratio=r["ratio"], speed_target=target, target_met=bool(r["ratio"] >= target), max_abs_diff=exact,
             max_abs_diff_default_tf32=r["max_abs_diff"])
    part.check("Haar DWT vs pytorch_wavelets db1 (fp32, no TF32)", exact, TOL_HAAR)
    return part.result()


def part_dof(s: Settings, part: Part) -> dict:
    """Depth-of-field render of one frame: the torch path on the device vs the OpenCV path on the CPU."""
    import numpy as np

    from bench.bench_blur import best_time, scene
    from preprocess.dof_blur import render

    h, w = s.dof_size
    fgr, alpha, bgr, disp_fg, disp_bg = scene(h, w)
    args = (fgr, alpha, bgr, disp_fg, disp_bg, 0.8, 30.0, s.dof_sigma_max, s.dof_layers)  # bench_blur's scene

    def torch_path():
        out = render(*args, device=s.device)  # returns numpy: the device's work is finished on return
        _sync(s.device)
        return out

    ref = render(*args)
    got = torch_path()  # also the warm-up (CUDA context, kernels)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    t_cv = best_time(lambda: render(*args), s.dof_repeats)
    t_torch = best_time(torch_path, s.dof_repeats)
    part.row(size=f"{w}x{h}", layers=s.dof_layers, sigma_max=s.dof_sigma_max, ms_opencv_cpu=t_cv * 1e3,
             **{f"ms_torch_{s.device}": t_torch * 1e3}, speedup=t_cv / t_torch, max_abs_diff=diff)
    part.check(f"DoF render torch ({s.device}) vs OpenCV", diff, TOL_DOF)
    return part.result()


def _rvm(device: torch.device) -> dict[str, torch.nn.Module]:
    root = os.environ.get("RVM_ROOT")
    if not root:
        return {}
    from bench.bench_refiner import load_rvm

    rvm = load_rvm(root)
    return {} if rvm is None else {"RVM mobilenetv3": rvm.to(device)}


def part_refiner(s: Settings, part: Part) -> dict:
    """Every variant (+ RVM), eager, fp32 and fp16 autocast, at each size: fps and peak memory (measure_models)."""
    from bench.bench_refiner import measure_models
    from model.config import VARIANTS
    from model.refiner import build_refiner

    device = torch.device(s.device)
    models: dict[str, torch.nn.Module] = {}
    for v in VARIANTS:
        torch.manual_seed(0)
        models[v] = build_refiner(v, base_channels=s.base_channels).eval().to(device)
    models.update(_rvm(device))
    if not any(n not in VARIANTS for n in models):
        part.note("RobustVideoMatting not timed: set RVM_ROOT to a clone of it")
    for precision in ("fp32", "fp16"):
        for label, (h, w) in s.sizes.items():
            if not part.fits(f"{precision} {label}"):
                continue
            # RVM's own recommendation: downsample_ratio 0.25 at HD, 0.125 at 4K; full resolution when small
            ratio = 0.125 if h * w > 4e6 else (0.25 if h * w > 1024 * 1024 else 1.0)
            for r in measure_models(models, device, h, w, s.warmup[label], s.repeats[label], precision == "fp16",
                                    ratio):
                part.row(model=r["label"], precision=precision, compiled=False, size=f"{w}x{h}",
                         params_m=r["params_m"], fps=r["fps"], ms=r["ms"], peak_mib=r["peak_mib"])
            _free(s.device)
    return part.result()


def part_masks(s: Settings, part: Part) -> dict:
    """YOLOv8n + SAM2.1-tiny (random weights from their configs) per frame, through guide_mask.YoloSam2."""
    import numpy as np

    from bench.bench_masks import random_sam2, random_yolo, timed
    from preprocess import guide_mask as gm

    h, w = s.mask_size
    rng = np.random.default_rng(0)
    frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(s.mask_frames)]
    box = np.array([[w * 0.3, h * 0.1, w * 0.7, h * 0.95]], np.float32)  # one standing person
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        yolo = random_yolo(Path(tmp))
        sam2, config = random_sam2(Path(tmp), "t")
        model = gm.YoloSam2(yolo, sam2, config, device=s.device, sam2_image_size=s.sam2_image_size)
        # a random YOLO finds nobody, so SAM2 gets the injected box (one SAM2 call per frame, as in the stage)
        t_yolo = timed(model.boxes, frames, True)
        t_sam = timed(lambda f: model.segment(f, box), frames, True)
    part.row(frame=f"{w}x{h}", frames=len(frames), sam2=config.split("/")[-1],
             sam2_input=s.sam2_image_size or 1024, yolo_s=t_yolo, sam2_s=t_sam, total_s=t_yolo + t_sam,
             fps=1.0 / (t_yolo + t_sam))
    del model
    _free(s.device)
    return part.result()


def part_train(s: Settings, part: Part) -> dict:
    """The training entry point (pipeline/solver_refiner_maggie.py: solver.train with maggie.yaml) on synthetic
    frames: samples/s from the solver's own log, wall time, peak memory."""
    import csv

    from bench.bench_train import synthetic_frames
    from pipeline.solver_refiner_maggie import main as train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthetic_frames(root, s.train_frame_size, clips=3, frames=4)  # 3 clips: one is held out for validation
        for amp, steps in s.train_runs:
            if not part.fits(f"train amp {amp}"):
                continue
            log_every = max(1, steps // 5)
            argv = ["--root", str(root), "--runs_dir", str(Path(tmp) / "runs"), "--name", f"amp_{amp}",
                    "--model", "light", "--base_channels", str(s.base_channels), "--steps", str(steps),
                    "--batch_size", str(s.train_batch), "--crop", str(s.train_crop), "--amp", amp,
                    "--num_workers", str(s.train_workers), "--warmup_steps", str(max(1, steps // 10)),
                    "--log_every", str(log_every), "--eval_every", str(steps), "--ckpt_every", str(steps),
                    "--val_max_frames", "2", "--eval_long_side", str(min(256, s.train_frame_size[0])),
                    "--device", "cuda" if s.device == "cuda" else "cpu"]
            if s.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            train(argv)
            wall = time.perf_counter() - t0
            with open(Path(tmp) / "runs" / f"amp_{amp}" / "train.csv", newline="") as fh:
                logged = list(csv.DictReader(fh))
            # the first logged interval holds the warm-up (cuDNN autotuning, loader start): rate of the rest
            steady = logged[1:] or logged
            rate = sum(float(r["samples_per_s"]) for r in steady) / len(steady)
            row = {"model": "light", "amp": "off (cpu)", "steps": steps, "batch": s.train_batch, "crop": s.train_crop,
                   "loader_workers": s.train_workers, "samples_per_s": rate, "wall_s": wall,
                   "final_loss": float(logged[-1]["loss"])}
            if s.device == "cuda":  # the solver's own choice for 'auto': bf16 where supported, else fp16
                row["amp"] = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if amp == "auto" else amp
                row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            part.row(**row)
            _free(s.device)
    return part.result()


def part_compiled(s: Settings, part: Part) -> dict:
    """The light refiner under torch.compile (static shapes): compile seconds, then fps and peak memory."""
    from bench.bench_refiner import measure_models
    from model.refiner import build_refiner

    device = torch.device(s.device)
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=s.base_channels).eval().to(device)
    for precision, label in s.compile_runs:
        if not part.fits(f"compiled {precision} {label}", s.compile_min_s):
            continue
        h, w = s.sizes[label]
        torch._dynamo.reset()  # each configuration compiles from scratch: compile_s is a whole compile
        compiled = torch.compile(model, backend=s.compile_backend, dynamic=False)
        image = torch.rand(1, 3, h, w, device=device)
        guide = (torch.rand(1, 1, h, w, device=device) > 0.5).float()
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=precision == "fp16"):
            compiled(image, guide).alpha
        _sync(s.device)
        compile_s = time.perf_counter() - t0
        r = measure_models({"light": compiled}, device, h, w, s.warmup[label], s.repeats[label],
                           precision == "fp16")[0]
        part.row(model="light", precision=precision, compiled=s.compile_backend, size=f"{w}x{h}",
                 compile_s=compile_s, fps=r["fps"], ms=r["ms"], peak_mib=r["peak_mib"])
        del compiled
        _free(s.device)
    return part.result()


PARTS: dict[str, Callable[[Settings, Part], dict]] = {
    "numerics": part_numerics, "dwt": part_dwt, "dof": part_dof, "refiner": part_refiner, "masks": part_masks,
    "train": part_train, "compiled": part_compiled}


# ----------------------------------------------------------------------------------------------------- report
def device_info(s: Settings) -> dict[str, Any]:
    info: dict[str, Any] = {"device": s.device, "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "python": platform.python_version(), "cpu_threads": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if s.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    else:
        info["name"] = f"CPU ({platform.machine()}), dry run"
    try:  # which code was measured (the device machine may get a copy without .git: then None)
        git = ["git", "describe", "--always", "--dirty", "--abbrev=7"]
        info["commit"] = subprocess.run(git, capture_output=True, text=True, timeout=10,
                                        cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a header with the device and versions, one table per part, the checks."""
    d = report["device"]
    title = "gpu_check: CPU DRY RUN (toy sizes; not measurements)" if report["dry_run"] else \
        f"gpu_check on {d.get('name')}"
    lines = [f"# {title}", "",
             f"- device: {d.get('name')}" + (f", {d['memory_gib']} GiB, compute capability {d['capability']}"
                                            if "memory_gib" in d else ""),
             f"- torch {d['torch']}, CUDA {d['cuda']}, cuDNN {d['cudnn']}, Python {d['python']}, "
             f"{d['cpu_threads']} CPU threads; code at commit {d.get('commit')}",
             f"- started {report['started']}, {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget; "
             f"exit code {report['exit_code']}" + ("" if report["finished"] else " (still running or killed)"),
             "- command: `python bench/gpu_check.py OUT" + (" --cpu-dry-run`" if report["dry_run"] else "`"), ""]
    order = report.get("part_order") or list(report["parts"])
    for name, p in ((n, report["parts"][n]) for n in order if n in report["parts"]):
        lines += [f"## {name}: {p['status']} ({p.get('seconds', 0):.1f} s)", ""]
        if p.get("error"):
            lines += [f"error: `{p['error']}`", ""]
        rows = p.get("rows") or []
        if rows:
            cols: list[str] = []
            for r in rows:
                cols += [k for k in r if k not in cols]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
            lines.append("")
        lines += [f"- {n}" for n in p.get("notes") or []]
        for c in p.get("checks") or []:
            lines.append(f"- check {c['check']}: {_fmt(c['value'])} <= {_fmt(c['tolerance'])}: "
                         f"{'ok' if c['ok'] else '**MISMATCH**'}")
        if p.get("checks") or p.get("notes"):
            lines.append("")
    return "\n".join(lines) + "\n"


class Report:
    """The JSON report, written (with its Markdown) atomically whenever it changes; thread-safe for the watchdog."""

    def __init__(self, out: Path, s: Settings):
        self.out, self.lock, self.t0 = out, threading.Lock(), time.monotonic()
        self.data: dict[str, Any] = {
            "tool": "bench/gpu_check.py", "dry_run": s.dry_run, "device": device_info(s),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": s.budget_s, "tolerances": {"refiner_fp16_vs_fp32": TOL_FP16, "haar_vs_pytorch_wavelets":
                                                   TOL_HAAR, "dof_torch_vs_opencv": TOL_DOF},
            "parts": {}, "exit_code": None, "finished": False, "elapsed_s": 0.0}

    def exit_code(self) -> int:
        parts = self.data["parts"].values()
        if any(not c["ok"] for p in parts for c in p.get("checks", [])):
            return EXIT_MISMATCH
        if any(p["status"] not in ("ok", "partial", "not available") for p in parts):
            return EXIT_ERROR
        return 0

    def write(self, finished: bool = False) -> None:
        from utils.atomic import write_bytes_atomic, write_json_atomic

        with self.lock:
            self.data["elapsed_s"] = time.monotonic() - self.t0
            self.data["exit_code"] = self.exit_code()
            self.data["finished"] = finished
            write_json_atomic(self.out / "gpu_check.json", self.data)
            write_bytes_atomic(self.out / "gpu_check.md", markdown(self.data).encode())


def run_parts(s: Settings, report: Report, names: Sequence[str]) -> int:
    """Run the parts in order within the budget; each part's outcome goes into the report as it ends."""
    start = time.monotonic()
    end = start + s.budget_s
    report.data["part_order"] = list(names)  # the JSON's keys are sorted; this keeps the order they ran in
    current: dict[str, Any] = {}

    def watchdog() -> None:  # a part stuck past the budget (a compile that hangs): keep what was measured
        name, part, t = current.get("name"), current.get("part"), current.get("t", start)
        if name is not None:
            report.data["parts"][name] = {**part.result(), "status": "timeout",
                                          "error": f"still running {WATCHDOG_GRACE_S:.0f} s after the budget",
                                          "seconds": time.monotonic() - t}
        report.write(finished=True)
        print(f"gpu_check: budget of {s.budget_s:.0f} s exceeded in part {name}; stopped "
              f"(exit {report.exit_code()}); wrote {report.out}", flush=True)
        os._exit(report.exit_code() or EXIT_ERROR)

    timer = threading.Timer(s.budget_s + WATCHDOG_GRACE_S, watchdog)
    timer.daemon = True
    timer.start()
    try:
        for name in names:
            t = time.monotonic()
            left = end - t
            part = Part(name, t + min(s.caps_s[name], left), s.min_row_s)
            if left < max(s.min_row_s, 1.0):
                report.data["parts"][name] = {"status": "skipped", "error": "the global budget was spent",
                                              "rows": [], "checks": [], "notes": [], "seconds": 0.0}
                print(f"gpu_check: [{name}] skipped: the global budget was spent", flush=True)
                report.write()
                continue
            print(f"gpu_check: [{name}] start (cap {min(s.caps_s[name], left):.0f} s, {left:.0f} s of the budget "
                  f"left)", flush=True)
            current.update(name=name, part=part, t=t)
            try:
                result = PARTS[name](s, part)
                status = "mismatch" if any(not c["ok"] for c in result["checks"]) else \
                    ("partial" if part.skipped else "ok")
                entry = {**result, "status": status}
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL_MODULES:
                    traceback.print_exc()
                    entry = {**part.result(), "status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
                else:
                    entry = {**part.result(), "status": "not available",
                             "error": f"{exc.name} is not installed (no wheel from bench/gpu_env.sh)"}
            except Exception as exc:  # one broken part must not lose the others' numbers
                traceback.print_exc()
                entry = {**part.result(), "status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
            entry["seconds"] = time.monotonic() - t
            with report.lock:
                current.clear()
                report.data["parts"][name] = entry
            print(f"gpu_check: [{name}] {entry['status']} in {entry['seconds']:.1f} s", flush=True)
            report.write()
            _free(s.device)
    finally:
        timer.cancel()
    report.write(finished=True)
    return report.exit_code()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="output folder (gpu_check.json, gpu_check.md)")
    p.add_argument("--out", dest="out_flag", help="the same, as a flag")
    p.add_argument("--cpu-dry-run", action="store_true", help="every part at toy sizes on the CPU (tests the script)")
    p.add_argument("--budget", type=float, default=None, help="global time budget in s (default 330; dry run 240)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of parts to run (default: all: "
                                                            f"{','.join(PARTS)})")
    args = p.parse_args(argv)
    out = args.out_flag or args.out
    if not out:
        p.error("give the output folder: python bench/gpu_check.py OUT")
    names = [n for n in args.parts.split(",") if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(NO_CUDA_LINE)  # nothing to measure is not a failure: exit 0, and no file that could claim numbers
        return 0
    if args.cpu_dry_run:
        s = Settings.for_dry_run(args.budget or 240.0)
        # toy sizes gain nothing from more threads, and on a shared machine OpenMP threads wait on each other
        torch.set_num_threads(1)
    else:
        s = Settings.for_cuda(args.budget or 330.0)
        torch.backends.cudnn.benchmark = True  # as bench_refiner: fixed input sizes, so autotune once
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir, s)
    d = report.data["device"]
    print(f"gpu_check: {'CPU dry run' if s.dry_run else d['name']}; torch {d['torch']}, CUDA {d['cuda']}; "
          f"budget {s.budget_s:.0f} s; parts {', '.join(names)}; writing {out_dir}", flush=True)
    code = run_parts(s, report, names)
    summary = {n: p["status"] for n, p in report.data["parts"].items()}
    print(f"gpu_check: done in {report.data['elapsed_s']:.0f} s: {summary}; exit {code}; wrote "
          f"{out_dir / 'gpu_check.json'}, {out_dir / 'gpu_check.md'}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
