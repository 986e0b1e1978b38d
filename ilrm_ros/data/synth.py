"""Procedural indoor scenes, camera trajectories through them, and datasets rendered
with the exact ray caster (``ilrm-ros data synth``).

A *sequence* is one random scene (a room, corridor, ring corridor or two rooms joined
by a doorway; furniture-like boxes, cylinders and spheres; procedural textures; point
lights with shadows) seen along one trajectory (ground robot, handheld/drone, or a loop
that returns to its start). Everything is drawn from ``numpy.random.Generator`` seeded
by ``(seed, index)``, so a sequence is byte-identical whatever the number of workers or
the order of generation.

On disk, one folder per sequence (``scene_00000/``) holding any of:

* ``scene.npz`` — the compact training format read by :func:`load_scene` (uint8
  images, float32 c2w/K, depth as float16 metres, int64 timestamps, names);
* ``transforms.json`` + ``images/*.png`` + ``depth/*.png`` (16-bit mm);
* ``bag/`` — a rosbag2 bag (see :mod:`ilrm_ros.io.bags`);
* ``scene.json`` — the scene description (always written; enough to re-render).

and ``index.json`` at the top (the configuration and one line per sequence).
"""
from __future__ import annotations

import argparse
import colorsys
import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .raycast import SceneGeometry, signed_distance
from .scene import DirectionalLight, PointLight, Scene, render
from .textures import Material
from .trajectories import (
    TrajectoryConfig,
    TrajectoryError,
    ground_trajectory,
    handheld_trajectory,
    loop_trajectory,
)
from ilrm_ros.io.transforms_json import PosedImages, load_transforms_json, write_transforms_json

logger = logging.getLogger(__name__)

LAYOUTS = ("room", "corridor", "ring", "two_rooms")
TRAJECTORY_CHOICES = ("ground", "handheld", "mixed", "loop")
FORMAT_CHOICES = ("npz", "transforms", "bag", "both", "all")
DEFAULT_START_NS = 1_700_000_000 * 10**9


@dataclass
class SynthConfig:
    """What one generated sequence looks like."""

    width: int = 128
    height: int = 128
    num_frames: int = 24
    trajectory: str = "mixed"
    """ground | handheld | mixed (ground or handheld, 50/50) | loop."""
    layouts: tuple[str, ...] = LAYOUTS
    hfov_deg: tuple[float, float] = (60.0, 90.0)
    """Horizontal field of view range, sampled per sequence (square pixels, centred principal point)."""
    shadows: bool = True
    max_tries: int = 20
    """Scenes drawn before giving up when no trajectory fits."""
    start_time_ns: int = DEFAULT_START_NS
    motion: TrajectoryConfig = field(default_factory=TrajectoryConfig)

    def __post_init__(self) -> None:
        if self.trajectory not in TRAJECTORY_CHOICES:
            raise ValueError(f"trajectory must be one of {TRAJECTORY_CHOICES}, got {self.trajectory!r}")
        bad = set(self.layouts) - set(LAYOUTS)
        if bad:
            raise ValueError(f"unknown layouts {sorted(bad)}; expected some of {LAYOUTS}")


# --------------------------------------------------------------------------- materials
def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.clip(c, 0.0, 1.0) ** 2.2


def random_palette(rng: np.random.Generator, light: bool = False) -> np.ndarray:
    """Three related colours ``(3, 3)`` (linear RGB): analogous, complementary or random hues."""
    h = rng.uniform()
    scheme = rng.integers(3)
    if scheme == 0:
        hues = h + rng.uniform(-0.08, 0.08, 3)
    elif scheme == 1:
        hues = h + np.array([0.0, 0.5, rng.uniform(-0.1, 0.1)])
    else:
        hues = rng.uniform(0, 1, 3)
    sat = rng.uniform(0.05, 0.75, 3) * (0.5 if light else 1.0)
    val = rng.uniform(0.55, 0.95, 3) if light else rng.uniform(0.2, 0.95, 3)
    rgb = np.array([colorsys.hsv_to_rgb(hh % 1.0, s, v) for hh, s, v in zip(hues, sat, val)])
    return _srgb_to_linear(rgb)


