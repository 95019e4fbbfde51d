"""Sparse inference (model.sparse): a coarse pass plus full-resolution tiles where the refiner can change its guide:
the fine stage's tiles (a trained fine stage), or the whole refiner's (the fallback for an untrained one)."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.masks import boundary_ring
from model.output_rule import output_rule
from model.refiner import build_refiner
from model.fine import RADIUS
from model.sparse import _fine_windows, allowed, auto_ratio, coarse_pass, parse_ratio, refine_sparse, upsample_coarse

TINY = 8


def _frame(h=200, w=264, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g)
    guide = torch.zeros(1, 1, h, w)
    guide[..., h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1  # a person-sized box
    return image, guide


def _forced(gate_bias: float, refine_bias: float | None = None, trust_bias: float | None = None):
    """A tiny refiner whose gate probability is sigmoid(gate_bias) everywhere; with refine_bias, every stride
    predicts that logit (a context-free refinement, so tiles and the dense pass must agree exactly)."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=TINY, gate_threshold=0.5, flip_threshold=0.6).eval()
    with torch.no_grad():
        model.decoder.head_gate[-1].weight.zero_()
        model.decoder.gate1[-1].weight.zero_()
        model.decoder.head_gate[-1].bias.fill_(gate_bias)
        if refine_bias is not None:
            for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
                head.weight.zero_()
                head.bias.fill_(refine_bias)
            model.decoder.guide_gain.zero_()
        if trust_bias is not None:
            model.decoder.head_trust[-1].weight.zero_()
            model.decoder.head_trust[-1].bias.fill_(trust_bias)
    return model


def test_auto_ratio_and_parse():
    """An integer factor bringing the long side nearest 512 px: RVM's 0.25 at 1080p and 0.125 at 4K."""
    assert auto_ratio(1080, 1920) == 0.25 and auto_ratio(2160, 3840) == 0.125 and auto_ratio(768, 1152) == 0.5
    assert auto_ratio(256, 384) == 1.0 and auto_ratio(720, 720) == 1.0 and auto_ratio(800, 800) == 0.5
    assert parse_ratio("auto") == "auto" and parse_ratio("0.25") == 0.25 and parse_ratio(1) == 1.0
    for bad in ("0", "1.5", "-0.1", "fast", "nan"):
        with pytest.raises(ValueError, match="downsample_ratio"):
            parse_ratio(bad)


def test_ratio_one_is_the_dense_pass():
    model = build_refiner("light", base_channels=TINY).eval()
    image, guide = _frame(96, 128)
    out = refine_sparse(model, image, guide, downsample_ratio="auto")
    assert out.ratio == 1.0 and torch.equal(out.alpha, model(image, guide).alpha)


@pytest.mark.parametrize("accurate", [True, False])
def test_tiles_match_the_dense_pass_and_the_rest_is_the_guide(accurate):
    """With a refinement that does not depend on context (every stride predicts the same logit), the tiles must
    reproduce the dense pass exactly, and every pixel outside them is the guide bit for bit."""
    model = _forced(gate_bias=30.0, refine_bias=-2.0)  # open gate; refinement: alpha 0.12 everywhere
    image, guide = _frame()
    dense = model(image, guide, guide_accurate=accurate).alpha
    sparse = refine_sparse(model, image, guide, downsample_ratio=0.5, guide_accurate=accurate)
    assert bool(sparse.accurate[0]) == accurate and 0 < sparse.coverage[0] < (0.5 if accurate else 1.0)
    assert torch.allclose(sparse.alpha, dense, atol=1e-6)
    need = allowed(guide, accurate, None)
    assert torch.equal(sparse.alpha[~need], guide[~need]) or not accurate  # coarse: flips may leave the band
    if not accurate:  # the refinement (0.12) flips the whole subject: the coarse pass found it and tiled it
        assert sparse.alpha[guide > 0.5].max() < 0.2


