"""Procedural surface textures: hash-based value noise and a few patterns.

Each pattern is evaluated from surface coordinates in metres and band-limited by the
pixel footprint (metres per pixel at the hit): detail finer than about two pixels fades
to its mean colour instead of aliasing into moiré.
Colours are linear RGB in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PATTERNS = ("solid", "checker", "stripes", "noise", "gradient", "tiles", "marble")

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_M3 = np.uint32(0x85EBCA6B)
_M4 = np.uint32(0xC2B2AE35)


@dataclass
class Material:
    """A procedural texture.

    pattern: one of PATTERNS.
    colors:  (3, 3) palette, linear RGB in [0, 1].
    scale:   characteristic size in metres (checker square, stripe period, noise cell, tile).
    angle:   rotation of the pattern in the surface plane, radians.
    seed:    noise/hash seed.
    detail:  amplitude of fine multiplicative noise added to every pattern (0 = none).
    duty:    stripe fill fraction; tile grout width as a fraction of the tile.
    """

    pattern: str = "solid"
    colors: np.ndarray = field(default_factory=lambda: np.full((3, 3), 0.5))
    scale: float = 0.5
    angle: float = 0.0
    seed: int = 0
    detail: float = 0.1
    duty: float = 0.5

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        self.colors = np.asarray(self.colors, dtype=np.float64).reshape(3, 3)

    def to_dict(self) -> dict:
        return {**self.__dict__, "colors": self.colors.tolist()}


def _lattice(x: np.ndarray) -> np.ndarray:
    """floor(x) as wrapped uint32 lattice coordinates."""
    return np.floor(x).astype(np.int64).astype(np.uint32)


def _avalanche(h: np.ndarray, seed: int) -> np.ndarray:
    """Mix a uint32 array (in place) into pseudo-random values in [0, 1] (float32)."""
    h ^= np.uint32((int(seed) * 0x9E3779B1) & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= _M4
    h ^= h >> np.uint32(13)
    h *= _M3
    h ^= h >> np.uint32(16)
    return h.astype(np.float32) * np.float32(1.0 / 4294967296.0)


def _hash(iu: np.ndarray, iv: np.ndarray, seed: int) -> np.ndarray:
    """uint32 lattice coordinates -> pseudo-random values in [0, 1] (float32)."""
    return _avalanche((iu * _M1) ^ (iv * _M2), seed)


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with unit lattice spacing (same shape as ``u``)."""
    fu, fv = np.floor(u), np.floor(v)
    tu, tv = u - fu, v - fv
    su, sv = tu * tu * (3.0 - 2.0 * tu), tv * tv * (3.0 - 2.0 * tv)
    # (i + 1) * M = i * M + M (mod 2^32): hash the four lattice corners from two products
    hu0 = fu.astype(np.int64).astype(np.uint32) * _M1
    hv0 = fv.astype(np.int64).astype(np.uint32) * _M2
    hu1, hv1 = hu0 + _M1, hv0 + _M2
    a = _avalanche(hu0 ^ hv0, seed)
    b = _avalanche(hu1 ^ hv0, seed)
    c = _avalanche(hu0 ^ hv1, seed)
    d = _avalanche(hu1 ^ hv1, seed)
    top = a + su * (b - a)
    bot = c + su * (d - c)
    return top + sv * (bot - top)


