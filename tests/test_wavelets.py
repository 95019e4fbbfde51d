"""model.wavelets against PyWavelets (an independent implementation): subbands, inverses, odd sizes, gradients."""
import numpy as np
import pytest
import pywt
import torch

from model.wavelets import HaarDWT, HaarIDWT, WaveletDWT, WaveletIDWT, make_dwt

SIZES = [(16, 20), (15, 21), (9, 8)]


def _pywt(x: torch.Tensor, wave: str, mode: str = "symmetric"):
    ca, (ch, cv, cd) = pywt.dwt2(x.double().numpy(), wave, mode=mode, axes=(-2, -1))
    return ca, np.stack([ch, cv, cd], axis=2)


@pytest.mark.parametrize("size", SIZES)
def test_haar_equals_pywt_subband_by_subband(size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    ll, highs = HaarDWT()(x)
    ca, ref = _pywt(x, "haar")  # pywt's default mode; odd sizes extended like ours
    assert ll.shape == ca.shape and highs.shape == ref.shape == (2, 3, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)
    assert np.abs(ll.numpy() - ca).max() < 1e-5
    for band in range(3):  # cH, cV, cD in pywt's order
        assert np.abs(highs[:, :, band].numpy() - ref[:, :, band]).max() < 1e-5
    # periodization extends odd signals the same way
    ca_p, ref_p = _pywt(x, "haar", "periodization")
    assert np.abs(ll.numpy() - ca_p).max() < 1e-5 and np.abs(highs.numpy() - ref_p).max() < 1e-5


@pytest.mark.parametrize("size", SIZES)
def test_haar_inverse_reconstructs(size):
    x = torch.rand(1, 4, *size, generator=torch.Generator().manual_seed(1))
    ll, highs = HaarDWT()(x)
    y = HaarIDWT()(ll, highs, size)
    assert y.shape == x.shape and (y - x).abs().max() < 1e-5
    # without size the padded even size comes back
    assert HaarIDWT()(ll, highs).shape[-2:] == (2 * ll.shape[-2], 2 * ll.shape[-1])


def test_haar_multilevel_equals_wavedec2_and_roundtrips():
    x = torch.rand(1, 2, 37, 50, generator=torch.Generator().manual_seed(2))
    ll, highs = HaarDWT(levels=3)(x)
    ref = pywt.wavedec2(x.double().numpy(), "haar", level=3, axes=(-2, -1))  # coarsest first
    assert np.abs(ll.numpy() - ref[0]).max() < 1e-5
    for j in range(3):
        bands = ref[3 - j]
        for b in range(3):
            assert np.abs(highs[j][:, :, b].numpy() - bands[b]).max() < 1e-5
    y = HaarIDWT()(ll, highs, x.shape[-2:])
    assert y.shape == x.shape and (y - x).abs().max() < 1e-5


def test_haar_energy_preserved():
    """Orthonormal: the sum of squares is the same in both domains."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ll, highs = HaarDWT()(x)
    assert torch.allclose(x.pow(2).sum(), ll.pow(2).sum() + highs.pow(2).sum())


def test_haar_gradcheck():
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: HaarDWT()(t), (x,))
    x2 = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: HaarDWT(levels=2)(t)[1][1], (x2,))
    ll = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    hi = torch.rand(1, 2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: HaarIDWT()(a, b, (5, 7)), (ll, hi))


def test_haar_gradient_of_only_one_output():
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    HaarDWT()(x)[0].sum().backward()  # highs unused: its gradient arrives as None
    assert torch.allclose(x.grad, torch.full_like(x, 0.5))


@pytest.mark.parametrize("wave", ["db1", "db2", "db4"])
@pytest.mark.parametrize("mode", ["periodization", "zero", "symmetric"])
def test_heavy_wrapper_equals_pywt(wave, mode):
    for size in [(16, 20), (17, 23)]:
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(4))
        ll, highs = WaveletDWT(wave, mode)(x)
        ca, ref = _pywt(x, wave, mode)
        assert ll.shape == ca.shape and highs.shape == ref.shape
        assert np.abs(ll.numpy() - ca).max() < 1e-5
        assert np.abs(highs.numpy() - ref).max() < 1e-5
        y = WaveletIDWT(wave, mode)(ll, highs, size)  # growing modes: cropped back
        assert y.shape == x.shape and (y - x).abs().max() < 1e-5


def test_heavy_db1_equals_light_haar():
    x = torch.rand(1, 3, 21, 18, generator=torch.Generator().manual_seed(5))
    ll_a, h_a = HaarDWT(levels=2)(x)
    ll_b, h_b = WaveletDWT("db1", levels=2)(x)
    assert (ll_a - ll_b).abs().max() < 1e-5 and all((a - b).abs().max() < 1e-5 for a, b in zip(h_a, h_b))


def test_heavy_gradcheck_and_half_input():
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    dwt = WaveletDWT("db2")
    # the wrapper computes in float32 by design: loose tolerances for the float32 core
    assert torch.autograd.gradcheck(lambda t: dwt(t)[1], (x,), eps=1e-3, atol=1e-3, rtol=1e-3)
    dwt_h, idwt_h = make_dwt("db2")
    dwt_h, idwt_h = dwt_h.half(), idwt_h.half()  # filters must stay float32 (pytorch_wavelets fails on fp16)
    xh = torch.rand(1, 2, 8, 8).half()
    ll, highs = dwt_h(xh)
    assert ll.dtype == torch.float16 and idwt_h(ll, highs).dtype == torch.float16
    assert all(b.dtype == torch.float32 for b in dwt_h.buffers())


def test_heavy_periodization_too_small_is_an_error():
    with pytest.raises(ValueError, match="needs sizes"):
        WaveletDWT("db4")(torch.rand(1, 1, 6, 6))
