"""3-D occupancy with free space: a sparse, bounded voxel grid of log-odds (ROS-free core).

The grid lives in the map frame (z up, metres). A voxel ``(i, j, k)`` (int64) covers
``[i, i+1) x [j, j+1) x [k, k+1)`` times ``voxel_size``; voxels are stored in cubic blocks of
``BLOCK``³ (16³ = 4096 voxels, 0.8 m at 5 cm), allocated on first observation, so memory
grows with the observed space, not with the area. ``max_blocks`` bounds it: beyond that, the
blocks farthest from the latest sensor origin are dropped (they become unknown again).

One *scan* is a set of rays from one origin, each with the range of the surface it saw
(depth rendered from the Gaussian map, see ``occupancy_stage``). A scan updates each voxel at
most once, as octomap does: the voxel holding a ray's end point gets the ``hit`` log-odds, the
voxels the ray crossed before it (sampled every ``STEP`` voxel edges, stopping
``max(free_margin, free_margin_rel * range)`` short of the surface) get ``miss``, and a voxel both hit and crossed in one scan counts as hit. Log-odds
are clamped to ``[clamp_min, clamp_max]`` so the map can change its mind. A voxel is OCCUPIED
above ``occupied`` log-odds, FREE below ``free``, UNKNOWN otherwise or when never observed.

Rays longer than ``max_range`` carve free space up to ``max_range`` at most and mark no hit
(octomap's max-range rule).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

logger = logging.getLogger(__name__)

BLOCK = 16
"""Voxels per block edge."""
BLOCK_VOXELS = BLOCK ** 3
_BITS = 21
_OFFSET = 1 << (_BITS - 1)
STEP = 1.0
"""Free samples along a ray are this many voxel edges apart (a voxel that a ray only clips at a
corner may stay unknown: the safe side)."""
_DENSE_LIMIT = 1 << 26
"""Largest bounding box (voxels) de-duplicated with a dense bitmap; larger scans use np.unique."""


class CellState(IntEnum):
    """Voxel / query states (the same values as the constants of ``srv/QueryOccupancy.srv``)."""

    UNKNOWN = 0
    FREE = 1
    OCCUPIED = 2


def logit(p: float) -> float:
    """log(p / (1 - p)) for p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a probability strictly between 0 and 1 is needed, got {p}")
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class LogOdds:
    """Sensor model and thresholds, in log-odds (see :meth:`from_probabilities`)."""

    hit: float = logit(0.7)
    miss: float = logit(0.4)
    clamp_min: float = logit(0.12)
    clamp_max: float = logit(0.97)
    occupied: float = logit(0.5)
    free: float = logit(0.35)

    @staticmethod
    def from_probabilities(p_hit: float, p_miss: float, p_min: float, p_max: float, p_occupied: float,
                           p_free: float) -> "LogOdds":
        """Octomap-style probabilities -> log-odds; checks that hits raise and misses lower occupancy."""
        if not (p_hit > 0.5 > p_miss and p_min < p_free <= p_occupied < p_max):
            raise ValueError("occupancy probabilities need p_hit > 0.5 > p_miss and "
                             "p_min < p_free <= p_occupied < p_max")
        return LogOdds(logit(p_hit), logit(p_miss), logit(p_min), logit(p_max), logit(p_occupied), logit(p_free))


