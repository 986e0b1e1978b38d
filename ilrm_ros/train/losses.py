"""Training loss: MSE + λ·(1 − SSIM), plus optional perceptual (LPIPS) and depth terms.

The depth term (``TrainConfig.depth_weight``, :func:`depth_loss`) is for generated scenes,
whose exact depth is known: the mean |log d_rendered − log d_true| over the target pixels that have a true depth and a
rendered opacity above ``DEPTH_MIN_ALPHA``. Photometric loss alone teaches a small model on
a CPU budget colours long before geometry; the map's occupancy grid is built from exactly
this rendered depth."""
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


DEPTH_MIN_ALPHA = 0.05
"""Pixels whose rendered opacity is below this carry no depth to compare."""


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


def depth_loss(depth: torch.Tensor, alpha: torch.Tensor, true_depth: torch.Tensor) -> torch.Tensor:
    """Mean |log(depth / alpha) − log(true)| over pixels with true > 0 and alpha > DEPTH_MIN_ALPHA.

    depth: (..., H, W) accumulated rendered z (``RenderOutput.depth``); alpha: (..., H, W);
    true_depth: (..., H, W) z in the same units, 0 = invalid. 0 when no pixel qualifies.
    """
    valid = (true_depth > 0) & (alpha.detach() > DEPTH_MIN_ALPHA)
    if not bool(valid.any()):
        return depth.sum() * 0.0
    expected = depth[valid].float() / alpha[valid].float()
    return (expected.clamp_min(1e-4).log() - true_depth[valid].float().log()).abs().mean()
