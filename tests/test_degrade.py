"""pipeline/degrade.py: each camera flaw against an independent expectation, determinism, and the data hook."""
import cv2
import numpy as np
import pytest

from pipeline import degrade as D

OFF = {k: 0.0 for k in D.PROBS}


def _crop(seed: int = 0, size: int = 48) -> dict:
    rng = np.random.default_rng(seed)
    alpha = np.zeros((size, size), np.float32)
    alpha[:, size // 2:] = 1
    alpha[:, size // 2 - 3:size // 2] = np.linspace(0.2, 0.8, 3)
    fgr = rng.uniform(0.3, 0.9, (size, size, 3)).astype(np.float32)
    bgr = rng.uniform(0.1, 0.6, (size, size, 3)).astype(np.float32)
    image = alpha[..., None] * fgr + (1 - alpha[..., None]) * bgr
    return {"image": image, "alpha": alpha, "fgr": fgr, "bgr": bgr, "mask": (alpha > 0.5).astype(np.float32)}


def test_nothing_applied_is_the_crop_and_the_mask_always_passes_through():
    d = _crop()
    out = D.degrade(d, np.random.default_rng(1), OFF)
    for k in d:
        np.testing.assert_array_equal(out[k], d[k])
    full = D.degrade(d, np.random.default_rng(1), {k: 1.0 for k in D.PROBS})
    np.testing.assert_array_equal(full["mask"], d["mask"])
    assert all(full[k].dtype == np.float32 and full[k].min() >= 0 and full[k].max() <= 1 for k in d)


def test_the_same_generator_state_gives_the_same_crop():
    d = _crop()
    a = D.degrade(d, np.random.default_rng(7))
    b = D.degrade(d, np.random.default_rng(7))
    c = D.degrade(d, np.random.default_rng(8))
    assert all(np.array_equal(a[k], b[k]) for k in d)
    assert any(not np.array_equal(a[k], c[k]) for k in ("image", "alpha"))


def test_noise_keeps_the_composition_exact_and_has_the_drawn_size():
    d = _crop(size=96)
    out = D.degrade(d, np.random.default_rng(3), {**OFF, "noise": 1.0})
    comp = out["alpha"][..., None] * out["fgr"] + (1 - out["alpha"][..., None]) * out["bgr"]
    inside = (d["image"] > 0.1) & (d["image"] < 0.85) & (d["fgr"] < 0.85) & (d["bgr"] > 0.15)  # nothing clipped
    np.testing.assert_allclose(comp[inside], out["image"][inside], atol=1e-5)
    np.testing.assert_array_equal(out["alpha"], d["alpha"])
    residual = (out["image"] - d["image"])[inside]
    assert 0.002 <= residual.std() <= 0.02 + 0.03  # read + shot noise at their largest


def test_blur_is_one_gaussian_on_image_layers_and_alpha():
    d = _crop()
    out = D.degrade(d, np.random.default_rng(5), {**OFF, "blur": 1.0})
    rng = np.random.default_rng(5)
    [rng.random() for _ in D.PROBS]
    sigma = rng.uniform(0.3, 1.2)
    for k in ("image", "fgr", "bgr", "alpha"):
        ref = cv2.GaussianBlur(d[k], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        np.testing.assert_allclose(out[k], np.clip(ref, 0, 1), atol=1e-6)


def test_jpeg_keeps_rgb_order_and_touches_only_the_image():
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 0.9
    back = D._jpeg(red, 90)
    assert back[..., 0].mean() > 0.85 and back[..., 2].mean() < 0.05
    d = _crop()
    out = D.degrade(d, np.random.default_rng(2), {**OFF, "jpeg": 1.0})
    rng = np.random.default_rng(2)
    [rng.random() for _ in D.PROBS]
    rng.uniform(size=6)  # blur sigma, fringe shift and angle, read and shot noise, gamma
    quality = int(rng.integers(35, 96))
    bgr8 = np.rint(d["image"][..., ::-1] * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr8, [cv2.IMWRITE_JPEG_QUALITY, quality])
    np.testing.assert_array_equal(out["image"], cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] / np.float32(255))
    for k in ("alpha", "fgr", "bgr"):
        np.testing.assert_array_equal(out[k], d[k])


def test_fringe_moves_red_and_blue_apart_and_keeps_green():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    moved = D._shift(ramp, 0.5, 0.0)
    np.testing.assert_allclose(moved[:, 5:-5], ramp[:, 5:-5] - 0.5 / 63, atol=1e-4)  # content moves right
    d = _crop()
    out = D.degrade(d, np.random.default_rng(4), {**OFF, "fringe": 1.0})
    np.testing.assert_array_equal(out["image"][..., 1], d["image"][..., 1])
    assert not np.array_equal(out["image"][..., 0], d["image"][..., 0])


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_training_items_with_and_without_degradation(tmp_path, prob):
    from pipeline.data import MattingFrames, list_clips, list_frames
    from tests.train_helpers import make_tiny_frames

    root = make_tiny_frames(tmp_path / "d", split="train", clips=("c0",), n_frames=2, size=(40, 48))
    frames = list_frames(root, "train", list_clips(root, "train"))
    plain = MattingFrames(root, frames, crop=32)
    ds = MattingFrames(root, frames, crop=32, degrade_prob=prob)
    a, b, again = plain[(0, 11)], ds[(0, 11)], ds[(0, 11)]
    assert all(np.array_equal(b[k].numpy(), again[k].numpy()) for k in b)
    same = all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert same == (prob == 0.0)  # at 0 no draw is taken: older runs' items are bit for bit the same
