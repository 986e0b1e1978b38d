"""Rotations: quaternions, rotation matrices and slerp, in one place.

Two quaternion orders meet in this package; each function says which it takes:

* **(w, x, y, z)** — the torch functions, batched over leading dims. This is the order of
  :class:`~ilrm_ros.core.gaussians.Gaussians`, of gsplat / 3DGS PLY files and of
  ``transforms3d``. Used for Gaussians and the similarity transforms of window
  normalisation.
* **(x, y, z, w)** — the numpy per-pose functions of the TF path, the order of
  ``geometry_msgs/Quaternion``. They wrap ``transforms3d`` (w first) and only reorder.

Either way a quaternion ``q`` is an *active* rotation: ``quat_to_rotmat(q) @ v`` is ``v``
turned by ``q`` (``q v q*``), so (cos 45°, 0, 0, sin 45°) in (w, x, y, z) turns +x into +y.
``q`` and ``-q`` are the same rotation; the matrix → quaternion functions return w ≥ 0.

Plain numpy matrices too: the elementary rotations about x, y and z, the angle of a
rotation, and the fixed rotation between a REP 103 body frame and an optical frame.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from transforms3d.quaternions import mat2quat, quat2mat

__all__ = [
    "quat_multiply",
    "quat_left_matrix",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "project_to_rotation",
    "quat_xyzw_to_matrix",
    "matrix_to_quat_xyzw",
    "slerp",
    "rot_x",
    "rot_y",
    "rot_z",
    "rotation_angle",
    "R_BODY_OPTICAL",
]

_NORM_FLOOR = 1e-12
"""Smallest quaternion norm divided by in :func:`quat_to_rotmat` (a zero quaternion gives I)."""


# --------------------------------------------------------------------------- torch, (w, x, y, z)
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


def quat_left_matrix(a: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions ``(..., 4)`` -> ``(..., 4, 4)`` matrices L with ``L(a) b = a ⊗ b``
    (:func:`quat_multiply` as a matrix: one left factor applied to many quaternions is one matmul)."""
    w, x, y, z = a.unbind(-1)
    return torch.stack((w, -x, -y, -z,
                        x, w, -z, y,
                        y, z, w, -x,
                        z, -y, x, w), dim=-1).reshape(*a.shape[:-1], 4, 4)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions ``(..., 4)`` -> rotation matrices ``(..., 3, 3)``.

    Vectorised and differentiable. ``q`` need not be unit: it is divided by its norm
    (floored at 1e-12) first, so ``q``, ``-q`` and ``k·q`` give the same matrix.
    """
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(_NORM_FLOOR)
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
    """Nearest rotation (Frobenius) to 3x3 matrices ``(..., 3, 3)``, via SVD with det = +1."""
    U, _, Vh = torch.linalg.svd(M)
    det = torch.linalg.det(U @ Vh)
    D = torch.ones_like(M[..., 0])
    D[..., 2] = det.sign()
    return U @ torch.diag_embed(D) @ Vh


# --------------------------------------------------------------------------- numpy, (x, y, z, w), one pose
def quat_xyzw_to_matrix(q_xyzw: Iterable[float]) -> np.ndarray:
    """Quaternion (x, y, z, w) (4,) -> (3, 3) float64 rotation (``transforms3d.quaternions.quat2mat``).

    A non-unit quaternion is normalised; one of squared norm below machine epsilon gives I.
    """
    x, y, z, w = (float(v) for v in q_xyzw)
    return quat2mat((w, x, y, z))


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) (4,) float64 with w >= 0.

    ``transforms3d.quaternions.mat2quat``: the quaternion nearest to ``R`` (an eigenvector
    method), so a slightly non-orthonormal ``R`` (e.g. from float32 poses) is fine.
    """
    w, x, y, z = mat2quat(np.asarray(R, dtype=np.float64))
    return np.array([x, y, z, w], dtype=np.float64)


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions (4,), alpha in [0, 1].

    Works for either component order as long as ``q0`` and ``q1`` share it (the TF path
    uses (x, y, z, w)). Returns a unit (4,) float64 quaternion in the same order.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to ~1e-7 rad here
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    sin_theta = math.sin(theta)
    q = (math.sin((1.0 - alpha) * theta) * q0 + math.sin(alpha * theta) * q1) / sin_theta
    return q / np.linalg.norm(q)


# --------------------------------------------------------------------------- numpy, (3, 3) matrices
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Optical axes (x right, y down, z forward) in a REP 103 body frame (x forward, y left, z up)."""


def rot_x(angle: float) -> np.ndarray:
    """(3, 3) float64 active rotation by ``angle`` radians about x."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """(3, 3) float64 active rotation by ``angle`` radians about y."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """(3, 3) float64 active rotation by ``angle`` radians about z (+x turns towards +y)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_angle(R: np.ndarray) -> float:
    """Angle (radians, in [0, pi]) of a 3x3 rotation, accurate also for tiny angles."""
    R = np.asarray(R, dtype=np.float64)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return float(math.atan2(0.5 * np.linalg.norm(axis), 0.5 * (np.trace(R) - 1.0)))
