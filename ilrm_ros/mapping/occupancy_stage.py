"""The Mapper's occupancy stage: depth rendered from the Gaussian map at each window's
keyframes, integrated into the voxel grid (``occupancy.VoxelGrid``), and the 2-D products
planners read (``occupancy_maps``). ROS-free.

    window ──render (depth, alpha) at its V keyframes──▶ rays ──scan_voxels──▶ VoxelGrid
    VoxelGrid ──project_band──▶ Grid2D ──signed_distance_slice──▶ ESDF slice

The grid is rebuilt consistently with the Gaussian map: ``reset`` empties both, and a
loaded map is re-rendered at the keyframe cameras stored in its sidecar (without them
the grid starts empty, i.e. unknown, which is the safe side).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ilrm_ros.core.params import param
from ilrm_ros.mapping.occupancy import CellState, LogOdds, VoxelGrid, depth_to_rays, scan_voxels
from ilrm_ros.mapping.occupancy_maps import Grid2D, project_band, signed_distance_slice
from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.render.render import render_gaussians

logger = logging.getLogger(__name__)


@dataclass
class OccupancyConfig:
    """The 3-D occupancy grid built from the Gaussian map and its 2-D products (``occupancy.*``)."""

    enabled: bool = param(False, "Build the 3-D occupancy grid from the Gaussian map and publish ~/occupancy/* and "
                                  "~/query_occupancy (off by default: see README, Occupancy)")
    voxel_size_m: float = param(0.05, "Edge of an occupancy voxel in the map frame", 0.01, 1.0)
    max_blocks: int = param(20_000, "Bound on allocated blocks of 16x16x16 voxels (20 KiB each); beyond it the blocks "
                                     "farthest from the robot are dropped", 1, 10_000_000)
    depth_source: str = param("window", "Depth integrated after a window: rendered from the fused map or from the "
                                     "window's Gaussians alone, at the window's keyframes", choices=("map", "window"))
    refined_depth: bool = param(True, "After each background map refinement step that changed the map, integrate "
                                       "the depth of its chosen keyframe rendered from the refined map (off = the "
                                       "grid follows the windows only)")
    render_scale: float = param(0.5, "Keyframe depth for the grid is rendered at this fraction of the model input size",
                                 0.05, 1.0)
    min_alpha: float = param(0.9, "Integrate only pixels whose rendered opacity reaches this", 0.0, 1.0)
    max_range_m: float = param(5.0, "Rays longer than this carve free space up to it and mark no surface", 0.1, 100.0)
    free_margin_m: float = param(0.1, "Free space stops this far short of the rendered surface", 0.0, 5.0)
    free_margin_rel: float = param(0.65, "Free space also stops this fraction of the range short of the surface "
                                          "(for depth whose error grows with range)", 0.0, 0.95)
    prob_hit: float = param(0.7, "Occupancy probability a surface observation gives its voxel (> 0.5)", 0.5, 0.999)
    prob_miss: float = param(0.4, "Occupancy probability a ray passing through gives a voxel (< 0.5)", 0.001, 0.5)
    clamp_min: float = param(0.12, "Lower clamp of a voxel's occupancy probability", 0.001, 0.5)
    clamp_max: float = param(0.97, "Upper clamp of a voxel's occupancy probability", 0.5, 0.999)
    occupied_threshold: float = param(0.5, "A voxel above this probability is occupied", 0.001, 0.999)
    free_threshold: float = param(0.35, "A voxel below this probability is free (between the thresholds: unknown)",
                                   0.001, 0.999)
    floor_z_m: float = param(0.0, "Height of the floor in the map frame (the 2-D grid's band is measured from it)",
                              -1000.0, 1000.0)
    floor_clearance_m: float = param(0.15, "2-D grid band starts this high above the floor (ignores the floor)",
                                      0.0, 100.0)
    robot_height_m: float = param(1.0, "2-D grid band ends this high above the floor (the robot's height)", 0.0, 100.0)
    min_free_fraction: float = param(0.75, "A 2-D cell is free only when no band voxel is occupied and at least this "
                                           "fraction of its band's voxels are observed free", 0.0, 1.0)
    esdf_max_distance_m: float = param(2.0, "Distances (ESDF slice, query service) saturate at this", 0.05, 100.0)
    esdf_unknown_value: float = param(-1000.0, "ESDF slice value of unknown cells", -1e9, 1e9)
    publish_period_s: float = param(1.0, "Republish the grid, voxels and ESDF slice at most this often (after a window "
                                          "changed them)", 0.0, 3600.0)


@dataclass
class DepthView:
    """One rendered keyframe for integration: depth (H, W) z-depth metres (NaN where nothing
    was drawn), alpha (H, W), c2w (4, 4) map frame OpenCV, K (3, 3) pixels at this size."""

    depth: np.ndarray
    alpha: np.ndarray
    c2w: np.ndarray
    K: np.ndarray


@dataclass
class OccupancyProducts:
    """What the ROS layer publishes: the 2-D grid, its ESDF slice (H, W) float32 and the
    occupied voxel centres (M, 3) float32, all in the map frame."""

    grid2d: Grid2D
    esdf: np.ndarray
    occupied_centres: np.ndarray
    revision: int


def log_odds(cfg: OccupancyConfig) -> LogOdds:
    """The grid's sensor model from the parameters."""
    return LogOdds.from_probabilities(cfg.prob_hit, cfg.prob_miss, cfg.clamp_min, cfg.clamp_max,
                                      cfg.occupied_threshold, cfg.free_threshold)


