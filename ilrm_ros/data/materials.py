"""Random surface materials of the procedural scenes: colour palettes and patterns per role
(floor, wall, ceiling, object), drawn from a ``numpy.random.Generator``."""
from __future__ import annotations

import colorsys

import numpy as np

from .textures import Material


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
