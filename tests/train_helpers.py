"""Test helpers for the training pipeline: tiny per-frame data sets written in the real layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.images import write_png
from utils.paths import DataLayout


def make_tiny_frames(root: str | Path, split: str = "train", clips=("c0", "c1", "c2"), n_frames: int = 3,
                     size: tuple[int, int] = (48, 64), tree: str = "frames", seed: int = 0,
                     layers=("image", "alpha", "fgr", "bgr", "mask")) -> Path:
    """A soft-edged disc moving over a textured background, composited exactly: image = a*fgr + (1-a)*bgr."""
    layout = DataLayout(root)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for ci, clip in enumerate(clips):
        fgr = np.clip(rng.random((1, 1, 3)) * 0.5 + 0.5 + 0.05 * rng.standard_normal((h, w, 3)), 0, 1)
        bgr = np.clip(0.4 * rng.random((1, 1, 3)) + 0.2 * np.sin(xx / 3 + ci)[..., None], 0, 1)
        for f in range(n_frames):
            cy, cx, r = h / 2, w / 3 + 3 * f + 2 * ci, min(h, w) / 4
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            alpha = np.clip((r - dist) / 4 + 0.5, 0, 1).astype(np.float32)
            image = alpha[..., None] * fgr + (1 - alpha[..., None]) * bgr
            data = {"image": image, "alpha": alpha, "fgr": fgr, "bgr": bgr, "mask": (alpha > 0.5).astype(np.float32)}
            for layer in layers:
                bits = 16 if layer == "alpha" else 8
                write_png(layout.frames(split, layer, clip, tree=tree) / f"{f:04d}.png",
                          data[layer].astype(np.float32), bits=bits)
    return Path(root)


REPO = Path(__file__).resolve().parent.parent


def repo_on_pythonpath() -> None:
    """Put this checkout first on PYTHONPATH, so subprocesses (torchrun, killed runs) import its code."""
    import os

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def solver_main():
    """The training entry point users run (``pipeline/solver_refiner_maggie.py``'s ``main``)."""
    from pipeline.solver_refiner_maggie import main

    return main


def run_solver_cli(argv, capsys):
    """Run the solver as a user would (``run_main``: one error line, an exit code): returns (code, stderr)."""
    import pytest

    from utils.cli import run_main

    with pytest.raises(SystemExit) as exc:
        run_main(solver_main(), argv)
    return exc.value.code, capsys.readouterr().err


def tiny_solver_args(root, runs, name, *extra, steps: int, eval_every: int, log_every: int) -> list[str]:
    """A command line of the solver for the tiny frames: base_channels 8, crop 32, batch 4, one thread,
    checkpoints every 5 steps."""
    return ["--root", str(root), "--runs_dir", str(runs), "--name", name, "--crop", "32", "--batch_size", "4",
            "--steps", str(steps), "--num_workers", "0", "--eval_every", str(eval_every), "--ckpt_every", "5",
            "--log_every", str(log_every), "--base_channels", "8", "--warmup_steps", "3", "--lr", "3e-3",
            "--threads", "1", "--val_max_frames", "2", "--model", "light", *extra]


def read_ckpt(path):
    """A checkpoint's dict, as the project reads it (``weights_only=True``)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def run_and_kill_at(argv: list[str], last_json, step: int) -> None:
    """Start a training command line in a subprocess and kill it (SIGKILL: no cleanup) once its ``last.json``
    records ``step`` or more; fails if the run finished first."""
    import json
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last_json.exists() and json.loads(last_json.read_text())["step"] >= step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny frames (make_tiny_frames), once per test module that imports this fixture."""
    return make_tiny_frames(tmp_path_factory.mktemp("data"))
