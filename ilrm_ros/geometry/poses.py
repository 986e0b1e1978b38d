"""Rigid/similarity transforms, quaternions and per-window pose normalisation.

The model sees every window of cameras in a *normalised frame*: the reference camera
(the first one by default) sits at the origin with identity rotation and the camera
centres are scaled so that the largest distance from the origin is 1. A
:class:`Similarity` maps that frame back to the world::

    x_world = scale * rotation @ x_norm + translation

and :func:`transform_gaussians` applies it to the Gaussians the model predicts.

Quaternions are (w, x, y, z) everywhere, as in :class:`~ilrm_ros.core.gaussians.Gaussians`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ilrm_ros.core.gaussians import Gaussians

log = logging.getLogger(__name__)

__all__ = [
    "Similarity",
    "normalize_window",
    "transform_gaussians",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "quat_multiply",
    "project_to_rotation",
]


# --------------------------------------------------------------------------- quaternions
def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b`` of (w, x, y, z) quaternions, ``(..., 4)`` broadcast."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions ``(..., 4)`` (normalised here) -> rotation matrices ``(..., 3, 3)``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ),
        dim=-1,
    )
    return R.unflatten(-1, (3, 3))


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit (w, x, y, z) quaternions ``(..., 4)`` with w >= 0.

    Uses the largest of the four candidate denominators per matrix (Shepperd), so it is
    accurate for every rotation including 180° turns.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 (up to rounding).
    sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    )
    cand = torch.stack(
        (
            torch.stack((sq[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]), -1),
            torch.stack((m[..., 2, 1] - m[..., 1, 2], sq[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]), -1),
            torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], sq[..., 2], m[..., 2, 1] + m[..., 1, 2]), -1),
            torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], sq[..., 3]), -1),
        ),
        dim=-2,
    )  # (..., 4 candidates, 4), candidate i is q * 4 q_i
    best = sq.argmax(dim=-1)
    q = torch.take_along_dim(cand, best[..., None, None].expand(*best.shape, 1, 4), dim=-2).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def project_to_rotation(M: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius) to a 3x3 matrix ``(..., 3, 3)``, via SVD with det = +1."""
    U, _, Vh = torch.linalg.svd(M)
    det = torch.linalg.det(U @ Vh)
    D = torch.ones_like(M[..., 0])
    D[..., 2] = det.sign()
    return U @ torch.diag_embed(D) @ Vh


# --------------------------------------------------------------------------- similarity
@dataclass
class Similarity:
    """``x_world = scale * rotation @ x + translation``.

    rotation: (3, 3) orthonormal, det +1; translation: (3,); scale: float > 0.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    scale: float

    @staticmethod
    def identity(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "Similarity":
        return Similarity(torch.eye(3, dtype=dtype, device=device), torch.zeros(3, dtype=dtype, device=device), 1.0)

    def matrix(self) -> torch.Tensor:
        """Homogeneous 4x4 matrix ``[[s R, t], [0, 1]]``."""
        M = torch.eye(4, dtype=self.rotation.dtype, device=self.rotation.device)
        M[:3, :3] = self.scale * self.rotation
        M[:3, 3] = self.translation
        return M

    def inverse(self) -> "Similarity":
        """The similarity mapping world back to this frame."""
        Rt = self.rotation.mT
        return Similarity(Rt.clone(), -(Rt @ self.translation) / self.scale, 1.0 / self.scale)

    def _cast(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotation.to(like), self.translation.to(like)

    def apply_points(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(..., 3)`` -> ``scale * R x + t``."""
        R, t = self._cast(x)
        return self.scale * (x @ R.mT) + t

    def apply_c2w(self, c2w: torch.Tensor) -> torch.Tensor:
        """Camera poses ``(..., 4, 4)`` -> poses of the same cameras in the target frame.

        Rotations are composed (the scale does not enter them); centres are mapped as points.
        """
        R, t = self._cast(c2w)
        out = c2w.clone()
        out[..., :3, :3] = R @ c2w[..., :3, :3]
        out[..., :3, 3] = self.scale * (c2w[..., :3, 3] @ R.mT) + t
        return out


def normalize_window(
    c2w: torch.Tensor, reference: str = "first", min_extent: float = 1e-6
) -> tuple[torch.Tensor, Similarity]:
    """Express a window of cameras relative to a reference pose, with max |t| = 1.

    c2w: (V, 4, 4) OpenCV camera-to-world in the world frame.
    reference: "first" — camera 0 becomes the identity pose (the default, as in RE10K
        training); "mean" — origin at the mean camera centre, axes the rotation nearest to
        the mean of the camera rotations.
    min_extent: degenerate-window guard (world units). If every camera centre lies
        within ``min_extent`` of the reference (e.g. a camera only rotating in place), the
        scale is unobservable: the window is only moved and rotated (scale 1, world units
        kept, max |t| < 1) instead of being magnified by 1/extent. Callers that see
        nearly static windows may raise it (e.g. 0.05 m).

    Returns ``(c2w_norm (V, 4, 4), sim)`` with ``sim.apply_c2w(c2w_norm) == c2w`` (up to
    rounding). Computed in float64, returned in the input dtype.
    """
    if c2w.ndim != 3 or c2w.shape[-2:] != (4, 4):
        raise ValueError(f"expected c2w of shape (V, 4, 4), got {tuple(c2w.shape)}")
    P = c2w.to(torch.float64)
    R_all, t_all = P[:, :3, :3], P[:, :3, 3]
    if reference == "first":
        R0, t0 = R_all[0], t_all[0]
    elif reference == "mean":
        R0, t0 = project_to_rotation(R_all.mean(dim=0)), t_all.mean(dim=0)
    else:
        raise ValueError(f"reference must be 'first' or 'mean', got {reference!r}")
    rel = (t_all - t0) @ R0  # = R0^T (t_i - t0), row-wise
    extent = float(rel.norm(dim=-1).max())
    if extent < min_extent:
        log.debug("degenerate window: camera extent %.3g < %.3g, keeping scale 1", extent, min_extent)
        scale = 1.0
    else:
        scale = extent
    sim64 = Similarity(R0, t0, scale)
    norm = sim64.inverse().apply_c2w(P)
    sim = Similarity(R0.to(c2w.dtype), t0.to(c2w.dtype), scale)
    return norm.to(c2w.dtype), sim


def transform_gaussians(g: Gaussians, sim: Similarity) -> Gaussians:
    """Map Gaussians ``(..., N, k)`` through a similarity (e.g. normalised frame -> world).

    means -> s R m + t; scales -> s * scales; quats -> q_R ⊗ q (so covariances become
    s² R Σ Rᵀ); opacities and colours are unchanged.
    """
    R, _ = sim._cast(g.means)
    q_R = rotmat_to_quat(R.to(torch.float64)).to(g.quats)
    quats = quat_multiply(q_R, g.quats)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    return Gaussians(
        means=sim.apply_points(g.means),
        quats=quats,
        scales=g.scales * sim.scale,
        opacities=g.opacities,
        colors=g.colors,
    )
