"""Ray intersections and surface frames of single primitives (see :mod:`.scene_geometry`
for the ids and face codes).

Rays share one origin ``o (3,)`` float64 and come as struct-of-arrays directions
``d = (dx, dy, dz)`` of M rays (un-normalised; ``t`` is in units of the direction).
"""
from __future__ import annotations

import math

import numpy as np

from .scene_geometry import NUM_ENCLOSURE_FACES, Hit, SceneGeometry, Vec

_EPS_DIR = 1e-12


def _inv(d: np.ndarray) -> np.ndarray:
    """1/d with exact zeros replaced by a tiny positive value (keeps slab tests NaN-free)."""
    return 1.0 / np.where(d == 0.0, d.dtype.type(_EPS_DIR), d)


def _argmin3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index (int8) of the smallest of three arrays, first on ties."""
    return np.where((a <= b) & (a <= c), 0, np.where(b <= c, 1, 2)).astype(np.int8)


# --------------------------------------------------------------------------- per primitive
# Each takes the shared origin o (3,) float64, directions d = (dx, dy, dz) of M rays and one
# primitive's parameters, and returns the nearest hit t (M,) (inf for none) and a face code.
def intersect_enclosure(lo: np.ndarray, hi: np.ndarray, o: np.ndarray, d: Vec):
    """Exit point of rays starting inside the box [lo, hi]: t (R,), face (R,) = 2*axis + side."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = [np.where(dk == 0, np.inf, np.where(dk > 0, hi[k] - o[k], lo[k] - o[k]).astype(dk.dtype) / dk)
              for k, dk in enumerate(d)]
    axis = _argmin3(*ts)
    t = np.minimum(np.minimum(ts[0], ts[1]), ts[2])
    positive = np.where(axis == 0, d[0] > 0, np.where(axis == 1, d[1] > 0, d[2] > 0))
    return t, (2 * axis + positive).astype(np.int8)


def _box(o, d: Vec, center, half, yaw, t_min):
    c, s = math.cos(yaw), math.sin(yaw)
    rx, ry, rz = (float(v) for v in (o - center))
    ol = (c * rx + s * ry, -s * rx + c * ry, rz)
    dl = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])
    tmins, tmaxs = [], []
    for k in range(3):
        inv = _inv(dl[k])
        t1 = (-float(half[k]) - ol[k]) * inv
        t2 = (float(half[k]) - ol[k]) * inv
        tmins.append(np.minimum(t1, t2))
        tmaxs.append(np.maximum(t1, t2))
    tnear = np.maximum(np.maximum(tmins[0], tmins[1]), tmins[2])
    tfar = np.minimum(np.minimum(tmaxs[0], tmaxs[1]), tmaxs[2])
    axis = _argmin3(-tmins[0], -tmins[1], -tmins[2])  # the slab entered last
    d_axis = np.where(axis == 0, dl[0], np.where(axis == 1, dl[1], dl[2]))
    ok = (tnear <= tfar) & (tnear > t_min)
    return np.where(ok, tnear, np.inf), (2 * axis + (d_axis < 0)).astype(np.int8)  # side 1: + face


def _cylinder(o, d: Vec, xy, radius, z01, t_min):
    ox, oy, oz = float(o[0] - xy[0]), float(o[1] - xy[1]), float(o[2])
    radius = float(radius)
    z0, z1 = float(z01[0]), float(z01[1])
    dx, dy, dz = d
    a = dx * dx + dy * dy
    b = dx * ox + dy * oy
    disc = b * b - a * (ox * ox + oy * oy - radius * radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
    z = oz + t_side * dz
    ok = (disc >= 0) & (a > 0) & (t_side > t_min) & (z >= z0) & (z <= z1)
    best = np.where(ok, t_side, np.inf)
    face = np.zeros(dx.shape[0], dtype=np.int8)
    inv_dz = _inv(dz)
    for code, zc in ((1, z1), (2, z0)):
        tc = (zc - oz) * inv_dz
        px, py = ox + tc * dx, oy + tc * dy
        better = (tc > t_min) & (px * px + py * py <= radius * radius) & (tc < best)
        best = np.where(better, tc, best)
        face[better] = code
    return best, face


def _sphere(o, d: Vec, center, radius, t_min):
    ox, oy, oz = (float(v) for v in (o - center))
    dx, dy, dz = d
    a = dx * dx + dy * dy + dz * dz
    b = dx * ox + dy * oy + dz * oz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - float(radius) ** 2)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > t_min), t, np.inf), np.zeros(dx.shape[0], dtype=np.int8)


