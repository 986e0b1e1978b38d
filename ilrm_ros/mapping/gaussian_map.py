"""The bounded global Gaussian map (ROS-free core).

The map is a set of chunks keyed by the integer voxel-block index
``floor(mean / chunk_size)`` in the map frame (numpy storage per chunk; read through
:class:`~ilrm_ros.mapping.chunks.Chunk` views). Each iLRM window is
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

from ilrm_ros.core.wire import COL_MEANS, COL_SCALES, ROW_FLOATS
from ilrm_ros.mapping.chunks import (
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
from ilrm_ros.core.gaussians import Gaussians

logger = logging.getLogger(__name__)

__all__ = ["FusionConfig", "GaussianMap", "MapUpdate", "WindowCameras", "ChunkUpdate", "UpdateAction",
           "smallest_first", "BOOK_DTYPE"]


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


BOOK_DTYPE = np.dtype([("src_dist", "<f4"), ("born", "<i4"), ("last_seen", "<i4"), ("obs_count", "<i4"),
                       ("gid", "<i8")])
"""Per-Gaussian bookkeeping (24 bytes): distance to the closest camera of the producing
window, producing window (-1 = loaded), last window that observed it, number of windows
that observed its surface, map-wide insertion counter (a stable total order)."""


def _cat_books(books: list[np.ndarray]) -> np.ndarray:
    """np.concatenate for BOOK_DTYPE arrays via an opaque 24-byte view (structured dtypes
    take numpy's slow field-promotion path, ~30x slower)."""
    return np.concatenate([b.view(f"V{BOOK_DTYPE.itemsize}") for b in books]).view(BOOK_DTYPE)


class _Block:
    """Storage of one chunk: rows (M, 14) float32 (never modified in place: every change
    assigns a new array, so rows handed out in updates stay valid) and book (M,) BOOK_DTYPE."""

    __slots__ = ("rows", "book", "revision", "last_window_id", "keyframe_ids", "_bounds")

    def __init__(self) -> None:
        self.rows = np.zeros((0, ROW_FLOATS), np.float32)
        self.book = np.zeros(0, BOOK_DTYPE)
        self.revision = 0             # map revision of the last change (0 = never sent)
        self.last_window_id = -1
        self.keyframe_ids: tuple[int, ...] = ()
        self._bounds: tuple[np.ndarray, np.ndarray, float] | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def set(self, rows: np.ndarray, book: np.ndarray) -> None:
        self.rows, self.book, self._bounds = rows, book, None

    def take(self, idx: np.ndarray) -> None:
        """Keep only the Gaussians ``idx`` (ascending indices), in that order."""
        self.set(self.rows.take(idx, axis=0), self.book.take(idx))

    def bounds(self) -> tuple[np.ndarray, np.ndarray, float]:
        """AABB of the means lo, hi (3,) float64 and the largest scale (cached per content)."""
        if self._bounds is None:
            _refresh_bounds([self])
        return self._bounds if self._bounds is not None else (np.zeros(3), np.zeros(3), 0.0)


def _refresh_bounds(blocks: list[_Block]) -> None:
    """Compute the bounds of the non-empty blocks whose cache is stale, in one vectorised pass."""
    stale = [b for b in blocks if b._bounds is None and len(b)]
    if not stale:
        return
    starts = np.cumsum([0] + [len(b) for b in stale[:-1]])
    rows = np.concatenate([b.rows for b in stale])
    means = rows[:, COL_MEANS]
    lo = np.minimum.reduceat(means, starts, axis=0).astype(np.float64)
    hi = np.maximum.reduceat(means, starts, axis=0).astype(np.float64)
    c = COL_SCALES.start  # the largest of three scales; faster than max over a 3-wide axis
    smax = np.maximum.reduceat(np.maximum(np.maximum(rows[:, c], rows[:, c + 1]), rows[:, c + 2]), starts)
    for i, b in enumerate(stale):
        b._bounds = (lo[i], hi[i], float(smax[i]))


class GaussianMap:
    """A bounded, chunked, fused map of Gaussians in one map frame (CPU arrays).

    Storage is per chunk (numpy rows + a structured bookkeeping array), so the cost of a
    window grows with the chunks it touches, not with the size of the map; everything
    done per Gaussian (projection, classification, grouping) is vectorised over the
    window and the chunks in its frusta.

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
        self._blocks: dict[int, _Block] = {}     # chunk code -> storage
        self._sorted: list[int] | None = None    # cached sorted codes
        self._next_gid = 0
        self.robot_position: torch.Tensor | None = None

    # ------------------------------------------------------------------ queries

    @property
    def chunk_size(self) -> float:
        return self.config.chunk_size

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
        """Bytes held by the Gaussian rows and their bookkeeping."""
        return sum(b.rows.nbytes + b.book.nbytes for b in self._blocks.values())

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
            "max_gaussians": self.config.max_gaussians_total,
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
        cams = WindowCameras(c2w=c2w, K=K, height=height, width=width)
        hit = self._chunks_in_frusta(cams, near, far, sigmas)
        if not hit:
            return Gaussians.empty()
        rows = torch.from_numpy(np.concatenate([self._blocks[c].rows for c in hit]))
        rot = cams.c2w[0, :3, :3]
        pc = (rows[:, COL_MEANS] - cams.centers[0]) @ rot
        z = pc[:, 2]
        pad = sigmas * rows[:, COL_SCALES].amax(dim=1)
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

    def _chunks_in_frusta(self, cams: WindowCameras, near: float, far: float, sigmas: float = 3.0) -> list[int]:
        """Codes (key order) of the chunks whose padded bounds may touch a camera frustum."""
        codes = self._codes()
        if not codes:
            return []
        _refresh_bounds([self._blocks[c] for c in codes])
        bounds = [self._blocks[c].bounds() for c in codes]
        lo = np.stack([b[0] for b in bounds])
        hi = np.stack([b[1] for b in bounds])
        pad = sigmas * np.array([b[2] for b in bounds])[:, None]
        hit = boxes_in_frusta(torch.tensor(lo - pad, dtype=torch.float32), torch.tensor(hi + pad, dtype=torch.float32),
                              cams, near, far)
        return [c for c, h in zip(codes, hit.tolist()) if h]

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
            near_enough = dist.amin(0) <= cfg.max_camera_distance
            rows, dist = rows[near_enough], dist[:, near_enough]
            proj_new = Projection(z=proj_new.z[:, near_enough], cell=proj_new.cell[:, near_enough],
                                  visible=proj_new.visible[:, near_enough], dist=dist)
        src_dist = torch.where(proj_new.visible, dist, torch.inf).amin(0) if rows.shape[0] else torch.zeros(0)
        if rows.shape[0]:
            src_dist = torch.where(torch.isfinite(src_dist), src_dist, dist.amin(0))
        new_obs = torch.ones(rows.shape[0], dtype=torch.int32)

        update = MapUpdate(map_id=self.map_id, revision=self.revision, window_id=int(window_id))
        changed: set[int] = set()
        if cfg.fusion:
            drop_new, new_obs = self._fuse(rows, proj_new, cameras, int(window_id), changed, update)
            keep = ~drop_new
            rows, src_dist, new_obs = rows[keep], src_dist[keep], new_obs[keep]
        update.num_added = int(rows.shape[0])
        self._insert(rows.numpy(), src_dist.numpy(), new_obs.numpy(), int(window_id), changed)
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

    # ------------------------------------------------------------------ internals

    def _fuse(self, rows: torch.Tensor, proj_new: Projection, cams: WindowCameras, window_id: int,
              changed: set[int], update: MapUpdate) -> tuple[torch.Tensor, torch.Tensor]:
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
        hit = self._chunks_in_frusta(cams, cfg.near, far, sigmas=0.0)
        if not hit:
            return drop_new, new_obs
        blocks = [self._blocks[c] for c in hit]
        starts = np.cumsum([0] + [len(b) for b in blocks])
        means_old = torch.from_numpy(np.concatenate([b.rows[:, COL_MEANS] for b in blocks]))
        book_old = _cat_books([b.book for b in blocks])
        src_old = torch.from_numpy(np.ascontiguousarray(book_old["src_dist"]))
        obs_old = torch.from_numpy(np.ascontiguousarray(book_old["obs_count"]))

        po = project(means_old, cams, cfg.depth_downsample, cfg.near)
        d_lo, d_hi = gather_cells(dmin, po), gather_cells(dmax, po)
        known = po.visible & torch.isfinite(d_lo)
        tol = cfg.depth_tol_abs + cfg.depth_tol_rel * torch.where(known, d_lo, torch.zeros_like(d_lo))
        free_v = known & (po.z < d_lo - tol)
        near_v = known & ~free_v & (po.z <= d_hi + tol)
        any_near = near_v.amax(0)
        carved = free_v.amax(0) & ~any_near if cfg.carve else torch.zeros_like(any_near)
        if cfg.replace:
            closest = torch.where(near_v, po.dist, torch.inf).amin(0)
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
        n_rm = np.add.reduceat(remove, starts[:-1])
        n_seen = np.add.reduceat(seen, starts[:-1])
        for j in np.flatnonzero(n_rm + n_seen).tolist():
            b, a, e = blocks[j], int(starts[j]), int(starts[j + 1])
            if n_rm[j]:
                keep = np.flatnonzero(~remove[a:e])
                b.set(b.rows.take(keep, axis=0), book_old[a:e].take(keep))   # with the updated bookkeeping
                changed.add(hit[j])
            else:
                b.book = book_old[a:e].copy()   # same rows (bounds stay valid), new bookkeeping
        return drop_new, new_obs

    def _block(self, code: int) -> _Block:
        b = self._blocks.get(code)
        if b is None:
            b = self._blocks[code] = _Block()
            self._sorted = None
        return b

    def _insert(self, rows: np.ndarray, src_dist: np.ndarray, obs: np.ndarray, window_id: int,
                changed: set[int]) -> None:
        """Append rows (N, 14) to their chunks (grouped by key, original order within)."""
        n = rows.shape[0]
        if n == 0:
            return
        book = np.empty(n, BOOK_DTYPE)
        book["src_dist"], book["born"], book["last_seen"] = src_dist, window_id, window_id
        book["obs_count"], book["gid"] = obs, np.arange(self._next_gid, self._next_gid + n, dtype=np.int64)
        self._next_gid += n
        codes = encode_keys(chunk_keys(torch.from_numpy(np.ascontiguousarray(rows[:, COL_MEANS])), self.chunk_size))
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        rows, book = rows.take(order, axis=0), book.take(order)
        breaks = np.flatnonzero(np.diff(codes)) + 1
        starts = np.concatenate([[0], breaks, [n]])
        for i, code in enumerate(codes[starts[:-1]].tolist()):
            a, e = int(starts[i]), int(starts[i + 1])
            b = self._block(code)
            if len(b):
                b.set(np.concatenate([b.rows, rows[a:e]]), _cat_books([b.book, book[a:e]]))
            else:
                b.set(rows[a:e].copy(), book[a:e].copy())
            changed.add(code)

    def _dedup(self, changed: set[int]) -> int:
        """At most one Gaussian per dedup voxel in changed chunks; returns how many went.

        Per chunk and voxel cell the kept one is the closest source camera, then the newest
        window, then the oldest insertion.
        """
        vox = self.config.dedup_voxel
        removed = 0
        for code in sorted(changed):
            b = self._blocks[code]
            if len(b) < 2:
                continue
            cell_id = encode_keys(chunk_keys(torch.from_numpy(np.ascontiguousarray(b.rows[:, COL_MEANS])), vox))
            bk = b.book
            order = np.lexsort((bk["gid"], -bk["born"].astype(np.int64), bk["src_dist"], cell_id))
            sorted_cells = cell_id[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = sorted_cells[1:] != sorted_cells[:-1]
            keep = np.sort(order[first])
            if len(keep) < len(b):
                removed += len(b) - len(keep)
                b.take(keep)
        return removed

    def _priority(self, rows: np.ndarray, book: np.ndarray) -> torch.Tensor:
        """Eviction priority (N,) of rows (N, >= 10) with their bookkeeping (N,)."""
        robot = self.robot_position if self.robot_position is not None else torch.zeros(3)
        return eviction_priority(torch.from_numpy(rows), torch.from_numpy(np.ascontiguousarray(book["obs_count"])),
                                 self.config, robot)

    def _enforce_caps(self, changed: set[int]) -> int:
        """Apply the per-chunk then the total cap; returns the number of evicted Gaussians.

        A cap exceeded is brought down to ``evict_to_fraction`` of itself, evicting in the
        order of ``eviction`` (ties: oldest window, then oldest insertion).
        """
        cfg = self.config
        evicted = 0
        if cfg.max_gaussians_per_chunk > 0:
            target = max(1, int(cfg.max_gaussians_per_chunk * cfg.evict_to_fraction))
            for code in sorted(changed):
                b = self._blocks[code]
                if len(b) > cfg.max_gaussians_per_chunk:
                    excess = len(b) - target
                    gone = smallest_first(self._priority(b.rows, b.book),
                                          torch.from_numpy(np.ascontiguousarray(b.book["born"])),
                                          torch.from_numpy(np.ascontiguousarray(b.book["gid"])), excess)
                    keep = np.ones(len(b), dtype=bool)
                    keep[gone] = False
                    b.take(np.flatnonzero(keep))
                    evicted += excess
        total = len(self)
        if 0 < cfg.max_gaussians_total < total:
            excess = total - max(1, int(cfg.max_gaussians_total * cfg.evict_to_fraction))
            codes = self._codes()
            blocks = [self._blocks[c] for c in codes]
            book = _cat_books([b.book for b in blocks])
            # one vectorised pass (means, colours, opacity, scales: the first 10 columns)
            prio = self._priority(np.concatenate([b.rows[:, :COL_SCALES.stop] for b in blocks]), book)
            gone = smallest_first(prio, torch.from_numpy(np.ascontiguousarray(book["born"])),
                                  torch.from_numpy(np.ascontiguousarray(book["gid"])), excess)
            keep = np.ones(total, dtype=bool)
            keep[gone] = False
            start = 0
            for code, b in zip(codes, blocks):
                k = keep[start:start + len(b)]
                start += len(b)
                if not k.all():
                    b.take(np.flatnonzero(k))
                    changed.add(code)
            evicted += excess
        return evicted

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
        _refresh_bounds([self._blocks[c] for c in changed])
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
