"""model.refiner: shapes and ranges per variant, parameter parity of the ablation, checkpoints, focus cue, masks."""
import json

import cv2
import numpy as np
import pytest
import torch

from model.attention import CrossBandAttention, shifted_window_mask
from model.checkpoint import load_refiner, save_refiner
from model.config import VARIANTS
from model.masks import uncertain as _uncertain
from model.refiner import RefinerOutput, build_refiner, count_parameters
from utils.cli import UserError

TINY = 8  # base_channels for fast tests


def _inputs(h=67, w=93, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    guide = torch.zeros(n, 1, h, w)
    guide[..., h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1
    return image, guide


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_and_ranges(variant):
    torch.manual_seed(0)
    model = build_refiner(variant, base_channels=TINY).eval()
    image, guide = _inputs()
    with torch.no_grad():
        out = model(image, guide)
    assert isinstance(out, RefinerOutput)
    assert out.alpha.shape == (1, 1, 67, 93)
    assert 0 <= out.alpha.min() and out.alpha.max() <= 1
    assert set(out.alpha_os) == set(out.logits_os) == {8, 4, 1} and set(out.uncertain_os) == {8, 4}
    for s in (8, 4, 1):
        assert out.alpha_os[s].shape == out.logits_os[s].shape == (1, 1, 67, 93)
        assert torch.allclose(out.alpha_os[s], torch.sigmoid(out.logits_os[s]))
    assert out.focus_map.shape == (1, 1, 67, 93)
    assert {s: tuple(f.shape[-2:]) for s, f in out.focus_os.items()} == {2: (34, 47), 4: (17, 24), 8: (9, 12)}
    for u in out.uncertain_os.values():
        assert u.shape == (1, 1, 67, 93) and set(u.unique().tolist()) <= {0.0, 1.0}


def test_progressive_refinement_replaces_only_in_uncertain_band():
    torch.manual_seed(1)
    model = build_refiner("light", base_channels=TINY).eval()
    image, guide = _inputs(64, 64)
    with torch.no_grad():
        out = model(image, guide, uncertain_radius=(0, 0))
    u4 = out.uncertain_os[4] > 0
    # inside the final band the full-resolution prediction wins, exactly
    assert torch.equal(out.refined[u4], out.alpha_os[1][u4])
    # with a wide band the stride-1 prediction is everywhere (random weights: everything is uncertain)
    with torch.no_grad():
        wide = model(image, guide, uncertain_radius=(64, 64))
    assert wide.uncertain_os[4].min() == 1 and torch.equal(wide.refined, wide.alpha_os[1])


def test_uncertain_band_dilates_the_soft_region():
    alpha = torch.zeros(1, 1, 9, 9)
    alpha[..., 4, 4] = 0.5
    alpha[..., 0, 0] = 1.0  # certain: not in the band
    band = _uncertain(alpha, radius=2)
    expected = torch.zeros(9, 9)
    expected[2:7, 2:7] = 1
    assert torch.equal(band[0, 0], expected)


def test_light_and_none_parameter_counts_within_5_percent():
    for base in (TINY, 32):
        light = count_parameters(build_refiner("light", base_channels=base))
        none = count_parameters(build_refiner("none", base_channels=base))
        assert abs(light - none) / light < 0.05, (base, light, none)
        assert light == count_parameters(build_refiner("heavy_db4", base_channels=base))
    assert 1_000_000 < count_parameters(build_refiner("light")) < 5_000_000  # a few million at the default width


@pytest.mark.parametrize("variant", ["light", "heavy_db2", "none"])
def test_checkpoint_roundtrip_bit_for_bit(tmp_path, variant):
    torch.manual_seed(2)
    model = build_refiner(variant, base_channels=TINY, uncertain_radius=(3, 2)).eval()
    image, guide = _inputs()
    with torch.no_grad():
        ref = model(image, guide)
    path = save_refiner(tmp_path / "ckpt" / "r.pt", model, step=7)
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temporary
    loaded, ckpt = load_refiner(path)
    assert ckpt["variant"] == variant and ckpt["step"] == 7 and not loaded.training
    json.dumps(ckpt["config"])  # plain JSON-able
    assert loaded.config == model.config
    with torch.no_grad():
        out = loaded(image, guide)
    assert torch.equal(out.alpha, ref.alpha) and torch.equal(out.logits_os[8], ref.logits_os[8])


def test_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_refiner(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(UserError, match="not a refiner checkpoint"):
        load_refiner(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_refiner(junk)
    # a refiner checkpoint whose weights do not fit its config
    model = build_refiner("light", base_channels=TINY)
    bad = tmp_path / "bad.pt"
    save_refiner(bad, model)
    ckpt = torch.load(bad, weights_only=True)
    ckpt["config"]["base_channels"] = 12
    torch.save(ckpt, bad)
    with pytest.raises(UserError, match="does not match"):
        load_refiner(bad)


def test_pretrained_backbone_from_local_path(tmp_path):
    torch.manual_seed(3)
    src = build_refiner("light", base_channels=TINY)
    path = save_refiner(tmp_path / "src.pt", src)
    dst = build_refiner("light", base_channels=TINY, pretrained=str(path))
    for k, v in src.encoder_state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    assert not torch.equal(dst.decoder.f1[1].weight, src.decoder.f1[1].weight)  # decoder stays randomly initialised
    assert "pretrained" not in dst.config.to_dict()  # rebuilding from a checkpoint never needs the file
    with pytest.raises(UserError, match="not found"):
        build_refiner("light", base_channels=TINY, pretrained=str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("variant", ["light", "heavy_db2"])
def test_focus_map_higher_on_sharp_than_blurred_texture(variant):
    model = build_refiner(variant, base_channels=TINY).eval()
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.random((24, 24, 3)).astype(np.float32), (96, 96), interpolation=cv2.INTER_NEAREST)
    texture = np.clip(texture + 0.2 * rng.standard_normal((96, 96, 3)).astype(np.float32), 0, 1)
    blurred = cv2.GaussianBlur(texture, (0, 0), 3.0)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    guide = torch.ones(1, 1, 96, 96)
    with torch.no_grad():
        sharp = model(to_t(texture), guide).focus_map
        soft = model(to_t(blurred), guide).focus_map
    assert sharp.mean() > 2 * soft.mean()
    # pixel-wise too, away from the border
    assert (sharp[..., 8:-8, 8:-8] > soft[..., 8:-8, 8:-8]).float().mean() > 0.95


def test_shifted_window_mask_blocks_wraparound():
    """With shifted windows, a pixel must not see pixels rolled in from the opposite border."""
    torch.manual_seed(4)
    attn = CrossBandAttention(dim=8, heads=2, win=4, shift=2).eval()
    s, d = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        base_s, _ = attn(s, d)
        d2 = d.clone()
        d2[0, :, 0, 0] = 10 * torch.randn(8)  # top-left detail pixel; rolled next to the bottom-right one
        moved_s, _ = attn(s, d2)
    changed = (moved_s - base_s).abs().sum(1)[0] > 1e-6
    assert changed[0, 0] and changed[:2, :2].all()  # its own neighbourhood sees it
    assert not changed[-2:, -2:].any() and not changed[-2:, :2].any() and not changed[:2, -2:].any()
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 1, 16, 16) and mask[0].all() and not mask[-1].all()
    assert shifted_window_mask(8, 8, 4, 0) is None


@pytest.mark.parametrize("variant", ["light", "heavy_db2", "none"])
def test_gradients_flow(variant):
    torch.manual_seed(5)
    model = build_refiner(variant, base_channels=TINY).train()
    image, guide = _inputs(32, 48, n=2)
    out = model(image, guide)
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(v, guide) for v in out.logits_os.values())
    loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.gate_logit, 1 - guide)
    loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.trust_logit, torch.ones(2))
    loss.backward()
    grads = {n: p.grad for n, p in model.trunk_named_parameters()}  # the fine stage is not in the dense pass
    assert all(g is None for n, g in ((n, p.grad) for n, p in model.named_parameters()) if n.startswith("fine."))
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    assert grads["encoder.s1.inp.0.weight"].abs().sum() > 0 and grads["decoder.hi1.weight"].abs().sum() > 0


