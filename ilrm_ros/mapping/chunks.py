"""Map chunks, chunk updates and their transport contract (ROS-free).

The global Gaussian map is cut into cubic blocks ("chunks") of edge ``chunk_size``
metres; a Gaussian belongs to the chunk ``floor(mean / chunk_size)`` (int32 triple).
Subscribers rebuild the map from a stream of :class:`ChunkUpdate` (UPSERT the full
content of a chunk, DELETE an emptied chunk, CLEAR everything); :class:`MapReplica`
is the reference implementation of that subscriber.

A chunk holds Gaussians as rows in the wire layout of ``core/wire.py`` (14 float32, the
points of ``GaussianChunk.gaussians``); the message budgets used to split chunks come from
there too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Iterable

import numpy as np
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.wire import (
    BYTES_PER_GAUSSIAN,
    COL_COLORS,
    COL_MEANS,
    COL_OPACITY,
    COL_QUATS,
    COL_SCALES,
    MAX_MESSAGE_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    ROW_FLOATS,
    row_bounds,
)

logger = logging.getLogger(__name__)

ChunkKey = tuple[int, int, int]


class UpdateAction(IntEnum):
    """Same values as the constants of ``msg/GaussianChunk.msg``."""

    UPSERT = 0
    DELETE = 1
    CLEAR = 2


# ---------------------------------------------------------------------------------------
# Keys and rows
# ---------------------------------------------------------------------------------------


def chunk_keys(means: torch.Tensor, chunk_size: float) -> torch.Tensor:
    """Integer voxel-block index of each mean: ``floor(mean / chunk_size)``.

    means: (N, 3) map-frame positions in metres. Returns (N, 3) int32.
    Computed in float64 so that a position maps to the same key wherever it comes from.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    return torch.floor(means.detach().to(torch.float64) / float(chunk_size)).to(torch.int32)


def key_of(position: Iterable[float], chunk_size: float) -> ChunkKey:
    """Chunk key of one position (3,) as a tuple of Python ints."""
    k = chunk_keys(torch.as_tensor(list(position), dtype=torch.float64).reshape(1, 3), chunk_size)[0]
    return (int(k[0]), int(k[1]), int(k[2]))


def gaussians_to_array(g: Gaussians) -> torch.Tensor:
    """Unbatched Gaussians (N, ...) -> (N, 14) float32 rows in the transport layout (CPU)."""
    g = g.flatten()
    parts = [g.means, g.colors, g.opacities.reshape(-1, 1), g.scales, g.quats]
    return torch.cat([p.detach().to("cpu", torch.float32) for p in parts], dim=1).contiguous()


def array_to_gaussians(arr: np.ndarray | torch.Tensor) -> Gaussians:
    """(M, 14) float32 rows in the transport layout -> Gaussians (views where possible)."""
    t = torch.as_tensor(arr)
    if t.ndim != 2 or t.shape[1] != ROW_FLOATS:
        raise ValueError(f"expected (M, {ROW_FLOATS}) rows, got {tuple(t.shape)}")
    t = t.to(torch.float32)
    return Gaussians(
        means=t[:, COL_MEANS],
        quats=t[:, COL_QUATS],
        scales=t[:, COL_SCALES],
        opacities=t[:, COL_OPACITY],
        colors=t[:, COL_COLORS],
    )


