"""Golden replay: eight recorded iLRM windows fused into the global map give exactly the recorded
update stream (every chunk update's key, action, revision, rows by sha256, bounds; every count)
and the recorded final map, under three configurations (fusion with global eviction in exact
order, fusion with local eviction from a pool, append with pooled eviction).

The windows (test/mapping/golden/windows.npz) are the real model's output on the demo's
synthetic loop, cut to 2,500 Gaussians each; small caps make eviction run. A failure names
the first window and chunk that differ. Re-record (golden/record.py) only for an intentional
change of the map's behaviour.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from golden.replay import (
    first_difference,
    integrate,
    load_expected,
    load_recording,
    new_map,
    recording_digest,
    replay,
)

WINDOWS = load_recording()
EXPECTED = load_expected()


def test_the_recording_is_the_one_the_stream_was_recorded_from():
    assert recording_digest(WINDOWS) == EXPECTED["windows_sha256"], \
        "windows.npz and expected_stream.json are out of step: re-run golden/record.py --stream-only"


@pytest.mark.parametrize("name", sorted(EXPECTED["configs"]))
def test_replaying_the_recorded_windows_gives_exactly_the_recorded_stream(name):
    expected = EXPECTED["configs"][name]
    diff = first_difference(expected, replay(WINDOWS, expected["overrides"]))
    assert diff is None, f"{name}: {diff}"


def _totals(name: str) -> dict[str, int]:
    stream = EXPECTED["configs"][name]["windows"]
    totals = {k: sum(w[k] for w in stream) for k in ("num_carved", "num_replaced", "num_evicted")}
    totals["deletes"] = sum(c["action"] == "DELETE" for w in stream for c in w["chunks"])
    return totals


@pytest.mark.parametrize("name", ["fused_global_eviction", "fused_local_eviction"])
def test_the_fused_replays_carve_replace_evict_and_delete_chunks(name):
    totals = _totals(name)
    assert all(v > 0 for v in totals.values()), totals


def test_the_append_replay_only_evicts():
    totals = _totals("append")
    assert totals["num_carved"] == totals["num_replaced"] == 0 and totals["num_evicted"] > 0, totals


def test_the_recording_revisits_places_its_first_windows_mapped():
    first, last = WINDOWS[0], WINDOWS[-1]
    assert np.linalg.norm(first.c2w[0, :3, 3] - last.c2w[-1, :3, 3]) < 1.0  # the loop closes on itself
    assert set(first.keyframe_ids).isdisjoint(last.keyframe_ids)


def test_a_millimetre_on_one_input_gaussian_changes_the_stream_at_its_window_and_chunk():
    name = "fused_global_eviction"
    expected = EXPECTED["configs"][name]
    upsert = integrate(new_map(expected["overrides"]), WINDOWS[0]).upserts[0]
    (index,) = np.flatnonzero((WINDOWS[0].rows == upsert.rows[0]).all(axis=1))
    windows = list(WINDOWS)
    moved = WINDOWS[0].rows.copy()
    moved[index, 0] += 1e-3
    windows[0] = type(WINDOWS[0])(**{**vars(WINDOWS[0]), "rows": moved})

    diff = first_difference(expected, replay(windows, expected["overrides"]))

    assert diff is not None
    assert re.match(rf"window #0 \(window_id 0\): chunk #0 {re.escape(str(tuple(upsert.key)))}: ", diff), diff
    assert "sha256" in diff
