"""Scoring the occupancy grid against a generated scene's true geometry, and its picture.

The data generator (``ilrm_ros.data``) knows every scene exactly; ``signed_distance`` of
its geometry is positive in free space and negative inside solids and outside the room.

Truth per voxel: a voxel is **truly occupied** when the geometry comes within its
circumscribed sphere, ``sd(centre) <= sqrt(3)/2 * voxel_size`` (it may hold a surface or
lie inside a solid), else **truly free**. That definition is the strict one for free
space: a voxel that a wall only clips at a corner counts as occupied, so calling it free
is a false free.

Scores over the *observed* voxels (FREE or OCCUPIED in the grid):
- ``accuracy``: predicted state equals the truth;
- ``false_free_rate_3m``: of the voxels the grid calls free within 3 m of a keyframe camera,
  the share that is truly occupied (what a planner trusting "free" would hit);
- ``missed_occupied_3m``: of the truly occupied observed voxels there, the share called free.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ilrm_ros.data.raycast import SceneGeometry, signed_distance
from ilrm_ros.mapping.occupancy import CellState, VoxelGrid, voxel_centres
from ilrm_ros.mapping.occupancy_maps import FREE, OCCUPIED, UNKNOWN, Grid2D, band_voxel_range


def truly_occupied(geometry: SceneGeometry, centres: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N,) bool for voxel centres (N, 3): the true geometry reaches the voxel's circumscribed sphere."""
    if not len(centres):
        return np.zeros(0, bool)
    return signed_distance(geometry, centres) <= 0.5 * math.sqrt(3.0) * voxel_size


def _near(centres: np.ndarray, cameras: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: within ``radius`` of any camera centre (K, 3)."""
    near = np.zeros(len(centres), bool)
    for c in np.asarray(cameras, np.float64).reshape(-1, 3):
        near |= ((centres - c) ** 2).sum(axis=1) <= radius * radius
    return near


def score_grid(grid: VoxelGrid, geometry: SceneGeometry, cameras: np.ndarray, radius: float = 3.0) -> dict:
    """Scores of the observed voxels against the truth (see the module doc); cameras (K, 3) metres."""
    occ = grid.voxels(CellState.OCCUPIED)
    free = grid.voxels(CellState.FREE)
    c_occ, c_free = voxel_centres(occ, grid.voxel_size), voxel_centres(free, grid.voxel_size)
    t_occ = truly_occupied(geometry, c_occ, grid.voxel_size)
    t_free = truly_occupied(geometry, c_free, grid.voxel_size)
    near_free, near_occ = _near(c_free, cameras, radius), _near(c_occ, cameras, radius)
    observed = len(occ) + len(free)
    false_free = int(t_free[near_free].sum())
    truly_occ_near = int(t_occ[near_occ].sum()) + false_free
    ratio = lambda a, b: float(a) / b if b else None  # noqa: E731
    return {
        "observed_voxels": observed, "occupied_voxels": len(occ), "free_voxels": len(free),
        "accuracy": ratio(int(t_occ.sum()) + int((~t_free).sum()), observed),
        "occupied_precision": ratio(int(t_occ.sum()), len(occ)),
        "free_precision": ratio(int((~t_free).sum()), len(free)),
        "free_voxels_3m": int(near_free.sum()), "false_free_voxels_3m": false_free,
        "false_free_rate_3m": ratio(false_free, int(near_free.sum())),
        "missed_occupied_3m": ratio(false_free, truly_occ_near),
        "radius_m": radius, "voxel_size_m": grid.voxel_size,
        "truth": "occupied when the true geometry reaches the voxel's circumscribed sphere (sd <= sqrt(3)/2 voxel)",
    }


def true_floor_plan(geometry: SceneGeometry, like: Grid2D, voxel_size: float) -> np.ndarray:
    """The true 2-D grid on ``like``'s cells and band: (H, W) int8, 100 where any voxel of the
    column's band is truly occupied, else 0 (the truth knows no unknown)."""
    k0, k1 = band_voxel_range(*like.z_range, voxel_size)
    h, w = like.values.shape
    xs = like.origin[0] + (np.arange(w) + 0.5) * like.resolution
    ys = like.origin[1] + (np.arange(h) + 0.5) * like.resolution
    occ = np.zeros((h, w), bool)
    for k in range(k0, k1):
        z = (k + 0.5) * voxel_size
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)
        occ |= truly_occupied(geometry, pts, voxel_size).reshape(h, w)
    return np.where(occ, OCCUPIED, FREE).astype(np.int8)


def score_floor_plan(grid2d: Grid2D, truth: np.ndarray) -> dict:
    """2-D scores over the known cells: accuracy and the share of free cells truly occupied."""
    known = grid2d.values != UNKNOWN
    free = grid2d.values == FREE
    n_free = int(free.sum())
    return {"cells_known": int(known.sum()),
            "accuracy": float((grid2d.values[known] == truth[known]).mean()) if known.any() else None,
            "false_free_rate": float((truth[free] == OCCUPIED).mean()) if n_free else None}


_COLOURS = {OCCUPIED: (20, 20, 20), FREE: (250, 250, 250), UNKNOWN: (170, 170, 170)}


def _panel(values: np.ndarray, scale: int) -> np.ndarray:
    """RGB (H*scale, W*scale, 3) uint8 of a 2-D grid, y up (row 0 at the bottom)."""
    img = np.zeros(values.shape + (3,), np.uint8)
    for v, c in _COLOURS.items():
        img[values == v] = c
    return np.repeat(np.repeat(img[::-1], scale, axis=0), scale, axis=1)


def write_occupancy_png(path: Path, grid2d: Grid2D, truth: np.ndarray | None, cameras: np.ndarray,
                        title: str) -> Path:
    """PNG: the 2-D grid (keyframe cameras in blue) | the true floor plan | errors (red: called
    free but occupied, orange: called occupied but free), with a title line."""
    from PIL import Image, ImageDraw

    h, w = grid2d.values.shape
    scale = max(1, min(4, 900 // max(w, 1)))
    panels = [_panel(grid2d.values, scale)]
    if truth is not None:
        panels.append(_panel(truth, scale))
        err = _panel(np.where(grid2d.values == UNKNOWN, UNKNOWN, FREE).astype(np.int8), scale)
        for mask, colour in (((grid2d.values == FREE) & (truth == OCCUPIED), (220, 30, 30)),
                             ((grid2d.values == OCCUPIED) & (truth == FREE), (255, 150, 0))):
            big = np.repeat(np.repeat(mask[::-1], scale, axis=0), scale, axis=1)
            err[big] = colour
        panels.append(err)
    gap = np.full((h * scale, 8, 3), 255, np.uint8)
    body = np.concatenate([p if i == 0 else np.concatenate([gap, p], axis=1) for i, p in enumerate(panels)], axis=1)
    img = Image.new("RGB", (body.shape[1], body.shape[0] + 34), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, 34))
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=(0, 0, 0))
    names = ["grid (black occupied, white free, grey unknown; blue: keyframes)", "true floor plan",
             "errors (red: false free, orange: false occupied)"]
    for i in range(len(panels)):
        draw.text((4 + i * (w * scale + 8), 18), names[i], fill=(0, 0, 0))
    cam = grid2d.cell_of(np.asarray(cameras, np.float64).reshape(-1, 3)[:, :2])
    for r, c in cam.tolist():
        if 0 <= r < h and 0 <= c < w:
            x, y = c * scale + scale // 2, 34 + (h - 1 - r) * scale + scale // 2
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(30, 90, 220))
    img.save(path)
    return path
