"""Specification of ilrm_ros.data.view_sampling: which frames make a training or evaluation window."""
import random

import pytest

from ilrm_ros.data.view_sampling import eval_window_indices, sample_window_indices


# --------------------------------------------------------------------------- evaluation windows


def test_eval_targets_do_not_depend_on_the_number_of_views():
    tg = [eval_window_indices(24, v, 3)[1] for v in (2, 4, 8)]
    assert tg[0] == tg[1] == tg[2]


@pytest.mark.parametrize("views", [2, 4, 8])
def test_eval_window_has_v_distinct_context_views_disjoint_from_targets(views):
    ctx, tgt = eval_window_indices(20, views, 2)
    assert len(ctx) == views == len(set(ctx))
    assert not set(ctx) & set(tgt)
    assert all(0 <= i < 20 for i in ctx + tgt)


def test_eval_window_is_deterministic_and_rejects_short_scenes():
    assert eval_window_indices(16, 4, 2) == eval_window_indices(16, 4, 2)
    with pytest.raises(ValueError):
        eval_window_indices(5, 4, 2)


def test_more_views_bring_context_closer_to_targets():
    def gap(v):
        ctx, tgt = eval_window_indices(32, v, 2)
        return sum(min(abs(c - t) for c in ctx) for t in tgt)
    assert gap(8) <= gap(4) <= gap(2)


def test_an_eval_window_over_a_span_uses_only_the_first_span_frames():
    ctx, tgt = eval_window_indices(100, 4, 2, span=12)
    assert max(ctx + tgt) < 12
    assert (ctx, tgt) == eval_window_indices(12, 4, 2)


# --------------------------------------------------------------------------- training windows


def test_training_windows_stay_within_the_span_and_are_distinct():
    rng = random.Random(0)
    for _ in range(50):
        ctx, tgt = sample_window_indices(40, 4, 2, span=10, rng=rng)
        idx = ctx + tgt
        assert len(set(idx)) == 6 and max(idx) - min(idx) < 10


def test_training_windows_cope_with_scenes_shorter_than_the_window():
    ctx, tgt = sample_window_indices(3, 4, 2, span=10, rng=random.Random(1))
    assert len(ctx) == 4 and len(tgt) == 2 and max(ctx + tgt) < 3


def test_training_windows_have_sorted_context_and_repeat_with_the_seed():
    a = [sample_window_indices(40, 4, 2, span=10, rng=random.Random(5)) for _ in range(2)]
    assert a[0] == a[1]
    assert a[0][0] == sorted(a[0][0])
