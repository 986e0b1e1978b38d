"""Chunk storage: appending keeps the cached bounds equal to a full recomputation."""
from __future__ import annotations

import numpy as np

from ilrm_ros.core.wire import ROW_FLOATS
from ilrm_ros.mapping.map_storage import BOOK_DTYPE, Block, refresh_bounds


def _rows(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return (rng.standard_normal((n, ROW_FLOATS)) + shift).astype(np.float32)


def _book(n: int, first_gid: int) -> np.ndarray:
    book = np.zeros(n, BOOK_DTYPE)
    book["gid"] = np.arange(first_gid, first_gid + n)
    return book


def test_append_extends_cached_bounds_exactly_as_a_refresh_computes_them():
    rng = np.random.default_rng(3)
    b = Block()
    b.append(_rows(rng, 50, 0.0), _book(50, 0))
    b.bounds()                                           # cached
    for i, shift in enumerate((2.0, -3.0, 0.5)):
        b.append(_rows(rng, 17, shift), _book(17, 50 + 17 * i))
    lo, hi, smax = b.bounds()
    fresh = Block()
    fresh.set(b.rows.copy(), b.book.copy())
    refresh_bounds([fresh])
    f_lo, f_hi, f_smax = fresh.bounds()
    assert np.array_equal(lo, f_lo) and np.array_equal(hi, f_hi) and smax == f_smax
    assert len(b) == 50 + 3 * 17 and np.array_equal(b.book["gid"], np.arange(len(b)))


def test_append_copies_and_never_changes_rows_handed_out_before():
    rng = np.random.default_rng(4)
    b = Block()
    first = _rows(rng, 8, 0.0)
    b.append(first, _book(8, 0))
    assert b.rows is not first
    before = b.rows
    snapshot = before.copy()
    b.append(_rows(rng, 4, 1.0), _book(4, 8))
    assert np.array_equal(before, snapshot) and len(before) == 8 and len(b) == 12


def test_appends_fill_spare_capacity_without_touching_rows_handed_out_before():
    rng = np.random.default_rng(7)
    b = Block()
    handed, buffers = [], set()
    for i in range(200):
        b.append(_rows(rng, 10, float(i)), _book(10, 10 * i))
        view = b.rows
        handed.append((view, view.copy()))
        buffers.add(id(view.base))
    assert len(b) == 2000 and np.array_equal(b.book["gid"], np.arange(2000))
    assert all(np.array_equal(v, snap) for v, snap in handed)        # earlier views never written to
    assert len(buffers) <= 20                                       # amortised growth, not a copy per append
    assert b.nbytes <= 1.3 * (b.rows.nbytes + b.book.nbytes) + 4096  # spare capacity stays bounded
    kept = b.rows
    snap = kept.copy()
    b.take(np.arange(0, 2000, 3))
    b.append(_rows(rng, 5, -1.0), _book(5, 5000))
    b.splice(np.arange(10), b.book, _rows(rng, 3, 9.0), _book(3, 6000))
    assert np.array_equal(kept, snap) and len(b) == 13


def test_take_keeps_or_recomputes_bounds_so_they_always_equal_a_refresh():
    rng = np.random.default_rng(5)
    for trial in range(40):
        n = 30 if trial < 30 else 9000   # the last ones large enough to be recomputed at once
        b = Block()
        b.append(_rows(rng, n, 0.0), _book(n, 0))
        b.bounds()
        keep = np.flatnonzero(rng.random(n) < (0.97 if trial % 2 else 0.5))
        if trial in (0, 30):   # drop the row holding the lowest x: the bounds must move
            keep = np.setdiff1d(np.arange(n), [int(np.argmin(b.rows[:, 0]))])
        b.take(keep)
        fresh = Block()
        fresh.set(b.rows.copy(), b.book.copy())
        small = Block()   # batched with others in one refresh
        small.set(_rows(rng, 5, 0.0), _book(5, 0))
        refresh_bounds([small, fresh])
        assert all(np.array_equal(x, y) for x, y in zip(b.bounds(), fresh.bounds())), trial


def test_the_bounds_table_follows_created_changed_and_deleted_chunks():
    from ilrm_ros.mapping.map_storage import BoundsTable

    rng = np.random.default_rng(4)
    blocks = {code: Block() for code in (3, 7, 9)}
    for b in blocks.values():
        b.append(_rows(rng, 20, 0.0), _book(20, 0))
    table = BoundsTable()
    for step in range(4):
        codes = sorted(blocks)
        got = table.table(codes, [blocks[c] for c in codes])
        want = np.array([np.concatenate([lo, hi, [smax]]) for lo, hi, smax in (blocks[c].bounds() for c in codes)])
        np.testing.assert_array_equal(got, want)
        blocks[codes[step % len(codes)]].append(_rows(rng, 5, 4.0 + step), _book(5, 100))   # moves its bounds
        blocks[codes[0]].take(np.arange(10))
        blocks[20 + step] = Block()                                                           # a new chunk
        blocks[20 + step].append(_rows(rng, 3, -step), _book(3, 200))
        if step == 2:
            del blocks[codes[1]]


def test_chunk_order_is_the_stable_sort_of_the_chunk_codes_for_narrow_and_wide_spans():
    import torch

    from ilrm_ros.mapping.chunks import chunk_keys
    from ilrm_ros.mapping.map_storage import chunk_order, encode_keys

    rng = np.random.default_rng(6)
    for spread in (10.0, 3000.0):   # a window's few chunks (dense uint16 sort), then more than 2^16 of them
        means = (rng.standard_normal((5000, 3)) * spread).astype(np.float32)
        means[::7] = means[3]                                   # repeated chunks: stability matters
        codes = encode_keys(chunk_keys(torch.from_numpy(means), 2.0))
        order, sorted_codes = chunk_order(means, 2.0)
        np.testing.assert_array_equal(order, np.argsort(codes, kind="stable"))
        np.testing.assert_array_equal(sorted_codes, codes[order])


def test_finite_rows_flags_rows_with_any_nan_or_inf():
    from ilrm_ros.mapping.fusion import finite_rows

    rng = np.random.default_rng(2)
    rows = _rows(rng, 3000, 0.0)
    for value in (np.nan, np.inf, -np.inf):
        at = rng.integers(0, 3000, 200)
        rows[at, rng.integers(0, ROW_FLOATS, 200)] = value
    np.testing.assert_array_equal(finite_rows(rows), np.isfinite(rows).all(axis=1))
