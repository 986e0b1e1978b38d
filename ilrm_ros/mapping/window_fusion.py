"""Step 3 of fusing a window into the map (see :mod:`ilrm_ros.mapping.fusion`): the map's
Gaussians in the chunks a window sees are classified against the window's observed depth
and carved, replaced or confirmed; the window's own Gaussians that would duplicate a kept,
closer observation are marked to be dropped.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS
from ilrm_ros.mapping import fusion_native
from ilrm_ros.mapping.chunks import MapUpdate
from ilrm_ros.mapping.fusion import (
    MapConfig,
    Projection,
    WindowCameras,
    camera_points,
    gather_cells,
    project_camera,
    squared_norms,
)
from ilrm_ros.mapping.map_storage import Block, cat_books

__all__ = ["fuse_with_chunks", "classify_old", "classify_camera", "surface_cells", "OldGaussians"]


@dataclass
class OldGaussians:
    """The window's verdict on the map's Gaussians in its frusta (M of them, V cameras).

    near_v (V, M) bool: at the observed surface for that camera; flat (V, M) int32: their cell
    in the cameras' stacked (V * cells) grids; z (V, M): camera depth; any_free, any_near (M,)
    bool: in free space / at the surface for some camera; closest (M,) float32: distance to the
    closest camera that sees it at the surface (inf if none).
    """

    near_v: np.ndarray
    flat: np.ndarray
    z: np.ndarray
    any_free: np.ndarray
    any_near: np.ndarray
    closest: np.ndarray


def classify_old(means: torch.Tensor, cams: WindowCameras, dmin: np.ndarray, dmax: np.ndarray,
                 cfg: MapConfig) -> OldGaussians:
    """Project the map's means (M, 3) and classify them against the observed depth dmin, dmax
    (V, cells), one camera at a time (its arrays stay in cache): the values of ``project`` and the
    tests of the fusion policy (module doc of :mod:`ilrm_ros.mapping.fusion`), bit for bit. Each
    camera runs the compiled depth test where it is built (``fusion_native``), else its numpy twin
    :func:`classify_camera`."""
    pc = camera_points(means, cams)
    k, n_cells = cams.K.numpy(), dmin.shape[1]
    shape = pc[:, 0].shape
    out = OldGaussians(near_v=np.empty(shape, bool), flat=np.empty(shape, np.int32), z=pc[:, 2],
                       any_free=np.zeros(shape[1], bool), any_near=np.zeros(shape[1], bool),
                       closest=np.full(shape[1], np.inf, np.float32))
    # the cameras' grids stacked: indexed by flat cells
    depth = (np.ascontiguousarray(dmin.reshape(-1)), np.ascontiguousarray(dmax.reshape(-1)))
    tol = (cfg.depth_tol_rel, cfg.depth_tol_abs, cfg.near)
    classify = fusion_native.classify_camera if fusion_native.available(pc, k) else classify_camera
    for i in range(len(cams)):
        classify(pc[i], k[i], (cams.height, cams.width, cfg.depth_downsample, i * n_cells), tol, depth,
                 (out.flat[i], out.near_v[i], out.any_free, out.any_near, out.closest if cfg.replace else None))
    if cfg.replace:   # sqrt is monotonic: the root of the smallest square is the smallest root, bit for bit
        out.closest = torch.from_numpy(out.closest).sqrt_().numpy()
    return out


def classify_camera(pc: np.ndarray, k: np.ndarray, grid: tuple[int, int, int, int], tol: tuple[float, float, float],
                    depth: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, ...]) -> None:
    """One camera of :func:`classify_old` in numpy (the twin of ``fusion_native.classify_camera``, same
    arguments): pc (3, N) camera points, k (3, 3); grid = (height, width, downsample, offset of the camera's
    cells); tol = (depth_tol_rel, depth_tol_abs, near); depth = dmin, dmax (V * cells,) stacked. Writes
    out = (flat (N,) int32, near (N,) bool, any_free (N,) bool, any_near (N,) bool, closest (N,) squared
    distance or None) in place."""
    flat_out, near_out, any_free, any_near, closest = out
    height, width, downsample, offset = grid
    tol_rel, tol_abs, near_plane = tol
    z = pc[2]
    visible, flat = project_camera(pc, k, (height, width), downsample, near_plane, offset=offset, out=flat_out)
    d_lo, d_hi = depth[0].take(flat), depth[1].take(flat)   # invisible points (flat 0) are masked by known
    known = visible & np.isfinite(d_lo)
    # tol, free and near are only read where known: tol is computed from d_lo everywhere (inf - inf
    # where nothing was observed gives nan, which compares False), in place (fewer temporaries)
    band = tol_rel * d_lo
    band += tol_abs
    with np.errstate(invalid="ignore"):
        free = z < d_lo - band
        near = np.less_equal(z, d_hi + band, out=near_out)
    free &= known
    near &= known
    near &= ~free
    any_free |= free
    any_near |= near
    if closest is not None:
        np.minimum(closest, squared_norms(pc), out=closest, where=near)


def _duplicates(proj_new: Projection, dmin: np.ndarray, kmin: np.ndarray, kmax: np.ndarray,
                cfg: MapConfig) -> np.ndarray:
    """(N,) bool: window Gaussians within the surface tolerance of a kept old Gaussian's depth range
    [kmin, kmax] (V, cells) of their cell, for some camera. numpy, the float32 operations of torch."""
    z, visible = proj_new.z.numpy(), proj_new.visible.numpy()
    flat = proj_new.cell.numpy() + (np.arange(dmin.shape[0]) * dmin.shape[1])[:, None]
    tol_new = cfg.depth_tol_abs + cfg.depth_tol_rel * np.maximum(dmin.reshape(-1).take(flat), np.float32(0))
    lo, hi = kmin.reshape(-1).take(flat), kmax.reshape(-1).take(flat)
    with np.errstate(invalid="ignore"):   # inf - inf in cells without a kept Gaussian: nan, compares False
        return (visible & (z >= lo - tol_new) & (z <= hi + tol_new)).any(axis=0)


def surface_cells(near_v: np.ndarray, flat: np.ndarray, z: np.ndarray, kept: np.ndarray, obs: np.ndarray,
                  n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The twin of ``fusion_native.surface_cells`` (same arguments and results): masked scatters. Per stacked
    cell the depth range of the points kept at the surface, and the largest observation count of the ones
    replaced there."""
    size = near_v.shape[0] * n_cells
    kmin, kmax, best = np.full(size, np.inf, np.float32), np.full(size, -np.inf, np.float32), np.zeros(size, np.int32)
    kept_v, rep_v = near_v & kept[None], near_v & ~kept[None]
    n_kept, n_replaced = int(np.count_nonzero(kept_v)), int(np.count_nonzero(rep_v))
    if n_kept:
        cell, z_kept = flat[kept_v].astype(np.int64), z[kept_v]   # widened once for both scatters
        kmin = _cell_max(cell, z_kept, size, np.inf, "amin").numpy()
        kmax = _cell_max(cell, z_kept, size, -np.inf, "amax").numpy()
    if n_replaced:
        vals = np.broadcast_to(obs.astype(np.int64), rep_v.shape)[rep_v]
        best = _cell_max(flat[rep_v], vals, size, 0, "amax").numpy().astype(np.int32)
    return kmin, kmax, best, n_kept, n_replaced