def random_material(rng: np.random.Generator, role: str) -> Material:
    """A random :class:`Material` suited to ``role`` in {"floor", "wall", "ceiling", "object"}."""
    choices = {
        "floor": (("tiles", 3), ("checker", 2), ("marble", 2), ("noise", 2), ("stripes", 2), ("solid", 1)),
        "wall": (("solid", 3), ("stripes", 2), ("gradient", 2), ("noise", 2), ("tiles", 1), ("marble", 1)),
        "ceiling": (("solid", 3), ("tiles", 2), ("noise", 1)),
        "object": (("solid", 2), ("checker", 2), ("stripes", 2), ("noise", 2), ("gradient", 1),
                   ("tiles", 1), ("marble", 2)),
    }[role]
    names = [c[0] for c in choices]
    w = np.array([c[1] for c in choices], dtype=np.float64)
    pattern = names[int(rng.choice(len(names), p=w / w.sum()))]
    scale = {
        "solid": 0.5, "checker": rng.uniform(0.15, 0.6), "stripes": rng.uniform(0.1, 0.5),
        "noise": rng.uniform(0.2, 1.0), "gradient": rng.uniform(0.5, 2.5), "tiles": rng.uniform(0.25, 0.8),
        "marble": rng.uniform(0.4, 1.5),
    }[pattern]
    return Material(
        pattern=pattern,
        colors=random_palette(rng, light=role == "ceiling"),
        scale=float(scale),
        angle=float(rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)], p=[0.45, 0.35, 0.2])),
        seed=int(rng.integers(0, 2**31 - 1)),
        detail=float(rng.uniform(0.05, 0.25)),
        duty=float(rng.uniform(0.3, 0.7)),
    )


# --------------------------------------------------------------------------- layouts
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


