"""Pose and path geometry of camera trajectories (world z up, REP 103; OpenCV cameras):
body-frame angles to a camera-to-world pose, Catmull-Rom splines, arc-length resampling
and the clearance of a ground robot's column."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ilrm_ros.core.rotations import R_BODY_OPTICAL, rot_x, rot_y, rot_z

ClearanceFn = Callable[[np.ndarray], np.ndarray]
"""points (P, 3) -> distance to the nearest surface (P,), positive in free space."""


def body_to_camera_c2w(position: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """OpenCV c2w ``(4, 4)`` of a camera at ``position`` whose body frame (x forward, z up)
    has the given yaw (about z), pitch (about y, positive = looking down) and roll."""
    c2w = np.eye(4)
    c2w[:3, :3] = rot_z(yaw) @ rot_y(pitch) @ rot_x(roll) @ R_BODY_OPTICAL
    c2w[:3, 3] = position
    return c2w


def smooth_wave(rng: np.random.Generator, t: np.ndarray, amplitude: float, freq: tuple[float, float]) -> np.ndarray:
    """Sum of two random sinusoids, ``(len(t),)``, peak at most ``amplitude``."""
    out = np.zeros_like(t)
    for _ in range(2):
        f = rng.uniform(*freq)
        out += 0.5 * amplitude * np.sin(2.0 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


def catmull_rom(points: np.ndarray, samples_per_segment: int, closed: bool) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``points`` ``(K, D)`` -> dense samples ``(M, D)``.

    Open splines duplicate the end points; closed ones wrap and end at the start point.
    """
    p = np.asarray(points, dtype=np.float64)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]], axis=0)
        nseg = p.shape[0]
    else:
        ext = np.concatenate([p[:1], p, p[-1:]], axis=0)
        nseg = p.shape[0] - 1
    s = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)
    s2, s3 = s * s, s * s * s
    out = []
    for i in range(nseg):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        seg = 0.5 * (
            (2 * p1)[None]
            + (-p0 + p2)[None] * s[:, None]
            + (2 * p0 - 5 * p1 + 4 * p2 - p3)[None] * s2[:, None]
            + (-p0 + 3 * p1 - 3 * p2 + p3)[None] * s3[:, None]
        )
        out.append(seg)
    out.append((p[0] if closed else p[-1])[None])
    return np.concatenate(out, axis=0)


def resample_by_arclength(path: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Points ``(N, D)`` at the given arc-length ``distances`` ``(N,)`` along a dense ``path``."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return np.stack([np.interp(distances, cum, path[:, k]) for k in range(path.shape[1])], axis=1)


def path_length(path: np.ndarray) -> float:
    """Length of a polyline ``(M, D)``."""
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def yaw_along(path: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Unwrapped yaw ``(N,)`` of the tangent of a dense ``path`` ``(M, >=2)`` at arc lengths ``distances``."""
    d = np.empty_like(path[:, :2])
    d[1:-1] = path[2:, :2] - path[:-2, :2]
    d[0] = path[1, :2] - path[0, :2]
    d[-1] = path[-1, :2] - path[-2, :2]
    yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return np.interp(distances, cum, yaw)


def column_clearance(clearance: ClearanceFn, xy: np.ndarray, height: float) -> np.ndarray:
    """Clearance ``(P,)`` of vertical columns from just above the floor up to ``height`` at ``xy`` ``(P, 2)``.

    The clearance function given here should ignore floor and ceiling.
    """
    zs = np.linspace(0.05, height, 4)
    pts = np.concatenate([np.column_stack([xy, np.full(len(xy), z)]) for z in zs], axis=0)
    return clearance(pts).reshape(len(zs), len(xy)).min(axis=0)


def frame_times(n: int, dt: float) -> np.ndarray:
    """Times ``(n,)`` seconds of frames every ``dt`` from 0."""
    return np.arange(n, dtype=np.float64) * dt
