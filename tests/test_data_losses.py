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


# ---------------------------------------------------------------------------------------------- fast loss forms
def _conv_sobel(x):
    """The Sobel gradients as a plain 3x3 cross-correlation (the reference the sliced form must equal)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype) / 4
    k = torch.stack([kx, kx.t()])[:, None]
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def _conv_pyramid(x, levels=5):
    """The Laplacian pyramid with a full 5x5 binomial convolution, then every second row and column."""
    F = torch.nn.functional
    g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype)
    k = (torch.outer(g, g) / 256)[None, None]
    out, cur = [], x
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 4:
            break
        down = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode="reflect"), k)[..., ::2, ::2]
        out.append(cur - F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False))
        cur = down
    return out + [cur]


@pytest.mark.parametrize("size", [(16, 16), (37, 50), (9, 4)])
def test_sobel_and_pyramid_equal_their_convolutions(size):
    x = torch.rand(2, 1, *size, dtype=torch.float64)
    assert torch.allclose(L.sobel(x), _conv_sobel(x), atol=1e-12)
    ours, ref = L.laplacian_pyramid(x), _conv_pyramid(x)
    assert len(ours) == len(ref) and all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ours, ref))


def test_batched_losses_equal_the_terms_stride_by_stride():
    """matting_losses stacks the strides; each term must equal its definition applied to each stride alone,
    weighted by the stride's weight (values and gradients)."""
    F = torch.nn.functional
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 20, 22, dtype=torch.float64)
    gt[gt < 0.3], gt[gt > 0.7] = 0.0, 1.0
    fgr, bgr = torch.rand(2, 3, 20, 22, dtype=torch.float64), torch.rand(2, 3, 20, 22, dtype=torch.float64)
    image = gt * fgr + (1 - gt) * bgr + 0.01
    sw = {8: 0.25, 4: 0.5, 1: 1.0, "final": 0.75}
    preds = {s: torch.rand(2, 1, 20, 22, dtype=torch.float64, requires_grad=True) for s in sw}
    w = L.LossWeights(stride_weights=sw)
    total, parts = L.matting_losses(preds, gt, w, image, fgr, bgr)

    unc = F.max_pool2d(((gt > 0.01) & (gt < 0.99)).double(), 7, stride=1, padding=3)
    wt = (F.max_pool2d(unc, 2) + w.whigh_floor)[:, :, None]
    levels = len(_conv_pyramid(gt))  # 20x22 stops after three band-pass levels: weights 2^i / 15
    pyr_w = [2.0 ** i / (2 ** levels - 1) for i in range(levels)]
    ref = {t: 0.0 for t in L.TERMS}
    for s, a in preds.items():
        (ll, hi), (gll, ghi) = pywt_free_haar(a), pywt_free_haar(gt)
        ref["l1"] += sw[s] * (a - gt).abs().mean()
        ref["lap"] += sw[s] * sum(k * (p - g).abs().mean() for k, p, g in zip(pyr_w, _conv_pyramid(a), _conv_pyramid(gt)))
        ref["grad"] += sw[s] * (_conv_sobel(a) - _conv_sobel(gt)).abs().mean()
        ref["comp"] += sw[s] * (a * fgr + (1 - a) * bgr - image).abs().mean()
        ref["wll"] += sw[s] * (ll - gll).abs().mean()
        ref["whigh"] += sw[s] * ((hi - ghi).abs() * wt).sum() / (wt.expand_as(ghi).sum() + 1e-6)
    ref_total = sum(getattr(w, t) * v for t, v in ref.items())
    for t in L.TERMS:
        assert parts[t] == pytest.approx(float(ref[t]), rel=1e-6), t  # the loss computes in float32
    grads = torch.autograd.grad(total, list(preds.values()))
    ref_grads = torch.autograd.grad(ref_total, list(preds.values()))
    assert all(torch.allclose(g, r, atol=1e-7) for g, r in zip(grads, ref_grads))


def pywt_free_haar(x):
    """One orthonormal Haar level written out pixel by pixel (pywt.dwt2's bands; test_haar_matches_pywt)."""
    a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, torch.stack([(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2], 2)


# ---------------------------------------------------------------------------------------------- frame cache
def test_frame_cache_gives_the_same_items_and_is_read_only(root):
    frames = D.list_frames(root, "train", ["a", "b", "c"])
    plain = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=0.5)
    cached = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=0.5, cache_mb=64)
    per_frame = sum(a.nbytes for a in cached.load(0).values() if a is not cached.load(0)["image"]) \
        + cached.load(0)["image"].nbytes
    partial = D.MattingFrames(root, frames, crop=32, guide="mixed", seed=0, accurate_prob=0.5,
                              cache_mb=2.5 * per_frame / 2 ** 20)  # room for two frames and a half
    cached._cache.clear(), cached.__setattr__("_cached_bytes", 0)
    cached.fill_cache(), partial.fill_cache()
    assert len({i for i, _ in cached._cache}) == len(frames)
    whole = {i for i in range(len(frames)) if all((i, k) in partial._cache for k in partial._layers(i))}
    assert whole == {0, 1} and max(i for i, _ in partial._cache) == 2  # the fill stops in the third frame
    for key in [(i, 100 + i) for i in range(len(frames))] + list(range(len(frames))):
        a, b, c = plain[key], cached[key], partial[key]
        for k in a:
            assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), (key, k)
    with pytest.raises(ValueError):
        cached.load(0)["alpha"][0, 0] = 1  # shared by every item: nothing may write into it