def intersect_primitive(geo: SceneGeometry, gid: int, o: np.ndarray, d: Vec, t_min: float):
    """Nearest hit ``t (M,)`` (inf for none) and face code ``(M,)`` of solid ``gid`` (not the enclosure)."""
    if gid < geo.first_cylinder:
        i = gid - geo.first_box
        return _box(o, d, geo.box_center[i], geo.box_half[i], geo.box_yaw[i], t_min)
    if gid < geo.first_sphere:
        i = gid - geo.first_cylinder
        return _cylinder(o, d, geo.cyl_xy[i], geo.cyl_radius[i], geo.cyl_z[i], t_min)
    i = gid - geo.first_sphere
    return _sphere(o, d, geo.sph_center[i], geo.sph_radius[i], t_min)


def group_by_primitive(prim: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``[(global id, ray indices)]`` for every primitive hit (misses, id -1, left out)."""
    order = np.argsort(prim, kind="stable")
    ids, starts = np.unique(prim[order], return_index=True)
    bounds = list(starts[1:]) + [order.size]
    return [(int(g), order[s:e]) for g, s, e in zip(ids, starts, bounds) if g >= 0]


def frame_one(geo: SceneGeometry, gid: int, face: np.ndarray, p: Vec) -> tuple[Vec, tuple[np.ndarray, np.ndarray]]:
    """Unit normals ``(nx, ny, nz)`` (into free space) and texture coordinates ``(u, v)`` in
    metres on primitive ``gid`` at hit points ``p = (x, y, z)`` (each ``(M,)``)."""
    x, y, z = p
    zero = np.zeros_like(x)
    if gid < NUM_ENCLOSURE_FACES:
        axis, side = gid // 2, gid % 2
        n = [zero, zero, zero]
        n[axis] = np.full_like(x, -1.0 if side else 1.0)  # inward
        uv = {0: (y, z), 1: (x, z), 2: (x, y)}[axis]
        return (n[0], n[1], n[2]), uv
    if gid < geo.first_cylinder:
        i = gid - geo.first_box
        c, s = math.cos(geo.box_yaw[i]), math.sin(geo.box_yaw[i])
        cx, cy, cz = (float(v) for v in geo.box_center[i])
        rx, ry = x - cx, y - cy
        lx, ly, lz = c * rx + s * ry, -s * rx + c * ry, z - cz
        axis = face // 2
        sign = np.where(face % 2 == 1, 1.0, -1.0).astype(x.dtype)
        nlx = np.where(axis == 0, sign, 0.0).astype(x.dtype)
        nly = np.where(axis == 1, sign, 0.0).astype(x.dtype)
        nlz = np.where(axis == 2, sign, 0.0).astype(x.dtype)
        n = (c * nlx - s * nly, s * nlx + c * nly, nlz)
        u = np.where(axis == 0, ly, lx)
        v = np.where(axis == 2, ly, lz)
        return n, (u, v)
    if gid < geo.first_sphere:
        i = gid - geo.first_cylinder
        rad = float(geo.cyl_radius[i])
        rx, ry = x - float(geo.cyl_xy[i, 0]), y - float(geo.cyl_xy[i, 1])
        side = face == 0
        n = (np.where(side, rx / rad, 0.0).astype(x.dtype), np.where(side, ry / rad, 0.0).astype(x.dtype),
             np.where(face == 1, 1.0, np.where(face == 2, -1.0, 0.0)).astype(x.dtype))
        u = np.where(side, np.arctan2(ry, rx) * rad, rx)
        v = np.where(side, z, ry)
        return n, (u, v)
    i = gid - geo.first_sphere
    rad = float(geo.sph_radius[i])
    cx, cy, cz = (float(q) for q in geo.sph_center[i])
    nx, ny, nz = (x - cx) / rad, (y - cy) / rad, (z - cz) / rad
    return (nx, ny, nz), (np.arctan2(ny, nx) * rad, np.arcsin(np.clip(nz, -1.0, 1.0)) * rad)


def surface_frame(geo: SceneGeometry, hit: Hit, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``(R, 3)`` (pointing into free space) and texture coordinates ``(R, 2)``
    in metres on the surface, at hit ``points`` ``(R, 3)``. Misses get zeros."""
    normal = np.zeros_like(points)
    uv = np.zeros((points.shape[0], 2), dtype=points.dtype)
    for gid, idx in group_by_primitive(hit.prim):
        p = points[idx]
        n, (u, v) = frame_one(geo, gid, hit.face[idx], (p[:, 0], p[:, 1], p[:, 2]))
        normal[idx] = np.stack(n, axis=1)
        uv[idx] = np.stack([u, v], axis=1)
    return normal, uv
