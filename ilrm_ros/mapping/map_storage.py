"""Storage of the global map's chunks: key codes, per-Gaussian bookkeeping, one block per chunk.

A chunk key ``floor(mean / chunk_size_m)`` (3 ints) is encoded as one int64 whose order is
the keys' lexicographic order; a :class:`Block` holds one chunk's rows (M, 14) float32 and
bookkeeping (M,) :data:`BOOK_DTYPE`, with its bounds cached per content.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS, COL_SCALES, ROW_FLOATS

__all__ = ["encode_keys", "chunk_order", "decode_key", "BOOK_DTYPE", "cat_books", "Block", "refresh_bounds",
           "refresh_scores", "rows_bounds", "BoundsTable"]


_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


def encode_keys(keys: torch.Tensor) -> np.ndarray:
    """(N, 3) int32 keys -> (N,) int64 codes whose order is the lexicographic key order.

    Each component must lie in [-2^20, 2^20) (a million chunk edges from the origin).
    """
    k = keys.to(torch.int64).numpy() + _KEY_OFFSET
    if k.size:
        _check_encodable(int(k.min()), int(k.max()))
    return _pack_codes(k[:, 0], k[:, 1], k[:, 2])


def _check_encodable(lo: int, hi: int) -> None:
    """Raise unless offset key components in [lo, hi] fit the code's 21 bits each."""
    if lo < 0 or hi >= 1 << _KEY_BITS:
        raise ValueError("chunk key out of the encodable range (+-2^20 blocks): check the map frame / chunk_size")


