"""Eviction: cached per-chunk scores against the plain computation over the whole map (the reference twin),
the exact order (eviction_pool 1) and the pooled choice that rewrites fewer chunks."""
from __future__ import annotations

import numpy as np
import torch

from ilrm_ros.core.wire import COL_OPACITY, COL_SCALES, ROW_FLOATS
from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.map_bounding import _contribution, _priority, enforce_caps, smallest_first
from ilrm_ros.mapping.map_storage import BOOK_DTYPE, Block


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, ROW_FLOATS)).astype(np.float32)
    rows[:, COL_SCALES] = rng.uniform(1e-3, 0.2, (n, 3)).astype(np.float32)
    rows[:, COL_OPACITY] = rng.uniform(0.0, 1.0, n).astype(np.float32)
    return rows


def _book(rng: np.random.Generator, n: int, first_gid: int) -> np.ndarray:
    book = np.zeros(n, BOOK_DTYPE)
    book["obs_count"] = rng.integers(1, 5, n)
    book["born"] = rng.integers(0, 4, n)
    book["gid"] = np.arange(first_gid, first_gid + n)
    return book


def _reference(blocks: list[Block], cfg: MapConfig) -> torch.Tensor:
    """The score as computed before the cache: one pass over the concatenated first 10 columns."""
    rows = np.concatenate([b.rows[:, :COL_SCALES.stop] for b in blocks])
    book = np.concatenate([b.book for b in blocks])
    return _priority(rows, book, cfg, torch.zeros(3))


def test_cached_scores_equal_the_whole_map_computation_bit_for_bit_through_appends_takes_and_book_edits():
    rng = np.random.default_rng(11)
    cfg = MapConfig()
    blocks, gid = [Block() for _ in range(3)], 0
    for step in range(6):
        for b in blocks:
            n = int(rng.integers(1, 300))
            b.append(_rows(rng, n), _book(rng, n, gid))
            gid += n
        cached = torch.from_numpy(np.concatenate([b.scores(_contribution) for b in blocks]))
        assert torch.equal(cached, _reference(blocks, cfg)), f"step {step}"
        blocks[step % 3].take(np.flatnonzero(rng.random(len(blocks[step % 3])) < 0.8))
        if step % 2:
            book = blocks[1].book.copy()
            book["obs_count"] += 1
            blocks[1].book = book                       # new bookkeeping: the cached score must go
    cached = torch.from_numpy(np.concatenate([b.scores(_contribution) for b in blocks]))
    assert torch.equal(cached, _reference(blocks, cfg))


def test_the_total_cap_evicts_the_lowest_scores_with_a_cache_from_an_earlier_eviction():
    rng = np.random.default_rng(12)
    cfg = MapConfig(max_gaussians=500, max_gaussians_per_chunk=0, evict_to_fraction=0.9, eviction_pool=1.0)
    blocks = {c: Block() for c in range(4)}
    gid = 0
    for _ in range(4):
        for b in blocks.values():
            b.append(_rows(rng, 60), _book(rng, 60, gid))
            gid += 60
        before = {c: (b.rows.copy(), b.book.copy()) for c, b in blocks.items()}
        expected = _reference([blocks[c] for c in sorted(blocks)], cfg)
        evicted = enforce_caps(blocks, lambda: sorted(blocks), set(), cfg, torch.zeros(3))
        kept = np.concatenate([blocks[c].book["gid"] for c in sorted(blocks)])
        all_gid = np.concatenate([before[c][1]["gid"] for c in sorted(blocks)])
        if evicted:
            gone = ~np.isin(all_gid, kept)
            assert gone.sum() == evicted
            assert expected[torch.from_numpy(gone)].max() <= expected[torch.from_numpy(~gone)].min()


def test_ties_at_the_cut_are_broken_by_born_then_gid_across_chunks_as_over_the_concatenated_map():
    rng = np.random.default_rng(13)
    cfg = MapConfig(max_gaussians=300, max_gaussians_per_chunk=0, evict_to_fraction=0.5, eviction_pool=1.0)
    blocks, gid = {c: Block() for c in range(5)}, 0
    rows = np.repeat(_rows(rng, 1), 80, axis=0)                # identical rows in every chunk: every score tied
    for c, b in blocks.items():
        book = _book(rng, 80, gid)
        book["obs_count"] = 1
        b.append(rows, book)
        gid += 80
    order = sorted(blocks)
    book = np.concatenate([blocks[c].book for c in order])
    prio = _reference([blocks[c] for c in order], cfg)
    expected = np.sort(book["gid"][smallest_first(prio, torch.from_numpy(book["born"].copy()),
                                                  torch.from_numpy(book["gid"].copy()), 400 - 150)])
    assert enforce_caps(blocks, lambda: order, set(), cfg, torch.zeros(3)) == 250
    kept = np.concatenate([blocks[c].book["gid"] for c in order])
    assert np.array_equal(np.sort(np.setdiff1d(book["gid"], kept)), expected)
    assert len(np.unique(book["born"][np.isin(book["gid"], expected)])) < 4   # the cut ran through born ties


def test_the_thresholded_kth_smallest_equals_a_full_partition_with_ties_and_nans():
    from ilrm_ros.mapping.map_bounding import _kth_smallest

    rng = np.random.default_rng(5)
    for n, k in ((100_000, 5_000), (100_000, 1), (100_000, 99_999), (300_000, 15_000)):
        p = rng.integers(0, 2000, n).astype(np.float32)       # many ties
        p[rng.integers(0, n, 50)] = np.nan
        np.testing.assert_equal(_kth_smallest(p, k), np.partition(p, k - 1)[k - 1])   # nan (past the numbers) too
        q = rng.standard_normal(n).astype(np.float32)
        assert _kth_smallest(q, k) == np.partition(q, k - 1)[k - 1]


