"""Scoring the occupancy grid against a generated scene's true geometry, and its picture.

The data generator (``ilrm_ros.data``) knows every scene exactly; ``signed_distance`` of
its geometry is positive in free space and negative inside solids and outside the room.

Truth per voxel: a voxel is **truly occupied** when its box touches a surface or lies in a
solid (or outside the room), else **truly free** (:func:`truly_occupied`). That is the strict
definition for free space: a voxel that a wall only clips at a corner counts as occupied,
so calling it free is a false free.

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

from ilrm_ros.data.scene_geometry import SceneGeometry, signed_distance
from ilrm_ros.mapping.occupancy import CellState, VoxelGrid, voxel_centres
from ilrm_ros.mapping.occupancy_maps import FREE, OCCUPIED, UNKNOWN, Grid2D, band_voxel_range


_TOUCH_M = 1e-6
"""Contact tolerance (metres) of the truth: rounding of voxel coordinates must not decide."""


def truly_occupied(geometry: SceneGeometry, centres: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N,) bool for voxel centres (N, 3): the voxel's box touches a surface or a solid.

    sd(centre) <= voxel/2 (the inscribed ball reaches the geometry) is occupied, sd > sqrt(3)/2
    voxel (not even the circumscribed ball does) is free; in between the 3x3x3 lattice of the
    box's corners, edge and face midpoints and centre decides (occupied when any lies on or in
    the geometry; exact for planar faces such as walls, floors and box sides)."""
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    if not len(centres):
        return np.zeros(0, bool)
    sd = signed_distance(geometry, centres)
    occ = sd <= 0.5 * voxel_size + _TOUCH_M
    unsure = np.flatnonzero(~occ & (sd <= 0.5 * math.sqrt(3.0) * voxel_size))
    offsets = np.stack(np.meshgrid(*([np.array([-0.5, 0.0, 0.5]) * voxel_size] * 3), indexing="ij"), -1).reshape(-1, 3)
    for a in range(0, len(unsure), 8192):
        idx = unsure[a:a + 8192]
        pts = (centres[idx, None, :] + offsets[None]).reshape(-1, 3)
        occ[idx] = signed_distance(geometry, pts).reshape(len(idx), -1).min(axis=1) <= _TOUCH_M
    return occ


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
        "truth": "occupied when the voxel's box touches a surface or lies in a solid / outside the room",
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


def cover(grid2d: Grid2D, lo_xy: np.ndarray, hi_xy: np.ndarray) -> Grid2D:
    """``grid2d`` grown (unknown cells) to cover the map-frame box [lo_xy, hi_xy] too, on the same lattice."""
    r = grid2d.resolution
    o = np.asarray(grid2d.origin)
    lo = np.minimum(np.floor((np.asarray(lo_xy) - o) / r).astype(int), 0)
    hi = np.maximum(np.ceil((np.asarray(hi_xy) - o) / r).astype(int), [grid2d.width, grid2d.height])
    values = np.full((hi[1] - lo[1], hi[0] - lo[0]), UNKNOWN, np.int8)
    values[-lo[1]:-lo[1] + grid2d.height, -lo[0]:-lo[0] + grid2d.width] = grid2d.values
    return Grid2D(values, (float(o[0] + lo[0] * r), float(o[1] + lo[1] * r)), r, grid2d.z_range)


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
    img = Image.new("RGB", (max(body.shape[1], 640), body.shape[0] + 50), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, 34))
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=(0, 0, 0))
    names = ["grid (blue: keyframes)", "true floor plan", "errors"]
    for i in range(len(panels)):
        draw.text((4 + i * (w * scale + 8), 18), names[i], fill=(0, 0, 0))
    draw.text((4, img.height - 14), "black occupied, white free, grey unknown; errors: red = called free but "
              "occupied, orange = called occupied but free", fill=(0, 0, 0))
    cam = grid2d.cell_of(np.asarray(cameras, np.float64).reshape(-1, 3)[:, :2])
    for r, c in cam.tolist():
        if 0 <= r < h and 0 <= c < w:
            x, y = c * scale + scale // 2, 34 + (h - 1 - r) * scale + scale // 2
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(30, 90, 220))
    img.save(path)
    return path


def find_scene_truth(bag: Path) -> Path | None:
    """The ``scene.json`` of a generated sequence next to (or inside) its bag folder, if any."""
    for candidate in (Path(bag) / "scene.json", Path(bag).parent / "scene.json"):
        if candidate.is_file():
            return candidate
    return None


def occupancy_report(occ, out: Path, scene_json: Path | None, cameras: np.ndarray, title: str) -> dict:
    """Write ``out/occupancy.png`` (grid | truth | errors) for an OccupancyMap and return its
    report entry: counts, band, and the scores against ``scene_json``'s geometry when given."""
    from ilrm_ros.data.sequence_io import load_scene_description

    out.mkdir(parents=True, exist_ok=True)
    grid2d = occ.products().grid2d
    report = {"png": str(out / "occupancy.png"), "band_z_m": list(grid2d.z_range), **occ.stats()}
    truth = None
    if scene_json is not None:
        geometry = load_scene_description(Path(scene_json).parent).geometry
        grid2d = cover(grid2d, geometry.room_lo[:2], geometry.room_hi[:2])
        report["truth"] = str(scene_json)
        report["scores_3d"] = score_grid(occ.grid, geometry, cameras)
        truth = true_floor_plan(geometry, grid2d, occ.grid.voxel_size)
        report["scores_2d"] = score_floor_plan(grid2d, truth)
    report["grid_cells"] = [grid2d.width, grid2d.height]
    s = report.get("scores_3d")
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    subtitle = "" if not s else (f": observed-voxel accuracy {fmt(s['accuracy'])}, false free within 3 m "
                                 f"{fmt(s['false_free_rate_3m'])} ({s['observed_voxels']} observed voxels)")
    write_occupancy_png(out / "occupancy.png", grid2d, truth, cameras, title + subtitle)
    return report


def exact_depth_grid(occ_cfg, geometry: SceneGeometry, keyframes) -> "object":
    """The grid the same integration builds from the generator's exact depth at the same keyframes
    (objects with c2w, K, rgb): isolates the grid from the model's depth errors."""
    from ilrm_ros.data.raycast import render_depth
    from ilrm_ros.mapping.occupancy_stage import DepthView, OccupancyMap, scaled_camera

    occ = OccupancyMap(occ_cfg)
    for k in keyframes:
        h, w = k.rgb.shape[:2]
        K, sw, sh = scaled_camera(k.K, w, h, occ_cfg.render_scale)
        d = render_depth(geometry, k.c2w, K, sw, sh)
        occ.integrate([DepthView(np.where(np.isfinite(d), d, np.nan), np.ones_like(d), k.c2w, K)])
    return occ
