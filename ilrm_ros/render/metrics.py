"""Image quality metrics shared by the mapper (live map quality) and training: MSE, PSNR, SSIM.

Pure torch, no weights. Images are float RGB in [0, 1] shaped ``(..., C, H, W)``; every
metric returns one value per leading image, shape ``(...)``. (LPIPS, which needs weights,
stays with training: ``ilrm_ros/train/metrics.py``.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["SSIM_WINDOW", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2", "mse", "psnr", "psnr_from_mse",
           "gaussian_kernel1d", "ssim_map", "ssim", "ssim_window"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: ``(..., C, H, W) -> (...)``."""
    return ((pred.float() - target.float()) ** 2).flatten(-3).mean(-1)


def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``(..., C, H, W) -> (...)``.

    Identical images give ``+inf``.
    """
    err = mse(pred, target)
    return 10.0 * torch.log10(max_val**2 / err)


def psnr_from_mse(err: float, max_val: float = 1.0) -> float:
    """PSNR in dB from a scalar MSE (``inf`` for 0)."""
    return math.inf if err <= 0 else 10.0 * math.log10(max_val**2 / err)


def gaussian_kernel1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
                      device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian window, shape ``(size,)``."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _blur(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter per channel: ``(N, C, H, W) -> (N, C, H-s+1, W-s+1)``."""
    c = x.shape[1]
    kh = k1d.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = k1d.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim_map(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0,
             window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Local SSIM map (Wang et al. 2004, Gaussian window, 'valid' borders).

    pred, target: ``(N, C, H, W)``; returns ``(N, C, H-window+1, W-window+1)``.
    """
    x, y = pred.float(), target.float()
    k = gaussian_kernel1d(window, sigma, x.device, x.dtype)
    c1 = (SSIM_K1 * max_val) ** 2
    c2 = (SSIM_K2 * max_val) ** 2
    mu_x, mu_y = _blur(x, k), _blur(y, k)
    sxx = _blur(x * x, k) - mu_x**2
    syy = _blur(y * y, k) - mu_y**2
    sxy = _blur(x * y, k) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return num / den


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """The (odd) window and sigma SSIM uses for an image: 11 / 1.5, shrunk for smaller images."""
    win = min(SSIM_WINDOW, height, width)
    if win % 2 == 0:
        win -= 1
    return win, SSIM_SIGMA * win / SSIM_WINDOW


def ssim(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image: ``(..., C, H, W) -> (...)``; identical images give 1.

    Images smaller than the 11-pixel window use a window shrunk to the image size.
    """
    lead = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    win, sigma = ssim_window(h, w)
    m = ssim_map(pred.reshape(-1, c, h, w), target.reshape(-1, c, h, w), max_val, win, sigma)
    return m.flatten(1).mean(-1).reshape(lead)
