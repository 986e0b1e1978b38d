"""The mapper's live quality stage: which keyframes score the map, and scoring them.

    admitted keyframe ──offer──▶ pending (and, in holdout mode, kept from the windows)
    worker, before a window is fused ──score_pending(render map at each pending pose)──▶ QualityTracker

``quality.mode``:

- ``new_keyframes``: every admitted keyframe is scored against the map as it is before the
  window holding it is fused (the map has not been fitted to it yet); it is also fed to windows.
- ``holdout``: every ``holdout_every_n``-th admitted keyframe is scored and never fed to a window.
- ``none``: nothing is scored (not "off": YAML and ROS parameter parsing read an unquoted off as false).

Scoring runs on the window worker, never on the input path: before a window is fused
(``Mapper.process_window``), the map chunks each queued keyframe stamped up to the window's
newest keyframe sees are taken (references to their arrays, which the map never changes in place;
newer keyframes wait for their window); culling, rendering and scoring them
(``Mapper.score_quality``) happen after the window's chunks went out, so they add no latency to
them. A keyframe is scored only when the map holds Gaussians (the first window's are not).
Renders are made at ``render_scale`` of the model size, against the keyframe's image box-filtered
to that size (intrinsics scaled exactly).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.quality import HoldoutPolicy, QualityConfig, QualityTracker, score_view

log = logging.getLogger(__name__)

MAX_PENDING = 16
"""Keyframes waiting to be scored; beyond this the oldest is not scored (the worker is behind)."""

CullFn = Callable[[np.ndarray, np.ndarray, int, int], Callable[[], Gaussians]]
"""(c2w (4, 4), K (3, 3), width, height) -> a function giving, when called later, the map's Gaussians
(N, k) that camera may see *as the map was when cull ran* (e.g. ``FrustumRows.gaussians``: it holds the
chunks' immutable arrays, so gathering is cheap and the copy waits until scoring)."""
RenderFn = Callable[[Gaussians, np.ndarray, np.ndarray, int, int], torch.Tensor]
"""(Gaussians, c2w, K, width, height) -> their render, (3, height, width) float in [0, 1]."""


@dataclass
class PendingView:
    """A keyframe to score and the map Gaussians (N, k) it saw before its window was fused (``gaussians()``
    gives them); K (3, 3) at the scored size (width x height)."""

    keyframe: Frame
    K: np.ndarray
    width: int
    height: int
    gaussians: Callable[[], Gaussians]


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of a render at ``scale`` of (height, width), at least 8 pixels each."""
    return max(8, round(height * scale)), max(8, round(width * scale))


def scaled_intrinsics(K: np.ndarray, height: int, width: int, h: int, w: int) -> np.ndarray:
    """K (3, 3) of a (height, width) image resampled to (h, w) (pixel centres at +0.5 stay exact)."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0] *= w / width
    out[1] *= h / height
    return out


def truth_image(rgb: np.ndarray, h: int, w: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, h, w) in [0, 1], area-resampled."""
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    if img.shape[-2:] != (h, w):
        img = F.interpolate(img[None], size=(h, w), mode="area")[0]
    return img


class QualityStage:
    """Holds keyframes back (holdout mode), queues them for scoring and keeps the running scores.

    ``offer`` is called on the input side, ``score_pending`` on the window worker; both are thread-safe.
    """

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg
        self.tracker = QualityTracker()
        self.holdout = HoldoutPolicy(cfg.holdout_every_n if cfg.mode == "holdout" else 0)
        self._pending: collections.deque[Frame] = collections.deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()
        self.held_out = 0

    def offer(self, keyframe: Frame) -> bool:
        """An admitted keyframe (model size, posed); returns True when it is held out (not for windows)."""
        if self.cfg.mode == "none":
            return False
        with self._lock:
            held = self.holdout.next()
            self.held_out += int(held)
            if self.cfg.mode == "new_keyframes" or held:
                self._pending.append(keyframe)
        return held

    def take_due(self, up_to_ns: int) -> list[Frame]:
        """Remove and return the queued keyframes stamped at or before ``up_to_ns`` (the newest keyframe
        of the window about to be fused); later ones wait for their own window."""
        with self._lock:
            due = [kf for kf in self._pending if kf.stamp_ns <= up_to_ns]
            later = [kf for kf in self._pending if kf.stamp_ns > up_to_ns]
            self._pending.clear()
            self._pending.extend(later)
        return due

    def views(self, keyframes: list[Frame], cull: CullFn) -> list[PendingView]:
        """The map's Gaussians that each keyframe sees, taken now (before the window is fused: a
        reference to the chunks, no copy), at ``render_scale`` of its size; culling, rendering and
        scoring them (:meth:`score`) can wait until the window's chunks went out."""
        out = []
        for kf in keyframes:
            H, W = kf.rgb.shape[:2]
            h, w = scaled_size(H, W, self.cfg.render_scale)
            K = scaled_intrinsics(kf.K, H, W, h, w)
            out.append(PendingView(kf, K, w, h, cull(kf.c2w, K, w, h)))
        return out

    def score(self, views: list[PendingView], render: RenderFn) -> tuple[int, float]:
        """Render and score gathered views; returns (views scored, seconds)."""
        t0 = time.monotonic()
        scored = 0
        for v in views:
            pred = render(v.gaussians(), v.keyframe.c2w, v.K, v.width, v.height)
            scored += int(self.tracker.update(score_view(pred.float().cpu(), truth_image(v.keyframe.rgb, v.height,
                                                                                          v.width))))
        seconds = time.monotonic() - t0
        log.debug("scored %d keyframes against the map in %.3f s", scored, seconds)
        return scored, seconds

    def stats(self) -> dict:
        """``quality_*`` entries for the mapper's stats (NaN before the first score)."""
        s = self.tracker.stats()
        return {"quality_mode": self.cfg.mode, "quality_count": s.count, "quality_psnr_latest_db": s.psnr_latest,
                "quality_psnr_mean_db": s.psnr_mean, "quality_ssim_latest": s.ssim_latest,
                "quality_ssim_mean": s.ssim_mean, "quality_held_out": self.held_out}

    def reset(self) -> None:
        """Forget scores, queue and holdout counting (map reset or load)."""
        with self._lock:
            self._pending.clear()
            self.holdout.reset()
            self.held_out = 0
        self.tracker.reset()
