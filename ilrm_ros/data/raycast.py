"""Exact analytic ray casting of simple indoor scenes (vectorised numpy).

World frame: z up, metres (ROS REP 103). A scene is

* an *enclosure*: the inside of an axis-aligned box ``[lo, hi]`` (floor at ``lo[2]``,
  ceiling at ``hi[2]``, four walls) that every camera stays inside;
* solid *boxes* rotated about the vertical axis (furniture, partition walls, blocks);
* solid vertical *cylinders* with flat caps (pillars, bins);
* solid *spheres*.

Every surface is identified by a global primitive id: ``0..5`` the enclosure faces
(``2 * axis + side``: 0/1 the walls at x = lo/hi, 2/3 at y = lo/hi, 4 floor, 5 ceiling),
then the boxes, cylinders and spheres in order.

Rays share one origin (the camera centre, or a point light for shadow rays) and have
un-normalised directions; the returned ray parameter ``t`` is in units of the
direction, so with camera directions whose optical-axis component is 1 (``K^-1 [u, v, 1]``
rotated to the world) ``t`` *is* the z-depth. Pixel ``(u, v)`` is sampled at its centre
``(u + 0.5, v + 0.5)`` in pixel coordinates (the gsplat / nerfstudio convention).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

NUM_ENCLOSURE_FACES = 6
_EPS_DIR = 1e-12


@dataclass
class SceneGeometry:
    """Primitive parameters, all float64 numpy arrays.

    room_lo, room_hi: (3,) enclosure corners.
    box_center (B, 3), box_half (B, 3) half extents in the box frame, box_yaw (B,) radians about +z.
    cyl_xy (C, 2) axis position, cyl_radius (C,), cyl_z (C, 2) bottom/top heights.
    sph_center (S, 3), sph_radius (S,).
    """

    room_lo: np.ndarray
    room_hi: np.ndarray
    box_center: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_half: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_yaw: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    cyl_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cyl_radius: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    cyl_z: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    sph_center: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sph_radius: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        f64 = lambda a, shape: np.asarray(a, dtype=np.float64).reshape(shape)  # noqa: E731
        self.room_lo = f64(self.room_lo, (3,))
        self.room_hi = f64(self.room_hi, (3,))
        self.box_center = f64(self.box_center, (-1, 3))
        self.box_half = f64(self.box_half, (-1, 3))
        self.box_yaw = f64(self.box_yaw, (-1,))
        self.cyl_xy = f64(self.cyl_xy, (-1, 2))
        self.cyl_radius = f64(self.cyl_radius, (-1,))
        self.cyl_z = f64(self.cyl_z, (-1, 2))
        self.sph_center = f64(self.sph_center, (-1, 3))
        self.sph_radius = f64(self.sph_radius, (-1,))

    @property
    def num_boxes(self) -> int:
        return int(self.box_center.shape[0])

    @property
    def num_cylinders(self) -> int:
        return int(self.cyl_xy.shape[0])

    @property
    def num_spheres(self) -> int:
        return int(self.sph_center.shape[0])

    @property
    def num_primitives(self) -> int:
        return NUM_ENCLOSURE_FACES + self.num_boxes + self.num_cylinders + self.num_spheres

    @property
    def first_box(self) -> int:
        return NUM_ENCLOSURE_FACES

    @property
    def first_cylinder(self) -> int:
        return NUM_ENCLOSURE_FACES + self.num_boxes

    @property
    def first_sphere(self) -> int:
        return NUM_ENCLOSURE_FACES + self.num_boxes + self.num_cylinders

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items() if not k.startswith("_")}

    @staticmethod
    def from_dict(d: dict) -> "SceneGeometry":
        return SceneGeometry(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


@dataclass
class Hit:
    """First intersections of R rays.

    t:      (R,) ray parameter (inf where nothing was hit).
    prim:   (R,) int32 global primitive id (-1 on a miss).
    face:   (R,) int8 face code within the primitive (box: 2*axis + side with side 1 = the
            face on the +axis side, in the box frame; cylinder: 0 side / 1 top / 2 bottom;
            sphere: 0; enclosure: same as the id).
    """

    t: np.ndarray
    prim: np.ndarray
    face: np.ndarray


Vec = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Struct-of-arrays 3-vectors ``(x (M,), y (M,), z (M,))``: numpy reduces tiny trailing axes
slowly, so the hot paths work on separate component arrays."""


