"""model.evidence: far flips are kept only where the image supports them; everything else far comes back to the
guide bit for bit, and nothing near the guide's boundary is touched. The accurate rule's ring takes the
refinement where the colour line agrees, and nothing else changes."""
import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.evidence import (GUIDE_AGREEMENT, NEAR_PX, box_sum, colour_line_alpha, far_flip_evidence, ring_agreement,
                            ring_colour_evidence)
from model.masks import boundary_ring, dilate
from model.predictor import Predictor

RED, GREEN = (0.9, 0.1, 0.1), (0.1, 0.8, 0.2)


@pytest.mark.parametrize("k,h,w", [(1, 5, 7), (3, 9, 4), (33, 20, 50), (7, 3, 3)])
def test_box_sum_is_a_zero_padded_box_convolution(k, h, w):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    ones = torch.ones(3, 1, k, k, dtype=torch.float64)
    ref = F.conv2d(x, ones, padding=k // 2, groups=3)
    torch.testing.assert_close(box_sum(x, k), ref, rtol=0, atol=1e-9)


def scene(size: int, person: tuple[int, int]):
    """A red square person (rows/cols person[0]:person[1]) on green, its exact guide."""
    image = torch.tensor(GREEN).view(1, 3, 1, 1).repeat(1, 1, size, size)
    a, b = person
    image[..., a:b, a:b] = torch.tensor(RED).view(1, 3, 1, 1)
    guide = torch.zeros(1, 1, size, size)
    guide[..., a:b, a:b] = 1
    return image, guide


def test_a_hole_punched_deep_inside_the_person_goes_back_to_the_guide():
    image, guide = scene(400, (20, 380))
    alpha = guide.clone()
    alpha[..., 190:210, 190:210] = 0.0  # 170 px from the edge: no background within the box, and red anyway
    assert torch.equal(far_flip_evidence(image, guide, alpha), guide)


def test_a_hole_in_the_persons_colour_is_refused_even_with_background_in_view():
    image, guide = scene(160, (20, 140))
    alpha = guide.clone()
    alpha[..., 76:84, 76:84] = 0.0  # 56 px from the edge, background within the box, but the pixel is red
    assert torch.equal(far_flip_evidence(image, guide, alpha), guide)


def test_a_false_blob_that_looks_like_the_background_may_go():
    image, guide = scene(400, (20, 150))
    guide[..., 280:320, 280:320] = 1  # the guide includes a green patch far from the person
    alpha = guide.clone()
    alpha[..., 280:320, 280:320] = 0.0  # the model removes it
    out = far_flip_evidence(image, guide, alpha)
    far = dilate(boundary_ring(guide) > 0, NEAR_PX) == 0
    assert torch.equal(out[far], alpha[far])  # every far pixel of the removal stays
    assert torch.equal(out, alpha)  # and the rest is the model's (the patch's ring: its own, untouched)


def test_an_addition_in_the_backgrounds_colour_is_refused_but_one_in_the_persons_is_kept():
    image, guide = scene(300, (20, 120))
    image[..., 60:100, 135:160] = torch.tensor(RED).view(1, 3, 1, 1)  # a red arm the guide missed, 15 px out
    alpha = guide.clone()
    alpha[..., 60:100, 135:160] = 1.0  # the model adds the arm
    alpha[..., 140:170, 40:80] = 1.0  # and a green patch 20 px below the person
    alpha[..., 240:280, 240:280] = 1.0  # and a red-free patch with no person anywhere near
    image[..., 240:280, 240:280] = torch.tensor(RED).view(1, 3, 1, 1)  # red, but no person within the box
    out = far_flip_evidence(image, guide, alpha)
    assert torch.equal(out[..., 60:100, 135:160], alpha[..., 60:100, 135:160])
    assert torch.equal(out[..., 140:170, 40:80], guide[..., 140:170, 40:80])
    assert torch.equal(out[..., 240:280, 240:280], guide[..., 240:280, 240:280])


def test_soft_far_changes_that_do_not_flip_go_back_and_near_changes_are_untouched():
    image, guide = scene(200, (30, 170))
    alpha = guide.clone()
    alpha[..., 95:105, 95:105] = 0.7  # far, on the guide's side: no flip, no evidence asked, not allowed
    alpha[..., 28:33, 60:140] = 0.4  # at the top edge: the output rule's, not this module's
    out = far_flip_evidence(image, guide, alpha)
    assert torch.equal(out[..., 95:105, 95:105], guide[..., 95:105, 95:105])
    assert torch.equal(out[..., 28:33, 60:140], alpha[..., 28:33, 60:140])


def test_nothing_far_changed_returns_the_alpha_itself():
    image, guide = scene(64, (10, 50))
    alpha = guide.clone()
    alpha[..., 9:11, 20:40] = 0.5
    assert far_flip_evidence(image, guide, alpha) is alpha


@dataclasses.dataclass
class StubOutput:
    alpha: torch.Tensor
    accurate: torch.Tensor
    refined: torch.Tensor | None = None
    gate_logit: torch.Tensor | None = None


class HolePuncher(torch.nn.Module):
    """A refiner that punches a hole deep inside the guide and softens its top edge: what the coarse rule did to
    real photographs."""

    def forward(self, image, guide, guide_accurate=None):
        alpha = guide.clone()
        alpha[..., 40:56, 40:56] = 0.0
        alpha[..., 15:18, 30:60] = 0.6
        return StubOutput(alpha, torch.zeros(guide.shape[0], dtype=torch.bool), alpha)


def test_the_predictor_applies_it_and_only_ever_moves_pixels_back_to_the_guide():
    image, guide = scene(96, (16, 80))
    image = (image + 0.2 * torch.rand(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    on = Predictor(HolePuncher(), coarse_band=False)(image, guide)  # the coarse band: its own tests
    off = Predictor(HolePuncher(), far_evidence=False, coarse_band=False)(image, guide)
    differ = on.alpha != off.alpha
    assert differ.sum() == 16 * 16  # the hole, refused
    assert torch.equal(on.alpha[differ], guide[differ])
    assert torch.equal(on.dense.alpha, on.alpha)
    near = dilate(boundary_ring(guide) > 0, NEAR_PX) > 0
    assert torch.equal(on.alpha[near], off.alpha[near]) and (off.alpha[near] != guide[near]).any()
    np.testing.assert_array_equal(on.alpha.numpy(), far_flip_evidence(image, guide, off.alpha).numpy())


# ------------------------------------------------------------------------------------------ the ring's colour line
def _line_alpha_by_loops(image: np.ndarray, guide: np.ndarray, window: int, inner: int, separation: float):
    """colour_line_alpha for one frame, pixel by pixel: the side means over the box of core pixels."""
    h, w = guide.shape
    inside = guide >= 0.5
    ring = np.zeros_like(inside)
    for y in range(h):
        for x in range(w):
            nb = inside[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            ring[y, x] = nb.any() and (~nb).any()
    core = np.ones_like(inside)
    r_out = inner - 2
    for y, x in zip(*np.nonzero(ring)):
        core[max(0, y - r_out):y + r_out + 1, max(0, x - r_out):x + r_out + 1] = False
    alpha, valid, r = np.zeros((h, w)), np.zeros((h, w), bool), window // 2
    for y in range(h):
        for x in range(w):
            box = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            fg_px = image[box][(inside & core)[box]]
            bg_px = image[box][(~inside & core)[box]]
            if len(fg_px) == 0 or len(bg_px) == 0:
                continue
            line = fg_px.mean(0) - bg_px.mean(0)
            alpha[y, x] = np.clip((image[y, x] - bg_px.mean(0)) @ line / max(line @ line, 1e-8), 0, 1)
            valid[y, x] = line @ line >= separation ** 2
    return alpha, valid


def test_colour_line_alpha_matches_a_pixel_by_pixel_computation():
    rng = np.random.default_rng(0)
    image = rng.random((20, 24, 3))
    guide = np.zeros((20, 24), np.float32)
    guide[4:15, 6:20] = 1
    got_a, got_v = colour_line_alpha(torch.from_numpy(image).permute(2, 0, 1)[None],
                                     torch.from_numpy(guide)[None, None],
                                     window=7, inner=3, separation=0.3)
    ref_a, ref_v = _line_alpha_by_loops(image, guide, 7, 3, 0.3)
    np.testing.assert_array_equal(got_v[0, 0].numpy(), ref_v)
    assert ref_v.any() and not ref_v.all()
    np.testing.assert_allclose(got_a[0, 0].numpy()[ref_v], ref_a[ref_v], atol=1e-5)


OPEN = torch.full((1, 1, 64, 64), 2.0)  # a gate logit that leans open (0.88) everywhere


def soft_edge_scene(fg=RED, bg=GREEN, size: int = 64, soft: tuple = (0.8, 0.6, 0.4, 0.2)):
    """A person filling the left half, its truth falling over columns 30-33 (``soft``; all 1 or 0: a hard edge),
    the image their composite, and the truth's accurate guide. The guide's ring: columns 31 (inside) and 32."""
    truth = torch.zeros(1, 1, size, size)
    truth[..., :30] = 1
    for j, a in enumerate(soft):
        truth[..., 30 + j] = a
    f, b = torch.tensor(fg).view(1, 3, 1, 1), torch.tensor(bg).view(1, 3, 1, 1)
    image = truth * f + (1 - truth) * b
    return image, (truth >= 0.5).float(), truth


def test_the_ring_takes_a_refinement_the_colours_support_and_nothing_else_changes():
    image, guide, truth = soft_edge_scene()
    refined = truth.clone()
    refined[..., 10:20, 10:20] = 0.0  # a hole far inside: never the ring's business
    gated = guide.clone()  # the gate kept the ring shut
    out = ring_colour_evidence(image, guide, refined, OPEN, gated, torch.tensor([True]), sampled=False)
    ring = boundary_ring(guide) > 0
    assert torch.equal(ring[0, 0, 0].nonzero().flatten(), torch.tensor([31, 32]))
    assert torch.equal(out[~ring], guide[~ring])
    torch.testing.assert_close(out[ring], truth[ring])  # 0.6 inside, 0.4 outside: the colours' own alpha
    # a change across the guide's 0.5 is held on its side: 0.1 inside becomes 0.5, nearer 0.6 than 1 is
    across = truth.clone()
    across[..., 31] = 0.1
    out = ring_colour_evidence(image, guide, across, OPEN, gated, torch.tensor([True]), sampled=False)
    torch.testing.assert_close(out[..., 31], torch.full_like(out[..., 31], 0.5))
    # a gate that does not lean open proposes nothing: an untrained refiner (0.27) returns its guide exactly
    shut = torch.full_like(OPEN, -1.0)
    assert torch.equal(ring_colour_evidence(image, guide, truth, shut, gated, torch.tensor([True])), guide)
    half = OPEN.clone()
    half[..., :32, :] = -1.0
    out = ring_colour_evidence(image, guide, truth, half, gated, torch.tensor([True]), sampled=False)
    assert torch.equal(out[..., :32, :], guide[..., :32, :])
    assert torch.equal(out[..., 32:, 31:33], truth[..., 32:, 31:33])
    # a frame with the coarse rule is left alone
    assert ring_colour_evidence(image, guide, refined, OPEN, gated, torch.tensor([False])) is gated


def test_softening_a_hard_edge_the_colours_call_solid_is_refused_even_where_the_gate_opened():
    image, guide, truth = soft_edge_scene(soft=(1.0, 1.0, 0.0, 0.0))
    refined = truth.clone()
    refined[..., 31], refined[..., 32] = 0.7, 0.3  # the colour line says 1 and 0 there
    gated = guide.clone()
    gated[..., :8, 31] = 0.7  # the gate opened here: the colour line overrules it
    gated[..., 20:30, 10] = 0.3  # off the ring: not the line's business
    out = ring_colour_evidence(image, guide, refined, OPEN, gated, torch.tensor([True]))
    ring = boundary_ring(guide) > 0
    assert torch.equal(out[ring], guide[ring]) and torch.equal(out[~ring], gated[~ring])


def test_sides_of_one_colour_say_nothing_and_the_gate_alone_decides():
    image, guide, truth = soft_edge_scene(fg=(0.5, 0.3, 0.3), bg=(0.5, 0.32, 0.3))  # 0.02 apart
    gated = guide.clone()
    gated[..., 29:31] = 0.9
    out = ring_colour_evidence(image, guide, truth, OPEN, gated, torch.tensor([True]))
    assert torch.equal(out, gated)


class RingStub(torch.nn.Module):
    """A refiner whose gate stays shut (alpha = guide) while its refinement is the soft truth of the scene."""

    def __init__(self, truth):
        super().__init__()
        self.truth = truth

    def forward(self, image, guide, guide_accurate=None):
        accurate = torch.full((guide.shape[0],), bool(guide_accurate), dtype=torch.bool)
        return StubOutput(guide.clone(), accurate, self.truth.clone(), torch.full_like(guide, 2.0))


def test_the_predictor_applies_the_ring_rule_to_accurate_ruled_frames_only():
    image, guide, truth = soft_edge_scene()
    told = Predictor(RingStub(truth), guide_quality="accurate", ring_samples=False)(image, guide)
    ring = boundary_ring(guide) > 0
    torch.testing.assert_close(told.alpha[ring], truth[ring])
    assert torch.equal(told.dense.alpha, told.alpha)
    off = Predictor(RingStub(truth), guide_quality="accurate", ring_evidence=False)(image, guide)
    assert torch.equal(off.alpha, guide)
    coarse = Predictor(RingStub(truth), guide_quality="coarse", coarse_band=False)(image, guide)
    assert torch.equal(coarse.alpha, guide)


# ------------------------------------------------------------------------------------------ the image's call
def test_ring_agreement_is_the_share_of_judged_ring_pixels_on_the_guides_side():
    rng = np.random.default_rng(1)
    image = rng.random((20, 24, 3))
    guide = np.zeros((20, 24), np.float32)
    guide[4:15, 6:20] = 1
    line_alpha, valid = _line_alpha_by_loops(image, guide, 31, 3, 0.1)
    ring = (boundary_ring(torch.from_numpy(guide)[None, None]) > 0)[0, 0].numpy() & valid
    ref = ((line_alpha >= 0.5) == (guide >= 0.5))[ring].mean()
    got = ring_agreement(torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(guide)[None, None])
    assert got.shape == (1,) and got.item() == pytest.approx(ref, abs=1e-6)


def test_an_accurate_guide_agrees_with_the_image_and_a_grown_one_does_not():
    image, guide, _ = soft_edge_scene()
    grown = torch.zeros_like(guide)
    grown[..., :36] = 1  # 4 px too far out: its ring runs through the green background
    both = ring_agreement(torch.cat([image, image]), torch.cat([guide, grown]))
    assert both[0] == 1.0 and both[1] < 0.6 <= GUIDE_AGREEMENT
    flat, _, _ = soft_edge_scene(fg=GREEN, bg=GREEN)
    assert ring_agreement(flat, guide).item() == 0.0  # the colours say nothing: no vote


class TrustStub(torch.nn.Module):
    """A refiner whose trust head calls every guide coarse (``calls_accurate``: accurate); told, it uses the rule it
    is told. Its coarse rule softens the whole ring to 0.5, its accurate rule leaves the guide."""

    def __init__(self, calls_accurate: bool = False):
        super().__init__()
        self.calls_accurate = calls_accurate

    def forward(self, image, guide, guide_accurate=None):
        call = self.calls_accurate if guide_accurate is None else bool(guide_accurate)
        accurate = torch.full((guide.shape[0],), call, dtype=torch.bool)
        alpha = guide.clone()
        ring = boundary_ring(guide) > 0
        coarse = (~accurate).view(-1, 1, 1, 1) & ring
        alpha[coarse] = 0.5
        return StubOutput(alpha, accurate, guide.clone(), torch.full_like(guide, -1.0))


def test_auto_gives_the_accurate_rule_to_a_guide_the_image_agrees_with_frame_by_frame():
    image, guide, _ = soft_edge_scene()
    grown = torch.zeros_like(guide)
    grown[..., :36] = 1
    # the gated ring (its gate is shut) and no coarse band: the accurate rule leaves the guide, the stub's coarse
    # rule softens the ring, so the rule each frame got shows
    batch = Predictor(TrustStub(), ring_gate=True, coarse_band=False)(torch.cat([image, image]),
                                                                      torch.cat([guide, grown]))
    assert batch.accurate.tolist() == [True, False]
    assert torch.equal(batch.alpha[0], guide[0]) and (batch.alpha[1] == 0.5).any()
    one = [Predictor(TrustStub(), ring_gate=True, coarse_band=False)(image, g) for g in (guide, grown)]
    assert torch.equal(batch.alpha, torch.cat([p.alpha for p in one]))
    assert torch.equal(batch.dense.alpha, batch.alpha) and batch.dense.refined.shape == batch.alpha.shape
    off = Predictor(TrustStub(), guide_check=False)(image, guide)
    assert off.accurate.tolist() == [False]  # the trust head's own call
    # the other way: a trust head that calls every guide accurate does not save a guide the image disagrees with
    trusting = TrustStub(calls_accurate=True)
    assert Predictor(trusting, guide_check=False)(image, grown).accurate.tolist() == [True]
    assert Predictor(trusting)(image, grown).accurate.tolist() == [False]
    told = Predictor(TrustStub(), guide_quality="coarse")(image, guide)
    assert told.accurate.tolist() == [False]  # a rule the user chose is never overridden


def test_a_mixed_batch_through_a_real_refiner_is_its_frames_one_by_one():
    from model.refiner import build_refiner

    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    image, guide, _ = soft_edge_scene()
    grown = torch.zeros_like(guide)
    grown[..., :36] = 1
    predictor = Predictor(model)
    batch = predictor(torch.cat([image, image]), torch.cat([guide, grown]))
    one = [predictor(image, g) for g in (guide, grown)]
    assert batch.accurate[0] and batch.accurate.tolist()[0] == one[0].accurate.item()
    torch.testing.assert_close(batch.alpha, torch.cat([p.alpha for p in one]))
    torch.testing.assert_close(batch.dense.focus_map, torch.cat([p.dense.focus_map for p in one]))
    assert batch.dense.alpha_os[8].shape[0] == 2


def test_an_untrained_refiner_still_returns_its_guide_exactly_and_the_proposal_follows_the_config():
    """The gate starts at 0.27: with the gated ring (``ring_gate``, the ablation's evaluations) it proposes
    nothing to the colour line, so an untrained refiner's output is its guide bit for bit (how the ablation tells a
    variant that never left its guide). The default ungated ring takes the local samples whatever the gate: the
    ring pixels change to the samples' alpha held on the guide's side, and nothing else does."""
    from model.evidence import RING_PROPOSAL, ring_proposal
    from model.refiner import build_refiner

    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    image, guide, truth = soft_edge_scene(soft=(1.0, 0.6, 0.4, 0.0))  # pure samples 2 px from the boundary
    ring = boundary_ring(guide) > 0
    for quality in ("auto", "accurate"):
        assert torch.equal(Predictor(model, guide_quality=quality, ring_gate=True)(image, guide).alpha, guide)
        ungated = Predictor(model, guide_quality=quality)(image, guide).alpha
        assert torch.equal(ungated[~ring], guide[~ring])
        torch.testing.assert_close(ungated[ring], truth[ring])  # 0.6 inside, 0.4 outside: the samples' alpha
    assert ring_proposal(model) == RING_PROPOSAL == 0.5
    assert ring_proposal(build_refiner("light", base_channels=8, accurate_gate_threshold=0.2)) == 0.2
    assert ring_proposal(torch.nn.Identity()) == RING_PROPOSAL


# ------------------------------------------------------------------------------------ the ring's local samples
def _sampled_by_loops(image, guide, known_px, reach, separation):
    """ring_sampled_alpha pixel by pixel: the nearest known pixel of each side (brute force, L2) to the ring pixel
    and its 8 neighbours ``reach`` px off, the best of the 81 pairs by the colour's distance to the pair's line."""
    h, w = guide.shape
    inside = guide >= 0.5
    dist_in = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    dist_out = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    known = [np.argwhere(dist_in >= known_px), np.argwhere(dist_out >= known_px)]
    ring = (boundary_ring(torch.from_numpy(guide)[None, None]) > 0)[0, 0].numpy()
    alpha, valid = np.zeros((h, w)), np.zeros((h, w), bool)
    for y, x in np.argwhere(ring):
        sides = []
        for pts in known:
            cand = []
            for dy in (-reach, 0, reach):
                for dx in (-reach, 0, reach):
                    q = np.array([min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)])
                    d = ((pts - q) ** 2).sum(1)
                    cand.append(image[tuple(pts[np.argmin(d)])])
            sides.append(cand)
        best = None
        for f in sides[0]:
            for b in sides[1]:
                line = f - b
                if line @ line < separation ** 2:
                    continue
                a = float(np.clip((image[y, x] - b) @ line / (line @ line), 0, 1))
                miss = float(((image[y, x] - b - a * line) ** 2).sum())
                if best is None or miss < best[0]:
                    best = (miss, a)
        if best is not None:
            alpha[y, x], valid[y, x] = best[1], True
    return alpha, valid


def test_ring_sampled_alpha_matches_a_pixel_by_pixel_computation():
    """Against brute force on a textured frame whose nearest samples are unique (distinct distances): the same
    alpha and validity at every ring pixel, nothing elsewhere."""
    from model.evidence import RING_SEPARATION, SAMPLE_KNOWN_PX, SAMPLE_REACH, ring_sampled_alpha

    rng = np.random.default_rng(3)
    image = rng.random((26, 30, 3)).astype(np.float32)
    guide = np.zeros((26, 30), np.float32)
    guide[6:19, 8:23] = 1
    guide[10:14, 23:25] = 1  # a bump: the ring is not a rectangle
    got_a, got_v = ring_sampled_alpha(torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(guide)[None, None])
    ref_a, ref_v = _sampled_by_loops(image, guide, SAMPLE_KNOWN_PX, SAMPLE_REACH, RING_SEPARATION)
    assert ref_v.sum() > 40
    agree = (got_v[0, 0].numpy() == ref_v)
    # ties between equidistant samples may pick another of them: allow a few pixels to differ, no more
    close = np.isclose(got_a[0, 0].numpy(), ref_a, atol=1e-5)
    assert agree.mean() > 0.97 and (close & agree).mean() > 0.9
    ring = (boundary_ring(torch.from_numpy(guide)[None, None]) > 0)[0, 0].numpy()
    assert not got_v[0, 0].numpy()[~ring].any() and (got_a[0, 0].numpy()[~ring] == 0).all()


def test_the_ring_takes_the_local_samples_alpha_where_the_gate_leans_open():
    """A soft edge only in the ring (its samples pure): the ring gets the truth whatever the refinement says,
    held on the guide's side; a shut gate gives the guide exactly; one-colour sides leave the gate's call."""
    image, guide, truth = soft_edge_scene(soft=(1.0, 0.6, 0.4, 0.0))
    ring = boundary_ring(guide) > 0
    wrong = torch.full_like(truth, 0.05)  # a refinement that is wrong everywhere
    out = ring_colour_evidence(image, guide, wrong, OPEN, guide.clone(), torch.tensor([True]))
    torch.testing.assert_close(out[ring], truth[ring])
    assert torch.equal(out[~ring], guide[~ring])
    across = soft_edge_scene(soft=(1.0, 0.3, 0.7, 0.0))  # colours that say the edge lies across the guide's 0.5
    out = ring_colour_evidence(across[0], guide, wrong, OPEN, guide.clone(), torch.tensor([True]))
    torch.testing.assert_close(out[..., 31], torch.full_like(out[..., 31], 0.5))  # held on the guide's side
    shut = torch.full_like(OPEN, -1.0)
    assert torch.equal(ring_colour_evidence(image, guide, wrong, shut, guide.clone(), torch.tensor([True])), guide)
    assert torch.equal(ring_colour_evidence(image, guide, wrong, OPEN, guide.clone(), torch.tensor([False])), guide)
    flat, guide2, _ = soft_edge_scene(fg=(0.5, 0.3, 0.3), bg=(0.5, 0.32, 0.3), soft=(1.0, 0.6, 0.4, 0.0))
    gated = guide2.clone()
    gated[..., 29:31] = 0.9
    assert torch.equal(ring_colour_evidence(flat, guide2, wrong, OPEN, gated, torch.tensor([True])), gated)


def test_without_the_gate_the_ring_takes_the_samples_where_they_say_something_and_the_gate_decides_elsewhere():
    image, guide, truth = soft_edge_scene(soft=(1.0, 0.6, 0.4, 0.0))
    ring = boundary_ring(guide) > 0
    shut = torch.full_like(OPEN, -1.0)
    wrong = torch.full_like(truth, 0.05)
    out = ring_colour_evidence(image, guide, wrong, shut, guide.clone(), torch.tensor([True]), ring_gate=False)
    torch.testing.assert_close(out[ring], truth[ring])
    assert torch.equal(out[~ring], guide[~ring])
    assert torch.equal(ring_colour_evidence(image, guide, wrong, shut, guide.clone(), torch.tensor([False]),
                                            ring_gate=False), guide)  # a coarse-ruled frame: untouched
    flat, guide2, _ = soft_edge_scene(fg=(0.5, 0.3, 0.3), bg=(0.5, 0.32, 0.3), soft=(1.0, 0.6, 0.4, 0.0))
    gated = guide2.clone()
    gated[..., 29:31] = 0.9  # one colour on both sides: the samples say nothing, the gate's call stays
    assert torch.equal(ring_colour_evidence(flat, guide2, wrong, shut, gated, torch.tensor([True]),
                                            ring_gate=False), gated)


# ------------------------------------------------------------------------------------- the soft zone
def hair_scene(size: int = 64, reach: int = 6):
    """A red person over green filling columns < 30, its truth falling linearly from 0.85 at column 30 to 0 at
    column 30 + ``reach`` (soft hair spreading past the binary edge) in rows < 32, and a hard edge at column 30 in
    rows >= 32; the image their composite and the truth's accurate guide (its ring in the soft rows: columns 32
    and 33; beyond it, soft: 30, 31 inside, 34, 35 outside)."""
    truth = torch.zeros(1, 1, size, size)
    truth[..., :30] = 1
    ramp = torch.linspace(0.85, 0.0, reach + 1)
    truth[..., :32, 30:31 + reach] = ramp
    f, b = torch.tensor(RED).view(1, 3, 1, 1), torch.tensor(GREEN).view(1, 3, 1, 1)
    return truth * f + (1 - truth) * b, (truth >= 0.5).float(), truth


def test_the_soft_zone_follows_soft_structure_past_the_ring_and_stays_shut_at_a_hard_edge():
    from model.evidence import soft_zone_alpha

    image, guide, truth = hair_scene()
    ring = boundary_ring(guide) > 0
    ringed = ring_colour_evidence(image, guide, guide, OPEN, guide.clone(), torch.tensor([True]))
    out = soft_zone_alpha(image, guide, ringed, torch.tensor([True]))
    soft_rows, hard_rows = (slice(2, 30), slice(34, 62))  # away from the rows where the two meet
    err = lambda a, rows: (a - truth)[..., rows, :].abs().mean().item()  # noqa: E731
    assert err(out, soft_rows) < 0.25 * err(ringed, soft_rows)  # the ramp beyond the ring: recovered
    for cols in (slice(30, 32), slice(34, 36)):  # its samples lie 7 px away and more: pure colours, exact alphas
        torch.testing.assert_close(out[..., soft_rows, cols], truth[..., soft_rows, cols], atol=1e-4, rtol=0)
    assert torch.equal(out[..., hard_rows, :], ringed[..., hard_rows, :])  # a hard edge: nothing grows
    assert torch.equal(out[ring], ringed[ring])  # the ring is the ring rule's
    far = dilate(ring, 8) == 0
    assert torch.equal(out[far], ringed[far])


def test_the_soft_zone_needs_a_seed_and_an_accurate_ruled_frame():
    from model.evidence import soft_zone_alpha

    image, guide, truth = hair_scene()
    ringed = ring_colour_evidence(image, guide, guide, OPEN, guide.clone(), torch.tensor([True]))
    # the guide itself (an untrained refiner's gated ring): no ring pixel changed, no seed, the alpha exactly
    assert torch.equal(soft_zone_alpha(image, guide, guide.clone(), torch.tensor([True])), guide)
    assert torch.equal(soft_zone_alpha(image, guide, ringed, torch.tensor([False])), ringed)
    two = soft_zone_alpha(torch.cat([image, image]), torch.cat([guide, guide]), torch.cat([ringed, ringed]),
                          torch.tensor([True, False]))
    assert torch.equal(two[1:], ringed) and torch.equal(two[:1], soft_zone_alpha(image, guide, ringed,
                                                                                torch.tensor([True])))


def test_the_predictor_grows_the_soft_zone_only_when_asked():
    image, guide, truth = hair_scene()
    stub = RingStub(guide)
    plain = Predictor(stub, guide_quality="accurate")(image, guide).alpha
    zoned = Predictor(stub, guide_quality="accurate", soft_zone=True)(image, guide).alpha
    assert (zoned - truth).abs().sum() < 0.5 * (plain - truth).abs().sum()
    ring = boundary_ring(guide) > 0
    assert torch.equal(zoned[ring], plain[ring])


# ------------------------------------------------------------------------------------------ the coarse band
def _guided_by_windows(image: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """The guided filter from its definition: in every window (cut at the frame's edge) the ridge regression of p
    on [colour, 1] (ridge eps on the colour's weights, the mean squared error over the window's pixels), solved by
    least squares; each pixel the mean of the fits, at its colour, of the windows that hold it."""
    h, w = p.shape
    fits = {}
    for y in range(h):
        for x in range(w):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            colour, target = image[ys, xs].reshape(-1, 3), p[ys, xs].reshape(-1)
            n = len(target)
            design = np.vstack([np.hstack([colour, np.ones((n, 1))]) / np.sqrt(n),
                                np.hstack([np.sqrt(eps) * np.eye(3), np.zeros((3, 1))])])
            fits[y, x] = np.linalg.lstsq(design, np.concatenate([target / np.sqrt(n), np.zeros(3)]), rcond=None)[0]
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            held = [fits[j, i] for j in range(max(0, y - r), min(h, y + r + 1))
                    for i in range(max(0, x - r), min(w, x + r + 1))]
            out[y, x] = np.mean([f[:3] @ image[y, x] + f[3] for f in held])
    return out


@pytest.mark.parametrize("r,eps", [(1, 1e-2), (2, 3e-4)])
def test_guided_filter_matches_its_definition_window_by_window(r, eps):
    from model.evidence import guided_filter

    rng = np.random.default_rng(5)
    image = rng.random((9, 11, 3))
    p = rng.random((9, 11))
    got = guided_filter(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(p), r, eps)
    np.testing.assert_allclose(got.numpy(), _guided_by_windows(image, p, r, eps), atol=1e-9)
    linear = torch.from_numpy(image @ np.array([0.2, -0.5, 0.7]) + 0.1)  # alpha linear in the colour: kept
    np.testing.assert_allclose(guided_filter(torch.from_numpy(image).permute(2, 0, 1), linear, r, 1e-12).numpy(),
                               linear.numpy(), atol=1e-6)


def test_the_bands_filter_in_tiles_is_the_whole_frames_at_the_band():
    from model.evidence import GUIDED_RADIUS, _guided_filter_near, guided_filter

    rng = np.random.default_rng(6)
    image = torch.from_numpy(rng.random((3, 70, 90)))
    p = torch.from_numpy(rng.random((70, 90)))
    where = np.zeros((70, 90), bool)
    where[5:9, 3:60] = where[30:66, 40:44] = where[69, 89] = True  # across tile borders and at the frame's edge
    whole = guided_filter(image, p, GUIDED_RADIUS)
    tiled = _guided_filter_near(image, p, where, tile=16)
    np.testing.assert_allclose(tiled.numpy()[where], whole.numpy()[where], atol=1e-12)
    assert torch.equal(tiled[torch.from_numpy(~where)], p[torch.from_numpy(~where)])


def _head_scene(grow: int = 5, hole: bool = False):
    """A red head with a soft 4-px rim on a blue background, its coarse guide grown by ``grow`` px (and with a
    hole far inside it), and a 'refiner' that filled the hole: (image, guide, refiner's alpha, truth)."""
    yy, xx = np.mgrid[:64, :80].astype(np.float32)
    radius = np.hypot(yy - 32, xx - 40)
    truth = np.clip((20 - radius) / 4 + 0.5, 0, 1).astype(np.float32)
    fg, bg = np.array([0.9, 0.2, 0.1]), np.array([0.1, 0.3, 0.8])
    image = (truth[..., None] * fg + (1 - truth[..., None]) * bg).astype(np.float32)
    guide = (radius <= 20 + grow).astype(np.float32)
    refined = guide.copy()
    if hole:
        guide[28:36, 36:44] = 0
    t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    return torch.from_numpy(image).permute(2, 0, 1)[None], t(guide), t(refined), t(truth)


def test_the_coarse_band_takes_the_samples_alpha_near_the_edges_and_keeps_accurate_frames():
    from model.evidence import COARSE_BAND_PX, COARSE_MODEL_PX, coarse_band_alpha
    from model.masks import boundary_distance

    image, guide, refined, truth = _head_scene(hole=True)
    out = coarse_band_alpha(image, guide, refined, torch.tensor([False]))
    err = lambda a: float((a - truth).abs().mean())  # noqa: E731
    assert err(out) < 0.15 * err(guide) and err(out) < 0.15 * err(refined)
    hole = torch.zeros_like(guide, dtype=torch.bool)
    hole[..., 28:36, 36:44] = True
    assert float(out[hole].min()) > 0.95  # the refiner's structure (the hole filled), the image's values
    side = lambda a: a[0, 0].numpy().astype(np.uint8)  # noqa: E731
    far = ((boundary_distance(side(guide >= 0.5)) > COARSE_BAND_PX)
           & (boundary_distance(side(refined >= 0.5)) > COARSE_MODEL_PX) & (side(guide) == side(refined)))
    far = torch.from_numpy(far)[None, None]
    assert far.any() and torch.equal(out[far], refined[far])  # known pixels: their side, exactly
    # accurate-ruled frames, and a batch: each frame by its own rule
    assert torch.equal(coarse_band_alpha(image, guide, refined, torch.tensor([True])), refined)
    both = coarse_band_alpha(torch.cat([image, image]), torch.cat([guide, guide]), torch.cat([refined, refined]),
                             torch.tensor([True, False]))
    assert torch.equal(both[0], refined[0]) and torch.equal(both[1], out[0])
    # no known pixel of a side (the guide covers the frame): nothing to sample, the alpha as it was
    full = torch.ones_like(guide)
    assert torch.equal(coarse_band_alpha(image, full, full, torch.tensor([False])), full)


def test_the_predictor_gives_coarse_ruled_frames_the_band_and_the_ablation_can_turn_it_off():
    from model.evidence import coarse_band_alpha
    from model.refiner import build_refiner

    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    image, guide, _, truth = _head_scene()
    on = Predictor(model)(image, guide)
    off = Predictor(model, coarse_band=False)(image, guide)
    assert on.accurate.tolist() == [False]  # a guide grown 5 px: the image calls it coarse
    assert torch.equal(on.alpha, coarse_band_alpha(image, guide, off.alpha, on.accurate))
    assert torch.equal(on.dense.alpha, on.alpha)
    assert float((on.alpha - truth).abs().mean()) < 0.2 * float((off.alpha - truth).abs().mean())
    gated = Predictor(model, ring_gate=True, coarse_band=False)(image, guide)
    assert torch.equal(gated.alpha, guide)  # the ablation's evaluation: an untrained refiner returns its guide
