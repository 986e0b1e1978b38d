"""Bounding the global map: per-chunk and total caps with a deterministic eviction order,
and the optional one-Gaussian-per-voxel deduplication of changed chunks.

Eviction order (``MapConfig.eviction``, :func:`ilrm_ros.mapping.fusion.eviction_priority`):
smallest priority first, ties broken by the oldest window (``born``), then the oldest
insertion (``gid``), so equal inputs always lose the same Gaussians. The total cap takes its
excess from a pool of about the first ``MapConfig.eviction_pool`` x excess in that order, whole
chunks' worth at a time (:func:`_choose_evictions`), so that fewer chunks are rewritten.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS, COL_SCALES
from ilrm_ros.mapping.chunks import chunk_keys
from ilrm_ros.mapping.fusion import MapConfig, contribution_score, eviction_priority
from ilrm_ros.mapping.map_storage import BOOK_DTYPE, Block, cat_books, encode_keys, refresh_scores

__all__ = ["smallest_first", "enforce_caps", "prescore", "dedup"]


def smallest_first(priority: torch.Tensor, born: torch.Tensor, gid: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` entries that come first in the order (priority, born, gid).

    Exactly the first ``k`` of a full lexicographic sort, found in O(N) with a partition:
    deterministic for equal inputs. priority (N,) float, born (N,) int, gid (N,) int.
    """
    b, g = born.numpy(), gid.numpy()
    return _smallest_first(priority.numpy(), k, lambda idx: (b[idx], g[idx]))


