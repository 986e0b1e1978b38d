"""Rigid transforms as 4x4 float64 matrices from translations + quaternions (x, y, z, w); ROS-free.

The quaternion maths itself is in :mod:`ilrm_ros.core.rotations`.

:func:`transform_from_pose` is the one place where a translation + quaternion from the
outside (TF messages, service requests) becomes a matrix: it applies tf2's rule for
quaternions (norm within 0.01 of 1 is normalised, anything else — a zero quaternion
included — is rejected), so every input path treats a bad rotation the same way.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ilrm_ros.core.rotations import quat_xyzw_to_matrix

QUATERNION_NORM_TOL = 0.01
"""tf2's tolerance for "denormalized quaternion" (|norm - 1|)."""


def make_transform(translation: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Translation (3,) + quaternion (x, y, z, w) -> (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_matrix(q_xyzw)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def rigid_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) + translation (3,) -> (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def transform_from_pose(translation: Iterable[float], quaternion_xyzw: Iterable[float], what: str = "pose") -> np.ndarray:
    """Translation (3,) + quaternion (x, y, z, w) from outside -> (4, 4) rigid transform.

    Raises ValueError (naming ``what``) on a wrong shape, NaN/inf, or a quaternion whose
    norm is more than 0.01 from 1 (a zero quaternion is not the identity); a slightly
    un-normalised quaternion is normalised.
    """
    return make_transform(*checked_pose(translation, quaternion_xyzw, what))


def checked_pose(translation: Iterable[float], quaternion_xyzw: Iterable[float],
                 what: str = "pose") -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(t (3,), unit q (4,))`` float64 (see :func:`transform_from_pose`)."""
    t = np.asarray(list(translation), dtype=np.float64)
    q = np.asarray(list(quaternion_xyzw), dtype=np.float64)
    if t.shape != (3,) or q.shape != (4,):
        raise ValueError(f"{what}: translation must be (3,) and quaternion (4,), got {t.shape} {q.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise ValueError(f"{what}: non-finite translation {t.tolist()} or rotation {q.tolist()}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOL:
        raise ValueError(f"{what}: quaternion {q.tolist()} is not unit (norm {norm:.4f})")
    return t, q / norm