@pytest.mark.parametrize("variant", ["light", "heavy_db2", "none"])
def test_variants_under_autocast(variant):
    """Mixed precision works (pytorch_wavelets would fail: the wrapper runs it in float32 inside autocast)."""
    model = build_refiner(variant, base_channels=TINY).train()
    image, guide = _inputs(32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, guide)
    out.logits_os[1].float().mean().backward()
    assert out.alpha.shape == (1, 1, 32, 32)


def test_bad_inputs_raise():
    model = build_refiner("light", base_channels=TINY)
    with pytest.raises(ValueError, match="guide"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 8, 16))
    with pytest.raises(ValueError, match="unknown refiner variant"):
        build_refiner("heavy_db3")


def test_entry_points(capsys):
    from model.refiner_dwt_maggie import build_light, main as light_main
    from model.refiner_dwt_maggie_heavydwt import build_heavy, main as heavy_main

    assert build_light(base_channels=TINY).variant == "light"
    assert build_heavy("db4", base_channels=TINY).variant == "heavy_db4"
    with pytest.raises(ValueError):
        build_heavy("db3")
    assert light_main(["--size", "24x40", "--base_channels", str(TINY)]) == 0
    assert heavy_main(["--wave", "db2", "--size", "24x40", "--base_channels", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "variant light" in out and "variant heavy_db2" in out and "alpha (1, 1, 24, 40)" in out
    with pytest.raises(UserError, match="HxW"):
        light_main(["--size", "big"])


def test_light_refiner_fits_a_tiny_example():
    """Trainable end to end: 50 Adam steps on one soft-edged square halve the multi-stride loss's excess over
    its floor (BCE against a soft target cannot go below the target's entropy)."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=TINY).train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    image = torch.rand(1, 3, 32, 32)
    gt = torch.zeros(1, 1, 32, 32)
    gt[..., 6:26, 8:24] = 1
    gt = torch.nn.functional.avg_pool2d(gt, 5, 1, 2)
    guide = (gt > 0.5).float()
    losses = []
    for _ in range(50):
        out = model(image, guide)
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(v, gt) for v in out.logits_os.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    floor = 3 * torch.nn.functional.binary_cross_entropy(gt, gt).item()
    excess = [v - floor for v in losses]
    assert excess[-1] < 0.5 * excess[0], excess


@pytest.mark.parametrize("variant", ["light", "none"])
def test_untrained_refiner_returns_its_guide(variant):
    """Residual on the guide: before any training, alpha follows the guide."""
    torch.manual_seed(0)
    model = build_refiner(variant, base_channels=8).eval()
    image = torch.rand(1, 3, 67, 93)
    guide = torch.zeros(1, 1, 67, 93)
    guide[..., 16:56, 24:72] = 1
    with torch.no_grad():
        out = model(image, guide)
    inside = guide > 0.5
    # away from the boundary, where pooling at stride 8 mixes in the other side
    core = torch.zeros_like(guide, dtype=torch.bool)
    core[..., 26:46, 34:62] = True
    far = torch.ones_like(guide, dtype=torch.bool)
    far[..., 6:66, 14:82] = False
    assert out.alpha[core].min() > 0.9 and out.alpha[far].max() < 0.1  # sigmoid(+-4) plus small random corrections
    assert (out.alpha - guide).abs().mean() < 0.08
    assert inside.sum() > 0


# ------------------------------------------------------------------------------------------------ the guide gate
@pytest.mark.parametrize("variant", ["light", "none"])
def test_closed_gate_returns_the_guide_bit_for_bit(variant):
    """Do no harm by construction: where the gate is below its threshold the output IS the guide, exactly,
    whatever the rest of the network predicts (an untrained refiner's gate starts closed)."""
    torch.manual_seed(0)
    model = build_refiner(variant, base_channels=TINY).eval()
    with torch.no_grad():  # make the refined prediction far from the guide, so equality cannot be a coincidence
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.bias.fill_(-20.0)  # every stride predicts background
    image, guide = _inputs()
    soft = torch.nn.functional.avg_pool2d(guide, 5, 1, 2)  # a soft guide passes unchanged too
    with torch.no_grad():
        for g in (guide, soft):
            for rule in (None, False, True):  # the trust head's call, the coarse-guide rule, the accurate-guide rule
                out = model(image, g, guide_accurate=rule)
                assert out.gate.max() == 0 and torch.equal(out.alpha, g)
                assert (out.refined - g).abs().max() > 0.5


def _constant_gate(model):
    """Zero the gate's last weights, so its probability is sigmoid(bias) everywhere (set by each test)."""
    with torch.no_grad():
        model.decoder.head_gate[-1].weight.zero_()
        model.decoder.gate1[-1].weight.zero_()
    return model


def _near_far(guide: torch.Tensor):
    """Pixels within 6 px (Chebyshev) of the guide's boundary, and pixels >= 16 px (Euclidean) from it."""
    g = (guide[0, 0].numpy() > 0.5).astype(np.uint8)
    boundary = cv2.dilate(g, np.ones((3, 3), np.uint8)) != cv2.erode(g, np.ones((3, 3), np.uint8))
    near = cv2.dilate(boundary.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0
    dist = np.maximum(cv2.distanceTransform(g, cv2.DIST_L2, 5), cv2.distanceTransform(1 - g, cv2.DIST_L2, 5))
    return torch.from_numpy(near)[None, None], torch.from_numpy(dist >= 16)[None, None]


def test_open_gate_returns_the_refinement_and_the_threshold_cuts():
    torch.manual_seed(0)
    model = _constant_gate(build_refiner("light", base_channels=TINY, gate_threshold=0.5, flip_threshold=0.5).eval())
    image, guide = _inputs(96, 128)
    near, far = _near_far(guide)
    with torch.no_grad():
        model.decoder.head_gate[-1].bias.fill_(30.0)  # sigmoid = 1: gate fully open
        out = model(image, guide, guide_accurate=False)
        flipped = (out.refined >= 0.5) != (guide >= 0.5)
        assert out.gate.min() == 1
        # near the guide's boundary the refinement comes out; far from it only flips do, the rest is the guide
        assert torch.allclose(out.alpha[near], out.refined[near], atol=1e-6)
        assert torch.equal(out.alpha[far & ~flipped], guide[far & ~flipped])
        assert torch.allclose(out.alpha[far & flipped], out.refined[far & flipped], atol=1e-6)
        model.decoder.head_gate[-1].bias.fill_(-0.01)  # sigmoid just below the threshold: cut to exactly 0
        out = model(image, guide, guide_accurate=False)
        assert out.gate.max() == 0 and torch.equal(out.alpha, guide)
        model.decoder.head_gate[-1].bias.fill_(float(np.log(3.0)))  # sigmoid = 0.75 >= both thresholds: applied as it is
        out = model(image, guide, guide_accurate=False)
        assert torch.allclose(out.gate, torch.full_like(out.gate, 0.75), atol=1e-5)
        expected = guide + 0.75 * (out.refined - guide)
        assert torch.allclose(out.alpha[near], expected[near], atol=1e-6)
    with pytest.raises(ValueError, match="gate_threshold"):
        build_refiner("light", base_channels=TINY, gate_threshold=1.0)
    with pytest.raises(ValueError, match="flip_threshold"):
        build_refiner("light", base_channels=TINY, gate_threshold=0.8, flip_threshold=0.5)


def test_a_flip_needs_the_stricter_threshold():
    """Between the two thresholds a pixel may move only on its guide's side of 0.5 (an accurate guide never
    needs more), and only near the guide's boundary; above flip_threshold it may cross (the guide is wrong)."""
    torch.manual_seed(0)
    model = _constant_gate(build_refiner("light", base_channels=TINY, gate_threshold=0.5, flip_threshold=0.9).eval())
    image, guide = _inputs(96, 128)
    near, far = _near_far(guide)
    inside = guide > 0.5
    with torch.no_grad():
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.bias.fill_(-20.0)  # the refinement says: background everywhere
        model.decoder.head_gate[-1].bias.fill_(float(np.log(3.0)))  # probability 0.75: between the thresholds
        out = model(image, guide, guide_accurate=False)
        assert out.refined[inside].max() < 0.01  # it wants to remove the subject ...
        assert out.alpha[inside].min() >= 0.5 - 1e-6  # ... but may only soften it to the 0.5 level, near the edge
        assert torch.allclose(out.alpha[inside & near], torch.full_like(out.alpha[inside & near], 0.625), atol=1e-4)
        assert torch.equal(out.alpha[inside & far], guide[inside & far])
        model.decoder.head_gate[-1].bias.fill_(30.0)  # probability 1 >= flip_threshold: the flip goes through everywhere
        out = model(image, guide, guide_accurate=False)
        assert out.alpha[inside].max() < 0.01


def test_closed_gate_still_learns_from_the_output_loss():
    """The cut is straight-through: with the gate closed everywhere, a loss on alpha still reaches the gate head,
    pushing it open where the refinement is better than the guide."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=TINY).train()
    image, guide = _inputs(32, 32)
    for rule in (False, True):
        model.zero_grad()
        out = model(image, guide, guide_accurate=rule)
        assert out.gate.max() == 0
        target = out.refined.detach()  # the refinement is "right": opening the gate lowers the loss
        (out.alpha - target).abs().mean().backward()
        assert model.decoder.head_gate[-1].bias.grad.item() < 0  # gradient descent raises the gate's logit


def _ring(guide: torch.Tensor) -> torch.Tensor:
    """Independent reference of the accurate-guide rule's ring: pixels whose 3x3 neighbourhood holds both sides
    of the guide's 0.5 level (OpenCV dilate != erode of the binarised guide)."""
    g = (guide[0, 0].numpy() >= 0.5).astype(np.uint8)
    ring = cv2.dilate(g, np.ones((3, 3), np.uint8)) != cv2.erode(g, np.ones((3, 3), np.uint8))
    return torch.from_numpy(ring)[None, None]


def test_accurate_guide_rule_changes_only_the_ring_on_its_side_and_never_flips():
    """With a guide called accurate, even a fully open gate and a refinement that wants the subject gone change
    only the boundary ring, and only up to the 0.5 level: everything else is the guide, bit for bit."""
    torch.manual_seed(0)
    model = _constant_gate(build_refiner("light", base_channels=TINY, gate_threshold=0.5, flip_threshold=0.6,
                                         accurate_gate_threshold=0.8).eval())
    image, guide = _inputs(96, 128)
    ring, inside = _ring(guide), guide >= 0.5
    with torch.no_grad():
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.bias.fill_(-20.0)  # the refinement says: background everywhere
        model.decoder.head_gate[-1].bias.fill_(30.0)  # probability 1: above every threshold
        out = model(image, guide, guide_accurate=True)
        assert out.accurate.all()
        assert torch.equal(out.alpha[~ring], guide[~ring])
        assert torch.allclose(out.alpha[ring & inside], torch.full_like(out.alpha[ring & inside], 0.5))
        assert torch.equal(out.alpha[ring & ~inside], out.refined[ring & ~inside])  # on its side: taken as it is
        assert ring.sum() > 100 and ((out.alpha - guide).abs() > 0.1).sum() == (ring & inside).sum()
        # the coarse rule on the same input flips the whole subject away
        assert model(image, guide, guide_accurate=False).alpha[inside].max() < 0.01
        model.decoder.head_gate[-1].bias.fill_(float(np.log(3.0)))  # probability 0.75: open for coarse guides only
        assert torch.equal(model(image, guide, guide_accurate=True).alpha, guide)
        assert not torch.equal(model(image, guide, guide_accurate=False).alpha, guide)


def test_trust_head_chooses_the_rule_per_image():
    torch.manual_seed(0)
    model = _constant_gate(build_refiner("light", base_channels=TINY, gate_threshold=0.5, flip_threshold=0.6).eval())
    image, guide = _inputs(64, 64)
    image, guide = image.repeat(2, 1, 1, 1), guide.repeat(2, 1, 1, 1)
    with torch.no_grad():
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.bias.fill_(-20.0)
        model.decoder.head_gate[-1].bias.fill_(30.0)
        model.decoder.head_trust[-1].weight.zero_()
        for bias, accurate in ((30.0, True), (-30.0, False)):
            model.decoder.head_trust[-1].bias.fill_(bias)
            out = model(image, guide)
            assert torch.allclose(out.trust_logit, torch.full((2,), bias)) and bool(out.accurate.all()) == accurate
            assert torch.equal(out.alpha, model(image, guide, guide_accurate=accurate).alpha)
        mixed = model(image, guide, guide_accurate=torch.tensor([True, False]))
        both = {rule: model(image, guide, guide_accurate=rule).alpha for rule in (True, False)}
        assert torch.equal(mixed.alpha[:1], both[True][:1]) and torch.equal(mixed.alpha[1:], both[False][1:])
        assert not torch.equal(both[True], both[False])


def test_gate_threshold_round_trips_through_a_checkpoint(tmp_path):
    model = build_refiner("light", base_channels=TINY, gate_threshold=0.3, flip_threshold=0.8,
                          accurate_gate_threshold=0.85)
    save_refiner(tmp_path / "m.pt", model)
    loaded, _ = load_refiner(tmp_path / "m.pt")
    assert loaded.config.gate_threshold == 0.3 and loaded.config.flip_threshold == 0.8 and loaded.config.accurate_gate_threshold == 0.85
    with pytest.raises(ValueError, match="accurate_gate_threshold"):
        build_refiner("light", base_channels=TINY, accurate_gate_threshold=1.0)


def test_encoder_and_decoder_are_submodules_and_older_checkpoints_still_load(tmp_path):
    """The backbone is the encoder's weights (no hand-kept prefix list); a checkpoint written before the split
    (flat keys such as "s1.inp.0.weight") loads into the same weights and gives the same alpha."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=TINY).eval()
    state = model.state_dict()
    assert all(k.startswith(("encoder.", "decoder.", "fine.")) or k == "fine_steps" for k in state)
    assert set(model.encoder_state_dict()) == {k for k in state if k.startswith("encoder.")}
    # the keys an older checkpoint has: flat, and no fine stage
    flat = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}
    assert "s1.inp.0.weight" in flat and "guide_gain" in flat
    torch.save({"format": "defocused_segmentation/refiner", "variant": "light", "config": model.config.to_dict(),
                "model": flat}, tmp_path / "old.pt")
    loaded, _ = load_refiner(tmp_path / "old.pt")
    assert not loaded.fine_trained
    image, guide = _inputs(64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(image, guide).alpha, model(image, guide).alpha)


def test_trust_threshold_decides_which_guides_get_the_coarse_rule(tmp_path):
    """A guide gets the coarse rule only when P(accurate) < trust_threshold (default 0.25: doing harm costs
    more than a missed gain); the threshold is a model key, stored in checkpoints."""
    torch.manual_seed(0)
    image, guide = _inputs(64, 64)
    for threshold, accurate in ((0.25, True), (0.5, False)):
        model = build_refiner("light", base_channels=TINY, trust_threshold=threshold).eval()
        with torch.no_grad():
            model.decoder.head_trust[-1].weight.zero_()
            model.decoder.head_trust[-1].bias.fill_(float(np.log(0.4 / 0.6)))  # P(accurate) = 0.4
            assert bool(model(image, guide).accurate.all()) == accurate
    save_refiner(tmp_path / "t.pt", model)
    assert load_refiner(tmp_path / "t.pt")[0].config.trust_threshold == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="trust_threshold"):
            build_refiner("light", base_channels=TINY, trust_threshold=bad)


def test_dilate_and_boundaries_equal_max_pool():
    """dilate (separable ORs on bytes, fast on frames and on batches of small tiles) gives max_pool2d's numbers on
    a 0/1 mask, and the guide's ring and band built on it are max_pool2d's, for binary and soft guides."""
    from model.masks import boundary_band, boundary_ring, dilate

    F = torch.nn.functional
    torch.manual_seed(0)
    mask = torch.rand(3, 2, 17, 23) > 0.8
    for r in (0, 1, 2, 3, 4, 5, 7):
        expect = mask.float() if r == 0 else F.max_pool2d(mask.float(), 2 * r + 1, 1, r)
        got = dilate(mask, r)
        assert got.dtype == torch.uint8 and torch.equal(got.float(), expect), r
    for guide in ((torch.rand(4, 1, 30, 42) > 0.6).float(), torch.rand(2, 1, 22, 18)):
        ring = ((F.max_pool2d(guide, 3, 1, 1) >= 0.5) & (-F.max_pool2d(-guide, 3, 1, 1) < 0.5)).float()
        band = F.interpolate(F.max_pool2d(F.max_pool2d(ring, 2), 9, 1, 4), scale_factor=2.0, mode="nearest")
        assert torch.equal(boundary_ring(guide), ring) and torch.equal(boundary_band(guide), band)
        assert boundary_ring(guide).dtype == boundary_band(guide).dtype == guide.dtype


def test_output_rule_of_a_mixed_batch_is_each_image_s_own():
    """The rule skips the branch no image needs; a batch mixing both rules gets each image's rule exactly."""
    from model.output_rule import output_rule

    torch.manual_seed(1)
    guide = (torch.rand(4, 1, 24, 32) > 0.5).float()
    refined, gate_logit = torch.rand(4, 1, 24, 32), torch.randn(4, 1, 24, 32) * 3
    rule = torch.tensor([True, False, True, False])
    mixed, mixed_gate = output_rule(guide, refined, gate_logit, rule, 0.5, 0.8, 0.9)
    for i in range(4):
        one, one_gate = output_rule(guide[i:i + 1], refined[i:i + 1], gate_logit[i:i + 1], rule[i:i + 1], 0.5, 0.8, 0.9)
        assert torch.equal(mixed[i:i + 1], one) and torch.equal(mixed_gate[i:i + 1], one_gate)


def test_attention_pads_its_own_windows_and_the_coarse_pass_pads_only_to_stride_16():
    """Features whose size is not a multiple of the window: each window wholly inside them gives what it gives
    on its own (attention never crosses windows, so the edge padding changes only the windows it enters), the
    output is cropped back to the input's size; and the refiner pads its input to whole windows at stride 8
    unless told otherwise (the sparse path's coarse pass: a 1080p frame's 480x270 runs at 480x272, not 512x320)."""
    from model.attention import CrossBandAttention

    torch.manual_seed(2)
    attn = CrossBandAttention(16, 1, 8, shift=0).eval()
    s, d = torch.randn(2, 16, 13, 21), torch.randn(2, 16, 13, 21)
    with torch.no_grad():
        out_s, out_d = attn(s, d)
        whole_s, whole_d = attn(s[..., :8, :16], d[..., :8, :16])
    assert out_s.shape == s.shape and out_d.shape == d.shape
    assert torch.allclose(out_s[..., :8, :16], whole_s, atol=1e-6) and torch.allclose(out_d[..., :8, :16], whole_d, atol=1e-6)
    assert not torch.allclose(out_s[..., 8:, :], s[..., 8:, :])  # the partial windows are attended too

    model = build_refiner("light", base_channels=TINY).eval()
    seen = []
    model.encoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    image, guide = torch.rand(1, 3, 270, 120), torch.ones(1, 1, 270, 120)
    with torch.no_grad():
        out = model(image, guide)
        small = model(image, guide, pad_multiple=16)
    assert seen == [(320, 128), (272, 128)] and out.alpha.shape == small.alpha.shape == (1, 1, 270, 120)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(image, guide, pad_multiple=24)

    from model.sparse import COARSE_PAD_MULTIPLE, coarse_pass
    seen.clear()
    with torch.no_grad():
        coarse_pass(model, torch.rand(1, 3, 1080, 480), torch.ones(1, 1, 1080, 480), 0.25)
    assert COARSE_PAD_MULTIPLE == 16 and seen == [(272, 128)]