def _smallest_first(p: np.ndarray, k: int, tie_keys: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
    """:func:`smallest_first` of priorities p (N,); ``tie_keys(idx)`` gives born and gid (T,) of the
    entries idx (T,) tied at the k-th priority (usually a handful: only they are looked up)."""
    n = int(p.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n)
    kth = _kth_smallest(p, k)
    if np.isnan(kth):   # fewer than k numbers: all of them, then NaN entries (sorted last, as np.sort does)
        nan = np.isnan(p)
        below, ties = np.flatnonzero(~nan), np.flatnonzero(nan)
    else:
        below, ties = np.flatnonzero(p < kth), np.flatnonzero(p == kth)
    born, gid = tie_keys(ties)
    ties = ties[np.lexsort((gid, born))][: k - len(below)]
    return np.concatenate([below, ties])


def _kth_smallest(p: np.ndarray, k: int, sample: int = 64) -> float:
    """``np.partition(p, k - 1)[k - 1]`` of p (N,), 1 <= k < N: partitioned among the entries at most a
    threshold taken from every ``sample``-th entry when at least k entries are (all of the k smallest are
    then among them), else over all of p."""
    n = int(p.shape[0])
    if n < 8 * sample * sample:
        return np.partition(p, k - 1)[k - 1]
    thin = p[::sample]
    pick = min(len(thin) - 1, (k * len(thin)) // n + 4 * int(np.sqrt(k / sample)) + 8)   # a margin of 4 sigma
    cut = np.partition(thin, pick)[pick]
    candidates = p[p <= cut]
    if len(candidates) < k:
        return np.partition(p, k - 1)[k - 1]
    return np.partition(candidates, k - 1)[k - 1]


def _choose_evictions(p: np.ndarray, excess: int, pool: float, held: list[Block]) -> dict[int, np.ndarray]:
    """The total cap's evictions from priorities p (N,) of the chunks ``held`` (their rows concatenated in
    order): {index in held: its rows to evict (K,) ascending}, ``excess`` rows in all.

    pool 1: exactly the first ``excess`` in the order (priority, born, gid) (:func:`_smallest_first`).
    pool > 1 (``MapConfig.eviction_pool``): the candidates are the rows whose priority is at most
    :func:`_pool_threshold` (about the pool x excess first). Chunks give all of their candidates, those
    with the most candidates per row rewritten (its rows + :data:`_REWRITE_ROWS`) first (ties: chunk
    order); the chunk that completes the excess gives only its first ones in that order. Fewer
    candidates than the excess (a threshold estimated too low): the exact selection.
    """
    size = np.fromiter((len(b) for b in held), np.int64, len(held))
    starts = np.concatenate([[0], np.cumsum(size)])
    if pool > 1.0:
        cand = p <= _pool_threshold(p, min(len(p), int(np.ceil(pool * excess))))
        counts = np.array([np.count_nonzero(cand[a:e]) for a, e in zip(starts[:-1], starts[1:])], np.int64)
        if counts.sum() >= excess:
            return _densest_chunks(p, cand, counts, starts, excess, held)
    gone = np.sort(_smallest_first(p, excess, lambda idx: _born_gid(held, idx)))
    cuts = np.searchsorted(gone, starts)
    return {j: gone[cuts[j]:cuts[j + 1]] - starts[j] for j in np.flatnonzero(np.diff(cuts)).tolist()}


def _pool_threshold(p: np.ndarray, k: int, sample: int = 64) -> float:
    """About the k-th smallest of p (N,), 1 <= k <= N: exact for small maps (as :func:`_kth_smallest` decides),
    else the matching order statistic of every ``sample``-th entry (deterministic; NaN compares False)."""
    n = int(p.shape[0])
    if n < 8 * sample * sample:
        return np.partition(p, k - 1)[k - 1]
    thin = p[::sample]
    j = min(len(thin) - 1, max(0, (k * len(thin)) // n - 1))
    return np.partition(thin, j)[j]


_REWRITE_ROWS = 512
"""What rewriting a chunk costs besides its rows, in rows: its message (~70 us to build and publish in
the node, about as much as serialising 512 rows) and bookkeeping. Without it the densest-first order
would prefer many tiny chunks."""


def _densest_chunks(p: np.ndarray, cand: np.ndarray, counts: np.ndarray, starts: np.ndarray, excess: int,
                    held: list[Block]) -> dict[int, np.ndarray]:
    """:func:`_choose_evictions` for pool > 1: candidates cand (N,) bool, counts (C,) per chunk (sum >= excess)."""
    size = np.diff(starts)
    order = np.lexsort((np.arange(len(size)), -(counts / (size + _REWRITE_ROWS))))
    cum = np.cumsum(counts[order])
    n_full = int(np.searchsorted(cum, excess))                       # the chunk that completes the excess
    out = {j: np.flatnonzero(cand[starts[j]:starts[j + 1]]) for j in order[:n_full].tolist()}
    last = int(order[n_full])
    need = excess - (int(cum[n_full - 1]) if n_full else 0)
    mine = np.flatnonzero(cand[starts[last]:starts[last + 1]])
    book = held[last].book
    first = _smallest_first(p[starts[last] + mine], need,
                            lambda idx: (book["born"][mine[idx]], book["gid"][mine[idx]]))
    out[last] = np.sort(mine[first])
    return out


def _born_gid(held: list[Block], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """born (T,) and gid (T,) of the map-wide row indices idx (T,) ascending, over the chunks ``held``
    in order (their rows concatenated), without concatenating their bookkeeping."""
    starts = np.cumsum([0] + [len(b) for b in held])
    blk = np.searchsorted(starts, idx, side="right") - 1
    born, gid = np.empty(len(idx), BOOK_DTYPE["born"]), np.empty(len(idx), BOOK_DTYPE["gid"])
    for j in np.unique(blk).tolist():
        sel = blk == j
        book = held[j].book[idx[sel] - starts[j]]
        born[sel], gid[sel] = book["born"], book["gid"]
    return born, gid


def enforce_caps(blocks: Mapping[int, Block], codes: Callable[[], list[int]], changed: set[int], cfg: MapConfig,
                 robot: torch.Tensor) -> int:
    """Apply the per-chunk then the total cap; returns the number of evicted Gaussians.

    A cap exceeded is brought down to ``evict_to_fraction`` of itself, evicting in the
    order of ``eviction`` (ties: oldest window, then oldest insertion). ``codes()``: the chunk
    codes in key order; ``robot``: (3,) position for "local" eviction. Chunks that lose
    Gaussians to the total cap join ``changed``.
    """
    evicted = 0
    if cfg.max_gaussians_per_chunk > 0:
        target = max(1, int(cfg.max_gaussians_per_chunk * cfg.evict_to_fraction))
        for code in sorted(changed):
            b = blocks[code]
            if len(b) > cfg.max_gaussians_per_chunk:
                excess = len(b) - target
                gone = smallest_first(_block_priority(b, cfg, robot),
                                      torch.from_numpy(np.ascontiguousarray(b.book["born"])),
                                      torch.from_numpy(np.ascontiguousarray(b.book["gid"])), excess)
                b.drop(np.sort(gone))
                evicted += excess
    total = sum(len(b) for b in blocks.values())
    if cfg.eviction == "global" and 0 < PRESCORE_FROM * cfg.max_gaussians < total <= cfg.max_gaussians:
        prescore(list(blocks.values()), PRESCORE_ROWS)
    if 0 < cfg.max_gaussians < total:
        excess = total - max(1, int(cfg.max_gaussians * cfg.evict_to_fraction))
        order = codes()
        held = [blocks[c] for c in order]
        if cfg.eviction == "global":   # cached per chunk: only rows added since the last eviction are scored
            refresh_scores(held, _contribution)
            prio = np.concatenate([b.scores(_contribution) for b in held])
        else:   # one vectorised pass (means, colours, opacity, scales: the first 10 columns)
            prio = _priority(np.concatenate([b.rows[:, :COL_SCALES.stop] for b in held]),
                             cat_books([b.book for b in held]), cfg, robot).numpy()
        for j, removed in _choose_evictions(prio, excess, cfg.eviction_pool, held).items():
            held[j].drop(removed)
            changed.add(order[j])
        evicted += excess
    return evicted


PRESCORE_FROM = 0.5
"""Above this fraction of the total cap (and under it), "global" eviction's scores are computed ahead."""
PRESCORE_ROWS = 100_000
"""At most this many unscored rows are scored ahead per call (about 2 ms on one core)."""


def prescore(blocks: list[Block], max_rows: int) -> int:
    """While more than ``max_rows`` rows lack a cached contribution score, score about ``max_rows`` of them,
    whole chunks at a time (at least one), so that the eviction when the cap is first reached does not
    score the whole map at once (~18 ms at 1M); fewer are left to the eviction (a few ms). The same values
    as scoring at eviction (scores are per row). Returns the rows scored."""
    stale = [len(b) - b.score_tail() for b in blocks]
    if sum(stale) <= max_rows:
        return 0
    rows = 0
    for b, n in zip(blocks, stale):
        if n and (not rows or rows + n <= max_rows):
            b.scores(_contribution)   # its own rows, no copy
            rows += n
    return rows


def dedup(blocks: Mapping[int, Block], changed: set[int], voxel: float) -> int:
    """At most one Gaussian per cubic cell of edge ``voxel`` in changed chunks; returns how many went.

    Per chunk and voxel cell the kept one is the closest source camera, then the newest
    window, then the oldest insertion.
    """
    removed = 0
    for code in sorted(changed):
        b = blocks[code]
        if len(b) < 2:
            continue
        cell_id = encode_keys(chunk_keys(torch.from_numpy(np.ascontiguousarray(b.rows[:, COL_MEANS])), voxel))
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


def _contribution(rows: np.ndarray, book: np.ndarray) -> np.ndarray:
    """"global" eviction's priority (K,) float32 of rows (K, >= 10) with their bookkeeping (K,): each
    row's value on its own (the same bits in any batch), so a chunk can cache it (``Block.scores``)."""
    return contribution_score(torch.from_numpy(rows),
                              torch.from_numpy(np.ascontiguousarray(book["obs_count"]))).numpy()


def _block_priority(b: Block, cfg: MapConfig, robot: torch.Tensor) -> torch.Tensor:
    """Eviction priority (M,) of one chunk's rows (the cached score for "global")."""
    if cfg.eviction == "global":
        return torch.from_numpy(b.scores(_contribution))
    return _priority(b.rows, b.book, cfg, robot)


def _priority(rows: np.ndarray, book: np.ndarray, cfg: MapConfig, robot: torch.Tensor) -> torch.Tensor:
    """Eviction priority (N,) of rows (N, >= 10) with their bookkeeping (N,)."""
    return eviction_priority(torch.from_numpy(rows), torch.from_numpy(np.ascontiguousarray(book["obs_count"])),
                             cfg, robot)
