"""Training data (layout, clip split, deterministic augmentation, guides) and losses."""
import numpy as np
import pytest
import pywt
import torch

from pipeline import data as D
from pipeline import losses as L
from tests.train_helpers import make_tiny_frames
from utils.cli import UserError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny_frames(tmp_path_factory.mktemp("d"), clips=("a", "b", "c", "d", "e"))


def test_clip_split_is_disjoint_by_clip(root):
    clips = D.list_clips(root, "train")
    assert clips == ["a", "b", "c", "d", "e"]
    tr, va = D.split_clips(clips, 0.2, seed=0)
    assert len(va) == 1 and not set(tr) & set(va) and sorted(tr + va) == clips
    ftr = D.list_frames(root, "train", tr)
    fva = D.list_frames(root, "train", va)
    assert {f.clip for f in ftr}.isdisjoint({f.clip for f in fva})
    assert D.split_clips(clips, 0.2, seed=0) == (tr, va)  # deterministic
    with pytest.raises(UserError, match="at least 2 clips"):
        D.split_clips(["a"], 0.2, 0)


def test_missing_alpha_is_one_clear_error(tmp_path):
    r = make_tiny_frames(tmp_path, clips=("x",), n_frames=2)
    (r / "frames/train/alpha/x/frames/0001.png").unlink()
    with pytest.raises(UserError, match=r"x/0001.png has no alpha"):
        D.list_frames(r, "train", ["x"])


def test_items_deterministic_and_augmented(root):
    frames = D.list_frames(root, "train", ["a", "b"])
    ds = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0)
    x1, x2 = ds[(1, 123)], ds[(1, 123)]
    for k in x1:
        assert torch.equal(x1[k], x2[k]), k
    assert x1["image"].shape == (3, 32, 32) and x1["alpha"].shape == (1, 32, 32)
    assert set(torch.unique(x1["guide"]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(ds[(1, 124)]["image"], x1["image"])
    # colour jitter keeps the composition exact up to 8-bit rounding and clipping
    comp = x1["alpha"] * x1["fgr"] + (1 - x1["alpha"]) * x1["bgr"]
    assert (comp - x1["image"]).abs().mean() < 0.02
    # eval items: the full frame, same guide every time
    e = ds[0]
    assert e["image"].shape == (3, 48, 64) and torch.equal(ds[0]["guide"], e["guide"])


def test_files_guide_reads_mask_layer(root):
    frames = D.list_frames(root, "train", ["a"])
    ds = D.MattingFrames(root, frames, guide="files")
    item = ds[0]
    assert torch.equal(item["guide"], (item["alpha"] > 0.5).float())


def test_guide_accurate_label_says_which_guide_an_item_got(root):
    """The guide trust head's target: 1 for an accurate guide (the eval mode, or a training item drawn with
    accurate_prob), 0 for the mask stage's files or perturbed ground truth."""
    frames = D.list_frames(root, "train", ["a"])
    assert D.MattingFrames(root, frames, guide="accurate")[0]["guide_accurate"].item() == 1.0
    assert D.MattingFrames(root, frames, guide="files")[0]["guide_accurate"].item() == 0.0
    always = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=1.0)
    never = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=0.0)
    half = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=0.5)
    assert all(always[(0, k)]["guide_accurate"].item() == 1.0 for k in range(8))
    assert all(never[(0, k)]["guide_accurate"].item() == 0.0 for k in range(8))
    labels = [half[(0, k)]["guide_accurate"].item() for k in range(40)]
    assert 0 < sum(labels) < 40
    # the label matches the guide drawn: an accurate guide is the truth binarised near 0.5, up to a pixel
    for k in range(40):
        item = half[(0, k)]
        if item["guide_accurate"].item() == 1.0:
            assert (item["guide"] - (item["alpha"] >= 0.5).float()).abs().mean() < 0.1


def test_step_sampler_pure_function_of_step():
    full = list(D.StepBatchSampler(10, 2, seed=3, total_steps=6))
    resumed = list(D.StepBatchSampler(10, 2, seed=3, total_steps=6, start_step=4))
    assert resumed == full[4:]
    r0 = list(D.StepBatchSampler(10, 2, seed=3, total_steps=6, rank=0, world=2))
    r1 = list(D.StepBatchSampler(10, 2, seed=3, total_steps=6, rank=1, world=2))
    assert r0[0] != r1[0] and len(r0[0]) == 2


def test_haar_matches_pywt():
    x = torch.rand(1, 1, 8, 6, dtype=torch.float64)
    ll, highs = L.haar_dwt(x)
    cA, (cH, cV, cD) = pywt.dwt2(x[0, 0].numpy(), "haar")
    np.testing.assert_allclose(ll[0, 0].numpy(), cA, atol=1e-6)
    for i, ref in enumerate((cH, cV, cD)):
        np.testing.assert_allclose(highs[0, 0, i].numpy(), ref, atol=1e-6)


