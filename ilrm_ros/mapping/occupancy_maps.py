"""What planners read from the voxel grid: a 2-D occupancy grid of a height band, a 2-D
Euclidean signed distance slice of it, and distances from query points (ROS-free).

2-D conventions follow ``nav_msgs/OccupancyGrid``: cells row-major starting at the
``origin`` (the map-frame x, y of cell (0, 0)'s outer corner), x along a row, values
100 occupied, 0 free, -1 unknown. A column is occupied when any voxel of the band is,
free when none is occupied and at least one is free, unknown otherwise (octomap_server's
projected map does the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ilrm_ros.mapping.occupancy import BLOCK, CellState, VoxelGrid, voxel_centres

OCCUPIED, FREE, UNKNOWN = 100, 0, -1


@dataclass
class Grid2D:
    """A 2-D grid in the map frame: values (height, width) int8 (100 / 0 / -1), row y, column x;
    origin (x, y) metres of the corner of cell (0, 0); resolution metres per cell; the band's z."""

    values: np.ndarray
    origin: tuple[float, float]
    resolution: float
    z_range: tuple[float, float]

    @property
    def height(self) -> int:
        return int(self.values.shape[0])

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """(row, col) int64 (N, 2) of map-frame points (N, 2); may lie outside the grid."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        col = np.floor((xy[:, 0] - self.origin[0]) / self.resolution).astype(np.int64)
        row = np.floor((xy[:, 1] - self.origin[1]) / self.resolution).astype(np.int64)
        return np.stack([row, col], axis=1)


def band_voxel_range(z_min: float, z_max: float, voxel_size: float) -> tuple[int, int]:
    """Voxel layers [k0, k1) whose centres lie in [z_min, z_max]."""
    return int(np.ceil(z_min / voxel_size - 0.5)), int(np.floor(z_max / voxel_size - 0.5)) + 1


def free_layers_needed(z_min: float, z_max: float, voxel_size: float, min_free_fraction: float) -> int:
    """Free voxels a column's band needs to be free: ``min_free_fraction`` of its layers, at least 1."""
    k0, k1 = band_voxel_range(z_min, z_max, voxel_size)
    return max(1, int(np.ceil(min_free_fraction * (k1 - k0) - 1e-9)))


def project_band(grid: VoxelGrid, z_min: float, z_max: float, min_free_fraction: float = 0.0) -> Grid2D:
    """Project the voxels whose centres lie in [z_min, z_max] (map frame) onto a 2-D grid
    covering every allocated block of the band (at the voxel size). A column is occupied when
    any band voxel is, free when none is and at least ``min_free_fraction`` of its band layers
    (at least one) are observed free, unknown otherwise."""
    vs = grid.voxel_size
    k0, k1 = band_voxel_range(z_min, z_max, vs)
    keys, states = grid.blocks((k0, k1))                                    # only blocks holding band layers
    if not len(keys):
        return Grid2D(np.zeros((0, 0), np.int8), (0.0, 0.0), vs, (z_min, z_max))
    occ = np.zeros((len(keys), BLOCK, BLOCK), bool)                         # (B, 16, 16) x, y
    free = np.zeros((len(keys), BLOCK, BLOCK), np.int64)
    for z0 in np.unique(keys[:, 2]).tolist():                              # one z slice per block level
        rows = np.flatnonzero(keys[:, 2] == z0)
        a, b = max(k0 - z0 * BLOCK, 0), min(k1 - z0 * BLOCK, BLOCK)
        band = states[rows, :, :, a:b]
        occ[rows] = (band == CellState.OCCUPIED).any(axis=3)
        free[rows] = (band == CellState.FREE).sum(axis=3)
    lo = keys[:, :2].min(axis=0)
    size = (keys[:, :2].max(axis=0) - lo + 1) * BLOCK                       # (x cells, y cells)
    base = (keys[:, :2] - lo) * BLOCK                                       # blocks stacked in z share columns
    ix = base[:, 0, None, None] + np.arange(BLOCK)[None, :, None]
    iy = base[:, 1, None, None] + np.arange(BLOCK)[None, None, :]
    flat = (ix * int(size[1]) + iy).reshape(-1)
    n = int(size[0] * size[1])
    occ_xy = (np.bincount(flat, weights=occ.reshape(-1), minlength=n) > 0).reshape(int(size[0]), int(size[1]))
    free_xy = np.bincount(flat, weights=free.reshape(-1), minlength=n).reshape(occ_xy.shape)
    need = free_layers_needed(z_min, z_max, vs, min_free_fraction)
    values = np.where(occ_xy, OCCUPIED, np.where(free_xy >= need, FREE, UNKNOWN)).astype(np.int8).T  # rows = y
    origin = (float(lo[0] * BLOCK * vs), float(lo[1] * BLOCK * vs))
    return Grid2D(np.ascontiguousarray(values), origin, vs, (z_min, z_max))


def project_band_reference(grid: VoxelGrid, z_min: float, z_max: float, min_free_fraction: float = 0.0) -> Grid2D:
    """:func:`project_band` from the list of voxels (same extent), for tests."""
    fast = project_band(grid, z_min, z_max, min_free_fraction)
    k0, k1 = band_voxel_range(z_min, z_max, grid.voxel_size)
    need = free_layers_needed(z_min, z_max, grid.voxel_size, min_free_fraction)
    values = np.full(fast.values.shape, UNKNOWN, np.int8)
    free_count = np.zeros(fast.values.shape, np.int64)
    ox, oy = (int(round(v / grid.voxel_size)) for v in fast.origin)
    for i, j, k in grid.voxels(CellState.FREE).tolist():
        if k0 <= k < k1:
            free_count[j - oy, i - ox] += 1
    values[free_count >= need] = FREE
    for i, j, k in grid.voxels(CellState.OCCUPIED).tolist():
        if k0 <= k < k1:
            values[j - oy, i - ox] = OCCUPIED
    return Grid2D(values, fast.origin, fast.resolution, fast.z_range)