def band_limit(period: float | np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Contrast factor in [0, 1]: 1 when ``period`` spans >= 4 pixels, 0 at <= 2 pixels."""
    return np.clip(np.asarray(period) / (2.0 * np.maximum(footprint, 1e-9)) - 1.0, 0.0, 1.0)


def fbm(u: np.ndarray, v: np.ndarray, cell: float, footprint: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in [0, 1]: octaves of halving cell size, each band-limited."""
    total = np.zeros_like(u)
    norm = 0.0
    amp = 1.0
    for o in range(octaves):
        c = cell * 0.5**o
        contrast = band_limit(c, footprint)
        total += 0.5 * amp
        active = np.flatnonzero(contrast > 0)  # octaves finer than ~2 pixels contribute their mean only
        if active.size == u.size:
            total += amp * contrast * (value_noise(u / c, v / c, seed + 7919 * o) - 0.5)
        elif active.size:
            n = value_noise(u[active] / c, v[active] / c, seed + 7919 * o)
            total[active] += amp * contrast[active] * (n - 0.5)
        norm += amp
        amp *= 0.5
    return total / norm


Rgb = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Colour channels as separate ``(M,)`` arrays."""


def _mix(c0: np.ndarray, c1: np.ndarray, w: np.ndarray) -> Rgb:
    return tuple(float(a) + w * float(b - a) for a, b in zip(c0, c1))  # type: ignore[return-value]


def _select(mask: np.ndarray, a: Rgb, b: Rgb) -> Rgb:
    return tuple(np.where(mask, x, y) for x, y in zip(a, b))  # type: ignore[return-value]


def albedo(mat: Material, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> Rgb:
    """Surface colour channels (each ``(M,)``) of ``mat`` at texture coordinates ``u, v``
    ``(M,)`` in metres, given the pixel footprint ``(M,)`` in metres."""
    ca, sa = math.cos(mat.angle), math.sin(mat.angle)
    ru = ca * u + sa * v
    rv = -sa * u + ca * v
    c0, c1, c2 = mat.colors
    p = float(mat.scale)
    pat = mat.pattern
    if pat == "solid":
        col = tuple(np.full_like(u, float(c)) for c in c0)
    elif pat == "checker":
        s = (np.floor(ru / p) + np.floor(rv / p)) % 2.0
        col = _mix(c0, c1, 0.5 + band_limit(2.0 * p, footprint) * (s - 0.5))
    elif pat == "stripes":
        s = (np.mod(ru / p, 1.0) < mat.duty).astype(u.dtype)
        col = _mix(c1, c0, mat.duty + band_limit(p, footprint) * (s - mat.duty))
    elif pat == "noise":
        n = fbm(ru, rv, p, footprint, mat.seed)
        n = np.clip((n - 0.5) * 2.2 + 0.5, 0.0, 1.0)
        col = _select(n < 0.5, _mix(c0, c1, 2.0 * n), _mix(c1, c2, 2.0 * n - 1.0))
    elif pat == "gradient":
        g = 0.5 + 0.5 * np.sin((2.0 * math.pi / p) * ru + (mat.seed % 7)) * band_limit(p, footprint)
        col = _mix(c0, c1, g)
    elif pat == "tiles":
        iu, iv = _lattice(ru / p), _lattice(rv / p)
        h = _hash(iu, iv, mat.seed)
        pick = np.where(h < 0.45, 0, np.where(h < 0.9, 1, 2))
        shade = 0.85 + 0.3 * _hash(iv, iu, mat.seed + 1)
        aa = band_limit(p, footprint)
        mean = mat.colors.mean(axis=0)
        fu, fv = np.mod(ru / p, 1.0), np.mod(rv / p, 1.0)
        gw = 0.05 * mat.duty  # half grout width, fraction of a tile
        grout = ((fu < gw) | (fu > 1 - gw) | (fv < gw) | (fv > 1 - gw)).astype(u.dtype)
        cover = 4.0 * gw  # mean grout coverage
        gline = 1.0 - 0.6 * (cover + band_limit(2.0 * gw * p, footprint) * (grout - cover))
        col = tuple(
            (float(mean[k]) + aa * (mat.colors[:, k][pick] * shade - float(mean[k]))) * gline for k in range(3)
        )
    elif pat == "marble":
        n = fbm(ru, rv, p, footprint, mat.seed, octaves=4)
        s = 0.5 + 0.5 * np.sin((2.0 * math.pi) * (ru / p + 3.0 * n))
        s = 0.5 + band_limit(p, footprint) * (s - 0.5)
        col = _select(s < 0.5, _mix(c0, c1, 2.0 * s), _mix(c1, c2, 2.0 * s - 1.0))
    else:  # pragma: no cover - guarded in __post_init__
        raise ValueError(pat)
    if mat.detail > 0:
        cell = max(0.04, 0.15 * p)
        n = fbm(u, v, cell, footprint, mat.seed + 101, octaves=2)
        gain = 1.0 + (2.0 * mat.detail) * (n - 0.5)
        col = tuple(c * gain for c in col)
    return tuple(np.clip(c, 0.0, 1.0) for c in col)  # type: ignore[return-value]