def test_losses_zero_at_gt_and_each_term_reported():
    g = torch.rand(2, 1, 16, 16)
    img, f, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    img = g * f + (1 - g) * b
    w = L.LossWeights()
    total, parts = L.matting_losses({8: g, 4: g, 1: g}, g, w, img, f, b)
    assert set(parts) == set(L.TERMS) and float(total) == pytest.approx(0.0, abs=1e-6)
    p = torch.rand(2, 1, 16, 16, requires_grad=True)
    total, parts = L.matting_losses({1: p}, g, w, img, f, b)
    assert all(v > 0 for v in parts.values())
    total.backward()
    assert torch.isfinite(p.grad).all()
    # a weight of zero removes the term; missing fgr/bgr removes comp
    w0 = L.LossWeights(lap=0.0)
    _, parts0 = L.matting_losses({1: p}, g, w0)
    assert "lap" not in parts0 and "comp" not in parts0


def test_l1_term_by_hand():
    g = torch.zeros(1, 1, 4, 4)
    p = torch.full((1, 1, 4, 4), 0.25)
    w = L.LossWeights(lap=0, grad=0, comp=0, wll=0, whigh=0, stride_weights={1: 1.0, 4: 0.5})
    total, parts = L.matting_losses({1: p, 4: p}, g, w)
    assert parts["l1"] == pytest.approx(0.25 * 1.5) and float(total) == pytest.approx(0.375)


def test_whigh_focuses_on_uncertain_region():
    g = torch.zeros(1, 1, 16, 16)
    g[..., 6:10, 6:10] = 0.5  # uncertain square
    w = L.LossWeights(l1=0, lap=0, grad=0, comp=0, wll=0, whigh=1, whigh_floor=0.0, stride_weights={1: 1.0})
    noise_far = g.clone()
    noise_far[..., 0, 0] = 1.0  # a detail error far from the band is ignored with no floor
    _, parts = L.matting_losses({1: noise_far}, g, w)
    assert parts["whigh"] == pytest.approx(0.0)
    noise_near = g.clone()
    noise_near[..., 7, 7] = 1.0
    _, parts = L.matting_losses({1: noise_near}, g, w)
    assert parts["whigh"] > 0


def test_logits_are_refused():
    g = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="not logits"):
        L.matting_losses({1: torch.randn(1, 1, 8, 8) * 3}, g, L.LossWeights())


def test_read_image_native_round_trip(tmp_path):
    from utils.images import read_image, read_image_native, to_float, write_png

    rgb = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    a = np.random.default_rng(1).random((5, 7)).astype(np.float32)
    write_png(tmp_path / "rgb.png", rgb)
    write_png(tmp_path / "a.png", a, bits=16)
    n = read_image_native(tmp_path / "rgb.png")
    assert n.dtype == np.uint8 and n.shape == (5, 7, 3)
    np.testing.assert_array_equal(to_float(n), read_image(tmp_path / "rgb.png"))  # RGB order, same values
    m = read_image_native(tmp_path / "a.png", gray=True)
    assert m.dtype == np.uint16 and np.abs(to_float(m) - a).max() <= 0.5 / 65535 + 1e-7
    assert read_image_native(tmp_path / "a.png").shape == (5, 7, 3)
    with pytest.raises(UserError, match="image not found"):
        read_image_native(tmp_path / "missing.png")


def test_gate_target_and_loss_by_hand():
    """The gate's target is 1 where the refinement beats the guide by more than the margin; BCE on the logit."""
    from pipeline.losses import gate_loss, gate_target

    gt = torch.tensor([[[[0.0, 0.5, 1.0, 1.0, 0.3, 0.0]]]])
    guide = torch.tensor([[[[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]]]])
    refined = torch.tensor([[[[0.1, 0.6, 0.9, 0.95, 0.31, 0.0]]]])
    # gains |guide-gt| - |refined-gt|: -0.1, 0.4, -0.1, 0.95, 0.29, 0  -> beats by > 0.02 at 1, 3, 4
    expected = np.array([0, 1, 0, 1, 1, 0], float)
    assert np.array_equal(gate_target(gt, guide, refined, margin=0.02)[0, 0, 0].numpy(), expected)
    logit = torch.randn(1, 1, 1, 6)
    p = 1 / (1 + np.exp(-logit.numpy().astype(np.float64)))
    bce = -(expected * np.log(p) + (1 - expected) * np.log(1 - p)).mean()
    assert abs(gate_loss(logit, gt, guide, refined).item() - bce) < 1e-5
    assert gate_target(gt, gt, refined, margin=0.02).sum() == 0  # a perfect guide: nothing to open


def test_trust_loss_by_hand():
    from pipeline.losses import trust_loss

    logit, label = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    p = 1 / (1 + np.exp(-logit.numpy().astype(np.float64)))
    bce = -(label.numpy() * np.log(p) + (1 - label.numpy()) * np.log(1 - p)).mean()
    assert abs(trust_loss(logit, label).item() - bce) < 1e-6


def test_laplacian_loss_is_on_the_l1_scale():
    """Pyramid weights 2^i normalised to sum to 1: a constant offset c lives only in the low-pass residual
    (weight 2^4 / 31 of 5 levels), so the loss is exactly 16/31 * c, not 16 * c."""
    gt = torch.rand(1, 1, 64, 64)
    loss = L.laplacian_loss(gt + 0.1, gt, levels=5)
    assert abs(loss.item() - 0.1 * 16 / 31) < 1e-5