# --------------------------------------------------------------------------- sequences
def intrinsics_from_hfov(hfov_deg: float, width: int, height: int) -> np.ndarray:
    """Pixel K ``(3, 3)`` with square pixels and the principal point at the image centre."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def sequence_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sequence ``index`` of a dataset with ``seed`` (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def random_trajectory(rng: np.random.Generator, scene: Scene, kind: str, motion: TrajectoryConfig):
    """``(c2w (N, 4, 4), times (N,) s)`` of a ``kind`` trajectory in ``scene`` (may raise TrajectoryError)."""
    geo = scene.geometry
    bounds = (geo.room_lo, geo.room_hi)

    def walls(p: np.ndarray) -> np.ndarray:
        return signed_distance(geo, p, floor_and_ceiling=False)

    def full(p: np.ndarray) -> np.ndarray:
        return signed_distance(geo, p)

    if kind == "ground":
        return ground_trajectory(rng, walls, bounds, motion)
    if kind == "handheld":
        return handheld_trajectory(rng, full, bounds, motion)
    if kind == "loop":
        return loop_trajectory(rng, walls, bounds, motion, center_hint=scene.info.get("loop_center"))
    raise ValueError(f"unknown trajectory kind {kind!r}")


def synth_sequence(seed: int, index: int, cfg: SynthConfig) -> tuple[Scene, PosedImages]:
    """Scene + rendered posed frames for sequence ``index`` (deterministic in ``seed, index``).

    ``PosedImages.meta`` records layout, trajectory kind, seed, index and the number of
    scenes drawn before a trajectory fitted.
    """
    rng = sequence_rng(seed, index)
    motion = replace(cfg.motion, num_frames=cfg.num_frames)
    layouts = cfg.layouts
    if cfg.trajectory == "loop":  # loops need room to drive around; single corridors rarely allow it
        layouts = tuple(x for x in layouts if x != "corridor") or layouts
    for attempt in range(cfg.max_tries):
        kind = cfg.trajectory
        if kind == "mixed":
            kind = "ground" if rng.uniform() < 0.5 else "handheld"
        scene = random_scene(rng, layouts)
        try:
            c2w, times = random_trajectory(rng, scene, kind, motion)
        except TrajectoryError as err:
            logger.debug("sequence %d attempt %d (%s, %s): %s", index, attempt, scene.info["layout"], kind, err)
            continue
        break
    else:
        raise RuntimeError(f"sequence {index}: no valid trajectory after {cfg.max_tries} scenes")
    hfov = rng.uniform(*cfg.hfov_deg)
    # render exactly the (float32) poses and intrinsics that are stored
    c2w = c2w.astype(np.float32).astype(np.float64)
    k = intrinsics_from_hfov(hfov, cfg.width, cfg.height).astype(np.float32).astype(np.float64)
    images = np.empty((cfg.num_frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    depths = np.empty((cfg.num_frames, cfg.height, cfg.width), dtype=np.float32)
    for i in range(cfg.num_frames):
        images[i], depths[i] = render(scene, c2w[i], k, cfg.width, cfg.height, shadows=cfg.shadows)
    posed = PosedImages(
        images=images,
        c2w=c2w.astype(np.float32),
        K=np.repeat(k[None].astype(np.float32), cfg.num_frames, axis=0),
        names=[f"frame_{i:05d}" for i in range(cfg.num_frames)],
        depths=depths,
        timestamps=cfg.start_time_ns + np.rint(times * 1e9).astype(np.int64),
        meta={"layout": scene.info["layout"], "trajectory": kind, "seed": int(seed), "index": int(index),
              "scenes_drawn": attempt + 1, "hfov_deg": float(hfov)},
    )
    return scene, posed


# --------------------------------------------------------------------------- storage
def save_npz(path: str | Path, posed: PosedImages, compress: bool = True) -> Path:
    """Compact one-file format: uint8 images, float32 c2w/K, float16 depth (metres), int64 stamps."""
    path = Path(path)
    arrays = {"images": posed.images, "c2w": posed.c2w, "K": posed.K, "names": np.asarray(posed.names)}
    if posed.depths is not None:
        arrays["depths"] = np.where(np.isfinite(posed.depths), posed.depths, 0.0).astype(np.float16)
    if posed.timestamps is not None:
        arrays["timestamps"] = posed.timestamps
    arrays["meta"] = np.asarray(json.dumps(posed.meta))
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def load_npz(path: str | Path) -> PosedImages:
    with np.load(path, allow_pickle=False) as z:
        return PosedImages(
            images=z["images"],
            c2w=z["c2w"],
            K=z["K"],
            names=[str(n) for n in z["names"]],
            depths=z["depths"].astype(np.float32) if "depths" in z else None,
            timestamps=z["timestamps"] if "timestamps" in z else None,
            meta=json.loads(str(z["meta"])) if "meta" in z else {},
        )


def load_scene(path: str | Path) -> PosedImages:
    """Load a sequence from a ``.npz`` file, a ``transforms.json`` (or its folder), a rosbag2
    bag folder, or a generated ``scene_*`` folder (``scene.npz`` preferred, then
    ``transforms.json``, then ``bag/``)."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".npz":
            return load_npz(p)
        if p.suffix == ".json":
            return load_transforms_json(p)
        raise ValueError(f"don't know how to load {p}")
    if (p / "scene.npz").is_file():
        return load_npz(p / "scene.npz")
    if (p / "transforms.json").is_file():
        return load_transforms_json(p)
    from ilrm_ros.io.bags import read_bag  # rosbags only when a bag is read

    if (p / "metadata.yaml").is_file():
        return read_bag(p)
    if (p / "bag" / "metadata.yaml").is_file():
        return read_bag(p / "bag")
    raise FileNotFoundError(f"no scene.npz, transforms.json or bag in {p}")


def load_scene_description(folder: str | Path) -> Scene:
    """The :class:`Scene` of a generated sequence folder (its ``scene.json``): render it from
    any pose with :func:`ilrm_ros.data.scene.render` to get exact novel views and depth."""
    return Scene.from_dict(json.loads((Path(folder) / "scene.json").read_text())["scene"])


def _formats(fmt: str) -> set[str]:
    return {"npz": {"npz"}, "transforms": {"transforms"}, "bag": {"bag"}, "both": {"transforms", "bag"},
            "all": {"npz", "transforms", "bag"}}[fmt]


