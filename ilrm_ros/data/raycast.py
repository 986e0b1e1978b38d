"""Exact analytic ray casting of simple indoor scenes (vectorised numpy): the scene
(:class:`~.scene_geometry.SceneGeometry`) is cast against nearest solid first, each solid
only for the rays inside its projected bounds (:mod:`.primitives` intersects one solid).

Rays share one origin (the camera centre, or a point light for shadow rays) and have
un-normalised directions; the returned ray parameter ``t`` is in units of the
direction, so with camera directions whose optical-axis component is 1 (``K^-1 [u, v, 1]``
rotated to the world) ``t`` *is* the z-depth. Pixel ``(u, v)`` is sampled at its centre
``(u + 0.5, v + 0.5)`` in pixel coordinates (the gsplat / nerfstudio convention).
"""
from __future__ import annotations

import math

import numpy as np

from .primitives import intersect_enclosure, intersect_primitive
from .scene_geometry import NUM_ENCLOSURE_FACES, Hit, SceneGeometry, Vec, bounding_spheres, solid_corners, split


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
        t, face = intersect_enclosure(geo.room_lo, geo.room_hi, o, d)
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
            th, fh = intersect_primitive(geo, gid, o, (d[0][rays], d[1][rays], d[2][rays]), t_min)
            better = th < limit[rays]
            sel = rays[better]
            t[sel] = th[better]
            limit[sel] = -np.inf if any_hit else th[better]
            prim[sel] = gid
            face[sel] = fh[better]
    return Hit(t=t, prim=prim, face=face)


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
