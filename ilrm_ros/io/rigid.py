"""Rigid transforms as 4x4 float64 matrices and unit quaternions (x, y, z, w); ROS-free.

:func:`transform_from_pose` is the one place where a translation + quaternion from the
outside (TF messages, service requests) becomes a matrix: it applies tf2's rule for
quaternions (norm within 0.01 of 1 is normalised, anything else — a zero quaternion
included — is rejected), so every input path treats a bad rotation the same way.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

QUATERNION_NORM_TOL = 0.01
"""tf2's tolerance for "denormalized quaternion" (|norm - 1|)."""



def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation matrix."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 0.0))
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    out = np.asarray(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions (x, y, z, w), alpha in [0, 1]."""
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


def make_transform(translation: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Translation (3,) + quaternion (x, y, z, w) -> (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q_xyzw)
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