def split(a: np.ndarray) -> Vec:
    """``(M, 3)`` -> three contiguous ``(M,)`` component arrays."""
    return np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1]), np.ascontiguousarray(a[:, 2])


def _inv(d: np.ndarray) -> np.ndarray:
    """1/d with exact zeros replaced by a tiny positive value (keeps slab tests NaN-free)."""
    return 1.0 / np.where(d == 0.0, d.dtype.type(_EPS_DIR), d)


def _argmin3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index (int8) of the smallest of three arrays, first on ties."""
    return np.where((a <= b) & (a <= c), 0, np.where(b <= c, 1, 2)).astype(np.int8)


# --------------------------------------------------------------------------- per primitive
# Each takes the shared origin o (3,) float64, directions d = (dx, dy, dz) of M rays and one
# primitive's parameters, and returns the nearest hit t (M,) (inf for none) and a face code.
def _enclosure(lo: np.ndarray, hi: np.ndarray, o: np.ndarray, d: Vec):
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


def solid_corners(geo: SceneGeometry) -> np.ndarray:
    """Corners ``(P', 8, 3)`` of a box around each solid (boxes and cylinders exactly; spheres'
    axis-aligned bounding boxes), in global-id order from ``geo.first_box``. Cached."""
    if "corners" not in geo._cache:
        out = []
        for i in range(geo.num_boxes):
            c, s = math.cos(geo.box_yaw[i]), math.sin(geo.box_yaw[i])
            loc = (2.0 * _UNIT_CORNERS - 1.0) * geo.box_half[i]
            out.append(geo.box_center[i] + np.stack(
                [c * loc[:, 0] - s * loc[:, 1], s * loc[:, 0] + c * loc[:, 1], loc[:, 2]], axis=1))
        for i in range(geo.num_cylinders):
            rad = geo.cyl_radius[i]
            lo = np.array([geo.cyl_xy[i, 0] - rad, geo.cyl_xy[i, 1] - rad, geo.cyl_z[i, 0]])
            hi = np.array([geo.cyl_xy[i, 0] + rad, geo.cyl_xy[i, 1] + rad, geo.cyl_z[i, 1]])
            out.append(lo + (hi - lo) * _UNIT_CORNERS)
        for i in range(geo.num_spheres):
            out.append(geo.sph_center[i] + (2.0 * _UNIT_CORNERS - 1.0) * geo.sph_radius[i])
        geo._cache["corners"] = np.stack(out) if out else np.zeros((0, 8, 3))
    return geo._cache["corners"]


def bounding_spheres(geo: SceneGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(P', 3)`` and radii ``(P',)`` enclosing every solid (boxes, cylinders, spheres
    in global-id order starting at ``geo.first_box``). Cached."""
    if "spheres" in geo._cache:
        return geo._cache["spheres"]
    cyl_c = np.column_stack([geo.cyl_xy, geo.cyl_z.mean(axis=1)]) if geo.num_cylinders else np.zeros((0, 3))
    cyl_r = np.hypot(geo.cyl_radius, 0.5 * (geo.cyl_z[:, 1] - geo.cyl_z[:, 0]))
    centers = np.concatenate([geo.box_center, cyl_c, geo.sph_center], axis=0)
    radii = np.concatenate([np.linalg.norm(geo.box_half, axis=1), cyl_r, geo.sph_radius])
    geo._cache["spheres"] = (centers, radii)
    return centers, radii


