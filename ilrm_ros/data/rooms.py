"""Random indoor scenes: a layout (room, corridor, ring corridor or two rooms joined by a
doorway), furniture-like boxes, cylinders and spheres placed without overlap, materials
and point/directional lights, all drawn from one ``numpy.random.Generator``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .materials import random_material
from .scene_geometry import SceneGeometry, signed_distance
from .scene import DirectionalLight, PointLight, Scene
from .textures import Material

LAYOUTS = ("room", "corridor", "ring", "two_rooms")


@dataclass
class _Builder:
    """Accumulates primitives (and their 2-D footprints for overlap tests) for one scene."""

    lo: np.ndarray
    hi: np.ndarray
    boxes: list = field(default_factory=list)  # (center, half, yaw, material)
    cylinders: list = field(default_factory=list)  # (xy, radius, (z0, z1), material)
    spheres: list = field(default_factory=list)  # (center, radius, material)
    footprints: list = field(default_factory=list)  # (center xy, half xy, yaw)
    tops: list = field(default_factory=list)  # (center xy, half xy, yaw, top z): surfaces to put things on

    def fits(self, center: np.ndarray, half: np.ndarray, yaw: float, gap: float = 0.05) -> bool:
        corners = _obb_corners(center, half, yaw)
        if np.any(corners < self.lo[:2] + 0.02) or np.any(corners > self.hi[:2] - 0.02):
            return False
        return not any(_obb_overlap(center, half + gap, yaw, c, h, y) for c, h, y in self.footprints)

    def add_box(self, center, half, yaw, mat, footprint=True, top=True) -> None:
        center, half = np.asarray(center, float), np.asarray(half, float)
        self.boxes.append((center, half, float(yaw), mat))
        if footprint:
            self.footprints.append((center[:2], half[:2], float(yaw)))
        if top:
            self.tops.append((center[:2], half[:2], float(yaw), float(center[2] + half[2])))

    def free_area_fraction(self) -> float:
        area = float(np.prod(self.hi[:2] - self.lo[:2]))
        used = sum(4.0 * h[0] * h[1] for _, h, _ in self.footprints)
        return 1.0 - used / area


def _obb_corners(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    r = np.array([[c, -s], [s, c]])
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
    return center[None, :] + (signs * half[None, :]) @ r.T


def _obb_overlap(c1, h1, y1, c2, h2, y2) -> bool:
    """Separating-axis test for two 2-D oriented rectangles."""
    p1, p2 = _obb_corners(np.asarray(c1), np.asarray(h1), y1), _obb_corners(np.asarray(c2), np.asarray(h2), y2)
    for yaw in (y1, y2):
        for ax in (np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])):
            a, b = p1 @ ax, p2 @ ax
            if a.max() < b.min() or b.max() < a.min():
                return False
    return True


def _layout(rng: np.random.Generator, name: str) -> tuple[_Builder, dict]:
    """Enclosure and structural solids of a layout; returns the builder and scene info."""
    info: dict = {"layout": name}
    wall_mat = random_material(rng, "wall")
    if name == "room":
        size = np.array([rng.uniform(3.0, 9.0), rng.uniform(3.0, 9.0), rng.uniform(2.4, 3.4)])
        b = _Builder(np.zeros(3), size)
    elif name == "corridor":
        length, width = rng.uniform(7.0, 16.0), rng.uniform(1.8, 3.0)
        size = np.array([length, width, rng.uniform(2.4, 3.2)])
        if rng.uniform() < 0.5:
            size[[0, 1]] = size[[1, 0]]
        b = _Builder(np.zeros(3), size)
    elif name == "ring":
        size = np.array([rng.uniform(6.0, 11.0), rng.uniform(6.0, 11.0), rng.uniform(2.4, 3.2)])
        w = rng.uniform(1.6, 2.6)
        b = _Builder(np.zeros(3), size)
        half = np.array([size[0] / 2 - w, size[1] / 2 - w, size[2] / 2])
        b.add_box(size / 2, half, 0.0, wall_mat, top=False)
        info["loop_center"] = (size[:2] / 2).tolist()
    elif name == "two_rooms":
        size = np.array([rng.uniform(6.0, 12.0), rng.uniform(3.5, 8.0), rng.uniform(2.4, 3.2)])
        b = _Builder(np.zeros(3), size)
        x = size[0] * rng.uniform(0.35, 0.65)
        th = rng.uniform(0.05, 0.1)
        door_w = rng.uniform(1.0, 1.6)
        door_y = rng.uniform(0.2 + door_w / 2, size[1] - 0.2 - door_w / 2)
        y0, y1 = door_y - door_w / 2, door_y + door_w / 2
        h2 = size[2] / 2
        b.add_box([x, y0 / 2, h2], [th, y0 / 2, h2], 0.0, wall_mat, top=False)
        b.add_box([x, (y1 + size[1]) / 2, h2], [th, (size[1] - y1) / 2, h2], 0.0, wall_mat, top=False)
        door_h = rng.uniform(2.0, min(2.3, size[2] - 0.1))
        b.add_box([x, door_y, (door_h + size[2]) / 2], [th, door_w / 2, (size[2] - door_h) / 2], 0.0,
                  wall_mat, footprint=False, top=False)
        info["doorway"] = [x, door_y]
    else:
        raise ValueError(f"unknown layout {name!r}")
    info["wall_material"] = wall_mat
    return b, info


def _furnish(rng: np.random.Generator, b: _Builder, count: int) -> None:
    """Place up to ``count`` furniture-like items without 2-D overlap, keeping >= 55 % of
    the floor free."""
    height = b.hi[2]
    for _ in range(count):
        if b.free_area_fraction() < 0.55:
            return
        kind = rng.choice(["table", "shelf", "crate", "sofa", "pillar", "bin", "ball"],
                          p=[0.18, 0.18, 0.22, 0.1, 0.1, 0.1, 0.12])
        mat = random_material(rng, "object")
        for _attempt in range(15):
            if kind in ("shelf", "sofa"):
                w = rng.uniform(0.6, 2.0) if kind == "shelf" else rng.uniform(1.4, 2.0)
                d = rng.uniform(0.3, 0.5) if kind == "shelf" else rng.uniform(0.8, 1.0)
                h = rng.uniform(0.8, min(2.2, height - 0.2)) if kind == "shelf" else rng.uniform(0.4, 0.6)
                wall = int(rng.integers(4))
                yaw = [0.0, np.pi, np.pi / 2, -np.pi / 2][wall]
                half = np.array([w / 2, d / 2])
                along = rng.uniform(0, 1)
                if wall < 2:  # walls y = lo / y = hi, item aligned with x
                    cx = b.lo[0] + w / 2 + along * max(b.hi[0] - b.lo[0] - w, 0)
                    cy = b.lo[1] + d / 2 + 0.01 if wall == 0 else b.hi[1] - d / 2 - 0.01
                else:
                    cy = b.lo[1] + w / 2 + along * max(b.hi[1] - b.lo[1] - w, 0)
                    cx = b.lo[0] + d / 2 + 0.01 if wall == 2 else b.hi[0] - d / 2 - 0.01
                center = np.array([cx, cy])
                if b.fits(center, half, yaw, gap=0.02):
                    b.add_box([cx, cy, h / 2], [half[0], half[1], h / 2], yaw, mat)
                    break
            elif kind in ("table", "crate"):
                if kind == "table":
                    half = np.array([rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.5)])
                    h = rng.uniform(0.7, 0.8)
                else:
                    half = np.full(2, rng.uniform(0.15, 0.4)) * rng.uniform(0.8, 1.2, 2)
                    h = rng.uniform(0.3, 0.8)
                yaw = float(rng.uniform(-np.pi, np.pi))
                center = rng.uniform(b.lo[:2] + 0.5, b.hi[:2] - 0.5)
                if not b.fits(center, half, yaw):
                    continue
                if kind == "table" and rng.uniform() < 0.6:  # top slab on four legs
                    top_th, leg = 0.04, 0.03
                    b.add_box([*center, h - top_th / 2], [half[0], half[1], top_th / 2], yaw, mat)
                    c, s = math.cos(yaw), math.sin(yaw)
                    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                        lx, ly = sx * (half[0] - leg - 0.02), sy * (half[1] - leg - 0.02)
                        p = center + np.array([c * lx - s * ly, s * lx + c * ly])
                        b.add_box([*p, (h - top_th) / 2], [leg, leg, (h - top_th) / 2], yaw, mat,
                                  footprint=False, top=False)
                else:
                    b.add_box([*center, h / 2], [half[0], half[1], h / 2], yaw, mat)
                    if kind == "crate" and rng.uniform() < 0.35:  # a smaller crate stacked on top
                        h2 = rng.uniform(0.2, 0.5)
                        half2 = half * rng.uniform(0.5, 0.9)
                        b.add_box([*center, h + h2 / 2], [half2[0], half2[1], h2 / 2],
                                  yaw + rng.uniform(-0.6, 0.6), random_material(rng, "object"),
                                  footprint=False)
                break
            elif kind in ("pillar", "bin"):
                r = rng.uniform(0.15, 0.35) if kind == "pillar" else rng.uniform(0.12, 0.3)
                z1 = height if kind == "pillar" else rng.uniform(0.3, 0.9)
                center = rng.uniform(b.lo[:2] + r + 0.3, b.hi[:2] - r - 0.3)
                if b.fits(center, np.full(2, r), 0.0):
                    b.cylinders.append((center, r, (0.0, z1), mat))
                    b.footprints.append((center, np.full(2, r), 0.0))
                    break
            else:  # ball: on the floor, on a top surface, or hanging
                r = rng.uniform(0.1, 0.35)
                where = rng.uniform()
                if where < 0.35 and b.tops:
                    c, half, yaw, top = b.tops[int(rng.integers(len(b.tops)))]
                    if min(half) < r * 0.7:
                        continue
                    b.spheres.append((np.array([c[0], c[1], top + r]), r, mat))
                    break
                if where < 0.55:
                    center = rng.uniform(b.lo[:2] + 0.4, b.hi[:2] - 0.4)
                    z = height - rng.uniform(0.3, 0.6) - r
                    if z > 1.9 and b.fits(center, np.full(2, r), 0.0, gap=0.0):
                        b.spheres.append((np.array([center[0], center[1], z]), min(r, 0.25), mat))
                        break
                    continue
                center = rng.uniform(b.lo[:2] + r + 0.2, b.hi[:2] - r - 0.2)
                if b.fits(center, np.full(2, r), 0.0):
                    b.spheres.append((np.array([center[0], center[1], r]), r, mat))
                    b.footprints.append((center, np.full(2, r), 0.0))
                    break


def _lights(rng: np.random.Generator, geo: SceneGeometry) -> tuple[list, list, np.ndarray]:
    lo, hi = geo.room_lo, geo.room_hi
    n = int(rng.integers(1, 3))
    points = []
    for _ in range(40):
        if len(points) == n:
            break
        p = np.array([rng.uniform(lo[0] + 0.3, hi[0] - 0.3), rng.uniform(lo[1] + 0.3, hi[1] - 0.3),
                      hi[2] - rng.uniform(0.15, 0.4)])
        if signed_distance(geo, p[None])[0] > 0.1:
            tint = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0)])
            if rng.uniform() < 0.3:
                tint = tint[::-1]
            intensity = rng.uniform(1.6, 2.6) / math.sqrt(n) * tint
            points.append(PointLight(p, intensity, float(rng.uniform(3.0, 6.0))))
    directional = []
    if rng.uniform() < 0.5 or not points:
        d = rng.normal(size=3)
        d[2] = abs(d[2]) + 0.5
        directional.append(DirectionalLight(d / np.linalg.norm(d), np.full(3, rng.uniform(0.1, 0.35))))
    ambient = rng.uniform(0.12, 0.3) * rng.uniform(0.9, 1.1, 3)
    return points, directional, ambient


def random_scene(rng: np.random.Generator, layouts: tuple[str, ...] = LAYOUTS) -> Scene:
    """Draw one scene: layout, furniture, materials and lights."""
    name = str(layouts[int(rng.integers(len(layouts)))])
    b, info = _layout(rng, name)
    wall_mat = info.pop("wall_material")
    count = {"room": rng.integers(3, 10), "corridor": rng.integers(1, 5), "ring": rng.integers(1, 6),
             "two_rooms": rng.integers(3, 9)}[name]
    _furnish(rng, b, int(count))

    materials: list[Material] = []

    def mat_id(m: Material) -> int:
        materials.append(m)
        return len(materials) - 1

    floor = mat_id(random_material(rng, "floor"))
    ceiling = mat_id(random_material(rng, "ceiling"))
    wall = mat_id(wall_mat)
    walls = [wall if rng.uniform() < 0.6 else mat_id(random_material(rng, "wall")) for _ in range(4)]
    material_of = walls + [floor, ceiling]
    material_of += [mat_id(m) for *_, m in b.boxes]
    material_of += [mat_id(m) for *_, m in b.cylinders]
    material_of += [mat_id(m) for *_, m in b.spheres]

    geo = SceneGeometry(
        room_lo=b.lo, room_hi=b.hi,
        box_center=[c for c, *_ in b.boxes] or np.zeros((0, 3)),
        box_half=[h for _, h, *_ in b.boxes] or np.zeros((0, 3)),
        box_yaw=[y for _, _, y, _ in b.boxes] or np.zeros((0,)),
        cyl_xy=[c for c, *_ in b.cylinders] or np.zeros((0, 2)),
        cyl_radius=[r for _, r, *_ in b.cylinders] or np.zeros((0,)),
        cyl_z=[z for _, _, z, _ in b.cylinders] or np.zeros((0, 2)),
        sph_center=[c for c, *_ in b.spheres] or np.zeros((0, 3)),
        sph_radius=[r for _, r, _ in b.spheres] or np.zeros((0,)),
    )
    points, directional, ambient = _lights(rng, geo)
    return Scene(geo, materials, np.asarray(material_of), points, directional, ambient, info)
