"""Step 1 of the torch rasterizer: EWA projection of 3D Gaussians into pinhole cameras.

World → camera with ``viewmats``; pinhole projection with pixel ``Ks`` (a pixel's centre
is at ``(j + 0.5, i + 0.5)``); 3-D covariance ``R S Sᵀ Rᵀ`` from the (normalised)
quaternion and linear scales; 2-D covariance ``J Σ_cam Jᵀ`` with the Jacobian evaluated
at the mean clamped to 1.3× the field of view; gsplat's low-pass dilation ``+ eps2d·I``
(eps2d = 0.3 px²); conic = inverse. Culled: depth ≤ near or ≥ far, opacity ≤ 1/255,
boxes off the image. The box half-extent is ``ceil(k·sqrt(Σ2d_ii))`` with the
opacity-aware ``k = min(3.33, sqrt(2·ln(255·opacity)))``, so every pixel where
α ≥ 1/255 lies inside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.rotations import quat_to_rotmat
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render import native
from ilrm_ros.render.raster_config import ALPHA_MIN, EPS2D, EXTENT_SIGMA, FOV_MARGIN


@dataclass
class Projection:
    """Gaussians seen from C cameras (N Gaussians each).

    means2d: (C, N, 2) pixel coordinates of the means.
    conics:  (C, N, 3) inverse dilated 2-D covariance (a, b, c) = [[a, b], [b, c]].
    depths:  (C, N)    camera-space z.
    radii:   (C, N, 2) int64 box half-extents in pixels (0 where culled).
    visible: (C, N)    bool, survives all culling.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    visible: Tensor


def _native_ok(g: Gaussians, cameras: PinholeCameras) -> bool:
    tensors = (g.means, g.quats, g.scales, g.opacities)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 - (t is g.opacities)
                for t in tensors)
            and not cameras.viewmats.requires_grad and not cameras.Ks.requires_grad and native.load() is not None)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances ``R S Sᵀ Rᵀ``: quats (N, 4), linear scales (N, 3) -> (N, 3, 3)."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project(
    gaussians: Gaussians,
    cameras: PinholeCameras,
    near: float = 0.01,
    far: float = 1e4,
    eps2d: float = EPS2D,
    use_native: bool = True,
) -> Projection:
    """EWA projection of N Gaussians into C pinhole cameras (see the module docstring).

    gaussians: means (N, 3), quats (N, 4) w,x,y,z, scales (N, 3) linear, opacities (N,) in
    [0, 1] (colours unused); cameras: viewmats (C, 4, 4) world→camera (OpenCV), Ks (C, 3, 3) pixels.
    With ``use_native``, float32 CPU tensors and cameras without gradients, the compiled kernel
    (``render/native.py``) computes it; the torch code below is its reference twin.
    """
    means, quats, scales, opacities = gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities
    if use_native and _native_ok(gaussians, cameras):
        means2d, conics, depths, radii, visible = native.project_native(means, quats, scales, opacities, cameras,
                                                                        (near, far, eps2d))
        return Projection(means2d=means2d, conics=conics, depths=depths, radii=radii, visible=visible)
    viewmats, Ks, width, height = cameras.viewmats, cameras.Ks, cameras.width, cameras.height
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # (C, N, 3)
    # Σ = M Mᵀ with M = R S; in camera axes M_c = R_view M (one GEMM for all Gaussians and cameras)
    m_cam = torch.einsum("cij,njk->cnik", rot, quat_to_rotmat(quats) * scales[..., None, :])  # (C, N, 3, 3)

    x, y, z = means_c.unbind(-1)
    in_range = (z > near) & (z < far)
    z = torch.where(in_range, z, torch.ones_like(z))  # keeps culled entries finite (and their grads)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FOV_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FOV_MARGIN * 0.5 * height / fy
    tx = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)
    ty = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)
    # Jacobian rows J0 = (fx/z, 0, -fx·tx/z²), J1 = (0, fy/z, -fy·ty/z²); Σ2d = (J M_c)(J M_c)ᵀ
    row0 = (fx / z)[..., None] * m_cam[..., 0, :] - (fx * tx / (z * z))[..., None] * m_cam[..., 2, :]
    row1 = (fy / z)[..., None] * m_cam[..., 1, :] - (fy * ty / (z * z))[..., None] * m_cam[..., 2, :]
    a = (row0 * row0).sum(-1) + eps2d  # dilated 2-D covariance [[a, b], [b, c]]
    c = (row1 * row1).sum(-1) + eps2d
    b = (row0 * row1).sum(-1)
    det = a * c - b * b
    ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach().expand_as(z)
        extent = torch.sqrt(2.0 * torch.log((op / ALPHA_MIN).clamp_min(1.0))).clamp_max(EXTENT_SIGMA)
        radii = torch.stack(
            [torch.ceil(extent * a.clamp_min(0).sqrt()), torch.ceil(extent * c.clamp_min(0).sqrt())], dim=-1
        )
        mx, my = means2d[..., 0], means2d[..., 1]
        rx, ry = radii[..., 0], radii[..., 1]
        on_image = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        visible = in_range & ok_det & (rx > 0) & (ry > 0) & on_image
        radii = torch.where(visible[..., None], radii, torch.zeros_like(radii)).long()
    return Projection(means2d=means2d, conics=conics, depths=means_c[..., 2], radii=radii, visible=visible)