def write_sequence(out_dir: str | Path, scene: Scene, posed: PosedImages, fmt: str = "npz",
                   bag_storage: str = "mcap", bag_compressed: bool = False) -> Path:
    """Write one generated sequence into ``out_dir`` in the chosen format(s); see the module doc."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = _formats(fmt)
    (out / "scene.json").write_text(json.dumps({"meta": posed.meta, "scene": scene.to_dict()}))
    if "npz" in kinds:
        save_npz(out / "scene.npz", posed)
    if "transforms" in kinds:
        write_transforms_json(out, posed)
    if "bag" in kinds:
        from ilrm_ros.io.bags import write_bag

        bag = out / "bag"
        if bag.exists():
            raise FileExistsError(f"{bag} exists")
        write_bag(bag, posed, storage=bag_storage, compressed=bag_compressed)
    return out


# --------------------------------------------------------------------------- CLI
def _job(args: tuple) -> dict:
    out_root, index, seed, cfg, fmt, bag_storage, bag_compressed = args
    t0 = time.perf_counter()
    scene, posed = synth_sequence(seed, index, cfg)
    t1 = time.perf_counter()
    write_sequence(Path(out_root) / f"scene_{index:05d}", scene, posed, fmt, bag_storage, bag_compressed)
    return {**posed.meta, "folder": f"scene_{index:05d}", "render_s": round(t1 - t0, 4),
            "total_s": round(time.perf_counter() - t0, 4)}


def _parse_res(text: str) -> tuple[int, int]:
    if "x" in text:
        w, h = text.lower().split("x")
        return int(w), int(h)
    return int(text), int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ilrm-ros data synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scene)")
    p.add_argument("--scenes", type=int, default=10, help="number of sequences")
    p.add_argument("--frames", type=int, default=24, help="frames per sequence")
    p.add_argument("--res", default="128", help="resolution: N (square) or WxH")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-index", type=int, default=0, help="first sequence index (to extend a dataset)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="transforms",
                   help="npz (compact, fastest to load), transforms (transforms.json + PNGs), bag, "
                        "both (transforms + bag), all")
    p.add_argument("--trajectory", choices=TRAJECTORY_CHOICES, default="mixed")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {LAYOUTS}")
    p.add_argument("--frame-dt", type=float, default=TrajectoryConfig.frame_dt, help="seconds between frames")
    p.add_argument("--no-shadows", action="store_true")
    p.add_argument("--bag-storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--bag-compressed", action="store_true", help="CompressedImage (png) instead of Image")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """``ilrm-ros data synth ...``: generate a dataset; prints a one-line speed summary."""
    argv = list(argv or [])
    if argv[:1] == ["synth"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    w, h = _parse_res(args.res)
    cfg = SynthConfig(
        width=w, height=h, num_frames=args.frames, trajectory=args.trajectory,
        layouts=tuple(x.strip() for x in args.layouts.split(",") if x.strip()), shadows=not args.no_shadows,
        motion=TrajectoryConfig(frame_dt=args.frame_dt),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    indices = range(args.start_index, args.start_index + args.scenes)
    jobs = [(str(args.out), i, args.seed, cfg, args.format, args.bag_storage, args.bag_compressed) for i in indices]
    t0 = time.perf_counter()
    if args.workers <= 1:
        rows = [_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rows = list(pool.map(_job, jobs, chunksize=max(1, len(jobs) // (8 * args.workers))))
    elapsed = time.perf_counter() - t0
    index_path = args.out / "index.json"
    index = {"config": asdict(cfg), "seed": args.seed, "format": args.format, "sequences": []}
    if index_path.exists():  # extending a dataset: keep the other entries
        old = json.loads(index_path.read_text())
        keep = {r["folder"] for r in rows}
        index["sequences"] = [r for r in old.get("sequences", []) if r["folder"] not in keep]
    index["sequences"] = sorted(index["sequences"] + rows, key=lambda r: r["folder"])
    index_path.write_text(json.dumps(index, indent=1))
    frames = args.scenes * args.frames
    print(f"{'scenes':>8} {'frames':>8} {'res':>9} {'workers':>7} {'seconds':>8} {'frames/s':>9} {'scenes/min':>10}")
    print(f"{args.scenes:>8} {frames:>8} {f'{w}x{h}':>9} {args.workers:>7} {elapsed:>8.1f} "
          f"{frames / elapsed:>9.1f} {60 * args.scenes / elapsed:>10.1f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main(__import__("sys").argv[1:]))