def voxel_index(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Integer voxel index ``floor(p / voxel_size)`` of points (N, 3) metres -> (N, 3) int64."""
    return np.floor(np.asarray(points, np.float64) / voxel_size).astype(np.int64)


def voxel_centres(idx: np.ndarray, voxel_size: float) -> np.ndarray:
    """Centres (N, 3) float64 metres of voxel indices (N, 3)."""
    return (np.asarray(idx, np.float64) + 0.5) * voxel_size


def encode(idx: np.ndarray) -> np.ndarray:
    """(N, 3) int64 indices in [-2^20, 2^20) -> (N,) int64 codes ordered like the indices (x, y, z)."""
    k = np.asarray(idx, np.int64) + _OFFSET
    if k.size and (k.min() < 0 or k.max() >= 1 << _BITS):
        raise ValueError("voxel index out of the encodable range (+-2^20): check the map frame / voxel size")
    return (k[:, 0] << (2 * _BITS)) | (k[:, 1] << _BITS) | k[:, 2]


def decode(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode`: (N,) codes -> (N, 3) int64 indices."""
    c = np.asarray(codes, np.int64)
    mask = (1 << _BITS) - 1
    return np.stack([(c >> (2 * _BITS)) - _OFFSET, ((c >> _BITS) & mask) - _OFFSET, (c & mask) - _OFFSET], axis=1)


# --------------------------------------------------------------------------- one scan
def _free_lengths(ranges: np.ndarray, max_range: float, free_margin: float,
                  free_margin_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """Per ray (R,): the length carved free, ``min(r - max(free_margin, free_margin_rel * r), max_range)``,
    and whether the end point is a hit (``r <= max_range``)."""
    return np.minimum(ranges - np.maximum(free_margin, free_margin_rel * ranges), max_range), ranges <= max_range


def scan_voxels(origin: np.ndarray, dirs: np.ndarray, ranges: np.ndarray, voxel_size: float, max_range: float,
                free_margin: float, free_margin_rel: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The voxels one scan makes free and occupied (vectorised; :func:`scan_voxels_reference` is its twin).

    origin (3,) metres, dirs (R, 3) unit directions, ranges (R,) metres to the surface along
    each ray (finite, > 0). Free samples lie at ``(k + 0.5) * STEP * voxel_size`` along a ray
    for every k short of its carved length. Returns (free (F, 3), hit (H, 3)) int64 voxel
    indices, each unique and sorted by code, disjoint (hits win).

    Works in voxel units on one flat index over the scan's bounding box (known beforehand
    from the rays' end points), so there is no (samples, 3) array and no sort. Sample
    positions are computed in float32 (exact to ~1e-3 voxel within 1 km of the origin);
    end points in float64.
    """
    o = np.asarray(origin, np.float64).reshape(3) / voxel_size
    dirs = np.asarray(dirs, np.float64).reshape(-1, 3)
    ranges = np.asarray(ranges, np.float64).reshape(-1)
    length, hit = _free_lengths(ranges, max_range, free_margin, free_margin_rel)
    n = _sample_counts(length, voxel_size)
    reach = np.maximum(np.maximum(length, 0.0), np.where(hit, ranges, 0.0)) / voxel_size
    ends = o + dirs * reach[:, None]
    lo = np.floor(np.minimum(ends.min(axis=0, initial=np.inf), o)).astype(np.int64)
    shape = np.floor(np.maximum(ends.max(axis=0, initial=-np.inf), o)).astype(np.int64) - lo + 1
    if int(np.prod(shape)) > _DENSE_LIMIT:
        return _scan_voxels_sparse(o, dirs, ranges, hit, n, voxel_size)
    strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
    s = _sample_distances(n).astype(np.float32)
    d32, o32 = dirs.astype(np.float32), o.astype(np.float32)
    flat = np.zeros(s.shape, np.int32)          # the box holds < 2^26 voxels
    for c in range(3):
        coord = np.repeat(d32[:, c], n)
        coord *= s
        coord += o32[c]
        np.floor(coord, out=coord)
        coord -= np.float32(lo[c])
        coord *= np.float32(strides[c])         # exact: integers below 2^24
        flat += coord.astype(np.int32)
    hit_vox = np.floor(o + dirs[hit] * (ranges[hit, None] / voxel_size)).astype(np.int64)
    hit_mark = np.zeros(int(np.prod(shape)), bool)
    hit_mark[(hit_vox - lo) @ strides] = True
    free_mark = np.zeros_like(hit_mark)
    free_mark[flat] = True
    free_mark &= ~hit_mark
    unflat = lambda f: np.stack(np.unravel_index(f, tuple(shape)), axis=1) + lo  # noqa: E731
    return unflat(np.flatnonzero(free_mark)), unflat(np.flatnonzero(hit_mark))


def _sample_counts(length: np.ndarray, voxel_size: float) -> np.ndarray:
    """Free samples per ray (R,): the k >= 0 with (k + 0.5) * STEP * voxel_size < length."""
    return np.maximum(np.ceil(length / (STEP * voxel_size) - 0.5), 0).astype(np.int64)


def _sample_distances(n: np.ndarray) -> np.ndarray:
    """Distances in voxel units of every ray's samples, ray after ray: (sum n,) float64."""
    first = np.cumsum(n) - n
    return (np.arange(int(n.sum()), dtype=np.float64) - np.repeat(first, n) + 0.5) * STEP


def _scan_voxels_sparse(o: np.ndarray, dirs: np.ndarray, ranges: np.ndarray, hit: np.ndarray, n: np.ndarray,
                        voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scan_voxels` for scans too large for a bitmap (sorts voxel codes instead); o in voxel units."""
    s = _sample_distances(n).astype(np.float32)
    free_idx = np.floor(np.repeat(dirs.astype(np.float32), n, axis=0) * s[:, None] + o.astype(np.float32))
    free_idx = free_idx.astype(np.int64)
    hit_idx = np.floor(o + dirs[hit] * (ranges[hit, None] / voxel_size)).astype(np.int64)
    hit_codes = np.unique(encode(hit_idx))
    free_codes = np.setdiff1d(np.unique(encode(free_idx)), hit_codes, assume_unique=True)
    return decode(free_codes), decode(hit_codes)


def scan_voxels_reference(origin: np.ndarray, dirs: np.ndarray, ranges: np.ndarray, voxel_size: float,
                          max_range: float, free_margin: float, free_margin_rel: float = 0.0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Plain per-ray loop with the same definition as :func:`scan_voxels` (for tests)."""
    free: set[tuple[int, int, int]] = set()
    hits: set[tuple[int, int, int]] = set()
    o = np.asarray(origin, np.float64) / voxel_size
    for d, r in zip(np.asarray(dirs, np.float64), np.asarray(ranges, np.float64)):
        length = min(r - max(free_margin, free_margin_rel * r), max_range)
        k = 0
        while (k + 0.5) * STEP * voxel_size < length:
            dist = np.float32((k + 0.5) * STEP)
            free.add(tuple(int(math.floor(np.float32(d[c]) * dist + np.float32(o[c]))) for c in range(3)))
            k += 1
        if r <= max_range:
            hits.add(tuple(int(math.floor(o[c] + d[c] * (r / voxel_size))) for c in range(3)))
    free -= hits
    order = lambda s: decode(np.sort(encode(np.array(sorted(s), np.int64).reshape(-1, 3))))  # noqa: E731
    return order(free), order(hits)


def depth_to_rays(depth: np.ndarray, alpha: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                  min_alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays of a rendered view: origin (3,), unit directions (R, 3) and ranges (R,) metres.

    depth (H, W) z-depth in metres (NaN/inf/<= 0 where nothing was seen), alpha (H, W)
    accumulated opacity, c2w (4, 4) OpenCV camera-to-map, K (3, 3) pixels (pixel centres
    at +0.5). Only pixels with alpha >= min_alpha and a finite positive depth make rays.
    """
    h, w = depth.shape
    K = np.asarray(K, np.float64)
    v, u = np.mgrid[0:h, 0:w]
    x = (u + 0.5 - K[0, 2]) / K[0, 0]
    y = (v + 0.5 - K[1, 2]) / K[1, 1]
    z = np.asarray(depth, np.float64)
    ok = np.isfinite(z) & (z > 0) & (np.asarray(alpha) >= min_alpha)
    cam = np.stack([x[ok], y[ok], np.ones(int(ok.sum()))], axis=1)            # z-component 1
    norm = np.linalg.norm(cam, axis=1)
    c2w = np.asarray(c2w, np.float64)
    dirs = (cam / norm[:, None]) @ c2w[:3, :3].T
    return c2w[:3, 3].copy(), dirs, z[ok] * norm


# --------------------------------------------------------------------------- the grid
class VoxelGrid:
    """Sparse blocks of log-odds in the map frame; memory grows with the observed blocks.

    Storage: a pool of blocks (slots), each 4096 float32 log-odds and 4096 "observed"
    flags (20 KiB per block), and a dict from block code to slot. Not thread-safe: the
    owner serialises updates and queries (the Mapper's lock).
    """

    def __init__(self, voxel_size: float = 0.05, log_odds: LogOdds | None = None, max_blocks: int = 20_000) -> None:
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.log_odds = log_odds or LogOdds()
        self.max_blocks = int(max_blocks)
        self.revision = 0
        self.origin = np.zeros(3)
        """Sensor origin of the latest scan (eviction keeps the blocks near it)."""
        self.reset()

    def reset(self) -> None:
        """Forget everything (all voxels unknown), releasing the pool."""
        self._slot_of: dict[int, int] = {}
        self._values = np.zeros((0, BLOCK_VOXELS), np.float32)
        self._seen = np.zeros((0, BLOCK_VOXELS), bool)
        self._keys = np.zeros((0, 3), np.int64)      # block index of each slot
        self._free_slots: list[int] = []
        self.revision += 1

    # ------------------------------------------------------------------ size
    @property
    def num_blocks(self) -> int:
        return len(self._slot_of)

    def memory_bytes(self) -> int:
        """Bytes held by the block pool (values, flags, keys)."""
        return self._values.nbytes + self._seen.nbytes + self._keys.nbytes

    def _used_slots(self) -> np.ndarray:
        return np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))

    # ------------------------------------------------------------------ updates
    def integrate(self, free_idx: np.ndarray, hit_idx: np.ndarray, origin: np.ndarray | None = None) -> None:
        """Apply one scan: ``miss`` to free voxels (F, 3), ``hit`` to hit voxels (H, 3) (disjoint, unique)."""
        if origin is not None:
            self.origin = np.asarray(origin, np.float64).reshape(3)
        idx = np.concatenate([free_idx, hit_idx]).astype(np.int64, copy=False)
        if not len(idx):
            return
        delta = np.concatenate([np.full(len(free_idx), self.log_odds.miss, np.float32),
                                np.full(len(hit_idx), self.log_odds.hit, np.float32)])
        flat = self._flat(idx, allocate=True)
        vals = self._values.reshape(-1)
        vals[flat] = np.clip(vals[flat] + delta, self.log_odds.clamp_min, self.log_odds.clamp_max)
        self._seen.reshape(-1)[flat] = True
        self.revision += 1
        self._enforce_bound()

    def _flat(self, idx: np.ndarray, allocate: bool) -> np.ndarray:
        """Flat pool positions (N,) of voxel indices (N, 3); -1 where the block does not exist
        (only when ``allocate`` is False)."""
        blocks = idx >> 4                    # arithmetic shift = floor division by BLOCK
        local = ((idx[:, 0] & 15) << 8) | ((idx[:, 1] & 15) << 4) | (idx[:, 2] & 15)
        blo = blocks.min(axis=0)
        bshape = blocks.max(axis=0) - blo + 1
        if int(np.prod(bshape)) <= _DENSE_LIMIT:   # block table over the bounding box: no sort
            lin = (blocks - blo) @ np.array([bshape[1] * bshape[2], bshape[2], 1], np.int64)
            present = np.zeros(int(np.prod(bshape)), bool)
            present[lin] = True
            cells = np.flatnonzero(present)
            codes = encode(np.stack(np.unravel_index(cells, tuple(bshape)), axis=1) + blo)
        else:
            codes, lin = np.unique(encode(blocks), return_inverse=True)
            cells = np.arange(len(codes))
        slots = np.array([self._slot_of.get(code, -1) for code in codes.tolist()], np.int64)
        if allocate and (slots < 0).any():
            for i in np.flatnonzero(slots < 0).tolist():
                slots[i] = self._allocate(int(codes[i]))
        table = np.full(int(cells[-1]) + 1 if len(cells) else 0, -1, np.int64)
        table[cells] = slots
        per_voxel = table[lin.reshape(-1)]
        return np.where(per_voxel >= 0, per_voxel * BLOCK_VOXELS + local, -1)

    def _allocate(self, code: int) -> int:
        if not self._free_slots:
            n = len(self._values)
            grow = max(64, n // 2)                # amortised growth by half: at most 1/3 of the pool idle
            self._values = np.concatenate([self._values, np.zeros((grow, BLOCK_VOXELS), np.float32)])
            self._seen = np.concatenate([self._seen, np.zeros((grow, BLOCK_VOXELS), bool)])
            self._keys = np.concatenate([self._keys, np.zeros((grow, 3), np.int64)])
            self._free_slots = list(range(n + grow - 1, n - 1, -1))
        slot = self._free_slots.pop()
        self._slot_of[code] = slot
        self._keys[slot] = decode(np.array([code]))[0]
        return slot

    def _enforce_bound(self) -> None:
        """Drop the blocks farthest from the latest origin while there are more than ``max_blocks``."""
        excess = self.num_blocks - self.max_blocks
        if self.max_blocks <= 0 or excess <= 0:
            return
        codes = np.fromiter(self._slot_of.keys(), np.int64, self.num_blocks)
        slots = self._used_slots()
        centres = (self._keys[slots] + 0.5) * (BLOCK * self.voxel_size)
        far = np.argsort(-np.linalg.norm(centres - self.origin, axis=1), kind="stable")[:excess]
        for code, slot in zip(codes[far].tolist(), slots[far].tolist()):
            del self._slot_of[code]
            self._values[slot] = 0.0
            self._seen[slot] = False
            self._free_slots.append(slot)
        logger.info("occupancy grid: dropped %d blocks farthest from the robot (occupancy.max_blocks = %d)",
                    excess, self.max_blocks)

    # ------------------------------------------------------------------ queries
    def _states_of(self, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """CellState codes (uint8) for log-odds values and observed flags of any shape."""
        out = np.full(values.shape, CellState.UNKNOWN, np.uint8)
        out[seen & (values > self.log_odds.occupied)] = CellState.OCCUPIED
        out[seen & (values < self.log_odds.free)] = CellState.FREE
        return out

    def states(self, idx: np.ndarray) -> np.ndarray:
        """CellState (N,) uint8 of voxel indices (N, 3) (UNKNOWN where never observed)."""
        idx = np.asarray(idx, np.int64).reshape(-1, 3)
        if not len(idx):
            return np.zeros(0, np.uint8)
        flat = self._flat(idx, allocate=False)
        ok = flat >= 0
        values = np.zeros(len(idx), np.float32)
        seen = np.zeros(len(idx), bool)
        values[ok] = self._values.reshape(-1)[flat[ok]]
        seen[ok] = self._seen.reshape(-1)[flat[ok]]
        return self._states_of(values, seen)

    def states_at(self, points: np.ndarray) -> np.ndarray:
        """CellState (N,) of the voxels holding points (N, 3) metres in the map frame."""
        return self.states(voxel_index(np.asarray(points).reshape(-1, 3), self.voxel_size))

    def _slots(self, layers: tuple[int, int] | None) -> np.ndarray:
        """Used slots in ascending order; with ``layers`` = [k0, k1) only blocks holding such z layers."""
        slots = np.sort(self._used_slots())
        if layers is not None:
            z0 = self._keys[slots, 2] * BLOCK
            slots = slots[(z0 + BLOCK > layers[0]) & (z0 < layers[1])]
        return slots

    def blocks(self, layers: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Allocated blocks (those holding z layers [k0, k1) when ``layers`` is given): block indices
        (B, 3) int64 and states (B, 16, 16, 16) uint8 (x, y, z)."""
        slots = self._slots(layers)
        states = self._states_of(self._values[slots], self._seen[slots]).reshape(-1, BLOCK, BLOCK, BLOCK)
        return self._keys[slots], states

    def voxels(self, state: CellState) -> np.ndarray:
        """Indices (N, 3) int64 of every voxel in ``state`` (FREE or OCCUPIED), block by block (slot order).

        One pass over the whole pool, without gathering the used blocks first: an idle slot is never
        ``seen``, so it contributes nothing."""
        mask = (self._values > self.log_odds.occupied) if state == CellState.OCCUPIED \
            else (self._values < self.log_odds.free)
        mask &= self._seen
        slot, local = np.nonzero(mask)
        xyz = np.stack([local >> 8, (local >> 4) & 15, local & 15], axis=1)
        return self._keys[slot] * BLOCK + xyz

    def counts(self) -> dict[str, int]:
        """Occupied / free / observed voxel counts and blocks (for logs and diagnostics)."""
        _, states = self.blocks()
        return {"occupied_voxels": int((states == CellState.OCCUPIED).sum()),
                "free_voxels": int((states == CellState.FREE).sum()),
                "observed_voxels": int(self._seen[self._used_slots()].sum()) if self.num_blocks else 0,
                "blocks": self.num_blocks, "memory_bytes": self.memory_bytes()}
