"""Render 3D Gaussians: gsplat on CUDA, the pure-PyTorch rasterizer everywhere else.

Both backends share gsplat's conventions: ``viewmats`` world→camera (OpenCV: x right,
y down, z forward), pixel intrinsics ``Ks`` (a pixel's centre is at ``(j + 0.5, i + 0.5)``),
quaternions w,x,y,z, linear scales, opacities in [0, 1], colours as plain RGB (no SH),
0.3 px² low-pass dilation, α = min(0.999, o·exp(−σ)) with α < 1/255 skipped.

Depth: ``RenderOutput.depth`` is the *accumulated* camera-z ``Σ_i w_i z_i`` with the
compositing weights ``w_i = α_i Π_{j<i}(1 − α_j)`` — it is **not** divided by the
accumulated opacity, so it fades to 0 where nothing is drawn. The expected depth of the
visible surface is ``depth / alpha`` (:func:`normalized_depth`, :meth:`RenderOutput.expected_depth`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render.raster_config import EPS2D, RasterConfig
from ilrm_ros.render.torch_rasterizer import rasterize

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gsplat", "torch")


@dataclass
class RenderOutput:
    """Rendered views.

    rgb:   (C, H, W, 3) colour, background blended in as ``rgb + (1 − alpha)·background``.
    depth: (C, H, W)    accumulated camera z ``Σ w_i z_i`` (not normalised by alpha).
    alpha: (C, H, W)    accumulated opacity ``1 − T``.
    """

    rgb: Tensor
    depth: Tensor
    alpha: Tensor

    def expected_depth(self, eps: float = 1e-6) -> Tensor:
        """Depth of the visible surface ``depth / alpha`` (0 where alpha ≤ eps): (C, H, W)."""
        return normalized_depth(self.depth, self.alpha, eps)

    def surface_depth(self, min_alpha: float) -> Tensor:
        """``depth / alpha`` where alpha > min_alpha, NaN elsewhere (nothing hit; REP 118): (C, H, W)."""
        return torch.where(self.alpha > min_alpha, self.expected_depth(min_alpha),
                           torch.full_like(self.depth, float("nan")))


def normalized_depth(depth: Tensor, alpha: Tensor, eps: float = 1e-6) -> Tensor:
    """``depth / alpha`` where alpha > eps, else 0: accumulated → expected depth, (C, H, W)."""
    return torch.where(alpha > eps, depth / alpha.clamp_min(eps), torch.zeros_like(depth))


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Pick the rasterizer: gsplat for float32 CUDA tensors when it imports, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError(f"the gsplat backend needs CUDA tensors (gsplat has no CPU rasterizer); got {device}")
        if dtype != torch.float32:
            raise ValueError(f"the gsplat backend needs float32 tensors, got {dtype}")
        return "gsplat"
    if backend == "torch" or device.type != "cuda" or dtype != torch.float32:
        return "torch"
    try:
        import gsplat  # noqa: F401  (lazy: importing it is slow and CUDA-only in use)
    except ImportError as exc:
        logger.warning("gsplat unavailable (%s); rendering CUDA tensors with the torch rasterizer", exc)
        return "torch"
    return "gsplat"


def _check_shapes(g: Gaussians, cameras: PinholeCameras) -> None:
    n = g.means.shape[0]
    expected = {"means": (g.means, (n, 3)), "quats": (g.quats, (n, 4)), "scales": (g.scales, (n, 3)),
                "opacities": (g.opacities, (n,)), "colors": (g.colors, (n, 3))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    viewmats, Ks = cameras.viewmats, cameras.Ks
    c = viewmats.shape[0] if viewmats.dim() == 3 else -1
    if tuple(viewmats.shape) != (c, 4, 4) or tuple(Ks.shape) != (c, 3, 3):
        raise ValueError(f"viewmats must be (C, 4, 4) and Ks (C, 3, 3); got {tuple(viewmats.shape)}, {tuple(Ks.shape)}")


def _render_gsplat(g: Gaussians, cameras: PinholeCameras, background: Tensor | None, near: float,
                   far: float) -> RenderOutput:
    from gsplat import rasterization

    backgrounds = None if background is None else background.to(g.colors).expand(len(cameras), 3)
    rendered, alphas, _ = rasterization(
        g.means, g.quats, g.scales, g.opacities, g.colors, cameras.viewmats, cameras.Ks, cameras.width,
        cameras.height, near_plane=near, far_plane=far, eps2d=EPS2D, sh_degree=None, packed=True,
        backgrounds=backgrounds, render_mode="RGB+D",  # "+D" = Σ w z, the accumulated depth we return
    )
    return RenderOutput(rgb=rendered[..., :3], depth=rendered[..., 3], alpha=alphas[..., 0])


def render(
    gaussians: Gaussians,
    cameras: PinholeCameras,
    background: Tensor | None = None,
    near: float = 0.01,
    far: float = 1e4,
    backend: str = "auto",
    raster_config: RasterConfig | None = None,
) -> RenderOutput:
    """Render N Gaussians into C pinhole cameras; differentiable in all tensor inputs.

    gaussians: means (N, 3), quats (N, 4) w,x,y,z, scales (N, 3) linear, opacities (N,) in
    [0, 1], colors (N, 3) RGB; cameras: viewmats (C, 4, 4) world→camera, Ks (C, 3, 3) pixels;
    background (3,) or None (black) -> :class:`RenderOutput` with (C, H, W[, 3]) fields.
    Gaussians with camera z ≤ near or ≥ far are not drawn.

    backend: "auto" (gsplat for float32 CUDA tensors, torch otherwise), "gsplat" (CUDA only)
    or "torch" (any device). ``raster_config`` tunes the torch rasterizer only.
    """
    _check_shapes(gaussians, cameras)
    chosen = resolve_backend(backend, gaussians.means.device, gaussians.means.dtype)
    if chosen == "gsplat":
        return _render_gsplat(gaussians, cameras, background, near, far)
    rgb, depth, alpha = rasterize(gaussians, cameras, background=background, near=near, far=far,
                                  config=raster_config or RasterConfig())
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha)


def render_gaussians(g: Gaussians, c2w: Tensor, Ks: Tensor, width: int, height: int, **kw) -> RenderOutput:
    """Render a :class:`Gaussians` set from OpenCV camera-to-world poses.

    g fields (N, k) (leading batch dims are merged into N), c2w (C, 4, 4) or (4, 4),
    Ks (C, 3, 3) or (3, 3) pixels; ``kw`` goes to :func:`render` (background, near, far, backend...).
    """
    if g.means.dim() > 2:
        g = g.flatten()
    return render(g, PinholeCameras.from_c2w(c2w, Ks, width, height), **kw)
