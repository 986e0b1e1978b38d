"""The Gaussian head: the decoder's output -> activated Gaussians placed along their pixel rays.

:func:`gaussians_torch` is the reference (torch ops: un-patchify the decoder's tokens onto the
viewpoint grid, activate the pixel offsets, re-aim each ray through its offset pixel, average the
input colour of each grid cell, :func:`~ilrm_ros.model.head.activate_gaussians`); it is the only
path with autograd, autocast or float64. :func:`gaussians` takes the compiled kernel
(``ilrm_ros::gaussian_head``, :mod:`ilrm_ros.model.native`) for float32 CPU inference, which
does all of it in one pass (~40 small operators fewer per forward; compared in tests).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import camera_rays, pixel_centers, pixel_to_direction, rays_through_pixels
from ilrm_ros.model import native
from ilrm_ros.model.head import activate_gaussians, activate_offsets

__all__ = ["gaussians_torch", "gaussians"]


def gaussians_torch(raw: torch.Tensor, images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                    cfg: Any) -> tuple[Gaussians, torch.Tensor | None]:
    """raw: decoder output (B, V*Nt, p*p*C) (Nt tokens of p x p viewpoint-grid cells per view); images
    (B, V, 3, H, W) in [0, 1]; c2w (B, V, 4, 4), K (B, V, 3, 3) in the geometry dtype; cfg: the
    model's ``ILRMConfig``. Returns the Gaussians (fields (B, V*h*w, k), h, w = H/f, W/f, view-major
    then row-major over the grid) and the pixel offsets (B, V, h, w, 2) or None."""
    b, v, _, H, W = images.shape
    f, p, C = cfg.viewpoint_factor, cfg.patch_size, cfg.gaussian_channels
    h, w = H // f, W // f
    raw = raw.reshape(b, v, h // p, w // p, p, p, C).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, v, h, w, C)
    with torch.autocast(device_type=images.device.type, enabled=False):
        raw = raw.to(c2w.dtype)
        origins, directions = camera_rays(c2w, K, H, W, f)   # (B, V, h, w, 3)
        if cfg.predict_offset:
            # Re-aim each Gaussian's ray through its offset pixel on the viewpoint grid.
            offset = activate_offsets(raw[..., 0:2])  # (B, V, h, w, 2) grid pixels
            uv = pixel_centers(H, W, f, device=raw.device, dtype=raw.dtype) + offset * f  # full-res pixels
            directions = rays_through_pixels(c2w, K, uv.reshape(b, v, h * w, 2)).reshape(b, v, h, w, 3)
    base_rgb = None
    if cfg.color_residual:  # (B, V, h, w, 3) mean input colour of each viewpoint-grid cell
        cells = images.flatten(0, 1) if f == 1 else F.avg_pool2d(images.flatten(0, 1), f)
        base_rgb = cells.reshape(b, v, 3, h, w).permute(0, 1, 3, 4, 2)
    g, offsets = activate_gaussians(raw, origins, directions, cfg, base_rgb)
    return Gaussians(means=g.means.reshape(b, -1, 3), quats=g.quats.reshape(b, -1, 4),
                     scales=g.scales.reshape(b, -1, 3), opacities=g.opacities.reshape(b, -1),
                     colors=g.colors.reshape(b, -1, 3)), offsets


def gaussians(raw: torch.Tensor, images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, cfg: Any,
              direction: torch.Tensor | None = None) -> tuple[Gaussians, torch.Tensor | None]:
    """:func:`gaussians_torch`'s result, from the compiled kernel where it can run (float32 CPU inference).
    ``direction``: R K^-1 (B, V, 3, 3) when the caller has it."""
    b, v, _, H, W = images.shape
    f, p, C = cfg.viewpoint_factor, cfg.patch_size, cfg.gaussian_channels
    h, w = H // f, W // f
    if not (native.inputs_ok(raw) and native.inputs_ok(images) and c2w.dtype == torch.float32
            and C == (16 if cfg.predict_offset else 14) and h % p == 0 and w % p == 0):
        return gaussians_torch(raw, images, c2w, K, cfg)
    M = direction if direction is not None else pixel_to_direction(c2w, K)
    params = [float(cfg.max_depth), float(cfg.scale_bias), float(cfg.scale_max_log), float(cfg.opacity_bias)]
    means, quats, scales, opac, colors, offsets = native.gaussian_head_op(
        raw, M, c2w[..., :3, 3], images if cfg.color_residual else None, [h, w, p, f, C], params)
    g = Gaussians(means=means.view(b, -1, 3), quats=quats.view(b, -1, 4), scales=scales.view(b, -1, 3),
                  opacities=opac.view(b, -1), colors=colors.view(b, -1, 3))
    return g, offsets.view(b, v, h, w, 2) if cfg.predict_offset else None