# ---------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """A read-only view of one spatial block of the map (what ``GaussianMap.chunks`` returns).

    rows:       (M, 14) float32 Gaussians in the transport layout (shared with the map,
                which never modifies them in place).
    src_dist:   (M,) float32 distance from the Gaussian to the closest camera of the
                window that produced it (inf when unknown, e.g. loaded from a PLY).
    born:       (M,) int32 window id that produced the Gaussian (-1 = loaded).
    last_seen:  (M,) int32 last window id that observed it (seen again or produced it).
    obs_count:  (M,) int32 number of windows that observed this surface patch.
    gid:        (M,) int64 map-wide insertion counter (a stable total order).
    revision:   map revision at the last change of ``rows``.
    last_window_id / keyframe_ids: the window that last changed the chunk.
    """

    key: ChunkKey
    rows: torch.Tensor
    src_dist: torch.Tensor
    born: torch.Tensor
    last_seen: torch.Tensor
    obs_count: torch.Tensor
    gid: torch.Tensor
    revision: int = 0
    last_window_id: int = -1
    keyframe_ids: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def window_ids(self) -> list[int]:
        """Sorted ids of the windows whose Gaussians are in the chunk now (-1 = loaded)."""
        return sorted(int(w) for w in torch.unique(self.born).tolist())


# ---------------------------------------------------------------------------------------
# Updates
# ---------------------------------------------------------------------------------------


@dataclass
class ChunkUpdate:
    """One chunk delta, as carried by one ``GaussianChunk`` message.

    rows: (M, 14) float32 read-only numpy array for UPSERT (the full current content of
    the chunk, or of one part of it), (0, 14) for DELETE and CLEAR.
    bounds_min/bounds_max: AABB of the means in ``rows`` (zeros when empty; all zeros
    for non-empty rows means "not computed": :func:`split_for_transport` computes them).
    """

    action: UpdateAction
    map_id: str
    key: ChunkKey
    chunk_size: float
    revision: int
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, ROW_FLOATS), np.float32))
    part: int = 0
    num_parts: int = 1
    bounds_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bounds_max: tuple[float, float, float] = (0.0, 0.0, 0.0)
    window_id: int = 0
    keyframe_ids: tuple[int, ...] = ()

    def has_bounds(self) -> bool:
        """False while the bounds are the unset default (all zeros) for non-empty rows."""
        return len(self.rows) == 0 or any(self.bounds_min) or any(self.bounds_max)

    def nbytes(self) -> int:
        """Bytes of the point rows plus the fixed message budget."""
        return int(self.rows.shape[0]) * BYTES_PER_GAUSSIAN + MESSAGE_OVERHEAD_BYTES + 8 * len(self.keyframe_ids)


@dataclass
class MapUpdate:
    """What one map operation changed: whole-chunk UPSERTs, DELETEs, or a CLEAR first.

    Apply ``updates`` in order. Chunks are whole here; use :func:`split_for_transport`
    (or :meth:`transport_parts`) before sending them as messages of at most 1 MiB.
    """

    map_id: str
    revision: int
    updates: list[ChunkUpdate] = field(default_factory=list)
    window_id: int = -1
    num_added: int = 0
    num_removed: int = 0
    num_carved: int = 0
    num_replaced: int = 0
    num_evicted: int = 0

    @property
    def upserts(self) -> list[ChunkUpdate]:
        return [u for u in self.updates if u.action == UpdateAction.UPSERT]

    @property
    def deletes(self) -> list[ChunkUpdate]:
        return [u for u in self.updates if u.action == UpdateAction.DELETE]

    @property
    def cleared(self) -> bool:
        return any(u.action == UpdateAction.CLEAR for u in self.updates)

    def transport_parts(self, max_bytes: int = MAX_MESSAGE_BYTES) -> list[ChunkUpdate]:
        """Every update split into messages of at most ``max_bytes`` each."""
        out: list[ChunkUpdate] = []
        for u in self.updates:
            out.extend(split_for_transport(u, max_bytes=max_bytes))
        return out


def split_for_transport(chunk: ChunkUpdate, max_bytes: int = MAX_MESSAGE_BYTES,
                        bytes_per_gaussian: int = BYTES_PER_GAUSSIAN,
                        overhead_bytes: int = MESSAGE_OVERHEAD_BYTES) -> list[ChunkUpdate]:
    """Split an UPSERT into parts whose messages are each at most ``max_bytes``.

    A part carries at most ``(max_bytes - overhead_bytes - 8 * len(keyframe_ids)) //
    bytes_per_gaussian`` Gaussians; all parts share the chunk's revision and carry
    ``part``/``num_parts`` and their own bounds. DELETE/CLEAR pass through unchanged.
    """
    if chunk.action != UpdateAction.UPSERT:
        return [chunk]
    budget = max_bytes - overhead_bytes - 8 * len(chunk.keyframe_ids)
    per_part = budget // bytes_per_gaussian
    if per_part < 1:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for a Gaussian (overhead {overhead_bytes})")
    m = int(chunk.rows.shape[0])
    num_parts = max(1, -(-m // per_part))
    if num_parts == 1 and chunk.has_bounds():
        return [chunk]  # already one message with the bounds of all its rows
    parts = []
    for p in range(num_parts):
        rows = chunk.rows[p * per_part:(p + 1) * per_part]
        lo, hi = row_bounds(rows) if len(rows) else ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        parts.append(replace(chunk, rows=rows, part=p, num_parts=num_parts, bounds_min=lo, bounds_max=hi))
    return parts


def chunk_to_array(chunk_part: Chunk | ChunkUpdate) -> np.ndarray:
    """(M, 14) float32 rows of a chunk or of one chunk update/part (message layout)."""
    if isinstance(chunk_part, Chunk):
        return np.ascontiguousarray(chunk_part.rows.numpy(), dtype=np.float32)
    return np.ascontiguousarray(chunk_part.rows, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Subscriber side
# ---------------------------------------------------------------------------------------


@dataclass
class _ReplicaChunk:
    revision: int = -1                      # revision of `content` (or of the DELETE tombstone)
    content: np.ndarray | None = None       # None = deleted / not yet complete
    pending_revision: int = -1
    pending_num_parts: int = 0
    pending: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return max(self.revision, self.pending_revision)


class MapReplica:
    """Rebuilds the map from a stream of chunk updates, as a subscriber does.

    Rules (the ``GaussianChunk`` contract):
    - ``map_id`` names one mapping session; a message of a map id replaced earlier
      (by a CLEAR or a newer session) is stale and ignored;
    - a message of a map id never seen before starts that new map (a subscriber that
      missed the CLEAR), retiring the current one; revisions are compared only within
      one map id (a loaded map starts its own count);
    - CLEAR drops every chunk (unless it is a repeat: same map id, not newer);
    - per chunk, a message older than the newest revision seen for it is ignored;
      DELETE leaves a tombstone so a late, older UPSERT cannot resurrect the chunk;
    - UPSERT parts of one revision are collected and the chunk's visible content is
      swapped only when all ``num_parts`` have arrived (the previous content stays
      visible meanwhile); duplicates are ignored.
    """

    def __init__(self) -> None:
        self.map_id: str | None = None
        self._retired: set[str] = set()
        self.max_revision: int = -1
        self.chunk_size: float | None = None
        self._chunks: dict[ChunkKey, _ReplicaChunk] = {}
        self.num_ignored = 0

    def apply(self, u: ChunkUpdate) -> bool:
        """Apply one update; returns False when it was ignored as stale or duplicate."""
        if u.map_id in self._retired:
            self.num_ignored += 1
            return False
        if u.action == UpdateAction.CLEAR:
            if self.map_id == u.map_id and u.revision <= self.max_revision:
                self.num_ignored += 1
                return False
            self._switch_map(u.map_id)
            self.max_revision = u.revision
            return True
        if self.map_id != u.map_id:
            if self.map_id is not None:
                logger.info("map_id changed %s -> %s without CLEAR: dropping the old map", self.map_id, u.map_id)
            self._switch_map(u.map_id)
        self.chunk_size = u.chunk_size
        st = self._chunks.setdefault(tuple(int(k) for k in u.key), _ReplicaChunk())
        accepted = self._apply_chunk(st, u)
        if accepted:
            self.max_revision = max(self.max_revision, u.revision)
        else:
            self.num_ignored += 1
        return accepted

    def _switch_map(self, map_id: str) -> None:
        if self.map_id is not None and self.map_id != map_id:
            self._retired.add(self.map_id)
        self._chunks.clear()
        self.map_id = map_id
        self.max_revision = -1

    @staticmethod
    def _apply_chunk(st: _ReplicaChunk, u: ChunkUpdate) -> bool:
        if u.revision < st.latest:
            return False
        if u.action == UpdateAction.DELETE:
            if u.revision == st.latest and st.content is None and not st.pending:
                return False
            st.revision, st.content = u.revision, None
            st.pending_revision, st.pending_num_parts, st.pending = -1, 0, {}
            return True
        # UPSERT (part)
        if u.revision == st.latest:
            if st.pending_revision != u.revision or u.part in st.pending:
                return False  # duplicate of an already complete revision or part
        elif u.revision > st.pending_revision:
            st.pending_revision, st.pending_num_parts, st.pending = u.revision, u.num_parts, {}
        st.pending[int(u.part)] = np.asarray(u.rows, dtype=np.float32)
        if len(st.pending) == st.pending_num_parts:
            st.content = np.concatenate([st.pending[p] for p in range(st.pending_num_parts)], axis=0)
            st.revision = st.pending_revision
            st.pending_revision, st.pending_num_parts, st.pending = -1, 0, {}
        return True

    def apply_all(self, updates: Iterable[ChunkUpdate]) -> int:
        """Apply updates in order; returns how many were accepted."""
        return sum(self.apply(u) for u in updates)

    def chunk_arrays(self) -> dict[ChunkKey, np.ndarray]:
        """Complete, non-deleted chunks: key -> (M, 14) float32 rows, keys sorted."""
        return {k: self._chunks[k].content for k in sorted(self._chunks)
                if self._chunks[k].content is not None and len(self._chunks[k].content)}

    def chunk_revisions(self) -> dict[ChunkKey, int]:
        return {k: self._chunks[k].revision for k in self.chunk_arrays()}

    def num_incomplete(self) -> int:
        """Chunks waiting for missing parts."""
        return sum(1 for st in self._chunks.values() if st.pending)

    def gaussians(self) -> Gaussians:
        """All Gaussians of complete chunks, ordered by chunk key then row."""
        arrays = list(self.chunk_arrays().values())
        if not arrays:
            return Gaussians.empty()
        return array_to_gaussians(torch.from_numpy(np.concatenate(arrays, axis=0)))
