"""The bounded global Gaussian map (ROS-free core).

The map is a dict of :class:`~ilrm_ros.mapping.chunks.Chunk` keyed by the integer
voxel-block index ``floor(mean / chunk_size)`` in the map frame. Each iLRM window is
fused into it with :meth:`GaussianMap.integrate` (policy and parameters:
:mod:`ilrm_ros.mapping.fusion`), which returns the :class:`MapUpdate` (whole-chunk
UPSERTs / DELETEs) a subscriber needs to follow; :meth:`GaussianMap.reset` returns a
CLEAR and :meth:`GaussianMap.snapshot` the full map for late joiners.

Revisions: one map-wide counter, increased once per operation that changes content
(and never reset, also not by :meth:`reset`); every chunk changed by the operation gets
the new value.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Sequence

import numpy as np
import torch

from ilrm_ros.mapping.chunks import (
    COL_MEANS,
    COL_SCALES,
    Chunk,
    ChunkKey,
    ChunkUpdate,
    MapUpdate,
    UpdateAction,
    array_to_gaussians,
    chunk_keys,
    chunk_update,
    gaussians_to_array,
)
from ilrm_ros.mapping.fusion import (
    FusionConfig,
    Projection,
    WindowCameras,
    boxes_in_frusta,
    depth_image_bounds,
    eviction_priority,
    gather_cells,
    grid_shape,
    project,
    prune_mask,
    zbuffer,
)
from ilrm_ros.model.gaussians import Gaussians

logger = logging.getLogger(__name__)

__all__ = ["FusionConfig", "GaussianMap", "MapUpdate", "WindowCameras", "ChunkUpdate", "UpdateAction",
           "smallest_first"]


_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


def encode_keys(keys: torch.Tensor) -> np.ndarray:
    """(N, 3) int32 keys -> (N,) int64 codes whose order is the lexicographic key order.

    Each component must lie in [-2^20, 2^20) (a million chunk edges from the origin).
    """
    k = keys.to(torch.int64).numpy() + _KEY_OFFSET
    if k.size and (k.min() < 0 or k.max() >= 1 << _KEY_BITS):
        raise ValueError("chunk key out of the encodable range (+-2^20 blocks): check the map frame / chunk_size")
    return (k[:, 0] << (2 * _KEY_BITS)) | (k[:, 1] << _KEY_BITS) | k[:, 2]


def decode_key(code: int) -> tuple[int, int, int]:
    mask = (1 << _KEY_BITS) - 1
    return ((code >> (2 * _KEY_BITS)) - _KEY_OFFSET, ((code >> _KEY_BITS) & mask) - _KEY_OFFSET,
            (code & mask) - _KEY_OFFSET)


def _new_map_id() -> str:
    return uuid.uuid4().hex[:16]


def smallest_first(priority: torch.Tensor, born: torch.Tensor, gid: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` entries that come first in the order (priority, born, gid).

    Exactly the first ``k`` of a full lexicographic sort, found in O(N) with a partition:
    deterministic for equal inputs. priority (N,) float, born (N,) int, gid (N,) int.
    """
    n = int(priority.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n)
    p = priority.numpy()
    kth = np.partition(p, k - 1)[k - 1]
    below = np.flatnonzero(p < kth)
    ties = np.flatnonzero(p == kth)
    ties = ties[np.lexsort((gid.numpy()[ties], born.numpy()[ties]))][: k - len(below)]
    return np.concatenate([below, ties])


