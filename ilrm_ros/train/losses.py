"""Training loss: MSE + λ·(1 − SSIM), plus an optional perceptual (LPIPS) term."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ilrm_ros.render.metrics import ssim


@dataclass
class LossConfig:
    ssim_weight: float = 0.2
    """λ of the (1 − SSIM) term."""
    lpips_weight: float = 0.0
    """Weight of the LPIPS term; used only when LPIPS is available."""


@dataclass
class LossTerms:
    total: torch.Tensor
    mse: torch.Tensor
    ssim: torch.Tensor
    lpips: Optional[torch.Tensor] = None


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, cfg: LossConfig,
                        lpips_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
                        ) -> LossTerms:
    """Image reconstruction loss averaged over all images.

    pred, target: ``(..., 3, H, W)`` in [0, 1]. Computed in fp32.
    """
    p, t = pred.float(), target.float()
    mse = ((p - t) ** 2).mean()
    s = ssim(p, t).mean() if cfg.ssim_weight > 0 else torch.ones((), device=p.device)
    total = mse + cfg.ssim_weight * (1.0 - s)
    lp = None
    if lpips_fn is not None and cfg.lpips_weight > 0:
        lp = lpips_fn(p, t).mean()
        total = total + cfg.lpips_weight * lp
    return LossTerms(total=total, mse=mse.detach(), ssim=s.detach(), lpips=None if lp is None else lp.detach())
