"""Simple indoor scenes as analytic primitives (numpy float64).

World frame: z up, metres (ROS REP 103). A scene is

* an *enclosure*: the inside of an axis-aligned box ``[lo, hi]`` (floor at ``lo[2]``,
  ceiling at ``hi[2]``, four walls) that every camera stays inside;
* solid *boxes* rotated about the vertical axis (furniture, partition walls, blocks);
* solid vertical *cylinders* with flat caps (pillars, bins);
* solid *spheres*.

Every surface is identified by a global primitive id: ``0..5`` the enclosure faces
(``2 * axis + side``: 0/1 the walls at x = lo/hi, 2/3 at y = lo/hi, 4 floor, 5 ceiling),
then the boxes, cylinders and spheres in order. Here: the parameters, their bounds (for
culling in :mod:`.raycast`) and the exact signed distance to the scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NUM_ENCLOSURE_FACES = 6


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


_UNIT_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)


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