def test_tiles_only_where_the_coarse_gate_opens():
    """The coarse pass's gate is the error map: closed everywhere, no tile runs and the guide comes out; open
    everywhere, the tiles cover the guide's boundary band and nothing inside or far outside the box."""
    image, guide = _frame()
    closed = refine_sparse(_forced(gate_bias=-30.0), image, guide, downsample_ratio=0.25, guide_accurate=False)
    assert torch.equal(closed.alpha, guide) and int(closed.tiles[0]) == 0 and float(closed.coverage[0]) == 0
    opened = refine_sparse(_forced(gate_bias=30.0), image, guide, downsample_ratio=0.25, guide_accurate=True)
    all_tiles = -(-200 // 64) * -(-264 // 64)
    assert 0 < int(opened.tiles[0]) < all_tiles


def test_trust_head_of_the_coarse_pass_picks_the_rule():
    image, guide = _frame()
    for trust_bias, accurate in ((30.0, True), (-30.0, False)):
        model = _forced(gate_bias=30.0, refine_bias=-2.0, trust_bias=trust_bias)
        out = refine_sparse(model, image, guide, downsample_ratio=0.5)
        assert bool(out.accurate[0]) == accurate
        assert torch.allclose(out.alpha, model(image, guide, guide_accurate=accurate).alpha, atol=1e-6)


def test_coverage_counts_the_pixels_of_the_chosen_tiles(monkeypatch):
    import model.sparse as sparse

    monkeypatch.setattr(sparse, "MARGIN", 16)
    model = _forced(gate_bias=30.0)
    image, guide = _frame(130, 150)  # tiles at the right and bottom edges are partial
    out = refine_sparse(model, image, guide, downsample_ratio=0.5, guide_accurate=True)
    need = allowed(guide, True, None)[0, 0].numpy()  # the open gate's coarse region covers every pixel
    cells = {(r // 64, c // 64) for r, c in zip(*np.nonzero(need))}
    area = sum(min(64, 130 - r * 64) * min(64, 150 - c * 64) for r, c in cells)
    assert int(out.tiles[0]) == len(cells) and float(out.coverage[0]) == pytest.approx(area / (130 * 150))
    with pytest.raises(ValueError, match="tile"):
        refine_sparse(model, image, guide, downsample_ratio=0.5, tile=6)


# ------------------------------------------------------------------------------------------ the fine stage
def _with_fine(gate_bias: float = 5.0, seed: int = 0):
    """A tiny refiner with a trained-looking fine stage: random (non-zero) last layer, fine_steps > 0."""
    torch.manual_seed(seed)
    model = build_refiner("light", base_channels=TINY).eval()
    with torch.no_grad():
        for p in model.fine.net[-1].parameters():
            torch.nn.init.normal_(p, std=0.3)
        model.fine_steps.fill_(1)
        model.decoder.head_gate[-1].bias.fill_(gate_bias)
    return model


def fine_dense(model, image, guide, maps, accurate):
    """The fine stage over whole frames (H, W even), edge-padded by its receptive field: (refined alpha, gate
    logit). The reference the tiles must equal."""
    m = 2 * RADIUS

    def pad(t, p):
        return F.pad(t, (p,) * 4, mode="replicate")

    return _fine_windows(model, pad(image, m), pad(guide, m), pad(maps.base, m), maps.gate, pad(maps.half, RADIUS),
                         accurate)


def _dense_reference(model, image, guide, ratio, accurate, with_refined=False):
    """The fine stage over the whole frame (edge-padded to even size) and the output rule over the whole frame
    (with ``with_refined``, also the fine stage's refinement and gate logit before the rule)."""
    h, w = image.shape[-2:]
    coarse, _, covers = coarse_pass(model, image, guide, ratio, accurate)
    hp, wp = h + h % 2, w + w % 2

    def pad(t, size):
        return F.pad(t, (0, size[1] - t.shape[-1], 0, size[0] - t.shape[-2]), mode="replicate")

    maps = upsample_coarse(coarse, covers, (h, w))
    maps.base, maps.gate = pad(maps.base, (hp, wp)), pad(maps.gate, (hp, wp))
    maps.half = pad(maps.half, (hp // 2, wp // 2))
    with torch.no_grad():
        refined, gate = fine_dense(model, pad(image, (hp, wp)), pad(guide, (hp, wp)), maps, accurate)
        alpha, _ = output_rule(pad(guide, (hp, wp)), refined, gate, torch.tensor([accurate]), model.config.gate_threshold,
                               model.config.flip_threshold, model.config.accurate_gate_threshold)
    if with_refined:
        return alpha[..., :h, :w], refined[..., :h, :w], gate[..., :h, :w]
    return alpha[..., :h, :w]


@pytest.mark.parametrize("size,ratio", [((200, 264), 0.5), ((203, 259), 1 / 3), ((96, 128), 0.3)])
@pytest.mark.parametrize("accurate", [True, False])
def test_fine_tiles_are_the_dense_fine_stage_and_the_rest_is_the_guide(size, ratio, accurate):
    """Each tile carries the fine stage's whole receptive field (and the output rule's: the guide's ring or band),
    so inside the tiles the sparse path gives exactly what the fine stage and the rule give over the whole frame
    (odd sizes and non-integer ratios included); outside them the guide, bit for bit."""
    model = _with_fine()
    h, w = size
    image, guide = _frame(h, w)
    out = refine_sparse(model, image, guide, downsample_ratio=ratio, guide_accurate=accurate)
    dense = _dense_reference(model, image, guide, ratio, accurate)
    changed = out.alpha != guide
    assert int(out.tiles[0]) > 0 and changed.sum() > 50
    assert torch.equal(out.alpha[changed], dense[changed])
    # the tiles are where the rule may change the guide: for an accurate guide exactly its ring
    if accurate:
        assert torch.equal(changed, (dense != guide) & changed) and not changed[boundary_ring(guide) == 0].any()
        assert torch.equal(dense != guide, changed)  # nothing outside the tiles would have changed either


def test_an_untrained_fine_stage_falls_back_to_the_whole_refiner_in_tiles(caplog):
    model = _forced(gate_bias=30.0, refine_bias=-2.0)
    assert not model.fine_trained
    image, guide = _frame()
    import model.sparse as sparse

    sparse._warn_untrained_fine.cache_clear()  # said once per process
    with caplog.at_level(logging.WARNING):
        out = refine_sparse(model, image, guide, downsample_ratio=0.5, guide_accurate=True)
    assert "fine stage is untrained" in caplog.text
    assert torch.allclose(out.alpha, model(image, guide, guide_accurate=True).alpha, atol=1e-6)


def test_coarse_pass_box_filters_integer_factors():
    model = build_refiner("light", base_channels=TINY).eval()
    image, guide = _frame(130, 150)
    with torch.no_grad():
        coarse, small_guide, covers = coarse_pass(model, image, guide, 0.25)
    assert covers == (132, 152) and coarse.alpha.shape[-2:] == (33, 38)
    padded = F.pad(guide, (0, 2, 0, 2), mode="replicate")
    assert torch.equal(small_guide, (F.avg_pool2d(padded, 4) >= 0.5).float())
    with torch.no_grad():
        _, _, covers = coarse_pass(model, image, guide, 0.3)  # not 1/k: area interpolation over the frame
    assert covers == (130, 150)


def test_fine_stage_closed_coarse_gate_runs_no_tile():
    image, guide = _frame()
    out = refine_sparse(_with_fine(gate_bias=-30.0), image, guide, downsample_ratio=0.25, guide_accurate=False)
    assert torch.equal(out.alpha, guide) and int(out.tiles[0]) == 0


def test_fine_stage_starts_as_the_upsampled_coarse_pass_and_sees_only_its_radius():
    """Zero-initialised last layer: the refined alpha is the upsampled coarse alpha (Haar forward then inverse) and
    the gate the coarse one. Its receptive field is RADIUS half-resolution pixels: a change farther away from an
    output pixel's 2x2 block does not reach it."""
    from model.fine import RADIUS, FineStage, fine_output

    torch.manual_seed(0)
    stage = FineStage(hidden=4)
    base, gate = torch.rand(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    x = torch.randn(2, stage.in_channels, 16 + 2 * RADIUS, 16 + 2 * RADIUS)
    refined, gate_out = fine_output(base, gate, stage(x))
    assert torch.allclose(refined, base, atol=1e-6) and torch.equal(gate_out, gate)
    torch.nn.init.normal_(stage.net[-1].weight)
    y = stage(x)
    x2 = x.clone()
    x2[..., 0, 0] += 10.0  # the input's corner is inside the window of output (0, 0) only
    diff = (stage(x2) - y).abs().sum(1)[0]
    assert y.shape[-1] == x.shape[-1] - 2 * RADIUS  # each output sees 2 RADIUS + 1 inputs per axis
    assert diff[0, 0] > 0 and diff[1:, :].sum() == 0 and diff[:, 1:].sum() == 0
    _, kept = fine_output(base, gate, y, correct_gate=False)
    assert torch.equal(kept, gate)


def test_fine_stage_input_layout_is_each_source_s_haar_bands():
    """The stage's input channels, in the order its trained weights read them: the Haar bands (model.wavelets) of
    the normalised image, of 2 guide - 1 and of the coarse alpha, the gate logit / 4, |LL(alpha) - LL(guide)|,
    the hidden state; exactly, for NCHW and channels-last images."""
    from model.config import IMAGENET_MEAN, IMAGENET_STD
    from model.fine import FineStage, bands

    torch.manual_seed(5)
    stage = FineStage(hidden=4)
    hwc = torch.rand(3, 20, 24, 3)
    guide, base = (torch.rand(3, 1, 20, 24) > 0.5).float(), torch.rand(3, 1, 20, 24)
    gate, hidden = torch.randn(3, 1, 10, 12), torch.randn(3, 4, 10, 12)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    image = hwc.permute(0, 3, 1, 2)
    expect = torch.cat([bands((image - mean) / std), bands(guide * 2 - 1), bands(base), gate * 0.25,
                        (bands(base)[:, :1] - bands(guide)[:, :1]).abs(), hidden], 1)
    for img in (image, image.contiguous()):
        got = stage.inputs(img, guide, base, gate, hidden)
        assert got.shape[1] == stage.in_channels and torch.equal(got, expect)


def test_tile_grid_equals_a_max_pool_over_each_grown_tile():
    """The tile selection (ORs on bytes) marks exactly the tiles whose square grown by the context holds both
    sides of the 0.5 level, as a float max-pool over each square says; edges, odd sizes and soft masks included."""
    from model.sparse import _tile_grid

    F = torch.nn.functional
    torch.manual_seed(3)
    for h, w, tile, context in ((37, 50, 8, 1), (64, 48, 16, 11), (33, 29, 16, 3), (40, 40, 4, 0)):
        for mask in ((torch.rand(1, 1, h, w) > 0.97).float(), torch.rand(1, 1, h, w) * 0.55):
            k = tile + 2 * context
            hi = F.max_pool2d(mask, k, tile, context, ceil_mode=True) >= 0.5
            lo = -F.max_pool2d(-mask, k, tile, context, ceil_mode=True) < 0.5
            got = _tile_grid(mask, tile, context)
            assert got.dtype == torch.bool and torch.equal(got, (hi & lo)[0, 0]), (h, w, tile, context)


def test_box_filter_is_avg_pool_for_both_layouts():
    """The coarse pass's k x k mean equals avg_pool2d (to float rounding) on NCHW and on channels-last images
    (an HWC array permuted, as the CLI builds them), and its result is NCHW-contiguous either way."""
    from model.sparse import box_filter

    torch.manual_seed(4)
    for k in (1, 2, 3, 4):
        hwc = torch.rand(2, 6 * k, 5 * k, 3)
        for x in (hwc.permute(0, 3, 1, 2), hwc.permute(0, 3, 1, 2).contiguous(), torch.rand(1, 1, 3 * k, 2 * k)):
            got = box_filter(x, k)
            assert got.is_contiguous() or k == 1
            assert torch.allclose(got, torch.nn.functional.avg_pool2d(x, k), atol=1e-6, rtol=0), k


# ------------------------------------------------------------------------------------------ the ring's colour line
def _two_colour_frame(h=200, w=264, seed=0):
    """_frame's box person in red on green, with noise: a colour line the ring evidence can read."""
    image, guide = _frame(h, w, seed)
    red, green = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1), torch.tensor([0.1, 0.8, 0.2]).view(1, 3, 1, 1)
    return (guide * red + (1 - guide) * green + 0.2 * (image - 0.5)).clamp(0, 1), guide


@pytest.mark.parametrize("size,ratio", [((200, 264), 0.5), ((203, 259), 1 / 3)])
def test_ring_evidence_in_fine_tiles_is_the_whole_frame_judged(size, ratio):
    """The sparse path's tiles judge the ring with the whole frame's colour line: inside the tiles the output is
    the dense fine stage and rule, judged over the whole frame; outside them the guide."""
    from model.evidence import colour_line_alpha, judge_ring, ring_sampled_alpha

    model = _with_fine()
    image, guide = _two_colour_frame(*size)
    out = refine_sparse(model, image, guide, downsample_ratio=ratio, guide_accurate=True, ring_evidence=True)
    plain = refine_sparse(model, image, guide, downsample_ratio=ratio, guide_accurate=True)
    alpha, refined, gate = _dense_reference(model, image, guide, ratio, True, with_refined=True)
    line, valid = colour_line_alpha(image, guide)
    ref = judge_ring(guide, refined, gate, alpha, line, valid, boundary_ring(guide) > 0,
                     sample=ring_sampled_alpha(image, guide))
    changed = out.alpha != guide
    assert changed.sum() > 10 and not torch.equal(out.alpha, plain.alpha)
    torch.testing.assert_close(out.alpha[changed], ref[changed], rtol=0, atol=1e-6)
    assert not changed[boundary_ring(guide) == 0].any()


def test_ring_evidence_in_the_fallback_tiles_is_the_dense_pass_judged():
    from model.evidence import ring_colour_evidence

    model = _forced(gate_bias=30.0, refine_bias=-0.2)  # open gate, refinement 0.45 everywhere: context-free
    image, guide = _two_colour_frame()
    out = refine_sparse(model, image, guide, downsample_ratio=0.5, guide_accurate=True, ring_evidence=True)
    dense = model(image, guide, guide_accurate=True)
    ref = ring_colour_evidence(image, guide, dense.refined, dense.gate_logit, dense.alpha, dense.accurate)
    assert not torch.equal(ref, dense.alpha)  # the line refuses some of the gate's softening
    torch.testing.assert_close(out.alpha, ref, rtol=0, atol=1e-6)
