"""A renderable scene (geometry + materials + lights) and its Lambertian renderer.

Shading: ``albedo * (ambient + sum_lights intensity * max(0, n.l) * attenuation * visibility)``
in linear RGB, then clipped and encoded with a 1/2.2 gamma to uint8. Point lights cast
hard shadows (optional); directional lights are an unshadowed fill (a closed room would
otherwise block them entirely).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .primitives import frame_one
from .raycast import camera_rays, cast_rays
from .scene_geometry import SceneGeometry, Vec
from .textures import Material, albedo

logger = logging.getLogger(__name__)

GAMMA = 2.2


@dataclass
class PointLight:
    """Point light: position (3,) metres, intensity (3,) linear RGB, distance falloff (m)."""

    position: np.ndarray
    intensity: np.ndarray
    falloff: float = 4.0

    def to_dict(self) -> dict:
        return {"position": np.asarray(self.position).tolist(),
                "intensity": np.asarray(self.intensity).tolist(), "falloff": self.falloff}


@dataclass
class DirectionalLight:
    """Directional fill: unit direction (3,) *towards* the light, intensity (3,)."""

    direction: np.ndarray
    intensity: np.ndarray

    def to_dict(self) -> dict:
        return {"direction": np.asarray(self.direction).tolist(),
                "intensity": np.asarray(self.intensity).tolist()}


@dataclass
class Scene:
    """geometry, one Material per global primitive id (``material_of`` (P,) indexes ``materials``),
    lights, and a free-form ``info`` dict (layout name, suggested loop centre, ...)."""

    geometry: SceneGeometry
    materials: list[Material]
    material_of: np.ndarray
    point_lights: list[PointLight] = field(default_factory=list)
    directional_lights: list[DirectionalLight] = field(default_factory=list)
    ambient: np.ndarray = field(default_factory=lambda: np.full(3, 0.25))
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.material_of = np.asarray(self.material_of, dtype=np.int64)
        if self.material_of.shape != (self.geometry.num_primitives,):
            raise ValueError(
                f"material_of has shape {self.material_of.shape}, expected ({self.geometry.num_primitives},)"
            )
        self.ambient = np.asarray(self.ambient, dtype=np.float64).reshape(3)

    def to_dict(self) -> dict:
        """JSON-serialisable description (enough to re-render the scene)."""
        return {
            "geometry": self.geometry.to_dict(),
            "materials": [m.to_dict() for m in self.materials],
            "material_of": self.material_of.tolist(),
            "point_lights": [lt.to_dict() for lt in self.point_lights],
            "directional_lights": [lt.to_dict() for lt in self.directional_lights],
            "ambient": self.ambient.tolist(),
            "info": self.info,
        }

    @staticmethod
    def from_dict(d: dict) -> "Scene":
        return Scene(
            geometry=SceneGeometry.from_dict(d["geometry"]),
            materials=[Material(**m) for m in d["materials"]],
            material_of=np.asarray(d["material_of"]),
            point_lights=[PointLight(np.asarray(x["position"]), np.asarray(x["intensity"]), x["falloff"])
                          for x in d["point_lights"]],
            directional_lights=[DirectionalLight(np.asarray(x["direction"]), np.asarray(x["intensity"]))
                                for x in d["directional_lights"]],
            ambient=np.asarray(d["ambient"]),
            info=dict(d.get("info", {})),
        )


def _irradiance(scene: Scene, p: Vec, n: Vec, shadows: bool) -> Vec:
    """Incoming light per channel at surface points ``p`` with unit normals ``n`` (components ``(M,)``)."""
    f = p[0].dtype
    irr = [np.full_like(p[0], float(a)) for a in scene.ambient]
    for light in scene.point_lights:
        lx, ly, lz = (float(c) for c in light.position)
        tx, ty, tz = lx - p[0], ly - p[1], lz - p[2]  # towards the light
        dist2 = tx * tx + ty * ty + tz * tz
        cos = (n[0] * tx + n[1] * ty + n[2] * tz) / np.sqrt(np.maximum(dist2, f.type(1e-12)))
        lit = cos > 0
        if shadows and lit.any():
            idx = np.nonzero(lit)[0]
            # shadow rays from the light to just off the surface (towards free space)
            d = tuple(p[k][idx] + 1e-4 * n[k][idx] - float(light.position[k]) for k in range(3))
            hit = cast_rays(scene.geometry, light.position, d, include_enclosure=False,
                            t_max=1.0 - 1e-6, any_hit=True)
            lit[idx[hit.prim >= 0]] = False
        gain = np.where(lit, cos, 0.0) / (1.0 + dist2 * (1.0 / light.falloff**2))
        for k in range(3):
            irr[k] += gain * float(light.intensity[k])
    for light in scene.directional_lights:
        a, b, c = (float(x) for x in light.direction)
        cos = np.maximum(n[0] * a + n[1] * b + n[2] * c, 0.0)
        for k in range(3):
            irr[k] += cos * float(light.intensity[k])
    return irr[0], irr[1], irr[2]


def _indices_by_primitive(prim: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``[(global id, pixel indices)]`` for each primitive present (misses, -1, left out)."""
    counts = np.bincount(prim + 1)
    return [(g - 1, np.flatnonzero(prim == g - 1)) for g in np.nonzero(counts)[0] if g > 0]


def _encode_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear [0, 1] (any shape) -> gamma-encoded uint8 via a 4096-entry table."""
    idx = (np.clip(lin, 0.0, 1.0) * 4095.0 + 0.5).astype(np.int32)
    return _SRGB_LUT[idx]


_SRGB_LUT = np.rint(255.0 * (np.arange(4096) / 4095.0) ** (1.0 / GAMMA)).astype(np.uint8)


def render(
    scene: Scene,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    shadows: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one OpenCV camera (``c2w`` (4, 4), pixel ``K`` (3, 3)).

    Returns ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32: z-depth in metres along
    the optical axis of the surface seen through each pixel centre (inf for no surface).
    Computed in float32.
    """
    origin, d = camera_rays(c2w, K, width, height, dtype=np.float32)
    geo = scene.geometry
    hit = cast_rays(geo, origin, d)
    found = hit.prim >= 0
    t = np.where(found, hit.t, 0.0).astype(np.float32)
    p = tuple(float(origin[k]) + t * d[k] for k in range(3))
    ray_len = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    fx = float(np.asarray(K)[0, 0])
    normals = [np.zeros_like(t) for _ in range(3)]
    alb = [np.zeros_like(t) for _ in range(3)]
    for gid, idx in _indices_by_primitive(hit.prim):
        pi = (p[0][idx], p[1][idx], p[2][idx])
        n, (u, v) = frame_one(geo, gid, hit.face[idx], pi)
        cos_inc = np.abs(n[0] * d[0][idx] + n[1] * d[1][idx] + n[2] * d[2][idx]) / ray_len[idx]
        # metres per pixel at the hit, widened at grazing angles
        footprint = t[idx] * ray_len[idx] / fx / np.maximum(cos_inc, 0.2)
        col = albedo(scene.materials[int(scene.material_of[gid])], u, v, footprint)
        for k in range(3):
            normals[k][idx] = n[k]
            alb[k][idx] = col[k]
    irr = _irradiance(scene, p, tuple(normals), shadows)
    lin = np.stack([alb[k] * irr[k] for k in range(3)], axis=1)
    rgb = _encode_srgb(lin)
    rgb[~found] = 0
    depth = np.where(found, hit.t, np.inf).astype(np.float32)
    return rgb.reshape(height, width, 3), depth.reshape(height, width)
