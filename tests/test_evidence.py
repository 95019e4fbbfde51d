"""model.evidence: far flips are kept only where the image supports them; everything else far comes back to the
guide bit for bit, and nothing near the guide's boundary is touched."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.evidence import NEAR_PX, box_sum, far_flip_evidence
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


class HolePuncher(torch.nn.Module):
    """A refiner that punches a hole deep inside the guide and softens its top edge: what the coarse rule did to
    real photographs."""

    def forward(self, image, guide, guide_accurate=None):
        alpha = guide.clone()
        alpha[..., 40:56, 40:56] = 0.0
        alpha[..., 15:18, 30:60] = 0.6
        return StubOutput(alpha, torch.zeros(guide.shape[0], dtype=torch.bool))


def test_the_predictor_applies_it_and_only_ever_moves_pixels_back_to_the_guide():
    image, guide = scene(96, (16, 80))
    image = (image + 0.2 * torch.rand(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    on = Predictor(HolePuncher())(image, guide)
    off = Predictor(HolePuncher(), far_evidence=False)(image, guide)
    differ = on.alpha != off.alpha
    assert differ.sum() == 16 * 16  # the hole, refused
    assert torch.equal(on.alpha[differ], guide[differ])
    assert torch.equal(on.dense.alpha, on.alpha)
    near = dilate(boundary_ring(guide) > 0, NEAR_PX) > 0
    assert torch.equal(on.alpha[near], off.alpha[near]) and (off.alpha[near] != guide[near]).any()
    np.testing.assert_array_equal(on.alpha.numpy(), far_flip_evidence(image, guide, off.alpha).numpy())
