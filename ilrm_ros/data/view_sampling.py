"""Which frames of a sequence make a training or evaluation window: V context + T target views.

A robot sees a scene as a stream, and a model that maps a window of keyframes is trained
on windows of nearby frames: :func:`sample_window_indices` draws them at random from a
span of consecutive frames, :func:`eval_window_indices` picks the same ones every time.
"""
from __future__ import annotations

import random

import numpy as np


def sample_window_indices(n_frames: int, views: int, targets: int, span: int,
                          rng: random.Random) -> tuple[list[int], list[int]]:
    """Random window: V context + T target frames drawn from ``span`` consecutive frames.

    Targets are distinct from the context when the scene has enough frames; otherwise
    they are drawn (with repetition) from all frames of the span.
    """
    span = max(min(span, n_frames), min(n_frames, views + targets))
    start = rng.randint(0, n_frames - span)
    pool = list(range(start, start + span))
    if len(pool) >= views + targets:
        picked = rng.sample(pool, views + targets)
        return sorted(picked[:views]), picked[views:]
    ctx = sorted(rng.sample(pool, min(views, len(pool))))
    while len(ctx) < views:
        ctx.append(rng.choice(pool))
    tgt = [rng.choice(pool) for _ in range(targets)]
    return sorted(ctx), tgt


def eval_window_indices(n_frames: int, views: int, targets: int, span: int | None = None,
                        ) -> tuple[list[int], list[int]]:
    """Deterministic window over the first ``span`` frames (default all).

    Targets are ``T`` frames evenly spread over the span, fixed whatever ``V`` is, so
    evaluations with different numbers of views score the same target images. Context
    views are spread evenly over the remaining frames.
    """
    span = n_frames if span is None else min(span, n_frames)
    if span < views + targets:
        raise ValueError(f"need {views + targets} frames, scene has {span}")
    # targets at the centres of T equal bins (never the first/last frame)
    tgt = sorted({int((i + 0.5) * span / targets) for i in range(targets)})
    rest = [i for i in range(span) if i not in tgt]
    pos = np.linspace(0, len(rest) - 1, views)
    ctx = sorted({rest[int(round(p))] for p in pos})
    return ctx, tgt
