"""View sampling: V context + T target views from contiguous spans of a sequence."""
import numpy as np
import pytest

from ilrm_ros.data.view_sampling import (ViewSample, ViewSampling, eval_view_samples, min_frames, sample_indices,
                                         sample_views)


@pytest.mark.parametrize("v,t,n", [(2, 1, 5), (4, 4, 24), (6, 2, 32), (3, 6, 8), (8, 8, 100)])
def test_view_samples_are_contiguous_spans_with_distinct_context_and_targets(v, t, n):
    cfg = ViewSampling(num_context=v, num_target=t)
    rng = np.random.default_rng(0)
    lo, hi = cfg.spans(n)
    for _ in range(200):
        w = sample_views(n, cfg, rng)
        assert w.context.shape == (v,) and w.target.shape == (t,)
        assert np.all(np.diff(w.context) > 0)  # distinct, increasing
        start, end = w.span
        assert 0 <= start and end < n and lo <= end - start + 1 <= hi
        assert not set(w.target.tolist()) & set(w.context.tolist())
        assert np.all((w.target > start) & (w.target < end))  # between context views


def test_default_span_is_two_to_four_times_the_context_count():
    cfg = ViewSampling(num_context=4, num_target=2)
    rng = np.random.default_rng(1)
    spans = [np.ptp(sample_views(100, cfg, rng).context) + 1 for _ in range(500)]
    assert min(spans) == 8 and max(spans) == 16


def test_context_views_spread_over_the_span():
    cfg = ViewSampling(num_context=5, num_target=1, min_span=41, max_span=41, jitter=0.0)
    w = sample_views(41, cfg, np.random.default_rng(0))
    gaps = np.diff(w.context)
    assert gaps.min() >= 8 and gaps.max() <= 12  # roughly even, no clumping


def test_targets_may_come_from_the_margin_beyond_the_span():
    cfg = ViewSampling(num_context=3, num_target=2, min_span=6, max_span=6, target_margin=2)
    rng = np.random.default_rng(0)
    outside = 0
    for _ in range(300):
        w = sample_views(30, cfg, rng)
        s, e = w.span
        assert np.all((w.target >= s - 2) & (w.target <= e + 2))
        outside += int(np.any((w.target < s) | (w.target > e)))
    assert outside > 0


def test_short_sequences_are_rejected_and_minimal_ones_work():
    cfg = ViewSampling(num_context=4, num_target=3)
    assert min_frames(cfg) == 5
    with pytest.raises(ValueError):
        sample_views(4, cfg, np.random.default_rng(0))
    w = sample_views(5, cfg, np.random.default_rng(0))
    assert w.context[0] == 0 and w.context[-1] == 4 and len(set(w.context.tolist())) == 4
    assert len(w.target) == 3 and not set(w.target.tolist()) & set(w.context.tolist())  # with replacement


def test_eval_view_samples_are_deterministic_and_depend_on_the_seed():
    cfg = ViewSampling(num_context=4, num_target=4)
    a = eval_view_samples(40, cfg, count=10, seed=7)
    b = eval_view_samples(40, cfg, count=10, seed=7)
    c = eval_view_samples(40, cfg, count=10, seed=8)
    assert all(np.array_equal(x.context, y.context) and np.array_equal(x.target, y.target) for x, y in zip(a, b))
    assert any(not np.array_equal(x.context, y.context) for x, y in zip(a, c))


def test_sample_indices_put_context_first():
    w = ViewSample(context=np.array([0, 3, 6]), target=np.array([2, 5]))
    assert list(sample_indices(w)) == [0, 3, 6, 2, 5]