def test_batched_score_tails_equal_each_chunks_own_scores():
    from ilrm_ros.mapping.map_storage import refresh_scores

    rng = np.random.default_rng(8)
    batched, alone, gid = [Block() for _ in range(4)], [Block() for _ in range(4)], 0
    for step in range(3):
        for b, c in zip(batched, alone):
            n = int(rng.integers(1, 40))
            rows, book = _rows(rng, n), _book(rng, n, gid)
            b.append(rows, book)
            c.append(rows, book)
            gid += n
        refresh_scores(batched[: 2 + step % 3], _contribution)
    refresh_scores(batched, _contribution)
    for b, c in zip(batched, alone):
        np.testing.assert_array_equal(b.scores(_contribution), c.scores(_contribution))


def _uniform_map(rng: np.random.Generator, chunks: int, per_chunk: int) -> dict[int, Block]:
    blocks, gid = {c: Block() for c in range(chunks)}, 0
    for b in blocks.values():
        b.append(_rows(rng, per_chunk), _book(rng, per_chunk, gid))
        gid += per_chunk
    return blocks


def _evict(blocks: dict[int, Block], cfg: MapConfig) -> tuple[int, set[int], np.ndarray, np.ndarray]:
    """(evicted, chunks changed, every row's priority before, whether it went)."""
    order = sorted(blocks)
    prio = _reference([blocks[c] for c in order], cfg).numpy()
    before = np.concatenate([blocks[c].book["gid"] for c in order])
    changed: set[int] = set()
    evicted = enforce_caps(blocks, lambda: order, changed, cfg, torch.zeros(3))
    kept = np.concatenate([blocks[c].book["gid"] for c in order])
    return evicted, changed, prio, ~np.isin(before, kept)


def test_pooled_eviction_takes_the_excess_from_the_pool_and_rewrites_fewer_chunks_than_exact_order():
    for pool, seed in ((4.0, 21), (2.0, 22), (4.0, 23)):
        exact_cfg = MapConfig(max_gaussians=4000, max_gaussians_per_chunk=0, evict_to_fraction=0.9, eviction_pool=1.0)
        pooled_cfg = MapConfig(max_gaussians=4000, max_gaussians_per_chunk=0, evict_to_fraction=0.9, eviction_pool=pool)
        n_exact, changed_exact, _, _ = _evict(_uniform_map(np.random.default_rng(seed), 40, 110), exact_cfg)
        n, changed, prio, gone = _evict(_uniform_map(np.random.default_rng(seed), 40, 110), pooled_cfg)
        assert n == n_exact == gone.sum() == 4400 - 3600
        pool_cut = np.partition(prio, int(pool * n) - 1)[int(pool * n) - 1]
        assert prio[gone].max() <= pool_cut                             # only candidates of the pool go
        assert len(changed) <= len(changed_exact) / pool + 2            # about 1/pool of the chunks rewritten
        assert len(changed_exact) == 40


def test_pooled_eviction_is_deterministic_and_falls_back_to_exact_order_without_enough_candidates():
    cfg = MapConfig(max_gaussians=4000, max_gaussians_per_chunk=0, evict_to_fraction=0.9, eviction_pool=4.0)
    first = _evict(_uniform_map(np.random.default_rng(5), 40, 110), cfg)
    again = _evict(_uniform_map(np.random.default_rng(5), 40, 110), cfg)
    assert first[0] == again[0] and first[1] == again[1] and np.array_equal(first[3], again[3])
    from ilrm_ros.mapping.map_bounding import _choose_evictions

    blocks = _uniform_map(np.random.default_rng(6), 3, 50)
    held = [blocks[c] for c in sorted(blocks)]
    p = np.full(150, np.nan, np.float32)       # no priority compares: no candidates, exact order (NaN last)
    p[[3, 70, 140]] = 1.0
    got = _choose_evictions(p, 5, 4.0, held)
    assert sum(len(v) for v in got.values()) == 5
    assert 3 in got[0] and 70 - 50 in got[1] and 140 - 100 in got[2]   # the three numbers first, then NaN ones


def test_scores_computed_ahead_near_the_cap_leave_the_eviction_unchanged(monkeypatch):
    import ilrm_ros.mapping.map_bounding as bounding

    monkeypatch.setattr(bounding, "PRESCORE_ROWS", 1000)
    cfg = MapConfig(max_gaussians=5000, max_gaussians_per_chunk=0, evict_to_fraction=0.9)
    ahead, late = (_uniform_map(np.random.default_rng(31), 40, 110) for _ in range(2))   # 4,400 rows each
    assert enforce_caps(ahead, lambda: sorted(ahead), set(), cfg, torch.zeros(3)) == 0       # over half the cap
    scored = sum(b.score_tail() for b in ahead.values())
    assert 1000 - 110 < scored <= 1000 and all(b.score_tail() == 0 for b in late.values())   # whole chunks
    for blocks in (ahead, late):                                                            # now over the cap
        extra = np.random.default_rng(33)
        for c in range(0, 40, 4):
            blocks[c].append(_rows(extra, 80), _book(extra, 80, 100_000 + 80 * c))
    gone = [_evict(blocks, cfg)[3] for blocks in (ahead, late)]
    assert gone[0].sum() == 5200 - 4500 and np.array_equal(gone[0], gone[1])
