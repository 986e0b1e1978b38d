"""gsplat's rasterization constants and the knobs of the torch rasterizer.

Shared by :mod:`~ilrm_ros.render.projection`, :mod:`~ilrm_ros.render.blending` and the
gsplat call in :mod:`~ilrm_ros.render.render`, so both backends draw with the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass

EPS2D = 0.3  # px², gsplat's default low-pass dilation of the 2-D covariance
ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: weaker contributions are skipped
ALPHA_MAX = 0.999  # per-Gaussian alpha clamp
T_MIN = 1e-4  # a pixel is done before the Gaussian that would bring T to <= T_MIN
EXTENT_SIGMA = 3.33  # largest box half-extent in standard deviations
FOV_MARGIN = 0.3  # the Jacobian is evaluated at the mean clamped to (1 + margin)·FOV


@dataclass(frozen=True)
class RasterConfig:
    """Knobs of the torch rasterizer (the defaults are the benchmarked ones)."""

    tile_size: int = 8
    """Tile edge in pixels (gsplat uses 16; results do not depend on it, speed does)."""
    chunk: int = 32
    """Gaussians of each tile's list composited per step (K)."""
    max_pairs: int = 1 << 21
    """Upper bound on pixel×Gaussian pairs evaluated at once (sets peak memory)."""
    analytic_backward: bool = True
    """Use the hand-written backward of a compositing step (fast); False = autograd through
    the reference step with activation checkpointing (slower, same gradients)."""
    native: bool = True
    """Project, bin and blend with the compiled CPU kernels (``render/native.py``) for float32 CPU
    tensors where they are built; False = always the torch code (their reference twins)."""
    eps2d: float = EPS2D
    """Dilation added to the 2-D covariance diagonal (px²)."""
