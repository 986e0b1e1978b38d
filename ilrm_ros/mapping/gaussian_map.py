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
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ilrm_ros.mapping.chunks import (
    COL_MEANS,
    COL_SCALES,
    ROW_FLOATS,
    Chunk,
    ChunkKey,
    ChunkUpdate,
    MapUpdate,
    UpdateAction,
    array_to_gaussians,
    chunk_keys,
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
           "smallest_first", "segment_indices"]


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


def segment_indices(starts: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Row indices of the segments ``which`` (ascending) of a segmented array, ascending.

    starts: (C + 1,) segment offsets (starts[-1] = total rows); which: (K,) segment numbers.
    """
    if len(which) == 0:
        return np.zeros(0, dtype=np.int64)
    first, lengths = starts[which], starts[which + 1] - starts[which]
    offsets = np.cumsum(lengths) - lengths                       # where each segment begins in the output
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(first - offsets, lengths)


def _row_max_scale(rows: np.ndarray) -> np.ndarray:
    """(N,) largest of the three scales of rows (N, 14) (faster than max over a 3-wide axis)."""
    return np.maximum(np.maximum(rows[:, COL_SCALES.start], rows[:, COL_SCALES.start + 1]), rows[:, COL_SCALES.start + 2])


@dataclass
class _ChunkMeta:
    """Per-chunk bookkeeping that is not per Gaussian."""

    revision: int = 0            # map revision of the last change (0 = never sent)
    last_window_id: int = -1
    keyframe_ids: tuple[int, ...] = ()


_BOOK_DTYPES = {"src_dist": np.float32, "born": np.int32, "last_seen": np.int32, "obs_count": np.int32,
                "gid": np.int64}


class GaussianMap:
    """A bounded, chunked, fused map of Gaussians in one map frame (CPU arrays).

    Storage: one flat structure of arrays sorted by (chunk code, insertion id), so each
    chunk is a contiguous row range (zero-copy chunk messages) and every fusion step is a
    vectorised operation over the map rather than a Python loop over chunks. The rows
    array is never modified in place (each change builds a new one), so rows already
    handed out (updates, query results) stay valid.

    Not thread-safe: one owner (the mapping worker) calls the mutating methods; other
    threads must hold the owner's lock for queries.
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
        self._next_gid = 0
        self.robot_position: torch.Tensor | None = None
        self._meta: dict[int, _ChunkMeta] = {}
        self._clear_rows()

    # ------------------------------------------------------------------ storage

    def _clear_rows(self) -> None:
        self._set(np.zeros((0, ROW_FLOATS), np.float32), np.zeros(0, np.int64),
                  {n: np.zeros(0, dt) for n, dt in _BOOK_DTYPES.items()})

    def _set(self, rows: np.ndarray, code: np.ndarray, book: dict[str, np.ndarray]) -> None:
        """Install new storage arrays (sorted by (code, gid)) and drop derived caches."""
        self._rows, self._code, self._book = rows, code, book
        self._segments_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._bounds_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _take(self, idx: np.ndarray) -> None:
        """Keep only the rows ``idx`` (bool mask or ascending indices): order is preserved."""
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        self._set(self._rows.take(idx, axis=0), self._code.take(idx), {n: a.take(idx) for n, a in self._book.items()})

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes (C,) ascending, starts (C + 1,)): the chunks and their row ranges."""
        if self._segments_cache is None:
            code = self._code
            if len(code) == 0:
                self._segments_cache = (np.zeros(0, np.int64), np.zeros(1, np.int64))
            else:
                brk = np.flatnonzero(code[1:] != code[:-1]) + 1
                starts = np.concatenate([[0], brk, [len(code)]]).astype(np.int64)
                self._segments_cache = (code[starts[:-1]], starts)
        return self._segments_cache

    def _chunk_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per chunk: AABB of the means lo, hi (C, 3) float64 and the largest scale (C,)."""
        if self._bounds_cache is None:
            codes, starts = self._segments()
            if len(codes) == 0:
                z = np.zeros((0, 3))
                self._bounds_cache = (z, z, np.zeros(0))
            else:
                means, first = self._rows[:, COL_MEANS], starts[:-1]
                self._bounds_cache = (np.minimum.reduceat(means, first, axis=0).astype(np.float64),
                                      np.maximum.reduceat(means, first, axis=0).astype(np.float64),
                                      np.maximum.reduceat(_row_max_scale(self._rows), first).astype(np.float64))
        return self._bounds_cache

    def _codes_of(self, means: np.ndarray) -> np.ndarray:
        return encode_keys(chunk_keys(torch.from_numpy(means), self.chunk_size))

    # ------------------------------------------------------------------ queries

    @property
    def chunk_size(self) -> float:
        return self.config.chunk_size

    @property
    def chunks(self) -> dict[ChunkKey, Chunk]:
        """The chunks as :class:`Chunk` views (keys sorted). Read-only use: a copy of the
        bookkeeping; mutate the map only through its methods."""
        codes, starts = self._segments()
        out: dict[ChunkKey, Chunk] = {}
        for i, code in enumerate(codes.tolist()):
            sl = slice(int(starts[i]), int(starts[i + 1]))
            meta = self._meta[code]
            book = {n: torch.from_numpy(a[sl]) for n, a in self._book.items()}
            key = decode_key(code)
            out[key] = Chunk(key=key, rows=torch.from_numpy(self._rows[sl]), revision=meta.revision,
                             last_window_id=meta.last_window_id, keyframe_ids=meta.keyframe_ids, **book)
        return out

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def memory_bytes(self) -> int:
        """Bytes held by the Gaussian rows and their per-Gaussian bookkeeping arrays."""
        return int(self._rows.nbytes + self._code.nbytes + sum(a.nbytes for a in self._book.values()))

    def stats(self) -> dict:
        """Counts for logs and ``MapInfo``."""
        return {
            "map_id": self.map_id,
            "num_gaussians": len(self),
            "num_chunks": int(len(self._segments()[0])),
            "memory_bytes": self.memory_bytes(),
            "revision": self.revision,
            "num_windows": self.num_windows,
            "num_keyframes": len(self._keyframes),
            "max_gaussians": self.config.max_gaussians_total,
            "chunk_size": self.chunk_size,
        }

    def all_gaussians(self) -> Gaussians:
        """Every Gaussian, ordered by chunk key then insertion: (N, ...) fields."""
        if len(self) == 0:
            return Gaussians.empty()
        return array_to_gaussians(torch.from_numpy(self._rows))

    def gaussians_in_frustum(self, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                             near: float = 0.01, far: float = 1e4, sigmas: float = 3.0) -> Gaussians:
        """Gaussians that may be visible from one camera (c2w (4, 4) OpenCV, K (3, 3) pixels).

        Chunks are selected by their padded bounds against the frustum, then each Gaussian
        by its projected mean with a margin of ``sigmas`` times its largest scale.
        """
        cams = WindowCameras(c2w=c2w, K=K, height=height, width=width)
        hit = self._chunks_in_frusta(cams, near, far, sigmas)
        if len(hit) == 0:
            return Gaussians.empty()
        rows = torch.from_numpy(self._rows.take(segment_indices(self._segments()[1], hit), axis=0))
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

    def _chunks_in_frusta(self, cams: WindowCameras, near: float, far: float, sigmas: float = 3.0) -> np.ndarray:
        """(K,) ascending chunk numbers whose padded bounds may touch a camera frustum."""
        lo, hi, smax = self._chunk_bounds()
        if len(lo) == 0:
            return np.zeros(0, dtype=np.int64)
        pad = (sigmas * smax)[:, None]
        hit = boxes_in_frusta(torch.tensor(lo - pad, dtype=torch.float32),
                              torch.tensor(hi + pad, dtype=torch.float32), cams, near, far)
        return np.flatnonzero(hit.numpy())

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
        changed: set[int] = set()
        keep_old = None
        if cfg.fusion:
            drop_new, new_obs, keep_old = self._fuse(rows, proj_new, cameras, int(window_id), changed, update)
            keep = ~drop_new
            rows, src_dist, new_obs = rows[keep], src_dist[keep], new_obs[keep]
        update.num_added = int(rows.shape[0])
        self._insert(rows.numpy(), src_dist.numpy(), new_obs.numpy(), int(window_id), changed, keep_old)
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
        n = rows.shape[0]
        changed: set[int] = set()
        self._insert(rows.numpy(), np.full(n, src_dist, np.float32), np.ones(n, np.int32), window_id, changed)
        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=window_id, num_added=n)
        update.num_evicted = self._enforce_caps(changed)
        self._emit(changed, update, window_id, ())
        return update

    def reset(self) -> MapUpdate:
        """Drop everything; a new map id; returns the CLEAR (revision still increases)."""
        self._clear_rows()
        self._meta.clear()
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
        codes, _ = self._segments()
        ups = [self._upsert(i, code) for i, code in enumerate(codes.tolist())]
        return MapUpdate(map_id=self.map_id, revision=self.revision, updates=[clear] + ups)

    # ------------------------------------------------------------------ internals

    def _fuse(self, rows: torch.Tensor, proj_new: Projection, cams: WindowCameras, window_id: int,
              changed: set[int], update: MapUpdate) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """Carve/replace/confirm old Gaussians seen by the window.

        Updates the bookkeeping of confirmed Gaussians; returns (drop_new (N,) bool,
        new_obs (N,) int32, keep_old (M,) bool mask of the map's rows or None = keep all).
        """
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
            return drop_new, new_obs, None
        far = float(dmax[observed].max())
        far += cfg.depth_tol_abs + cfg.depth_tol_rel * far
        hit = self._chunks_in_frusta(cams, cfg.near, far, sigmas=0.0)
        if len(hit) == 0:
            return drop_new, new_obs, None
        idx = segment_indices(self._segments()[1], hit)                          # (M,) rows tested
        means_old = torch.from_numpy(self._rows[idx, COL_MEANS])
        src_old = torch.from_numpy(self._book["src_dist"][idx])
        obs_old = torch.from_numpy(self._book["obs_count"][idx])

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

        remove = (carved | replaced).numpy()
        n_carved, n_replaced, n_remove = int(carved.sum()), int(replaced.sum()), int(remove.sum())
        update.num_carved += n_carved
        update.num_replaced += n_replaced
        update.num_removed += n_remove
        seen = idx[kept_seen.numpy()]
        if len(seen):
            book = dict(self._book)
            book["obs_count"] = book["obs_count"].copy()
            book["obs_count"][seen] += 1
            book["last_seen"] = book["last_seen"].copy()
            book["last_seen"][seen] = window_id
            self._book = book
        if n_remove == 0:
            return drop_new, new_obs, None
        gone = idx[remove]
        changed.update(np.unique(self._code[gone]).tolist())
        keep_old = np.ones(len(self), dtype=bool)
        keep_old[gone] = False
        return drop_new, new_obs, keep_old

    def _insert(self, rows: np.ndarray, src_dist: np.ndarray, obs: np.ndarray, window_id: int,
                changed: set[int], keep_old: np.ndarray | None = None) -> None:
        """Drop the old rows not in ``keep_old`` (bool (M,), None = keep all) and merge new
        rows (N, 14) into their chunks, after the chunk's existing rows (original order)."""
        n = rows.shape[0]
        if n == 0:
            if keep_old is not None:
                self._take(keep_old)
            return
        gid = np.arange(self._next_gid, self._next_gid + n, dtype=np.int64)
        self._next_gid += n
        codes = self._codes_of(np.ascontiguousarray(rows[:, COL_MEANS]))
        order = np.argsort(codes, kind="stable")
        codes_new = codes[order]
        new_book = {"src_dist": src_dist, "born": np.full(n, window_id), "last_seen": np.full(n, window_id),
                    "obs_count": obs, "gid": gid}
        fresh = np.unique(codes_new)
        changed.update(fresh.tolist())
        for code in fresh.tolist():
            if code not in self._meta:
                self._meta[code] = _ChunkMeta()

        # Merge: new rows go after the existing rows of their chunk (their ids are larger).
        # src indexes the concatenation [old rows, new rows] in the merged order.
        old_idx = np.flatnonzero(keep_old) if keep_old is not None else np.arange(len(self))
        n_old = len(old_idx)
        dest_new = np.searchsorted(self._code.take(old_idx), codes_new, side="right") + np.arange(n)
        is_new = np.zeros(n_old + n, dtype=bool)
        is_new[dest_new] = True
        src = np.empty(n_old + n, dtype=np.int64)
        src[~is_new] = old_idx
        src[dest_new] = len(self) + order

        def merged(old: np.ndarray, new: np.ndarray) -> np.ndarray:
            return np.concatenate([old, new.astype(old.dtype, copy=False)]).take(src, axis=0)

        self._set(merged(self._rows, rows), merged(self._code, codes),
                  {name: merged(a, new_book[name]) for name, a in self._book.items()})

    def _dedup(self, changed: set[int]) -> int:
        """At most one Gaussian per dedup voxel in changed chunks; returns how many went.

        Per chunk and voxel cell the kept one is the closest source camera, then the newest
        window, then the oldest insertion.
        """
        codes, starts = self._segments()
        which = np.flatnonzero(np.isin(codes, np.fromiter(changed, np.int64, len(changed))))
        idx = segment_indices(starts, which)
        if len(idx) < 2:
            return 0
        b = self._book
        cell_id = encode_keys(chunk_keys(torch.from_numpy(self._rows[idx, COL_MEANS]), self.config.dedup_voxel))
        code = self._code[idx]
        order = np.lexsort((b["gid"][idx], -b["born"][idx].astype(np.int64), b["src_dist"][idx], cell_id, code))
        sc, sk = cell_id[order], code[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (sc[1:] != sc[:-1]) | (sk[1:] != sk[:-1])
        gone = idx[order[~first]]
        if len(gone):
            keep = np.ones(len(self), dtype=bool)
            keep[gone] = False
            self._take(keep)
        return int(len(gone))

    def _priority(self, sl: slice | np.ndarray = slice(None)) -> torch.Tensor:
        robot = self.robot_position if self.robot_position is not None else torch.zeros(3)
        return eviction_priority(torch.from_numpy(self._rows[sl]), torch.from_numpy(self._book["obs_count"][sl]),
                                 self.config, robot)

    def _enforce_caps(self, changed: set[int]) -> int:
        """Apply the per-chunk then the total cap; returns the number of evicted Gaussians.

        A cap exceeded is brought down to ``evict_to_fraction`` of itself, evicting in the
        order of ``eviction`` (ties: oldest window, then oldest insertion).
        """
        cfg = self.config
        evicted = 0
        born, gid = self._book["born"], self._book["gid"]
        if cfg.max_gaussians_per_chunk > 0 and len(self):
            target = max(1, int(cfg.max_gaussians_per_chunk * cfg.evict_to_fraction))
            codes, starts = self._segments()
            counts = np.diff(starts)
            over = np.flatnonzero(counts > cfg.max_gaussians_per_chunk)
            over = over[np.isin(codes[over], np.fromiter(changed, np.int64, len(changed)))]
            if len(over):
                keep = np.ones(len(self), dtype=bool)
                for i in over.tolist():
                    a, b = int(starts[i]), int(starts[i + 1])
                    excess = (b - a) - target
                    gone = smallest_first(self._priority(slice(a, b)), torch.from_numpy(born[a:b]),
                                          torch.from_numpy(gid[a:b]), excess)
                    keep[a + gone] = False
                    evicted += excess
                self._take(keep)
        total = len(self)
        if 0 < cfg.max_gaussians_total < total:
            excess = total - max(1, int(cfg.max_gaussians_total * cfg.evict_to_fraction))
            gone = smallest_first(self._priority(), torch.from_numpy(self._book["born"]),
                                  torch.from_numpy(self._book["gid"]), excess)
            changed.update(np.unique(self._code[gone]).tolist())
            keep = np.ones(total, dtype=bool)
            keep[gone] = False
            self._take(keep)
            evicted += excess
        return evicted

    def _upsert(self, i: int, code: int) -> ChunkUpdate:
        """UPSERT of chunk number ``i`` (code ``code``): its rows as a read-only view."""
        _, starts = self._segments()
        lo, hi, _ = self._chunk_bounds()
        rows = self._rows[int(starts[i]):int(starts[i + 1])]
        rows.flags.writeable = False
        meta = self._meta[code]
        return ChunkUpdate(UpdateAction.UPSERT, self.map_id, decode_key(code), self.chunk_size, meta.revision,
                           rows=rows, bounds_min=tuple(lo[i].tolist()), bounds_max=tuple(hi[i].tolist()),
                           window_id=max(meta.last_window_id, 0), keyframe_ids=meta.keyframe_ids)

    def _emit(self, changed: set[int], update: MapUpdate, window_id: int, keyframe_ids: tuple[int, ...]) -> None:
        """Bump the revision once and list the changed chunks (emptied ones as DELETE)."""
        if not changed:
            update.revision = self.revision
            return
        self.revision += 1
        update.revision = self.revision
        codes, _ = self._segments()
        todo = np.array(sorted(changed), dtype=np.int64)
        pos = np.searchsorted(codes, todo)
        present = (pos < len(codes)) & (codes[np.minimum(pos, max(len(codes) - 1, 0))] == todo) if len(codes) \
            else np.zeros(len(todo), dtype=bool)
        for code, i, here in zip(todo.tolist(), pos.tolist(), present.tolist()):
            meta = self._meta.get(code)
            if meta is None:
                continue
            if not here and meta.revision == 0:
                del self._meta[code]     # created and emptied by this operation: never sent
                continue
            meta.revision = self.revision
            meta.last_window_id = window_id
            meta.keyframe_ids = keyframe_ids
            if here:
                update.updates.append(self._upsert(i, code))
            else:
                update.updates.append(ChunkUpdate(UpdateAction.DELETE, self.map_id, decode_key(code),
                                                  self.chunk_size, self.revision, window_id=max(window_id, 0),
                                                  keyframe_ids=keyframe_ids))
                del self._meta[code]
