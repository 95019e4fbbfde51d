"""Sparse inference (model.sparse): a coarse pass plus full-resolution tiles where the refiner can change its guide."""
import numpy as np
import pytest
import torch

from model.refiner import build_refiner
from model.sparse import allowed, auto_ratio, parse_ratio, refine_sparse

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
    assert auto_ratio(1080, 1920) == pytest.approx(512 / 1920) and auto_ratio(256, 384) == 1.0
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


def test_coverage_counts_the_pixels_of_the_chosen_tiles():
    model = _forced(gate_bias=30.0)
    image, guide = _frame(130, 150)  # tiles at the right and bottom edges are partial
    out = refine_sparse(model, image, guide, downsample_ratio=0.5, guide_accurate=True, tile=64, margin=16)
    need = allowed(guide, True, None)[0, 0].numpy()  # the open gate's coarse region covers every pixel
    cells = {(r // 64, c // 64) for r, c in zip(*np.nonzero(need))}
    area = sum(min(64, 130 - r * 64) * min(64, 150 - c * 64) for r, c in cells)
    assert int(out.tiles[0]) == len(cells) and float(out.coverage[0]) == pytest.approx(area / (130 * 150))
    with pytest.raises(ValueError, match="tile"):
        refine_sparse(model, image, guide, downsample_ratio=0.5, tile=4)