def _intersect_one(geo: SceneGeometry, gid: int, o: np.ndarray, d: Vec, t_min: float):
    if gid < geo.first_cylinder:
        i = gid - geo.first_box
        return _box(o, d, geo.box_center[i], geo.box_half[i], geo.box_yaw[i], t_min)
    if gid < geo.first_sphere:
        i = gid - geo.first_cylinder
        return _cylinder(o, d, geo.cyl_xy[i], geo.cyl_radius[i], geo.cyl_z[i], t_min)
    i = gid - geo.first_sphere
    return _sphere(o, d, geo.sph_center[i], geo.sph_radius[i], t_min)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _orthonormal_basis(axis: np.ndarray) -> np.ndarray:
    """Rows ``e1, e2, axis`` of a right-handed orthonormal basis around unit ``axis``."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _cross(axis, helper)
    e1 /= math.sqrt(float(e1 @ e1))
    return np.stack([e1, _cross(axis, e1), axis])


class _Projection:
    """Gnomonic projection of rays sharing an origin about their mean direction: a solid's
    projected bounding rectangle then selects the rays that can hit it. Rays more than
    ~75 degrees off the mean are always kept ("wide")."""

    def __init__(self, d: Vec) -> None:
        dx, dy, dz = d
        inv_len = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
        mean = np.array([float((dx * inv_len).sum()), float((dy * inv_len).sum()), float((dz * inv_len).sum())])
        norm = np.linalg.norm(mean)
        axis = mean / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])
        self.basis = _orthonormal_basis(axis)  # rows e1, e2, e3 = axis
        (a, b, c), (e, f, g), (h, i, j) = (tuple(float(x) for x in row) for row in self.basis)
        lz = h * dx + i * dy + j * dz
        self.wide = lz * inv_len <= 0.25
        self.any_wide = bool(self.wide.any())
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_lz = 1.0 / lz
            self.px = (a * dx + b * dy + c * dz) * inv_lz
            self.py = (e * dx + f * dy + g * dz) * inv_lz

    def select(self, rect: tuple[float, float, float, float] | None) -> np.ndarray | None:
        """Indices of rays that may hit a solid with projected ``rect = (x0, y0, x1, y1)``;
        None means all rays."""
        if rect is None:
            return None
        x0, y0, x1, y1 = rect
        m = (self.px >= x0) & (self.px <= x1) & (self.py >= y0) & (self.py <= y1)
        if self.any_wide:
            m |= self.wide
        return np.nonzero(m)[0]


def _projected_rect(geo: SceneGeometry, gid: int, o: np.ndarray, proj: _Projection):
    """Conservative bounding rectangle of solid ``gid`` in the projection ``proj``
    (None when the solid reaches behind the projection plane)."""
    margin = 1e-4
    if gid >= geo.first_sphere:
        i = gid - geo.first_sphere
        c = proj.basis @ (geo.sph_center[i] - o)
        r = geo.sph_radius[i] * (1.0 + margin) + margin
        if c[2] <= r:
            return None
        lims = []
        for k in (0, 1):  # tangents from the origin to the sphere's outline in the (e_k, e3) plane
            phi = math.atan2(c[k], c[2])
            beta = math.asin(min(r / math.hypot(c[k], c[2]), 1.0))
            lims.append((math.tan(phi - beta), math.tan(phi + beta)))
        return lims[0][0], lims[1][0], lims[0][1], lims[1][1]
    local = (solid_corners(geo)[gid - geo.first_box] - o) @ proj.basis.T
    if local[:, 2].min() <= 1e-6:
        return None
    p = local[:, :2] / local[:, 2:3]
    (x0, y0), (x1, y1) = p.min(axis=0), p.max(axis=0)
    pad = margin * (1.0 + np.abs(p).max())
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad


_UNIT_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)


# --------------------------------------------------------------------------- public
def cast_rays(
    geo: SceneGeometry,
    origin: np.ndarray,
    dirs: np.ndarray | Vec,
    *,
    t_min: float = 1e-6,
    t_max: float = np.inf,
    include_enclosure: bool = True,
    any_hit: bool = False,
) -> Hit:
    """First hit of rays ``origin + t * dirs`` (origin ``(3,)``, dirs ``(R, 3)`` or a
    component triple), ``t_min < t < t_max``. Computes in the dtype of ``dirs``
    (float32 or float64).

    The enclosure is intersected from the inside (its exit point); leave it out for shadow
    rays, since a convex room cannot occlude anything inside it. Solids are visited nearest
    first and only for rays inside their projected bounding rectangle and not yet blocked
    nearer; with ``any_hit`` a ray stops at its first hit below ``t_max`` (enough for
    shadows; ``t`` is then not necessarily the nearest).
    """
    if isinstance(dirs, tuple):
        d = dirs
    else:
        arr = np.asarray(dirs).reshape(-1, 3)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        d = split(arr)
    dtype = d[0].dtype
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    r = d[0].shape[0]
    if include_enclosure:
        t, face = _enclosure(geo.room_lo, geo.room_hi, o, d)
        t = np.where(t < t_max, t, np.inf)
        prim = np.where(np.isfinite(t), face, -1).astype(np.int32)
    else:
        t = np.full(r, np.inf, dtype=dtype)
        face = np.zeros(r, dtype=np.int8)
        prim = np.full(r, -1, dtype=np.int32)
    limit = np.minimum(t, t_max)
    n_solid = geo.num_primitives - NUM_ENCLOSURE_FACES
    if n_solid and r:
        proj = _Projection(d)
        centers, radii = bounding_spheres(geo)
        gap = np.linalg.norm(centers - o[None, :], axis=1) - radii  # origin to bounding sphere
        inv_len = None
        for j in np.argsort(gap, kind="stable"):  # nearest first: later solids get culled by depth
            gid = NUM_ENCLOSURE_FACES + int(j)
            rays = proj.select(_projected_rect(geo, gid, o, proj))
            if rays is None:
                rays = np.nonzero(limit > -np.inf)[0] if any_hit else np.arange(r)
            if gap[j] > 0 and rays.size:  # no hit can be nearer than the bounding sphere
                if inv_len is None:
                    inv_len = 1.0 / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
                rays = rays[(float(gap[j]) * inv_len[rays]) < limit[rays]]
            if rays.size == 0:
                continue
            th, fh = _intersect_one(geo, gid, o, (d[0][rays], d[1][rays], d[2][rays]), t_min)
            better = th < limit[rays]
            sel = rays[better]
            t[sel] = th[better]
            limit[sel] = -np.inf if any_hit else th[better]
            prim[sel] = gid
            face[sel] = fh[better]
    return Hit(t=t, prim=prim, face=face)


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


def signed_distance(
    geo: SceneGeometry, points: np.ndarray, *, floor_and_ceiling: bool = True
) -> np.ndarray:
    """Distance ``(P,)`` from ``points`` ``(P, 3)`` to the nearest surface, positive in free
    space (inside the room and outside every solid), negative inside a solid or outside
    the room. Exact for each primitive; the union is the minimum."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    inside = np.minimum(p - geo.room_lo, geo.room_hi - p)  # (P, 3)
    if not floor_and_ceiling:
        inside = inside[:, :2]
    dist = inside.min(axis=1)
    if geo.num_boxes:
        c, s = np.cos(geo.box_yaw), np.sin(geo.box_yaw)
        rel = p[:, None, :] - geo.box_center[None]  # (P, B, 3)
        loc = np.stack(
            [c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1], rel[..., 2]], -1
        )
        q = np.abs(loc) - geo.box_half[None]
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
        dist = np.minimum(dist, (outside + np.minimum(q.max(-1), 0.0)).min(axis=1))
    if geo.num_cylinders:
        dxy = np.linalg.norm(p[:, None, :2] - geo.cyl_xy[None], axis=-1) - geo.cyl_radius[None]
        dz = np.maximum(geo.cyl_z[None, :, 0] - p[:, None, 2], p[:, None, 2] - geo.cyl_z[None, :, 1])
        outside = np.hypot(np.maximum(dxy, 0.0), np.maximum(dz, 0.0))
        dist = np.minimum(dist, (outside + np.minimum(np.maximum(dxy, dz), 0.0)).min(axis=1))
    if geo.num_spheres:
        ds = np.linalg.norm(p[:, None, :] - geo.sph_center[None], axis=-1) - geo.sph_radius[None]
        dist = np.minimum(dist, ds.min(axis=1))
    return dist


