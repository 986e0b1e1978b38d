"""The bounded global Gaussian map (ROS-free core).

The map is a set of chunks keyed by the integer voxel-block index
``floor(mean / chunk_size_m)`` in the map frame (numpy storage per chunk,
:mod:`~ilrm_ros.mapping.map_storage`; read through :class:`~ilrm_ros.mapping.chunks.Chunk`
views). Each iLRM window is fused into it with :meth:`GaussianMap.integrate` (policy and
parameters: :mod:`ilrm_ros.mapping.fusion`; the pass over the map's chunks:
:mod:`~ilrm_ros.mapping.window_fusion`; caps and eviction:
:mod:`~ilrm_ros.mapping.map_bounding`), which returns the :class:`MapUpdate` (whole-chunk
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

from ilrm_ros.core.wire import COL_MEANS
from ilrm_ros.mapping.chunks import (
    Chunk,
    ChunkKey,
    ChunkUpdate,
    MapUpdate,
    UpdateAction,
    array_to_gaussians,
    gaussians_to_array,
)
from ilrm_ros.mapping.fusion import (
    MapConfig,
    Projection,
    WindowCameras,
    depth_image_bounds,
    grid_shape,
    project,
    prune_mask,
    zbuffer,
)
from ilrm_ros.mapping.frustum import FrustumRows, SeenRows, chunks_hit, in_view
from ilrm_ros.mapping.map_bounding import dedup, enforce_caps
from ilrm_ros.mapping.map_storage import (BOOK_DTYPE, Block, BoundsTable, chunk_order, decode_key, encode_keys,
                                          refresh_bounds)
from ilrm_ros.mapping.window_fusion import fuse_with_chunks, one_torch_thread, source_distance
from ilrm_ros.core.gaussians import Gaussians

logger = logging.getLogger(__name__)

__all__ = ["GaussianMap"]


def _new_map_id() -> str:
    return uuid.uuid4().hex[:16]


class GaussianMap:
    """A bounded, chunked, fused map of Gaussians in one map frame (CPU arrays).

    Storage is per chunk (numpy rows + a structured bookkeeping array), so the cost of a
    window grows with the chunks it touches, not with the size of the map; everything
    done per Gaussian (projection, classification, grouping) is vectorised over the
    window and the chunks in its frusta.

    Not thread-safe: one owner (the mapping worker) calls the mutating methods; other
    threads must hold the owner's lock for queries.
    """

    def __init__(self, config: MapConfig | None = None, map_frame: str = "map", model_id: str = "",
                 map_id: str | None = None) -> None:
        self.config = config or MapConfig()
        self.map_frame = map_frame
        self.model_id = model_id
        self.map_id = map_id or _new_map_id()
        self.created = time.time()
        self.revision = 0
        self.num_windows = 0
        self._keyframes: set[int] = set()
        self._blocks: dict[int, Block] = {}     # chunk code -> storage
        self._sorted: list[int] | None = None    # cached sorted codes
        self._bounds_table = BoundsTable()        # their bounds, stacked
        self._next_gid = 0
        self.robot_position: torch.Tensor | None = None

    # ------------------------------------------------------------------ queries

    @property
    def chunk_size(self) -> float:
        return self.config.chunk_size_m

    def _codes(self) -> list[int]:
        """Chunk codes in key order (cached until a chunk is created or deleted)."""
        if self._sorted is None:
            self._sorted = sorted(self._blocks)
        return self._sorted

    @property
    def chunks(self) -> dict[ChunkKey, Chunk]:
        """The chunks as :class:`Chunk` views, keys sorted (read-only use; rows are shared,
        bookkeeping is copied). Mutate the map only through its methods."""
        out: dict[ChunkKey, Chunk] = {}
        for code in self._codes():
            b = self._blocks[code]
            key = decode_key(code)
            book = {name: torch.from_numpy(np.ascontiguousarray(b.book[name])) for name in BOOK_DTYPE.names}
            out[key] = Chunk(key=key, rows=torch.from_numpy(b.rows), revision=b.revision,
                             last_window_id=b.last_window_id, keyframe_ids=b.keyframe_ids, **book)
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self._blocks.values())

    def memory_bytes(self) -> int:
        """Bytes held by the Gaussian rows and their bookkeeping (spare capacity for appends included)."""
        return sum(b.nbytes for b in self._blocks.values())

    def stats(self) -> dict:
        """Counts for logs and ``MapInfo``."""
        return {
            "map_id": self.map_id,
            "num_gaussians": len(self),
            "num_chunks": len(self._blocks),
            "memory_bytes": self.memory_bytes(),
            "revision": self.revision,
            "num_windows": self.num_windows,
            "num_keyframes": len(self._keyframes),
            "max_gaussians": self.config.max_gaussians,
            "chunk_size": self.chunk_size,
        }

    def all_gaussians(self) -> Gaussians:
        """Every Gaussian, ordered by chunk key then insertion: (N, ...) fields."""
        if not self._blocks:
            return Gaussians.empty()
        return array_to_gaussians(torch.from_numpy(np.concatenate([self._blocks[c].rows for c in self._codes()])))

    def gaussians_in_frustum(self, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                             near: float = 0.01, far: float = 1e4, sigmas: float = 3.0) -> Gaussians:
        """Gaussians that may be visible from one camera (c2w (4, 4) OpenCV, K (3, 3) pixels).

        Chunks are selected by their padded bounds against the frustum, then each Gaussian
        by its projected mean with a margin of ``sigmas`` times its largest scale.
        """
        return self.frustum_rows(c2w, K, width, height, near, far, sigmas).gaussians()

    def frustum_rows(self, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     near: float = 0.01, far: float = 1e4, sigmas: float = 3.0) -> FrustumRows:
        """What :meth:`gaussians_in_frustum` returns, deferred: the chunks as they are now (held, no copy,
        no culling), selected and culled when ``.gaussians()`` is called."""
        cams = WindowCameras(c2w=c2w, K=K, height=height, width=width)
        blocks = [self._blocks[c] for c in self._codes()]
        return FrustumRows(tuple(b.rows for b in blocks), tuple(b.cached_bounds() for b in blocks), cams, near, far,
                           sigmas)

    def rows_in_views(self, views: Sequence[WindowCameras], near: float = 0.01, far: float = 1e4,
                      sigmas: float = 3.0) -> list[SeenRows]:
        """Per chunk (key order) with rows that any of the cameras may see (each ``views`` entry one camera, its
        own image size), a :class:`SeenRows`. Chunks are selected by their padded bounds, then rows by
        :func:`~ilrm_ros.mapping.frustum.in_view`."""
        hit = sorted(set().union(*(self._chunks_in_frusta(c, near, far, sigmas) for c in views)))
        if not hit:
            return []
        blocks = [self._blocks[c] for c in hit]
        rows = np.concatenate([b.rows for b in blocks])
        seen = np.zeros(len(rows), bool)
        for cams in views:
            seen |= in_view(rows, cams, near, far, sigmas)
        out, start = [], 0
        for code, b in zip(hit, blocks):
            idx = np.flatnonzero(seen[start:start + len(b)])
            if len(idx):
                out.append(SeenRows(decode_key(code), idx, b.rows, b.last_window_id))
            start += len(b)
        return out

    def _chunks_in_frusta(self, cams: WindowCameras, near: float, far: float, sigmas: float = 3.0) -> list[int]:
        """Codes (key order) of the chunks whose padded bounds may touch a camera frustum."""
        codes = self._codes()
        if not codes:
            return []
        table = self._bounds_table.cached(self.revision)   # every content change bumps the revision
        if table is None:
            table = self._bounds_table.table(codes, [self._blocks[c] for c in codes], stamp=self.revision)
        return [codes[i] for i in chunks_hit(table, cams, near, far, sigmas).tolist()]

    # ------------------------------------------------------------------ updates

    def integrate(self, gaussians: Gaussians, cameras: WindowCameras, window_id: int,
                  keyframe_ids: Sequence[int] = (), robot_position: torch.Tensor | Sequence[float] | None = None
                  ) -> MapUpdate:
        """Fuse one window's Gaussians (map frame, activated) into the map.

        gaussians: (N, ...) or (1, N, ...) fields, N = V * Gaussians per view.
        cameras:   the window's V cameras (c2w (V, 4, 4), K (V, 3, 3), image size).
        robot_position: (3,) for "local" eviction; default the mean camera centre.
        Returns the chunk updates, revision already applied.

        Runs torch single-threaded: its ops here are small, and with a second OpenMP thread on a
        shared 2-core machine they take up to 5x longer whenever another process holds a core.
        """
        with one_torch_thread():
            return self._integrate(gaussians, cameras, window_id, keyframe_ids, robot_position)

    def _integrate(self, gaussians: Gaussians, cameras: WindowCameras, window_id: int,
                   keyframe_ids: Sequence[int], robot_position: torch.Tensor | Sequence[float] | None) -> MapUpdate:
        cfg = self.config
        kf = tuple(int(k) for k in keyframe_ids)
        self._keyframes.update(kf)
        centers = cameras.centers
        self.robot_position = (centers.mean(0) if robot_position is None
                               else torch.as_tensor(robot_position).detach().to("cpu", torch.float32).reshape(3))
        rows = gaussians_to_array(gaussians).numpy()
        n_in = rows.shape[0]
        # The window's rows are selected by index (prune, distance, duplicates) and copied once, sorted by
        # chunk, at the insertion; the steps before read only the means (the same values as masked copies).
        sel = np.flatnonzero(prune_mask(torch.from_numpy(rows), cfg).numpy())
        means = torch.from_numpy(rows[:, COL_MEANS].take(sel, axis=0))
        proj_new = project(means, cameras, cfg.depth_downsample, cfg.near)
        if cfg.max_integration_distance_m > 0 and len(sel):
            near_enough = np.flatnonzero(proj_new.dist.numpy().min(0) <= cfg.max_integration_distance_m)
            sel, means = sel.take(near_enough), torch.from_numpy(means.numpy().take(near_enough, axis=0))
            proj_new = Projection(*(torch.from_numpy(t.numpy().take(near_enough, axis=1)) for t in
                                    (proj_new.z, proj_new.cell, proj_new.visible, proj_new.dist)))
        src_dist = source_distance(proj_new)
        new_obs = torch.ones(len(sel), dtype=torch.int32)

        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=int(window_id))
        changed: set[int] = set()
        removals: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # chunk code -> rows kept, bookkeeping
        if cfg.fusion:
            drop_new, new_obs = self._fuse(means, proj_new, cameras, int(window_id), changed, update, removals)
            keep = np.flatnonzero(~drop_new.numpy())
            sel, src_dist, new_obs = sel.take(keep), src_dist.numpy().take(keep), new_obs.numpy().take(keep)
        update.num_added = len(sel)
        self._insert(rows, sel, np.asarray(src_dist), np.asarray(new_obs), int(window_id), changed, removals)
        if cfg.fusion and cfg.dedup_voxel > 0:
            update.num_removed += dedup(self._blocks, changed, cfg.dedup_voxel)
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
        sel = np.flatnonzero(prune_mask(rows, self.config).numpy())
        n = len(sel)
        changed: set[int] = set()
        self._insert(rows.numpy(), sel, np.full(n, src_dist, np.float32), np.ones(n, np.int32), window_id, changed)
        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=window_id, num_added=n)
        update.num_evicted = self._enforce_caps(changed)
        self._emit(changed, update, window_id, ())
        return update

    def reset(self) -> MapUpdate:
        """Drop everything; a new map id; returns the CLEAR (revision still increases)."""
        self._blocks.clear()
        self._sorted = None
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
        ups = [self._chunk_update(code) for code in self._codes()]
        return MapUpdate(map_id=self.map_id, revision=self.revision, updates=[clear] + ups)

    def replace_rows(self, edits: dict[ChunkKey, tuple[np.ndarray, np.ndarray]], window_id: int = -1,
                     keyframe_ids: tuple[int, ...] = ()) -> MapUpdate:
        """Rewrite existing chunks (e.g. refined Gaussians): per key, (keep (K,) ascending row indices, rows (K, 14)
        float32 whose means stay in that chunk's block); bookkeeping follows the kept rows. One new revision;
        UPSERTs (DELETE when emptied) as from ``integrate``. Never adds rows, so the caps still hold."""
        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=int(window_id))
        codes = encode_keys(torch.tensor(list(edits), dtype=torch.int32).reshape(-1, 3)).tolist()
        for code, (keep, rows) in zip(codes, edits.values()):
            b = self._blocks[code]
            update.num_removed += len(b) - len(keep)
            b.set(np.ascontiguousarray(rows, np.float32), b.book.take(keep))
        self._emit(set(codes), update, int(window_id), tuple(keyframe_ids))
        return update

    # ------------------------------------------------------------------ internals

    def _fuse(self, means: torch.Tensor, proj_new: Projection, cams: WindowCameras, window_id: int,
              changed: set[int], update: MapUpdate, removals: dict[int, tuple[np.ndarray, np.ndarray]]
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Carve/replace/confirm old Gaussians seen by the window; returns (drop_new (N,), new_obs (N,)).
        The chunks that lose Gaussians are listed in ``removals`` (for ``_insert``) and ``changed``."""
        cfg = self.config
        n_new = means.shape[0]
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
        hit = self._chunks_in_frusta(cams, cfg.near, far, sigmas=0.0)
        if not hit:
            return drop_new, new_obs
        drop_new, new_obs, lost = fuse_with_chunks([self._blocks[c] for c in hit], means, proj_new, cams,
                                                    (dmin, dmax), cfg, window_id, update)
        removals.update((hit[j], r) for j, r in lost.items())
        changed.update(removals)
        return drop_new, new_obs

    def _block(self, code: int) -> Block:
        b = self._blocks.get(code)
        if b is None:
            b = self._blocks[code] = Block()
            self._sorted = None
        return b

    def _insert(self, rows: np.ndarray, sel: np.ndarray, src_dist: np.ndarray, obs: np.ndarray, window_id: int,
                changed: set[int], removals: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Append the rows ``sel`` (N,) of rows (N_in, 14), with their src_dist and obs (N,), to their chunks
        (grouped by key, original order within; copied once); a chunk in ``removals`` (code -> rows kept,
        updated bookkeeping: ``Block.splice``) is written once, its kept rows first."""
        pending = dict(removals or {})
        n = len(sel)
        book = np.empty(n, BOOK_DTYPE)
        book["src_dist"], book["born"], book["last_seen"] = src_dist, window_id, window_id
        book["obs_count"], book["gid"] = obs, np.arange(self._next_gid, self._next_gid + n, dtype=np.int64)
        self._next_gid += n
        order, codes = chunk_order(rows[:, COL_MEANS].take(sel, axis=0), self.chunk_size)
        rows, book = rows.take(sel.take(order), axis=0), book.take(order)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1, [n]])
        for i, code in enumerate(codes[starts[:-1]].tolist() if n else ()):
            a, e = int(starts[i]), int(starts[i + 1])
            if code in pending:
                self._blocks[code].splice(*pending.pop(code), rows[a:e], book[a:e])
            else:
                self._block(code).append(rows[a:e], book[a:e])
            changed.add(code)
        for code, (keep, kept_book) in pending.items():   # chunks that only lost Gaussians
            self._blocks[code].splice(keep, kept_book, rows[:0], book[:0])

    def _enforce_caps(self, changed: set[int]) -> int:
        """The caps of the config (``map_bounding.enforce_caps``); returns how many were evicted."""
        robot = self.robot_position if self.robot_position is not None else torch.zeros(3)
        return enforce_caps(self._blocks, self._codes, changed, self.config, robot)

    def _chunk_update(self, code: int) -> ChunkUpdate:
        """UPSERT of a chunk's current content (rows as a read-only view), or DELETE when empty."""
        b = self._blocks[code]
        if len(b) == 0:
            return ChunkUpdate(UpdateAction.DELETE, self.map_id, decode_key(code), self.chunk_size, b.revision,
                               window_id=max(b.last_window_id, 0), keyframe_ids=b.keyframe_ids)
        rows = b.rows.view()
        rows.flags.writeable = False
        lo, hi, _ = b.bounds()
        return ChunkUpdate(UpdateAction.UPSERT, self.map_id, decode_key(code), self.chunk_size, b.revision,
                           rows=rows, bounds_min=tuple(lo.tolist()), bounds_max=tuple(hi.tolist()),
                           window_id=max(b.last_window_id, 0), keyframe_ids=b.keyframe_ids)

    def _emit(self, changed: set[int], update: MapUpdate, window_id: int, keyframe_ids: tuple[int, ...]) -> None:
        """Bump the revision once and list the changed chunks (emptied ones as DELETE)."""
        if not changed:
            update.revision = self.revision
            return
        self.revision += 1
        update.revision = self.revision
        refresh_bounds([self._blocks[c] for c in changed])
        for code in sorted(changed):
            b = self._blocks[code]
            if len(b) == 0 and b.revision == 0:
                del self._blocks[code]   # created and emptied by this operation: never sent
                self._sorted = None
                continue
            b.revision = self.revision
            b.last_window_id = window_id
            b.keyframe_ids = keyframe_ids
            update.updates.append(self._chunk_update(code))
            if len(b) == 0:
                del self._blocks[code]
                self._sorted = None
