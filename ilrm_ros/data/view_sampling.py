"""View sampling for training/evaluation: V context + T target views from one sequence, nearby in time.

A robot sees a scene as a stream; a model that maps a window of keyframes is trained on
what such a window looks like: a :class:`ViewSample` of a contiguous span of frames, V
context views spread over it (always including both ends, so the targets lie between
context views), and T target views taken from the other frames of the span (optionally a
few frames beyond its ends, to train mild extrapolation) — never equal to a context frame.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class ViewSampling:
    """How view samples are drawn from a sequence of ``num_frames`` frames."""

    num_context: int = 4
    """V: context views."""
    num_target: int = 4
    """T: target views."""
    min_span: int | None = None
    """Shortest span in frames (first to last context frame, inclusive); default 2 V."""
    max_span: int | None = None
    """Longest span; default 4 V (clipped to the sequence length)."""
    target_margin: int = 0
    """Targets may also come from up to this many frames before/after the span."""
    jitter: float = 1.0
    """0: context evenly spaced (rounded); 1: each interior frame anywhere within half a spacing."""

    def spans(self, num_frames: int) -> tuple[int, int]:
        """Effective ``(min_span, max_span)`` for a sequence of ``num_frames`` frames."""
        lo = self.min_span if self.min_span is not None else 2 * self.num_context
        hi = self.max_span if self.max_span is not None else 4 * self.num_context
        need = self.num_context + (1 if self.num_target > 0 else 0)
        hi = min(hi, num_frames)
        lo = max(min(lo, hi), need)
        return lo, max(hi, lo)


@dataclass(frozen=True)
class ViewSample:
    """Frame indices into the sequence: ``context`` (V,) increasing, ``target`` (T,) sorted."""

    context: np.ndarray
    target: np.ndarray

    @property
    def span(self) -> tuple[int, int]:
        return int(self.context[0]), int(self.context[-1])


def min_frames(cfg: ViewSampling) -> int:
    """Shortest sequence a view sample can be drawn from."""
    return cfg.num_context + (1 if cfg.num_target > 0 else 0)


def sample_views(num_frames: int, cfg: ViewSampling, rng: np.random.Generator) -> ViewSample:
    """Draw one view sample from a sequence of ``num_frames`` frames.

    The span length is uniform in ``cfg.spans``; its start uniform over the sequence;
    context frames are the span's two ends plus V-2 frames near even spacing between them;
    targets are drawn without replacement from the span's (and margin's) non-context
    frames, or with replacement when there are fewer such frames than T.
    """
    v, t = cfg.num_context, cfg.num_target
    if v < 1:
        raise ValueError("num_context must be >= 1")
    if num_frames < min_frames(cfg):
        raise ValueError(f"sequence of {num_frames} frames is too short for {v} context + {t} target views")
    lo, hi = cfg.spans(num_frames)
    span = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, num_frames - span + 1))
    end = start + span - 1
    context = _spread(start, end, v, cfg.jitter, rng)
    if t == 0:
        return ViewSample(context=context, target=np.zeros(0, dtype=np.int64))
    first = max(0, start - cfg.target_margin)
    last = min(num_frames - 1, end + cfg.target_margin)
    pool = np.setdiff1d(np.arange(first, last + 1), context)
    target = rng.choice(pool, size=t, replace=pool.size < t)
    return ViewSample(context=context, target=np.sort(target).astype(np.int64))


def _spread(start: int, end: int, v: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """``v`` distinct increasing indices in [start, end] including both ends.

    Interior frame i sits at the evenly spaced position ``start + i * s`` (``s`` the
    spacing, >= 1 since the span holds at least v frames), moved by up to ``jitter * s / 2``
    but kept inside its own stratum ``[c - s/2, c + s/2)``, so picks never collide.
    """
    if v == 1:
        return np.array([int(rng.integers(start, end + 1))], dtype=np.int64)
    s = (end - start) / (v - 1)
    picks = [start]
    for i in range(1, v - 1):
        c = start + i * s
        lo, hi = math.ceil(c - s / 2), math.ceil(c + s / 2) - 1
        pick = int(round(c + jitter * rng.uniform(-s / 2, s / 2)))
        picks.append(min(max(pick, lo), hi))
    picks.append(end)
    return np.array(picks, dtype=np.int64)


def eval_view_samples(num_frames: int, cfg: ViewSampling, count: int, seed: int = 0) -> list[ViewSample]:
    """``count`` view samples for evaluation, identical for the same arguments (seeded, independent
    of any other random state)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(num_frames), 0x57A1]))
    return [sample_views(num_frames, cfg, rng) for _ in range(count)]


def sample_indices(sample: ViewSample) -> np.ndarray:
    """Context then target indices, ``(V + T,)``: the order a model batch usually takes."""
    return np.concatenate([sample.context, sample.target])
