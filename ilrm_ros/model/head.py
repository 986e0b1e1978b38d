"""The Gaussian head's activations: raw per-pixel outputs -> Gaussians placed along their pixel rays."""
from __future__ import annotations

from typing import Any

import torch

from ilrm_ros.core.gaussians import SH_C0, Gaussians

__all__ = ["activate_offsets", "activate_gaussians"]


def activate_offsets(raw_offsets: torch.Tensor) -> torch.Tensor:
    """Raw offset outputs ``(..., 2)`` -> pixel offsets ``(..., 2)`` in viewpoint-grid pixels, in (-0.5, 0.5)."""
    return torch.sigmoid(raw_offsets) - 0.5


def activate_gaussians(
    raw: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    cfg: Any,
    base_rgb: torch.Tensor | None = None,
) -> tuple[Gaussians, torch.Tensor | None]:
    """Raw head outputs -> activated Gaussians placed along their pixel rays.

    raw: (..., C) per viewpoint-grid pixel, in the order [offset(2)] xyz(3) colour(3)
    scale(3) rotation(4) opacity(1). origins, directions: (..., 3) ray of each Gaussian
    (unit directions; already through the offset pixel when offsets are predicted).
    cfg: the model's ``ILRMConfig`` (predict_offset, max_depth, scale/opacity biases, color_residual).
    base_rgb: (..., 3) input colour of each Gaussian's cell, used when ``cfg.color_residual``.
    Returns the Gaussians (fields shaped like ``raw[..., :k]``) and, if predicted, the
    activated offsets (..., 2) in grid pixels (else None).
    """
    i = 0
    offset = None
    if cfg.predict_offset:
        offset = activate_offsets(raw[..., 0:2])
        i = 2
    xyz, rgb, scale, rot, opa = raw[..., i : i + 3], raw[..., i + 3 : i + 6], raw[..., i + 6 : i + 9], raw[..., i + 9 : i + 13], raw[..., i + 13]
    distance = torch.sigmoid(xyz.mean(dim=-1, keepdim=True)) * cfg.max_depth
    means = origins + directions * distance
    scales = torch.exp(torch.clamp(scale + cfg.scale_bias, max=cfg.scale_max_log))
    opacities = torch.sigmoid(opa + cfg.opacity_bias)
    quats = rot / rot.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    if cfg.color_residual:
        if base_rgb is None:
            raise ValueError("color_residual needs the input colours (base_rgb)")
        colors = torch.clamp(base_rgb.to(rgb.dtype) + SH_C0 * rgb, 0.0, 1.0)
    else:
        # Degree-0 SH as the authors activate it, but also clamped at 1 (they clamp at 0 only and let
        # the renderer saturate): Gaussians carry colours in [0, 1] everywhere in this package.
        colors = torch.clamp(0.5 + SH_C0 * rgb, 0.0, 1.0)
    return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors), offset
