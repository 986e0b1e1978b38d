"""Step 3 of fusing a window into the map (see :mod:`ilrm_ros.mapping.fusion`): the map's
Gaussians in the chunks a window sees are classified against the window's observed depth
and carved, replaced or confirmed; the window's own Gaussians that would duplicate a kept,
closer observation are marked to be dropped.
"""
from __future__ import annotations

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS
from ilrm_ros.mapping.chunks import MapUpdate
from ilrm_ros.mapping.fusion import MapConfig, Projection, WindowCameras, gather_cells, project, zbuffer
from ilrm_ros.mapping.map_storage import Block, cat_books

__all__ = ["fuse_with_chunks"]


def _classify(po: Projection, dmin: np.ndarray, dmax: np.ndarray, cfg: MapConfig) -> tuple[np.ndarray, np.ndarray]:
    """Free-space and near-surface masks (V, M) of projected old Gaussians against the observed depth
    dmin, dmax (V, cells). numpy (the same float32 operations as torch, several times faster here)."""
    z = po.z.numpy()
    flat = po.cell.numpy() + (np.arange(dmin.shape[0]) * dmin.shape[1])[:, None]   # into the stacked cell images
    d_lo, d_hi = dmin.reshape(-1).take(flat), dmax.reshape(-1).take(flat)
    known = po.visible.numpy() & np.isfinite(d_lo)
    tol = cfg.depth_tol_abs + cfg.depth_tol_rel * np.where(known, d_lo, np.float32(0))
    free_v = known & (z < d_lo - tol)
    near_v = known & ~free_v & (z <= d_hi + tol)
    return free_v, near_v


def fuse_with_chunks(blocks: list[Block], rows: torch.Tensor, proj_new: Projection, cams: WindowCameras,
                     depth: tuple[torch.Tensor, torch.Tensor], cfg: MapConfig, window_id: int,
                     update: MapUpdate) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Carve/replace/confirm the Gaussians of ``blocks`` (the chunks in the window's frusta).

    rows: the window's Gaussians (N, 14) with their projection ``proj_new`` (V, N);
    depth: the observed depth per camera and cell, dmin and dmax (V, cells) (+-inf where empty).
    Blocks are rewritten in place (removed Gaussians, updated bookkeeping) and ``update``'s
    counts increased. Returns drop_new (N,) bool (window Gaussians duplicating a kept one),
    new_obs (N,) int32 (observation counts inherited from replaced Gaussians) and the indices
    of the blocks whose Gaussians changed.
    """
    dmin, dmax = depth
    n_new = rows.shape[0]
    drop_new = torch.zeros(n_new, dtype=torch.bool)
    new_obs = torch.ones(n_new, dtype=torch.int32)
    starts = np.cumsum([0] + [len(b) for b in blocks])
    # (M, 3) as a view of a (3, M) array: the layout project() works in (one copy instead of two)
    means_old = torch.from_numpy(np.concatenate([b.rows[:, COL_MEANS].T for b in blocks], axis=1)).T
    book_old = cat_books([b.book for b in blocks])
    src_old = torch.from_numpy(np.ascontiguousarray(book_old["src_dist"]))
    obs_old = torch.from_numpy(np.ascontiguousarray(book_old["obs_count"]))

    po = project(means_old, cams, cfg.depth_downsample, cfg.near)
    free_v, near_v = _classify(po, dmin.numpy(), dmax.numpy(), cfg)
    any_near = near_v.any(0)
    carved = free_v.any(0) & ~any_near if cfg.carve else np.zeros_like(any_near)
    if cfg.replace:
        closest = np.where(near_v, po.dist.numpy(), np.inf).min(0)
        replaced = any_near & (closest <= cfg.replace_distance_ratio * src_old.numpy())
    else:
        replaced = np.zeros_like(any_near)
    kept_seen = any_near & ~replaced
    near_v, carved, replaced, kept_seen = (torch.from_numpy(a) for a in (near_v, carved, replaced, kept_seen))

    # Cells where a kept (closer) old Gaussian sits at the surface: the window's own
    # Gaussians at that depth there would duplicate it.
    n_cells = dmin.shape[1]
    kmin, kmax = zbuffer(Projection(z=po.z, cell=po.cell, visible=near_v & kept_seen[None]), n_cells)
    if n_new and bool(torch.isfinite(kmin).any()):
        tol_new = cfg.depth_tol_abs + cfg.depth_tol_rel * gather_cells(dmin, proj_new).clamp_min(0)
        lo, hi = gather_cells(kmin, proj_new), gather_cells(kmax, proj_new)
        drop_new = (proj_new.visible & (proj_new.z >= lo - tol_new) & (proj_new.z <= hi + tol_new)).amax(0)
    # Window Gaussians inherit the observation count of what they replace in their cell.
    rep_v = near_v & replaced[None]
    if n_new and bool(rep_v.any()):
        n_cams = len(cams)
        flat = (torch.arange(n_cams)[:, None] * n_cells + po.cell)[rep_v]
        vals = obs_old.to(torch.int64)[None].expand(n_cams, -1)[rep_v]
        best = torch.zeros(n_cams * n_cells, dtype=torch.int64).scatter_reduce_(0, flat, vals, reduce="amax")
        inherited = torch.where(proj_new.visible, gather_cells(best.view(n_cams, n_cells), proj_new), 0)
        new_obs = (1 + inherited.amax(0)).to(torch.int32)

    remove, seen = (carved | replaced).numpy(), kept_seen.numpy()
    update.num_carved += int(carved.sum())
    update.num_replaced += int(replaced.sum())
    update.num_removed += int(remove.sum())
    if seen.any():
        book_old["obs_count"][seen] += 1
        book_old["last_seen"][seen] = window_id
    # Only the chunks with something removed or seen again are written back.
    rewritten: list[int] = []
    n_rm = np.add.reduceat(remove, starts[:-1])
    n_seen = np.add.reduceat(seen, starts[:-1])
    for j in np.flatnonzero(n_rm + n_seen).tolist():
        b, a, e = blocks[j], int(starts[j]), int(starts[j + 1])
        if n_rm[j]:
            keep = np.flatnonzero(~remove[a:e])
            b.set(b.rows.take(keep, axis=0), book_old[a:e].take(keep))   # with the updated bookkeeping
            rewritten.append(j)
        else:
            b.book = book_old[a:e].copy()   # same rows (bounds stay valid), new bookkeeping
    return drop_new, new_obs, rewritten
