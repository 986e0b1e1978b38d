"""LPIPS detection and the training loss (PSNR / SSIM: test/render/test_render_metrics.py)."""

import pytest
import torch

from ilrm_ros.train.losses import LossConfig, reconstruction_loss
from ilrm_ros.render.metrics import ssim
from ilrm_ros.train.metrics import load_lpips


def test_lpips_is_reported_unavailable_without_local_weights():
    # No lpips package / weights on this machine: the loader must say so, not download.
    try:
        import lpips  # noqa: F401
        pytest.skip("lpips is installed here")
    except ImportError:
        assert load_lpips() is None


def test_loss_is_zero_for_a_perfect_prediction_and_grows_with_error():
    x = torch.rand(2, 3, 16, 16)
    cfg = LossConfig(ssim_weight=0.3)
    assert reconstruction_loss(x, x, cfg).total.item() == pytest.approx(0.0, abs=1e-5)
    small = reconstruction_loss(x + 0.05, x, cfg)
    big = reconstruction_loss(x + 0.2, x, cfg)
    assert big.total.item() > small.total.item() > 0
    assert small.mse.item() == pytest.approx(0.05**2, rel=1e-3)


def test_loss_ssim_term_is_weighted_by_lambda():
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    a = reconstruction_loss(x, y, LossConfig(ssim_weight=0.0))
    b = reconstruction_loss(x, y, LossConfig(ssim_weight=0.5))
    assert (b.total - a.total).item() == pytest.approx(0.5 * (1 - ssim(x, y).item()), rel=1e-4)
