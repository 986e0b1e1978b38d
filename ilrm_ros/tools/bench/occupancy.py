"""The occupancy stage of `ilrm-ros bench node`: the grid is first filled to a 20 m x 20 m x 3 m
observed area around the scene (2,500 blocks at 5 cm), so every window's update runs against a
map of the size the issue sets the target for (update <= 50 ms per window on CPU), then the
stage's times per window are summarised:

  occupancy_render_s   depth + alpha of the window's keyframes rendered from the Gaussians
  occupancy_update_s   rays -> free / hit voxels -> log-odds (the grid update itself)
  occupancy_publish_s  2-D projection, ESDF slice, voxel cloud and their messages (when published)
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ilrm_ros.mapping.occupancy import VoxelGrid

log = logging.getLogger(__name__)

BENCH_AREA_M = (20.0, 20.0, 3.0)
STAGES = ("occupancy_render_s", "occupancy_update_s", "occupancy_publish_s")


def prefill(grid: VoxelGrid, centre_xy: np.ndarray, area_m: tuple[float, float, float] = BENCH_AREA_M) -> dict:
    """Observe every voxel of an area (x, y centred on ``centre_xy``, z from 0) as free once, one
    z layer at a time; returns the area, blocks, bytes and the seconds it took."""
    t0 = time.monotonic()
    vs = grid.voxel_size
    lo = np.floor((np.asarray(centre_xy, np.float64) - 0.5 * np.asarray(area_m[:2])) / vs).astype(np.int64)
    nx, ny, nz = (int(round(a / vs)) for a in area_m)
    ii, jj = np.meshgrid(np.arange(nx) + lo[0], np.arange(ny) + lo[1], indexing="ij")
    none = np.zeros((0, 3), np.int64)
    for k in range(nz):
        grid.integrate(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1), none)
    return {"area_m": list(area_m), "blocks": grid.num_blocks, "memory_bytes": grid.memory_bytes(),
            "prefill_s": time.monotonic() - t0}


def summarise(windows: list[dict]) -> dict:
    """Median and max of each occupancy stage over windows (those that have it)."""
    out = {}
    for key in STAGES:
        values = np.array([w[key] for w in windows if key in w], np.float64)
        if len(values):
            out[f"{key}_median"], out[f"{key}_max"] = float(np.median(values)), float(values.max())
    return out


def table(s: dict, occ: dict) -> str:
    """Two lines for the bench's printout."""
    ms = lambda k: f"{1e3 * s[k]:.1f}" if k in s else "n/a"  # noqa: E731
    return (f"occupancy ({occ['area_m'][0]:g} x {occ['area_m'][1]:g} x {occ['area_m'][2]:g} m observed, "
            f"{occ['blocks_end']} blocks, {occ['memory_bytes_end'] / 1e6:.0f} MB): update median "
            f"{ms('occupancy_update_s_median')} ms (max {ms('occupancy_update_s_max')}), render "
            f"{ms('occupancy_render_s_median')} ms, publish {ms('occupancy_publish_s_median')} ms per window")