class GaussianMap:
    """A bounded, chunked, fused map of Gaussians in one map frame (CPU tensors).

    Not thread-safe: one owner (the mapping worker) calls the mutating methods; other
    threads must hold the owner's lock for queries. Chunk row tensors are never modified
    in place, so rows already handed out (updates, query results) stay valid.
    """

    def __init__(self, config: FusionConfig | None = None, map_frame: str = "map", model_id: str = "",
                 map_id: str | None = None) -> None:
        self.config = config or FusionConfig()
        self.map_frame = map_frame
        self.model_id = model_id
        self.map_id = map_id or _new_map_id()
        self.created = time.time()
        self.revision = 0
        self.num_windows = 0
        self._keyframes: set[int] = set()
        self._chunks: dict[ChunkKey, Chunk] = {}
        self._next_gid = 0
        self.robot_position: torch.Tensor | None = None

    # ------------------------------------------------------------------ queries

    @property
    def chunk_size(self) -> float:
        return self.config.chunk_size

    @property
    def chunks(self) -> dict[ChunkKey, Chunk]:
        """The chunks (read-only use: mutate the map only through its methods)."""
        return self._chunks

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks.values())

    def memory_bytes(self) -> int:
        """Bytes held by the Gaussian rows and their bookkeeping tensors."""
        return sum(c.memory_bytes() for c in self._chunks.values())

    def stats(self) -> dict:
        """Counts for logs and ``MapInfo``."""
        return {
            "map_id": self.map_id,
            "num_gaussians": len(self),
            "num_chunks": len(self._chunks),
            "memory_bytes": self.memory_bytes(),
            "revision": self.revision,
            "num_windows": self.num_windows,
            "num_keyframes": len(self._keyframes),
            "max_gaussians": self.config.max_gaussians_total,
            "chunk_size": self.chunk_size,
        }

    def all_gaussians(self) -> Gaussians:
        """Every Gaussian, ordered by chunk key then row: (N, ...) fields."""
        if not self._chunks:
            return Gaussians.empty()
        return array_to_gaussians(torch.cat([self._chunks[k].rows for k in sorted(self._chunks)], dim=0))

    def gaussians_in_frustum(self, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                             near: float = 0.01, far: float = 1e4, sigmas: float = 3.0) -> Gaussians:
        """Gaussians that may be visible from one camera (c2w (4, 4) OpenCV, K (3, 3) pixels).

        Chunks are selected by their padded bounds against the frustum, then each Gaussian
        by its projected mean with a margin of ``sigmas`` times its largest scale.
        """
        cams = WindowCameras(c2w=c2w, K=K, height=height, width=width)
        keys = self._chunks_in_frusta(cams, near, far, sigmas)
        if not keys:
            return Gaussians.empty()
        rows = torch.cat([self._chunks[k].rows for k in keys], dim=0)
        rot = cams.c2w[0, :3, :3]
        pc = (rows[:, COL_MEANS] - cams.centers[0]) @ rot
        z = pc[:, 2]
        pad = sigmas * rows[:, COL_SCALES].max(dim=1).values
        k = cams.K[0]
        zs = z.clamp_min(1e-6)
        u = k[0, 0] * pc[:, 0] / zs + k[0, 2]
        v = k[1, 1] * pc[:, 1] / zs + k[1, 2]
        r_u, r_v = k[0, 0] * pad / zs, k[1, 1] * pad / zs
        keep = (z + pad > near) & (z - pad < far)
        keep &= (u + r_u >= 0) & (u - r_u < width) & (v + r_v >= 0) & (v - r_v < height)
        # Gaussians straddling the camera plane cannot be projected reliably: keep them.
        keep |= (z.abs() <= pad)
        return array_to_gaussians(rows[keep])

    def _chunks_in_frusta(self, cams: WindowCameras, near: float, far: float, sigmas: float = 3.0) -> list[ChunkKey]:
        keys = sorted(self._chunks)
        if not keys:
            return []
        ext = [self._chunks[k].extent(sigmas) for k in keys]
        lo = torch.tensor(np.stack([e[0] for e in ext]), dtype=torch.float32)
        hi = torch.tensor(np.stack([e[1] for e in ext]), dtype=torch.float32)
        hit = boxes_in_frusta(lo, hi, cams, near, far)
        return [k for k, h in zip(keys, hit.tolist()) if h]

    # ------------------------------------------------------------------ updates

    def integrate(self, gaussians: Gaussians, cameras: WindowCameras, window_id: int,
                  keyframe_ids: Sequence[int] = (), robot_position: torch.Tensor | Sequence[float] | None = None
                  ) -> MapUpdate:
        """Fuse one window's Gaussians (map frame, activated) into the map.

        gaussians: (N, ...) or (1, N, ...) fields, N = V * Gaussians per view.
        cameras:   the window's V cameras (c2w (V, 4, 4), K (V, 3, 3), image size).
        robot_position: (3,) for "local" eviction; default the mean camera centre.
        Returns the chunk updates, revision already applied.
        """
        cfg = self.config
        kf = tuple(int(k) for k in keyframe_ids)
        self._keyframes.update(kf)
        centers = cameras.centers
        self.robot_position = (centers.mean(0) if robot_position is None
                               else torch.as_tensor(robot_position).detach().to("cpu", torch.float32).reshape(3))
        rows = gaussians_to_array(gaussians)
        n_in = rows.shape[0]
        rows = rows[prune_mask(rows, cfg)]
        proj_new = project(rows[:, COL_MEANS], cameras, cfg.depth_downsample, cfg.near)
        dist = proj_new.dist                                                     # (V, N)
        if cfg.max_camera_distance > 0 and rows.shape[0]:
            near_enough = dist.min(0).values <= cfg.max_camera_distance
            rows, dist = rows[near_enough], dist[:, near_enough]
            proj_new = Projection(z=proj_new.z[:, near_enough], cell=proj_new.cell[:, near_enough],
                                  visible=proj_new.visible[:, near_enough], dist=dist)
        src_dist = torch.where(proj_new.visible, dist, torch.inf).min(0).values if rows.shape[0] else torch.zeros(0)
        if rows.shape[0]:
            src_dist = torch.where(torch.isfinite(src_dist), src_dist, dist.min(0).values)
        new_obs = torch.ones(rows.shape[0], dtype=torch.int32)

        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=int(window_id))
        changed: set[ChunkKey] = set()
        if cfg.fusion:
            drop_new, new_obs = self._fuse(rows, proj_new, cameras, int(window_id), changed, update)
            keep = ~drop_new
            rows, src_dist, new_obs = rows[keep], src_dist[keep], new_obs[keep]
        update.num_added = int(rows.shape[0])
        self._insert(rows, src_dist, new_obs, int(window_id), changed)
        if cfg.fusion and cfg.dedup_voxel > 0:
            update.num_removed += self._dedup(changed)
        update.num_evicted = self._enforce_caps(changed)
        self.num_windows += 1
        logger.debug("window %d: %d in, %d added, %d carved, %d replaced, %d evicted, %d chunks changed",
                     window_id, n_in, update.num_added, update.num_carved, update.num_replaced,
                     update.num_evicted, len(changed))
        self._emit(changed, update, int(window_id), kf)
        return update

    def add(self, gaussians: Gaussians, window_id: int = -1, src_dist: float = float("inf")) -> MapUpdate:
        """Insert Gaussians without fusion (e.g. a loaded map); pruning and caps apply."""
        rows = gaussians_to_array(gaussians)
        rows = rows[prune_mask(rows, self.config)]
        changed: set[ChunkKey] = set()
        self._insert(rows, torch.full((rows.shape[0],), src_dist), torch.ones(rows.shape[0], dtype=torch.int32),
                     window_id, changed)
        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=window_id,
                           num_added=int(rows.shape[0]))
        update.num_evicted = self._enforce_caps(changed)
        self._emit(changed, update, window_id, ())
        return update

    def reset(self) -> MapUpdate:
        """Drop everything; a new map id; returns the CLEAR (revision still increases)."""
        self._chunks.clear()
        self._keyframes.clear()
        self.num_windows = 0
        self.map_id = _new_map_id()
        self.revision += 1
        clear = ChunkUpdate(UpdateAction.CLEAR, self.map_id, (0, 0, 0), self.chunk_size, self.revision)
        return MapUpdate(map_id=self.map_id, revision=self.revision, updates=[clear])

    def snapshot(self) -> MapUpdate:
        """CLEAR followed by every chunk at its current revision (for late subscribers).

        Applying it to an up-to-date replica changes nothing (all stale/duplicate).
        """
        clear = ChunkUpdate(UpdateAction.CLEAR, self.map_id, (0, 0, 0), self.chunk_size, self.revision)
        ups = [chunk_update(self._chunks[k], self.map_id, self.chunk_size) for k in sorted(self._chunks)]
        return MapUpdate(map_id=self.map_id, revision=self.revision, updates=[clear] + ups)

    # ------------------------------------------------------------------ internals

    def _fuse(self, rows: torch.Tensor, proj_new: Projection, cams: WindowCameras, window_id: int,
              changed: set[ChunkKey], update: MapUpdate) -> tuple[torch.Tensor, torch.Tensor]:
        """Carve/replace/confirm old Gaussians seen by the window; returns (drop_new (N,), new_obs (N,))."""
        cfg = self.config
        n_new = rows.shape[0]
        drop_new = torch.zeros(n_new, dtype=torch.bool)
        new_obs = torch.ones(n_new, dtype=torch.int32)
        h, w = grid_shape(cams.height, cams.width, cfg.depth_downsample)
        if cams.depths is not None:
            dmin, dmax = depth_image_bounds(cams.depths, cams, cfg.depth_downsample)
        else:
            dmin, dmax = zbuffer(proj_new, h * w)
        observed = torch.isfinite(dmax)
        if not observed.any():
            return drop_new, new_obs
        far = float(dmax[observed].max())
        far += cfg.depth_tol_abs + cfg.depth_tol_rel * far
        keys = self._chunks_in_frusta(cams, cfg.near, far, sigmas=0.0)
        if not keys:
            return drop_new, new_obs
        chunks = [self._chunks[k] for k in keys]
        sizes = [len(c) for c in chunks]
        means_old = torch.cat([c.rows[:, COL_MEANS] for c in chunks], dim=0)
        src_old = torch.cat([c.src_dist for c in chunks])
        obs_old = torch.cat([c.obs_count for c in chunks])

        po = project(means_old, cams, cfg.depth_downsample, cfg.near)
        d_lo, d_hi = gather_cells(dmin, po), gather_cells(dmax, po)
        known = po.visible & torch.isfinite(d_lo)
        tol = cfg.depth_tol_abs + cfg.depth_tol_rel * torch.where(known, d_lo, torch.zeros_like(d_lo))
        free_v = known & (po.z < d_lo - tol)
        near_v = known & ~free_v & (po.z <= d_hi + tol)
        any_near = near_v.any(0)
        carved = free_v.any(0) & ~any_near if cfg.carve else torch.zeros_like(any_near)
        if cfg.replace:
            closest = torch.where(near_v, po.dist, torch.inf).min(0).values
            replaced = any_near & (closest <= cfg.replace_distance_ratio * src_old)
        else:
            replaced = torch.zeros_like(any_near)
        kept_seen = any_near & ~replaced

        # Cells where a kept (closer) old Gaussian sits at the surface: the window's own
        # Gaussians at that depth there would duplicate it.
        n_cells = h * w
        kmin, kmax = zbuffer(Projection(z=po.z, cell=po.cell, visible=near_v & kept_seen[None]), n_cells)
        if n_new and bool(torch.isfinite(kmin).any()):
            tol_new = cfg.depth_tol_abs + cfg.depth_tol_rel * gather_cells(dmin, proj_new).clamp_min(0)
            lo, hi = gather_cells(kmin, proj_new), gather_cells(kmax, proj_new)
            drop_new = (proj_new.visible & (proj_new.z >= lo - tol_new) & (proj_new.z <= hi + tol_new)).any(0)
        # Window Gaussians inherit the observation count of what they replace in their cell.
        rep_v = near_v & replaced[None]
        if n_new and bool(rep_v.any()):
            n_cams = len(cams)
            flat = (torch.arange(n_cams)[:, None] * n_cells + po.cell)[rep_v]
            vals = obs_old.to(torch.int64)[None].expand(n_cams, -1)[rep_v]
            best = torch.zeros(n_cams * n_cells, dtype=torch.int64).scatter_reduce_(0, flat, vals, reduce="amax")
            inherited = torch.where(proj_new.visible, gather_cells(best.view(n_cams, n_cells), proj_new), 0)
            new_obs = (1 + inherited.max(0).values).to(torch.int32)

        remove = carved | replaced
        update.num_carved += int(carved.sum())
        update.num_replaced += int(replaced.sum())
        update.num_removed += int(remove.sum())
        start = 0
        for chunk, size in zip(chunks, sizes):
            sl = slice(start, start + size)
            start += size
            seen = kept_seen[sl]
            if bool(seen.any()):
                chunk.obs_count = chunk.obs_count + seen.to(torch.int32)
                chunk.last_seen = torch.where(seen, torch.tensor(window_id, dtype=torch.int32), chunk.last_seen)
            rm = remove[sl]
            if bool(rm.any()):
                chunk.select(~rm)
                changed.add(chunk.key)
        return drop_new, new_obs

    def _insert(self, rows: torch.Tensor, src_dist: torch.Tensor, obs: torch.Tensor, window_id: int,
                changed: set[ChunkKey]) -> None:
        """Append rows (N, 14) to their chunks (grouped by key, original order within)."""
        n = rows.shape[0]
        if n == 0:
            return
        gid = torch.arange(self._next_gid, self._next_gid + n, dtype=torch.int64)
        self._next_gid += n
        codes = encode_keys(chunk_keys(rows[:, COL_MEANS], self.chunk_size))
        order = np.argsort(codes, kind="stable")
        uniq, first, counts = np.unique(codes[order], return_index=True, return_counts=True)
        order_t = torch.from_numpy(order)
        wid = torch.full((n,), window_id, dtype=torch.int32)
        for code, start, cnt in zip(uniq.tolist(), first.tolist(), counts.tolist()):
            idx = order_t[start:start + cnt]
            key = decode_key(code)
            chunk = self._chunks.get(key)
            if chunk is None:
                chunk = self._chunks[key] = Chunk.empty(key)
            chunk.append(rows[idx], src_dist=src_dist[idx], born=wid[idx], last_seen=wid[idx],
                         obs_count=obs[idx], gid=gid[idx])
            changed.add(key)

    def _dedup(self, changed: set[ChunkKey]) -> int:
        """At most one Gaussian per dedup voxel in changed chunks; returns how many went."""
        vox = self.config.dedup_voxel
        removed = 0
        for key in sorted(changed):
            chunk = self._chunks[key]
            if len(chunk) < 2:
                continue
            cell_id = encode_keys(chunk_keys(chunk.rows[:, COL_MEANS], vox))
            order = np.lexsort((chunk.gid.numpy(), -chunk.born.numpy().astype(np.int64),
                                chunk.src_dist.numpy(), cell_id))
            sorted_cells = cell_id[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = sorted_cells[1:] != sorted_cells[:-1]
            keep = np.sort(order[first])
            if len(keep) < len(chunk):
                removed += len(chunk) - len(keep)
                chunk.select(torch.from_numpy(keep))
        return removed

    def _priority(self, chunk: Chunk) -> torch.Tensor:
        robot = self.robot_position if self.robot_position is not None else torch.zeros(3)
        return eviction_priority(chunk.rows, chunk.obs_count, self.config, robot)

    def _enforce_caps(self, changed: set[ChunkKey]) -> int:
        """Apply the per-chunk then the total cap; returns the number of evicted Gaussians.

        A cap exceeded is brought down to ``evict_to_fraction`` of itself, evicting in the
        order of ``eviction`` (ties: oldest window, then oldest insertion).
        """
        cfg = self.config
        evicted = 0
        if cfg.max_gaussians_per_chunk > 0:
            target = max(1, int(cfg.max_gaussians_per_chunk * cfg.evict_to_fraction))
            for key in sorted(changed):
                chunk = self._chunks[key]
                excess = len(chunk) - target
                if len(chunk) > cfg.max_gaussians_per_chunk:
                    gone = smallest_first(self._priority(chunk), chunk.born, chunk.gid, excess)
                    keep = torch.ones(len(chunk), dtype=torch.bool)
                    keep[torch.from_numpy(gone)] = False
                    chunk.select(keep)
                    evicted += excess
        total = len(self)
        excess = 0
        if 0 < cfg.max_gaussians_total < total:
            excess = total - max(1, int(cfg.max_gaussians_total * cfg.evict_to_fraction))
        if excess > 0:
            keys = sorted(self._chunks)
            chunks = [self._chunks[k] for k in keys]
            prio = torch.cat([self._priority(c) for c in chunks])
            born = torch.cat([c.born for c in chunks])
            gid = torch.cat([c.gid for c in chunks])
            gone = smallest_first(prio, born, gid, excess)
            keep = torch.ones(total, dtype=torch.bool)
            keep[torch.from_numpy(gone)] = False
            start = 0
            for chunk in chunks:
                sl = keep[start:start + len(chunk)]
                start += len(chunk)
                if not bool(sl.all()):
                    chunk.select(sl)
                    changed.add(chunk.key)
            evicted += excess
        return evicted

    def _emit(self, changed: set[ChunkKey], update: MapUpdate, window_id: int, keyframe_ids: tuple[int, ...]) -> None:
        """Bump the revision once and list the changed chunks (emptied ones as DELETE)."""
        if not changed:
            update.revision = self.revision
            return
        self.revision += 1
        update.revision = self.revision
        for key in sorted(changed):
            chunk = self._chunks[key]
            if len(chunk) == 0 and chunk.revision == 0:
                del self._chunks[key]   # created and emptied by this operation: never sent
                continue
            chunk.revision = self.revision
            chunk.last_window_id = window_id
            chunk.keyframe_ids = keyframe_ids
            update.updates.append(chunk_update(chunk, self.map_id, self.chunk_size))
            if len(chunk) == 0:
                del self._chunks[key]
