"""The original README runs stages from their own folders (``cd preprocess; python compose_video_bg.py``, ``cd
pipeline; python solver_refiner_maggie.py``): every entry point works from there and from the repository root,
default paths resolve from the repository root, and paths the user types from the working directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synth_data import make_raw

REPO = Path(__file__).resolve().parent.parent

# (folder to run from, python printing the defaults of that folder's entry points as {name: path})
DEFAULTS = {
    "preprocess": """
import json, sys
sys.argv = ["x"]
from preprocess import compose_video_bg, depth, dof_blur, frame_extraction, guide_mask, make_demo_data
out = {m.__name__: m.build_parser().parse_args([] if m is not guide_mask else ["--mode", "all_frames"]).root
       for m in (compose_video_bg, depth, dof_blur, frame_extraction, guide_mask, make_demo_data)}
print(json.dumps(out))
""",
    "pipeline": """
import json
from pipeline import ablation, evaluate, train_fine
from pipeline.solver import TrainConfig
e, a = evaluate.build_parser().parse_args([]), ablation.build_parser().parse_args([])
f = train_fine.build_parser().parse_args(["--ckpt", "x.pt"])
print(json.dumps({"solver.root": TrainConfig.root, "solver.runs_dir": TrainConfig.runs_dir, "evaluate.root": e.root,
                  "evaluate.out": e.out, "ablation.root": a.root, "ablation.out": a.out,
                  "train_fine.root": f.root, "train_fine.runs_dir": f.runs_dir}))
""",
}
EXPECTED = {"solver.runs_dir": "runs", "evaluate.out": "runs/eval", "ablation.out": "runs/ablation",
            "train_fine.root": "data/hires-train", "train_fine.runs_dir": "runs/fine"}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("folder", [".", "preprocess", "pipeline"])
def test_default_paths_resolve_from_the_repository_root(folder):
    scripts = DEFAULTS.values() if folder == "." else [DEFAULTS[folder]]
    for script in scripts:
        got = json.loads(subprocess.run([sys.executable, "-c", script], cwd=REPO / folder, env=_env(), check=True,
                                        capture_output=True, text=True).stdout)
        for name, path in got.items():
            want = REPO / EXPECTED.get(name, "data/demo")
            assert (REPO / folder / path).resolve() == want.resolve(), (folder, name, path)
        if folder == ".":  # at the root nothing changes: the same relative strings as before
            assert all(not p.startswith("..") and not os.path.isabs(p) for p in got.values())


def test_original_readme_stage_commands_from_their_folders(tmp_path):
    """`cd preprocess; python compose_video_bg.py`, the launchers from the root, `cd pipeline; python
    solver_refiner_maggie.py`, and inference from the root, on a tiny raw root (typed paths: from the cwd)."""
    root = make_raw(tmp_path / "data", clips=("a", "b"), split="train", n=4)
    rel = os.path.relpath(root, REPO / "preprocess")  # a path typed in preprocess/ means preprocess/<path>
    run = lambda cmd, cwd, **env: subprocess.run(cmd, cwd=cwd, env={**_env(), **env}, capture_output=True,  # noqa: E731
                                                 text=True, timeout=600)
    for cmd, cwd, env in (
        ([sys.executable, "compose_video_bg.py", "--root", rel, "--split", "train"], REPO / "preprocess", {}),
        ([sys.executable, "depth.py", "--root", rel, "--split", "train"], REPO / "preprocess", {}),
        (["./run_blur.sh", "--root", str(root), "--split", "train"], REPO, {}),
        (["./run_frame_extraction.sh", "--split", "train"], REPO, {"RATIO": "0.5", "ROOT": str(root)}),
        (["./run_mask_extraction.sh", "all_frames", "--split", "train"], REPO, {"ROOT": str(root)}),
        ([sys.executable, "solver_refiner_maggie.py", "--root", os.path.relpath(root, REPO / "pipeline"),
          "--runs_dir", str(tmp_path / "runs"), "--name", "t", "--steps", "2", "--batch_size", "2", "--crop", "32",
          "--base_channels", "8", "--num_workers", "0", "--val_fraction", "0", "--eval_every", "2",
          "--ckpt_every", "2", "--log_every", "1", "--warmup_steps", "0"], REPO / "pipeline", {}),
    ):
        result = run(cmd, cwd, **env, PYTHON=sys.executable)
        assert result.returncode == 0, (cmd, result.stderr[-2000:])
    frame = next((root / "frames" / "train" / "image").rglob("*.png"))
    mask = root / "frames" / "train" / "mask" / frame.relative_to(root / "frames" / "train" / "image")
    result = run([sys.executable, "inference.py", "--i", str(frame), "--c", str(tmp_path / "runs" / "t" / "last.pt"),
                  "--o", str(tmp_path / "alpha.png"), "--g", str(mask), "--resize_h", "32", "--resize_w", "48"], REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "alpha.png").is_file()