def scaled_camera(K: np.ndarray, width: int, height: int, scale: float) -> tuple[np.ndarray, int, int]:
    """K (3, 3) and size of a camera resampled by ``scale`` (the same field of view)."""
    w, h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    Ks = np.asarray(K, np.float64).copy()
    Ks[0] *= w / width
    Ks[1] *= h / height
    return Ks, w, h


def render_depth_views(g: Gaussians, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> list[DepthView]:
    """Render Gaussians (N, ...) at V cameras in one batch: c2w (V, 4, 4), K (V, 3, 3) for a
    width x height image. Depth is the expected surface depth (accumulated depth / alpha)."""
    dev = g.means.device
    with torch.no_grad():
        out = render_gaussians(g, torch.as_tensor(c2w, dtype=torch.float32, device=dev),
                               torch.as_tensor(K, dtype=torch.float32, device=dev), width, height)
    alpha = out.alpha.float().cpu().numpy()
    depth = out.surface_depth(1e-3).float().cpu().numpy()
    return [DepthView(depth[v].astype(np.float32), alpha[v], np.asarray(c2w[v], np.float64), np.asarray(K[v]))
            for v in range(len(c2w))]


class OccupancyMap:
    """The grid of one Mapper and what it is built from. Callers hold the Mapper's lock."""

    def __init__(self, cfg: OccupancyConfig) -> None:
        self.cfg = cfg
        self.grid = VoxelGrid(cfg.voxel_size_m, log_odds(cfg), cfg.max_blocks)
        self.num_scans = 0

    @property
    def band(self) -> tuple[float, float]:
        """z range (map frame) of the 2-D grid: floor + clearance .. floor + robot height."""
        c = self.cfg
        return c.floor_z_m + c.floor_clearance_m, c.floor_z_m + c.robot_height_m

    def reset(self) -> None:
        self.grid.reset()
        self.num_scans = 0

    def integrate(self, views: Sequence[DepthView]) -> int:
        """Integrate rendered views (one scan each); returns the number of rays used."""
        rays = 0
        c = self.cfg
        for view in views:
            origin, dirs, ranges = depth_to_rays(view.depth, view.alpha, view.c2w, view.K, c.min_alpha)
            free, hit = scan_voxels(origin, dirs, ranges, self.grid.voxel_size, c.max_range_m, c.free_margin_m,
                                    c.free_margin_rel)
            self.grid.integrate(free, hit, origin)
            rays += len(ranges)
            self.num_scans += 1
        return rays

    def products(self) -> OccupancyProducts:
        """The 2-D grid of the band, its ESDF slice and the occupied voxel centres."""
        c = self.cfg
        grid2d = project_band(self.grid, *self.band, c.min_free_fraction)
        esdf = signed_distance_slice(grid2d, c.esdf_max_distance_m, c.esdf_unknown_value)
        centres = ((self.grid.voxels(CellState.OCCUPIED) + 0.5) * self.grid.voxel_size).astype(np.float32)
        return OccupancyProducts(grid2d, esdf, centres, self.grid.revision)

    def stats(self) -> dict:
        """Cheap counters (no pass over the voxels): blocks, bytes, scans integrated."""
        return {"occupancy_blocks": self.grid.num_blocks, "occupancy_memory_bytes": self.grid.memory_bytes(),
                "occupancy_scans": self.num_scans}


def window_depth_views(cfg: OccupancyConfig, keyframes: Sequence, window_gaussians: Gaussians | None,
                       render_map: Callable[[np.ndarray, np.ndarray, int, int], DepthView]) -> list[DepthView]:
    """Depth at a window's keyframes (objects with c2w, K, rgb), at ``render_scale`` of their size:
    from the window's Gaussians (one batched render) or from the map (``render_map``, per camera)."""
    h, w = keyframes[0].rgb.shape[:2]
    cams = [scaled_camera(k.K, w, h, cfg.render_scale) for k in keyframes]
    c2w = np.stack([k.c2w for k in keyframes])
    Ks = np.stack([c[0] for c in cams])
    sw, sh = cams[0][1], cams[0][2]
    if cfg.depth_source == "window" and window_gaussians is not None:
        return render_depth_views(window_gaussians, c2w, Ks, sw, sh)
    return [render_map(c2w[v], Ks[v], sw, sh) for v in range(len(keyframes))]


def keyframe_cameras(keyframes: Sequence) -> dict:
    """Sidecar entry ``{"keyframe_cameras": {id: {K, width, height}}}``: with the keyframe poses
    it lets a loaded map rebuild its occupancy grid."""
    return {"keyframe_cameras": {str(int(k.id)): {"K": np.asarray(k.K, np.float64).tolist(),
                                                  "width": int(k.rgb.shape[1]), "height": int(k.rgb.shape[0])}
                                 for k in keyframes}}


def cameras_from_sidecar(side: dict | None) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """(c2w (4, 4), K (3, 3), width, height) of every keyframe with a pose and a camera in a sidecar."""
    if not side:
        return []
    poses, cams = side.get("keyframe_poses") or {}, side.get("keyframe_cameras") or {}
    out = []
    for key in sorted(set(poses) & set(cams), key=lambda k: int(k)):
        cam = cams[key]
        out.append((np.asarray(poses[key], np.float64).reshape(4, 4), np.asarray(cam["K"], np.float64).reshape(3, 3),
                    int(cam["width"]), int(cam["height"])))
    return out


def rebuild(occ: OccupancyMap, cameras: Sequence[tuple[np.ndarray, np.ndarray, int, int]],
            render_map: Callable[[np.ndarray, np.ndarray, int, int], DepthView]) -> float:
    """Empty the grid and integrate the map rendered at ``cameras``; returns the seconds it took."""
    t0 = time.monotonic()
    occ.reset()
    for c2w, K, w, h in cameras:
        Ks, sw, sh = scaled_camera(K, w, h, occ.cfg.render_scale)
        occ.integrate([render_map(c2w, Ks, sw, sh)])
    if cameras:
        logger.info("occupancy grid rebuilt from the loaded map at %d keyframe cameras in %.1f s",
                    len(cameras), time.monotonic() - t0)
    else:
        logger.warning("the loaded map has no keyframe cameras in its sidecar: the occupancy grid starts empty "
                       "(unknown) and fills as new windows arrive")
    return time.monotonic() - t0
