"""The training step's speed changes compute what they replace: bilinear upsampling as matrix products,
channels-last convolutions and the one-reduction gradient clipping (issue "Train twice as fast")."""
import pytest
import torch
import torch.nn.functional as F

from model import layers
from model.layers import channels_last_convs, upsample_bilinear
from model.refiner import build_refiner
from pipeline.solver import clip_grad_norm


@pytest.mark.parametrize("shape,scale", [((2, 3, 16, 16), 8), ((1, 1, 17, 9), 2), ((1, 2, 1, 5), 4),
                                         ((4, 32, 16, 16), 2)])
def test_upsample_by_a_scale_is_f_interpolate_forward_and_backward(shape, scale):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape[:2], shape[2] * scale, shape[3] * scale, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=False)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    out = upsample_bilinear(x, scale, for_backward=True)
    (gx,) = torch.autograd.grad(out, x, g)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,out", [((17, 9), (33, 17)), ((3, 3), (5, 5)), ((64, 64), (128, 128))])
def test_upsample_to_a_size_is_f_interpolate(size, out):
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample_bilinear(x, size=out, for_backward=True), ref, rtol=0, atol=1e-12)


def test_upsample_is_the_kernel_itself_unless_a_backward_follows_on_a_small_map(monkeypatch):
    """Inference, validation and a model in eval mode are bit for bit the kernel's: the speed-up is for training."""
    x = torch.rand(1, 1, 8, 40, generator=torch.Generator().manual_seed(3), requires_grad=True)
    kernel = F.interpolate(x, scale_factor=8.0, mode="bilinear")
    assert torch.equal(upsample_bilinear(x, 8), kernel)  # not told a backward follows
    with torch.no_grad():
        assert torch.equal(upsample_bilinear(x, 8, for_backward=True), kernel)
    assert torch.equal(upsample_bilinear(x.detach(), 8, for_backward=True), kernel.detach())
    assert not torch.equal(upsample_bilinear(x, 8, for_backward=True), kernel)  # the matrix products (rounding)
    monkeypatch.setattr(layers, "MATMUL_UPSAMPLE_MAX", 100)  # 8x40 -> 64x320: above it
    assert torch.equal(upsample_bilinear(x, 8, for_backward=True), kernel)
    assert upsample_bilinear(x, size=(8, 40), for_backward=True) is x  # already that size


def test_a_refiner_in_eval_mode_upsamples_with_the_kernel_with_or_without_gradients():
    torch.manual_seed(0)
    model = build_refiner("none", 8).eval()  # 'none' upsamples in every Up layer too
    g = torch.Generator().manual_seed(4)
    image, guide = torch.rand(1, 3, 48, 64, generator=g), (torch.rand(1, 1, 48, 64, generator=g) > 0.5).float()
    with torch.no_grad():
        ref = _outputs(model, image, guide)
    assert torch.equal(_outputs(model, image, guide).detach(), ref)
    model.train()
    assert not torch.equal(_outputs(model, image, guide).detach(), ref)  # training: the matrix products
    torch.testing.assert_close(_outputs(model, image, guide).detach(), ref, rtol=1e-4, atol=1e-4)


def _outputs(model, image, guide):
    out = model(image, guide, guide_accurate=False)
    return torch.cat([out.alpha, out.refined, out.gate_logit, *out.logits_os.values()], 1)


def test_channels_last_convolutions_give_the_same_refiner_and_the_same_weights():
    torch.manual_seed(0)
    model = build_refiner("light", 8)
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 64, 64, generator=g)
    guide = (torch.rand(2, 1, 64, 64, generator=g) > 0.5).float()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _outputs(model, image, guide)
    handles = channels_last_convs(model)
    seen = []  # a spy registered after the layout hook sees each convolution's real input
    spy = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].is_contiguous(
        memory_format=torch.channels_last))) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    out = _outputs(model, image, guide)
    assert len(seen) >= 40 and all(seen)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    for h in handles + spy:
        h.remove()
    assert torch.equal(_outputs(model, image, guide), ref)  # removed: the NCHW model, bit for bit


def _grads(seed: int, scale: float) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((3, 4), (7,), (2, 2, 3))] + [torch.nn.Parameter(
        torch.zeros(5))]
    for p in params[:-1]:  # the last one has no gradient (a frozen head): skipped, as torch skips it
        p.grad = scale * torch.randn(p.shape, generator=g)
    return params


@pytest.mark.parametrize("scale", [10.0, 0.01])  # clipped, and left alone
def test_clip_grad_norm_is_torch_s(scale):
    ours, ref = _grads(0, scale), _grads(0, scale)
    norm = clip_grad_norm(ours, 1.0)
    norm_ref = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    torch.testing.assert_close(norm, norm_ref, rtol=1e-6, atol=0)
    for a, b in zip(ours, ref):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    assert float(clip_grad_norm([torch.nn.Parameter(torch.zeros(2))], 1.0)) == 0.0  # no gradients at all
