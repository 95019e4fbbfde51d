"""depth.py: layered backend, one normalisation per clip, cache computed once, VDA adapter (real clone if VDA_ROOT)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from preprocess import compose_video_bg, depth
from tests.synth_data import make_raw
from utils.cli import UserError
from utils.paths import DataLayout


@pytest.fixture()
def composed(tmp_path) -> Path:
    root = make_raw(tmp_path / "d", clips=("a", "b"), n=4, h=48, w=64)
    assert compose_video_bg.main(["--root", str(root), "--split", "train", "--pan", "10"]) == 0
    return root


def test_layered_uses_true_disparity_normalised_once_per_clip(composed):
    assert depth.main(["--root", str(composed), "--split", "train"]) == 0
    lay = DataLayout(composed)
    d = depth.ClipDepth(lay.depth("train", "a"))
    p = d.params()
    raw = np.load(lay.composed("train", "a") / "bgr_disp.npy")  # panning: one crop per frame
    assert raw.shape == (4, 48, 64) and p["background"].startswith("true disparity")
    lo, hi = np.percentile(raw, depth.NORM_PERCENTILES)
    assert (p["norm_lo"], p["norm_hi"]) == pytest.approx((lo, hi), rel=1e-5)
    for t in range(4):  # every frame through the same affine map (not re-normalised per frame)
        np.testing.assert_allclose(d.bg(t), np.clip((raw[t] - lo) / (hi - lo), 0, 1), atol=1e-5)
    # the subject: seeded distance at its centroid, a gentle tilt, defined at every pixel
    fg = d.fg(0)
    assert np.isfinite(fg).all() and fg.shape == (48, 64)
    assert 0.55 <= p["subject_disparity"] <= 0.95 and np.ptp(fg) < 0.1
    assert d.subject_median == pytest.approx(p["subject_disparity"], abs=0.05)


def test_ground_plane_without_true_map(composed):
    lay = DataLayout(composed)
    (lay.composed("train", "b") / "bgr_disp.npy").unlink()
    meta = json.loads((lay.composed("train", "b") / "meta.json").read_text())
    meta["bgr_disp"] = None
    (lay.composed("train", "b") / "meta.json").write_text(json.dumps(meta))
    fg, bg, alpha, params = depth.layered_depth(lay.composed("train", "b"), seed=5)
    assert params["background"] == "ground plane" and bg.ndim == 2
    col = bg[:, 32]
    assert np.all(np.diff(col) >= -1e-6) and col[-1] == pytest.approx(1.0, abs=0.05)  # nearer towards the bottom
    assert bg[0].max() == pytest.approx(params["far"])  # above the horizon: the far plane
    fg2, bg2, _, params2 = depth.layered_depth(lay.composed("train", "b"), seed=5)
    assert params2 == params and np.array_equal(bg, bg2) and np.array_equal(fg, fg2)  # seeded
    assert depth.layered_depth(lay.composed("train", "b"), seed=6)[3] != params


def test_cache_computed_once(composed, caplog):
    assert depth.main(["--root", str(composed), "--split", "train"]) == 0
    path = DataLayout(composed).depth("train", "a")
    stamp = path.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert depth.main(["--root", str(composed), "--split", "train"]) == 0
    assert "already cached" in caplog.text and path.stat().st_mtime_ns == stamp
    assert depth.main(["--root", str(composed), "--split", "train", "--overwrite"]) == 0
    assert path.stat().st_mtime_ns != stamp


def test_vda_missing_clone_or_checkpoint_says_what_to_put_where(composed, tmp_path):
    with pytest.raises(UserError, match="git clone .*--vda_root"):
        depth.main(["--root", str(composed), "--depth_backend", "video-depth-anything", "--vda_root", str(tmp_path)])
    clone = tmp_path / "clone"
    (clone / "video_depth_anything").mkdir(parents=True)
    (clone / "video_depth_anything/video_depth.py").write_text("")
    with pytest.raises(UserError, match="video_depth_anything_vits.pth.*--depth_ckpt"):
        depth.main(["--root", str(composed), "--depth_backend", "video-depth-anything", "--vda_root", str(clone),
                    "--depth_ckpt", str(tmp_path / "none.pth")])


def test_vda_import_isolation_keeps_our_utils(tmp_path):
    """A clone whose top-level utils/ (no __init__) clashes with ours: its modules import, ours still work."""
    clone = tmp_path / "fake_vda"
    (clone / "utils").mkdir(parents=True)
    (clone / "utils/util.py").write_text("def helper():\n    return 'theirs'\n")
    (clone / "fakevda_pkg").mkdir()
    (clone / "fakevda_pkg/__init__.py").write_text("")
    (clone / "fakevda_pkg/model.py").write_text("from utils.util import helper\n")
    import utils.images as ours_before
    with depth.vda_imports(clone):
        from fakevda_pkg import model  # noqa: F401
    assert model.helper() == "theirs"
    import utils.images
    from utils.images import to_uint
    assert utils.images is ours_before and to_uint(np.ones(2, np.float32))[0] == 255
    assert "utils.util" not in sys.modules and str(clone) not in sys.path
    import utils.paths  # a module of ours imported for the first time after the swap still resolves to ours
    assert Path(utils.paths.__file__).parent == Path(depth.__file__).parent.parent / "utils"


VDA_ROOT = os.environ.get("VDA_ROOT")


@pytest.mark.skipif(not VDA_ROOT, reason="set VDA_ROOT to a clone of Video-Depth-Anything to run this integration test")
def test_vda_backend_with_random_weights(composed, tmp_path):
    """The real VDA code: vits with random weights saved to a checkpoint, loaded by our loader, whole clips."""
    import torch

    with depth.vda_imports(Path(VDA_ROOT)):
        from video_depth_anything.video_depth import VideoDepthAnything
    torch.manual_seed(0)
    net = VideoDepthAnything(encoder="vits", features=64, out_channels=[48, 96, 192, 384])
    ckpt = tmp_path / "video_depth_anything_vits.pth"
    torch.save(net.state_dict(), ckpt)
    assert depth.main(["--root", str(composed), "--split", "train", "--depth_backend", "video-depth-anything",
                       "--vda_root", VDA_ROOT, "--depth_ckpt", str(ckpt), "--input_size", "56",
                       "--shard", "0/2"]) == 0  # clip a only: two whole-clip passes on CPU
    lay = DataLayout(composed)
    assert not lay.depth("train", "b").exists()
    for clip in ("a",):
        d = depth.ClipDepth(lay.depth("train", clip))
        assert d.backend == "video-depth-anything" and d.frames == 4
        fg, bg = np.stack([d.fg(t) for t in range(4)]), np.stack([d.bg(t) for t in range(4)])
        assert fg.shape == bg.shape == (4, 48, 64)
        assert 0 <= fg.min() and fg.max() <= 1 and 0 <= bg.min() and bg.max() <= 1
        assert np.isfinite(d.subject_median) and d.params()["encoder"] == "vits"
    # our utils still work after the clone was imported
    from utils.images import read_image
    assert read_image(lay.composed("train", "a") / "pha/0000.png", gray=True).shape == (48, 64)
    # a checkpoint of the wrong architecture is one line, not a traceback
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="cannot load"):
        depth.load_vda(VDA_ROOT, str(tmp_path / "bad.pth"), "vits")


def test_vda_backend_normalises_once_per_clip(composed):
    """vda_depth with a stand-in model whose raw output drifts in scale over frames: one mapping for the
    clip, so the drift survives (a per-frame normalisation would erase it)."""
    class Drifting:
        def infer_video_depth(self, frames, fps, input_size=518, device="cpu", fp32=True):
            t = np.arange(len(frames), dtype=np.float32)[:, None, None]
            base = frames.mean(axis=3).astype(np.float32) / 255.0
            return base * (1 + t), fps

    fg, bg, alpha, params = depth.vda_depth(Drifting(), DataLayout(composed).composed("train", "a"), 24.0, 56, "cpu")
    assert params["plate_scale"] == pytest.approx(1.0, abs=0.05)
    assert bg[3].mean() > bg[0].mean() + 0.1  # later frames really are "nearer": not re-normalised per frame
    core = alpha[0] > 0.5
    # outside the subject's core, its disparity is filled from the nearest core pixel
    assert core.any() and (~core).any()
    assert set(np.unique(fg[0][~core])) <= set(np.unique(fg[0][core]))
