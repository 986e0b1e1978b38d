"""Pure-PyTorch differentiable EWA splatting of 3D Gaussians, with gsplat's conventions.

This is the CPU renderer (gsplat has no CPU rasterizer) and the reference the CUDA path
is tested against. It follows gsplat 1.5's "classic" 3DGS rasterization in three steps:

1. **Project** (:func:`~ilrm_ros.render.projection.project`): EWA projection into every
   camera, culling, opacity-aware screen boxes.
2. **Bin** (:func:`~ilrm_ros.render.blending.bin_to_tiles`): front-to-back lists per tile.
3. **Composite** (:func:`~ilrm_ros.render.blending.composite`): batched front-to-back
   alpha blending of all tiles, with a hand-written backward.

Each step has a compiled CPU kernel (:mod:`~ilrm_ros.render.native`, used for float32 CPU
tensors where it is built) and the plain-torch code here as its reference twin; the knobs are
:class:`~ilrm_ros.render.raster_config.RasterConfig` (``native=False``: the torch code only).
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render.blending import bin_to_tiles, composite
from ilrm_ros.render.projection import project
from ilrm_ros.render.raster_config import RasterConfig

logger = logging.getLogger(__name__)


def rasterize(
    gaussians: Gaussians,
    cameras: PinholeCameras,
    background: Tensor | None = None,
    near: float = 0.01,
    far: float = 1e4,
    config: RasterConfig = RasterConfig(),
) -> tuple[Tensor, Tensor, Tensor]:
    """Render N Gaussians into C cameras; differentiable in every tensor input.

    gaussians: means (N, 3), quats (N, 4) w,x,y,z, scales (N, 3) linear, opacities (N,) in
    [0, 1], colors (N, D); cameras: viewmats (C, 4, 4) world→camera, Ks (C, 3, 3) pixels;
    background (D,) or None
    -> (colors (C, H, W, D) = Σ w_i c_i + T·background, depth (C, H, W) = Σ w_i z_i,
        alpha (C, H, W) = 1 − T), with w_i = α_i Π_{j<i} (1 − α_j).
    """
    width, height = cameras.width, cameras.height
    proj = project(gaussians, cameras, near, far, config.eps2d, config.native)
    bins = bin_to_tiles(proj, width, height, config.tile_size, config.native)
    colors = gaussians.colors
    feats = torch.cat([colors.expand(len(cameras), *colors.shape), proj.depths[..., None]], dim=-1)
    blended, trans = composite(proj, gaussians.opacities, feats, bins, width, height, config)
    rgb = blended[..., :-1]
    if background is not None:
        rgb = rgb + trans[..., None] * background.to(rgb)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("rasterized %d instances into %d tile slots", int(proj.visible.sum()), bins.ids.numel())
    return rgb, blended[..., -1], 1.0 - trans