def _cell_max(flat: np.ndarray, values: np.ndarray, size: int, fill: float | int, reduce: str) -> torch.Tensor:
    """Per cell the ``reduce`` ("amin"/"amax") of ``values`` (P,) at flat cell indices (P,) (int32 are widened;
    pass int64 to reuse them): (size,)."""
    vals, index = torch.from_numpy(values), torch.from_numpy(flat.astype(np.int64, copy=False))
    return torch.full((size,), fill, dtype=vals.dtype).scatter_reduce_(0, index, vals, reduce=reduce)


def fuse_with_chunks(blocks: list[Block], means: torch.Tensor, proj_new: Projection, cams: WindowCameras,
                     depth: tuple[torch.Tensor, torch.Tensor], cfg: MapConfig, window_id: int,
                     update: MapUpdate) -> tuple[torch.Tensor, torch.Tensor, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Carve/replace/confirm the Gaussians of ``blocks`` (the chunks in the window's frusta).

    means: the window's Gaussians' means (N, 3) with their projection ``proj_new`` (V, N);
    depth: the observed depth per camera and cell, dmin and dmax (V, cells) (+-inf where empty).
    Blocks that only had Gaussians seen again get their new bookkeeping in place; ``update``'s
    counts are increased. Returns drop_new (N,) bool (window Gaussians duplicating a kept one),
    new_obs (N,) int32 (observation counts inherited from replaced Gaussians) and the removals:
    per index of a block that loses Gaussians, the rows it keeps (K,) ascending and its updated
    bookkeeping (all of its rows), for :meth:`~ilrm_ros.mapping.map_storage.Block.splice`.
    """
    dmin, dmax = depth
    n_new = means.shape[0]
    drop_new = torch.zeros(n_new, dtype=torch.bool)
    new_obs = torch.ones(n_new, dtype=torch.int32)
    starts = np.cumsum([0] + [len(b) for b in blocks])
    # (M, 3) as a view of a (3, M) array: the layout project() works in (one copy instead of two)
    means_old = torch.from_numpy(np.concatenate([b.rows[:, COL_MEANS].T for b in blocks], axis=1)).T
    book_old = cat_books([b.book for b in blocks])
    src_old = torch.from_numpy(np.ascontiguousarray(book_old["src_dist"]))
    obs_old = torch.from_numpy(np.ascontiguousarray(book_old["obs_count"]))

    old = classify_old(means_old, cams, dmin.numpy(), dmax.numpy(), cfg)
    any_near = old.any_near
    carved = old.any_free & ~any_near if cfg.carve else np.zeros_like(any_near)
    if cfg.replace:
        replaced = any_near & (old.closest <= cfg.replace_distance_ratio * src_old.numpy())
    else:
        replaced = np.zeros_like(any_near)
    kept_seen = any_near & ~replaced

    # Cells where a kept (closer) old Gaussian sits at the surface: the window's own Gaussians at that
    # depth there would duplicate it. Window Gaussians inherit the observation count of what they
    # replace in their cell.
    n_cams, n_cells = len(cams), dmin.shape[1]
    cells = fusion_native.surface_cells if fusion_native.available() else surface_cells
    kmin, kmax, best, n_kept, n_replaced = cells(old.near_v, old.flat, old.z, kept_seen, obs_old.numpy(), n_cells)
    if n_new and n_kept:
        drop_new = torch.from_numpy(_duplicates(proj_new, dmin.numpy(), kmin.reshape(n_cams, n_cells),
                                                kmax.reshape(n_cams, n_cells), cfg))
    if n_new and n_replaced:
        best_cells = torch.from_numpy(best).view(n_cams, n_cells)
        inherited = torch.where(proj_new.visible, gather_cells(best_cells, proj_new), 0)
        new_obs = (1 + inherited.amax(0)).to(torch.int32)

    remove, seen = carved | replaced, kept_seen
    update.num_carved += int(carved.sum())
    update.num_replaced += int(replaced.sum())
    update.num_removed += int(remove.sum())
    if seen.any():
        book_old["obs_count"][seen] += 1
        book_old["last_seen"][seen] = window_id
    # Only the chunks with something removed or seen again are written back; removals are left to the
    # insertion, which writes each chunk once (the kept rows, then the window's).
    removals: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    n_rm = np.add.reduceat(remove, starts[:-1])
    n_seen = np.add.reduceat(seen, starts[:-1])
    for j in np.flatnonzero(n_rm + n_seen).tolist():
        a, e = int(starts[j]), int(starts[j + 1])
        if n_rm[j]:
            removals[j] = (np.flatnonzero(~remove[a:e]), book_old[a:e])   # with the updated bookkeeping
        else:
            blocks[j].book = book_old[a:e].copy()   # same rows (bounds stay valid), new bookkeeping
    return drop_new, new_obs, removals


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block, then restored."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def source_distance(proj: Projection) -> torch.Tensor:
    """(N,) distance of each Gaussian to the closest window camera that sees it, else to the closest
    camera (numpy: the same float32 minima as torch, with faster masking)."""
    dist = proj.dist.numpy()
    if dist.shape[1] == 0:
        return torch.zeros(0)
    seen = np.where(proj.visible.numpy(), dist, np.float32(np.inf)).min(0)
    return torch.from_numpy(np.where(np.isfinite(seen), seen, dist.min(0)))
