"""LPIPS, when its weights exist locally (PSNR and SSIM: :mod:`ilrm_ros.render.metrics`).

All images are float RGB in [0, 1] shaped ``(..., 3, H, W)``; every metric returns one
value per leading image, shape ``(...)``.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

log = logging.getLogger(__name__)


def load_lpips(device: str | torch.device = "cpu") -> Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Return an LPIPS function ``(pred, target) (..., 3, H, W) -> (...)`` or None.

    Needs the ``lpips`` package *and* its backbone weights already on disk; nothing is
    downloaded. None means the metric is reported as "n/a".
    """
    try:
        import lpips  # type: ignore
    except ImportError:
        log.info("lpips package not installed: LPIPS n/a")
        return None
    try:
        net = lpips.LPIPS(net="vgg", pretrained=True, verbose=False).to(device).eval()
    except Exception as exc:  # weights missing / no network
        log.info("LPIPS weights unavailable (%s): LPIPS n/a", exc)
        return None

    def fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lead = pred.shape[:-3]
        p = pred.reshape(-1, *pred.shape[-3:]) * 2 - 1
        t = target.reshape(-1, *target.shape[-3:]) * 2 - 1
        return net(p, t).reshape(lead)

    return fn

