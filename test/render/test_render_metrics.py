"""Specification of ilrm_ros.render.metrics: PSNR and SSIM behave like their textbook definitions."""
import math

import pytest
import torch

from ilrm_ros.render.metrics import gaussian_kernel1d, psnr, ssim


def test_psnr_of_identical_images_is_infinite():
    x = torch.rand(2, 3, 16, 16)
    assert torch.isinf(psnr(x, x.clone())).all()


@pytest.mark.parametrize("delta", [0.01, 0.05, 0.2])
def test_psnr_matches_analytic_value_for_known_noise_level(delta):
    # ±delta noise of random sign: MSE is exactly delta², PSNR = -20 log10(delta).
    x = torch.full((1, 3, 32, 32), 0.5)
    sign = torch.randint(0, 2, x.shape).float() * 2 - 1
    got = psnr(x + delta * sign, x)
    assert got.item() == pytest.approx(-20 * math.log10(delta), abs=1e-3)


def test_psnr_of_gaussian_noise_is_close_to_analytic_value():
    x = torch.full((4, 3, 64, 64), 0.5)
    sigma = 0.1
    got = psnr(x + sigma * torch.randn_like(x), x).mean().item()
    assert got == pytest.approx(20.0, abs=0.1)


def test_psnr_keeps_leading_dims():
    assert psnr(torch.rand(2, 5, 3, 8, 8), torch.rand(2, 5, 3, 8, 8)).shape == (2, 5)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ssim(x, x.clone()), torch.ones(3), atol=1e-5)


def test_ssim_of_two_flat_images_matches_luminance_formula():
    a, b = 0.3, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # zero variance: contrast/structure term is 1
    got = ssim(torch.full((1, 3, 24, 24), b), torch.full((1, 3, 24, 24), a))
    assert got.item() == pytest.approx(expected, abs=1e-4)


def test_ssim_falls_as_noise_grows_and_is_symmetric():
    x = torch.rand(1, 3, 32, 32)
    n = torch.randn_like(x)
    s_small, s_big = ssim(x + 0.02 * n, x), ssim(x + 0.2 * n, x)
    assert 0 < s_big.item() < s_small.item() < 1
    assert ssim(x, x + 0.02 * n).item() == pytest.approx(s_small.item(), abs=1e-5)


def test_ssim_window_is_a_normalised_gaussian_with_sigma_1_5():
    w = gaussian_kernel1d()
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0)
    assert (w[6] / w[5]).item() == pytest.approx(math.exp(-1 / (2 * 1.5**2)), rel=1e-5)