# --------------------------------------------------------------------------- distances
def _column_distance(obstacle: np.ndarray, cap: int) -> np.ndarray:
    """Cells (along axis 0) to the nearest obstacle in the same column, capped: (H, W) float64."""
    h = obstacle.shape[0]
    big = float(cap + 1)
    d = np.full(obstacle.shape, big)
    run = np.full(obstacle.shape[1], big)
    for i in range(h):                                   # downwards
        run = np.where(obstacle[i], 0.0, np.minimum(run + 1.0, big))
        d[i] = run
    run = np.full(obstacle.shape[1], big)
    for i in range(h - 1, -1, -1):                       # upwards
        run = np.where(obstacle[i], 0.0, np.minimum(run + 1.0, big))
        d[i] = np.minimum(d[i], run)
    return d


def distance_to(obstacle: np.ndarray, max_cells: int) -> np.ndarray:
    """Exact Euclidean distance (cells) from every cell to the nearest True cell of ``obstacle``
    (H, W), saturated at ``max_cells`` (also where there is none): (H, W) float64.

    Two separable passes: column distances, then per row the minimum over columns within
    ``max_cells`` of dx² + dy² (bounded, so O(H W max_cells)). :func:`distance_to_reference`
    is the brute-force twin.
    """
    h, w = obstacle.shape
    g = _column_distance(obstacle, max_cells)
    g2 = torch.from_numpy(g * g)
    best = torch.full((h, w), float(max_cells) ** 2, dtype=torch.float64)
    padded = torch.nn.functional.pad(g2, (max_cells, max_cells), value=float(max_cells + 1) ** 2)
    for dx in range(-max_cells, max_cells + 1):
        shifted = padded[:, max_cells + dx: max_cells + dx + w]
        torch.minimum(best, shifted + dx * dx, out=best)
    return np.minimum(np.sqrt(best.numpy()), max_cells)


def distance_to_reference(obstacle: np.ndarray, max_cells: int) -> np.ndarray:
    """Brute force over every obstacle cell (for tests): (H, W) float64, saturated at ``max_cells``."""
    rows, cols = np.nonzero(obstacle)
    h, w = obstacle.shape
    out = np.full((h, w), float(max_cells))
    for i in range(h):
        for j in range(w):
            if len(rows):
                out[i, j] = min(out[i, j], float(np.sqrt(((rows - i) ** 2 + (cols - j) ** 2).min())))
    return out


def signed_distance_slice(grid2d: Grid2D, max_distance: float, unknown_value: float) -> np.ndarray:
    """The 2-D ESDF of a projected grid: (H, W) float32 metres.

    Free cells: distance from the cell centre to the nearest occupied cell centre; occupied
    cells: minus the distance to the nearest non-occupied cell (so 0 is never reported on
    an obstacle); both saturate at ``max_distance``. Unknown cells get ``unknown_value``;
    they are not obstacles here (read the occupancy grid to keep out of unknown space).
    """
    v = grid2d.values
    cap = max(1, int(np.ceil(max_distance / grid2d.resolution)))
    occupied = v == OCCUPIED
    outside = distance_to(occupied, cap) * grid2d.resolution
    inside = distance_to(~occupied, cap) * grid2d.resolution
    esdf = np.where(occupied, -inside, outside).clip(-max_distance, max_distance)
    return np.where(v == UNKNOWN, unknown_value, esdf).astype(np.float32)


def distances_to_occupied(grid: VoxelGrid, points: np.ndarray, max_distance: float) -> np.ndarray:
    """3-D distance (N,) float32 metres from points (N, 3) to the nearest occupied voxel centre,
    saturated at ``max_distance``. Only occupied voxels within ``max_distance`` of the points'
    bounding box are compared (:func:`distances_to_occupied_reference` compares all)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    out = np.full(len(points), max_distance, np.float32)
    if not len(points):
        return out
    lo, hi = points.min(axis=0) - max_distance, points.max(axis=0) + max_distance
    keys, states = grid.blocks()
    block_m = BLOCK * grid.voxel_size
    near = np.all((keys * block_m <= hi) & ((keys + 1) * block_m >= lo), axis=1)
    b, x, y, z = np.nonzero(states[near] == CellState.OCCUPIED)
    if not len(b):
        return out
    centres = torch.from_numpy(voxel_centres(keys[near][b] * BLOCK + np.stack([x, y, z], axis=1), grid.voxel_size))
    pts = torch.from_numpy(points)
    for a in range(0, len(pts), 256):                   # (256, M) distances at a time
        d = torch.cdist(pts[a:a + 256], centres).amin(dim=1)
        out[a:a + 256] = np.minimum(d.numpy(), max_distance)
    return out


def distances_to_occupied_reference(grid: VoxelGrid, points: np.ndarray, max_distance: float) -> np.ndarray:
    """Brute force over every occupied voxel (for tests): (N,) float32."""
    centres = voxel_centres(grid.voxels(CellState.OCCUPIED), grid.voxel_size)
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if not len(centres):
        return np.full(len(points), max_distance, np.float32)
    d = np.sqrt(((points[:, None, :] - centres[None]) ** 2).sum(-1)).min(axis=1)
    return np.minimum(d, max_distance).astype(np.float32)