def camera_rays(
    c2w: np.ndarray, K: np.ndarray, width: int, height: int, dtype=np.float64
) -> tuple[np.ndarray, Vec]:
    """Origin ``(3,)`` and world ray directions of an OpenCV camera as components
    ``(dx, dy, dz)``, each ``(H*W,)`` in row-major pixel order, scaled so that every
    direction's component along the optical axis is 1 (so the ray parameter is z-depth).
    Use ``np.stack(d, axis=1)`` for an ``(H*W, 3)`` array."""
    c2w = np.asarray(c2w, dtype=np.float64)
    k = np.asarray(K, dtype=np.float64)
    u = np.arange(width, dtype=np.float64) + 0.5
    v = np.arange(height, dtype=np.float64) + 0.5
    y = np.repeat((v - k[1, 2]) / k[1, 1], width)
    x = (np.tile(u, height) - k[0, 2] - k[0, 1] * y) / k[0, 0]
    rot = c2w[:3, :3]
    d = tuple((rot[i, 0] * x + rot[i, 1] * y + rot[i, 2]).astype(dtype) for i in range(3))
    return c2w[:3, 3].copy(), d


def render_depth(geo: SceneGeometry, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """z-depth ``(H, W)`` float32 in metres along the optical axis (inf where no surface)."""
    o, d = camera_rays(c2w, K, width, height)
    return cast_rays(geo, o, d).t.reshape(height, width).astype(np.float32)