def _pack_codes(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Offset key components (N,) int64 each -> (N,) int64 codes in lexicographic key order."""
    return (x << (2 * _KEY_BITS)) | (y << _KEY_BITS) | z


def chunk_order(means: np.ndarray, chunk_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Group means (N, 3) float32 by chunk: order (N,) the stable sort by chunk code, and the codes (N,)
    int64 in that order. Keys as ``chunks.chunk_keys`` computes them (floor(mean / chunk_size) in float64),
    codes as :func:`encode_keys`, on a (3, N) copy (numpy is several times slower on narrow strided rows);
    when the means span at most 2^16 chunks they are sorted as dense uint16 codes in the same
    (lexicographic) order: numpy's radix sort, the same permutation as a stable sort of the codes."""
    keys = np.floor(np.array(means.T, dtype=np.float64, order="C") / float(chunk_size)).astype(np.int32)
    if not keys.shape[1]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = [int(k.min()) for k in keys], [int(k.max()) for k in keys]
    _check_encodable(min(lo) + _KEY_OFFSET, max(hi) + _KEY_OFFSET)
    codes = _pack_codes(*(keys.astype(np.int64) + _KEY_OFFSET))
    span = [h - low + 1 for low, h in zip(lo, hi)]
    if span[0] * span[1] * span[2] <= 1 << 16:
        dense = ((keys[0] - lo[0]) * span[1] + (keys[1] - lo[1])) * span[2] + (keys[2] - lo[2])
        order = np.argsort(dense.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(codes, kind="stable")
    return order, codes[order]


def decode_key(code: int) -> tuple[int, int, int]:
    mask = (1 << _KEY_BITS) - 1
    return ((code >> (2 * _KEY_BITS)) - _KEY_OFFSET, ((code >> _KEY_BITS) & mask) - _KEY_OFFSET,
            (code & mask) - _KEY_OFFSET)


BOOK_DTYPE = np.dtype([("src_dist", "<f4"), ("born", "<i4"), ("last_seen", "<i4"), ("obs_count", "<i4"),
                       ("gid", "<i8")])
"""Per-Gaussian bookkeeping (24 bytes): distance to the closest camera of the producing
window, producing window (-1 = loaded), last window that observed it, number of windows
that observed its surface, map-wide insertion counter (a stable total order)."""


_OPAQUE = np.dtype(f"V{BOOK_DTYPE.itemsize}")
"""BOOK_DTYPE as opaque bytes (copies of structured dtypes take numpy's slow field-by-field path)."""


def cat_books(books: list[np.ndarray]) -> np.ndarray:
    """np.concatenate for BOOK_DTYPE arrays via an opaque 24-byte view (structured dtypes
    take numpy's slow field-promotion path, ~30x slower)."""
    return np.concatenate([b.view(f"V{BOOK_DTYPE.itemsize}") for b in books]).view(BOOK_DTYPE)


class Block:
    """Storage of one chunk: rows (M, 14) float32 and book (M,) BOOK_DTYPE.

    Rows are never modified in place: appending writes only past the current rows (into spare
    capacity, growing by a quarter when full), every other change writes a new buffer, so rows handed
    out in updates (views of the first M rows) stay valid. Appending costs the new rows, not a
    copy of the chunk.

    Caches, per content: the bounds, and a per-row score (:meth:`scores`) for the leading rows it
    was computed for (appending keeps it, :meth:`take` takes it along, new rows or bookkeeping drop it)."""

    __slots__ = ("_rbuf", "_bbuf", "_n", "revision", "last_window_id", "keyframe_ids", "_bounds", "_score")

    def __init__(self) -> None:
        self._rbuf = np.zeros((0, ROW_FLOATS), np.float32)   # (capacity, 14); rows are the first _n
        self._bbuf = np.zeros(0, BOOK_DTYPE)                  # (capacity,); book is the first _n
        self._n = 0
        self.revision = 0             # map revision of the last change (0 = never sent)
        self.last_window_id = -1
        self.keyframe_ids: tuple[int, ...] = ()
        self._bounds: tuple[np.ndarray, np.ndarray, float] | None = None
        self._score: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> np.ndarray:
        """(M, 14) float32, a view never written to (see the class)."""
        return self._rbuf[:self._n]

    @property
    def book(self) -> np.ndarray:
        """(M,) BOOK_DTYPE; assign a new array to change it (in-place edits would leave the score stale)."""
        return self._bbuf[:self._n]

    @book.setter
    def book(self, book: np.ndarray) -> None:
        if len(book) != self._n:
            raise ValueError(f"book of {len(book)} entries for {self._n} rows")
        self._bbuf, self._score = book, None

    @property
    def nbytes(self) -> int:
        """Bytes held, spare capacity included."""
        return int(self._rbuf.nbytes + self._bbuf.nbytes)

    def set(self, rows: np.ndarray, book: np.ndarray, n: int | None = None) -> None:
        """Hold rows (C, 14) float32 and book (C,) as they are (not copied), the first ``n`` (default C) the
        content, the rest spare capacity."""
        self._rbuf, self._bbuf, self._bounds, self._score = rows, book, None, None
        self._n = len(rows) if n is None else n

    def append(self, rows: np.ndarray, book: np.ndarray) -> None:
        """Add rows (K, 14) float32 and their bookkeeping (K,) after the current ones (copied). Cached
        bounds are extended with the new rows' (min/max are exact: the same values a full refresh gives),
        so appending to a large chunk costs the new rows, not a pass over all of its rows; the cached
        score of the rows before stays valid."""
        k, n = len(rows), self._n
        if not k:
            return
        bounds = self._bounds if n else None
        if n + k > len(self._rbuf):
            self._rbuf = _grown(self._rbuf, n, n + k)
        if n + k > len(self._bbuf):
            self._bbuf = _grown(self._bbuf, n, n + k)
        self._rbuf[n:n + k] = rows
        self._bbuf.view(_OPAQUE)[n:n + k] = book.view(_OPAQUE)
        self._n = n + k
        self._bounds = None
        if bounds is not None:
            lo, hi, smax = _row_bounds(rows)
            self._bounds = (np.minimum(bounds[0], lo), np.maximum(bounds[1], hi), max(bounds[2], smax))

    def splice(self, keep: np.ndarray, book: np.ndarray, rows: np.ndarray, new_book: np.ndarray) -> None:
        """Keep the rows ``keep`` (K,) ascending with their entries of ``book`` (M,) (the updated bookkeeping
        of the current rows), then append rows (J, 14) with new_book (J,): each written once, the content
        of ``take`` then ``append`` (bounds and score are recomputed when next needed)."""
        k, size = len(keep), len(keep) + len(rows)
        cap = _capacity(size) if len(rows) else size
        out = np.empty((cap, ROW_FLOATS), np.float32)
        np.take(self.rows, keep, axis=0, out=out[:k], mode="clip")   # clip: unbuffered (indices are valid)
        out[k:size] = rows
        out_book = np.empty(cap, BOOK_DTYPE)
        opaque = out_book.view(_OPAQUE)
        np.take(book.view(_OPAQUE), keep, out=opaque[:k], mode="clip")
        opaque[k:size] = new_book.view(_OPAQUE)
        self.set(out, out_book, size)

    def take(self, idx: np.ndarray, removed: np.ndarray | None = None) -> None:
        """Keep only the Gaussians ``idx`` (ascending indices), in that order; ``removed``: the other
        indices, when the caller has them. The cached bounds stay when no removed Gaussian attains one
        of them (a kept one still does: the same values)."""
        score, bounds, rows = self._score, self._bounds, self.rows
        k = len(idx)
        cap = min(len(self._rbuf), _capacity(k))   # room to grow again, never more than it had
        out, out_book = np.empty((cap, ROW_FLOATS), np.float32), np.empty(cap, BOOK_DTYPE)
        np.take(rows, idx, axis=0, out=out[:k], mode="clip")
        np.take(self.book.view(_OPAQUE), idx, out=out_book.view(_OPAQUE)[:k], mode="clip")
        self.set(out, out_book, k)
        if score is not None:
            self._score = score.take(idx[:int(np.searchsorted(idx, len(score)))])
        if bounds is not None and 0 < len(idx) < len(rows):
            if removed is None:
                gone = np.ones(len(rows), dtype=bool)
                gone[idx] = False
                removed = np.flatnonzero(gone)
            if _strictly_inside(rows.take(removed, axis=0), bounds):
                self._bounds = bounds
            elif len(idx) >= _OWN_PASS_ROWS:   # the rows were just written: recompute while they are in cache
                self._bounds = _segment_bounds(self.rows, np.zeros(1, np.int64))[0]

    def drop(self, removed: np.ndarray) -> None:
        """Remove the Gaussians ``removed`` (ascending indices): :meth:`take` of the others."""
        keep = np.ones(len(self), dtype=bool)
        keep[removed] = False
        self.take(np.flatnonzero(keep), removed=removed)

    def scores(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """(M,) ``fn(rows, book)``, cached: only rows without a cached score are passed to ``fn``
        (rows (K, 14), book (K,)), so ``fn`` must score each row on its own, and be the same function
        at every call (the map passes only ``map_bounding``'s contribution score)."""
        have = self.score_tail()
        if have < len(self):
            self.extend_score(fn(self.rows[have:], self.book[have:]))
        return self._score

    def score_tail(self) -> int:
        """How many leading rows have a cached score."""
        return 0 if self._score is None else len(self._score)

    def extend_score(self, tail: np.ndarray) -> None:
        """Cache the scores (K,) of the rows after :meth:`score_tail` (all of them: K = M - score_tail())."""
        self._score = tail if self._score is None else np.concatenate([self._score, tail])

    def cached_bounds(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The cached :meth:`bounds` of the current rows, or None when not computed yet (never computes)."""
        return self._bounds

    def bounds(self) -> tuple[np.ndarray, np.ndarray, float]:
        """AABB of the means lo, hi (3,) float64 and the largest scale (cached per content)."""
        if self._bounds is None:
            refresh_bounds([self])
        return self._bounds if self._bounds is not None else (np.zeros(3), np.zeros(3), 0.0)


def rows_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """What :meth:`Block.bounds` gives for rows (M >= 1, 14): lo, hi (3,) float64 of the means, the largest
    scale (the same reductions)."""
    return _segment_bounds(rows, np.zeros(1, np.int64))[0]


def _capacity(size: int) -> int:
    """Buffer length for ``size`` rows that will grow: a quarter more (appends copy each row about four
    times in all, instead of the whole chunk at every append; at most a fifth of a buffer is spare)."""
    return size + size // 4 + 16


def _grown(buf: np.ndarray, used: int, size: int) -> np.ndarray:
    """A new buffer of :func:`_capacity` (size) entries holding buf's first ``used`` entries (same dtype)."""
    out = np.empty((_capacity(size),) + buf.shape[1:], buf.dtype)
    if buf.dtype == BOOK_DTYPE:   # structured: copied as opaque bytes (numpy's field-by-field path is slow)
        out.view(_OPAQUE)[:used] = buf.view(_OPAQUE)[:used]
    else:
        out[:used] = buf[:used]
    return out


def _row_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """lo, hi (3,) float64 of the means and the largest scale of rows (K >= 1, 14) float32."""
    cols = rows[:, :COL_SCALES.stop].T.copy()   # (10, K): reducing strided (K, 3) views along axis 0 is ~20x slower
    means = cols[COL_MEANS]
    smax = cols[COL_SCALES].max()
    return means.min(axis=1).astype(np.float64), means.max(axis=1).astype(np.float64), float(smax)


def _strictly_inside(rows: np.ndarray, bounds: tuple[np.ndarray, np.ndarray, float]) -> bool:
    """Whether rows (K >= 1, 14) attain none of ``bounds`` (lo, hi (3,), largest scale): every mean strictly
    inside, every scale below."""
    lo, hi, smax = _row_bounds(rows)
    return bool((lo > bounds[0]).all() and (hi < bounds[1]).all() and smax < bounds[2])


def refresh_scores(blocks: list[Block], fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Score, in one call of ``fn``, the rows of ``blocks`` without a cached score (``Block.scores``: ``fn``
    scores each row on its own, so one batch of every block's unscored rows gives each row the same value).
    Blocks with no cached score at all, or with a long unscored tail, are scored on their own rows (no
    copy)."""
    for b in blocks:
        if b.score_tail() == 0 or len(b) - b.score_tail() >= _OWN_PASS_ROWS:
            b.scores(fn)
    stale = [(b, b.score_tail()) for b in blocks if 0 < b.score_tail() < len(b)]
    if not stale:
        return
    sizes = [len(b) - have for b, have in stale]
    rows = np.concatenate([b.rows[have:] for b, have in stale])
    tails = fn(rows, cat_books([b.book[have:] for b, have in stale]))
    for (b, _), tail in zip(stale, np.split(tails, np.cumsum(sizes[:-1]))):
        b.extend_score(tail)


def refresh_bounds(blocks: list[Block]) -> None:
    """Compute the bounds of the non-empty blocks whose cache is stale, in one vectorised pass."""
    stale = [b for b in blocks if b._bounds is None and len(b)]
    for b in [b for b in stale if len(b) >= _OWN_PASS_ROWS]:   # large chunks: read in place, not copied
        b._bounds = _segment_bounds(b.rows, np.zeros(1, np.int64))[0]
    stale = [b for b in stale if b._bounds is None]
    if stale:
        starts = np.cumsum([0] + [len(b) for b in stale[:-1]])
        for b, bounds in zip(stale, _segment_bounds(np.concatenate([b.rows for b in stale]), starts)):
            b._bounds = bounds


_OWN_PASS_ROWS = 4096
"""Chunks of at least this many rows get their bounds from a pass over their own rows (copying
them into one batch costs more than the pass)."""


def _segment_bounds(rows: np.ndarray, starts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Bounds (lo, hi (3,) float64, largest scale) of the segments of rows (N, 14) starting at ``starts``
    (S,) ascending: the same reductions, segment by segment, whether batched or not."""
    means = rows[:, COL_MEANS]
    lo = np.minimum.reduceat(means, starts, axis=0).astype(np.float64)
    hi = np.maximum.reduceat(means, starts, axis=0).astype(np.float64)
    c = COL_SCALES.start  # the largest of three scales; faster than max over a 3-wide axis
    smax = np.maximum.reduceat(np.maximum(np.maximum(rows[:, c], rows[:, c + 1]), rows[:, c + 2]), starts)
    return [(lo[i], hi[i], float(smax[i])) for i in range(len(starts))]


class BoundsTable:
    """The bounds of every chunk stacked for one vectorised test, kept across calls: rows are
    carried over by chunk code and rebuilt only for chunks whose cached bounds changed; the whole
    table is reused while the owner's content stamp (the map revision) stays the same."""

    def __init__(self) -> None:
        self._codes = np.zeros(0, np.int64)
        self._refs: list[tuple[np.ndarray, np.ndarray, float] | None] = []
        self._table = np.zeros((0, 7))
        self._stamp: object = None

    def cached(self, stamp: object) -> np.ndarray | None:
        """The last table if it was built at content ``stamp``, else None."""
        return self._table if stamp is not None and stamp == self._stamp else None

    def table(self, codes: list[int], blocks: list[Block], stamp: object = None) -> np.ndarray:
        """(C, 7) float64 lo (3), hi (3), largest scale of ``blocks`` (non-empty, codes (C,) ascending):
        the values of ``Block.bounds``; ``stamp`` names the content (see :meth:`cached`)."""
        self._stamp = stamp
        refresh_bounds(blocks)
        refs = [b.bounds() for b in blocks]
        code_arr = np.fromiter(codes, np.int64, len(codes))
        table = np.empty((len(codes), 7))
        pos = np.minimum(np.searchsorted(self._codes, code_arr), max(len(self._codes) - 1, 0))
        known = self._codes[pos] == code_arr if len(self._codes) else np.zeros(len(codes), bool)
        table[known] = self._table[pos[known]]
        old = [self._refs[p] if k else None for p, k in zip(pos.tolist(), known.tolist())]
        for i, (ref, was) in enumerate(zip(refs, old)):
            if ref is not was:
                table[i, :3], table[i, 3:6], table[i, 6] = ref
        self._codes, self._refs, self._table = code_arr, refs, table
        return table
