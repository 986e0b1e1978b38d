"""Live map quality: score renders of the map at keyframes it was not fitted to.

    keyframe ──HoldoutPolicy──▶ held out (scored, never fed to a window) | used by windows
    map ──render at a held-out pose──▶ score_view(rendered, truth) ──▶ QualityTracker (latest, mean)

PSNR and SSIM are ``ilrm_ros.render.metrics``'s (the ones training reports). PSNR of a perfect
render is capped at :data:`PSNR_CAP` so running means stay finite.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import torch

from ilrm_ros.core.params import param
from ilrm_ros.render.metrics import psnr_from_mse, ssim_map, ssim_window

log = logging.getLogger(__name__)

__all__ = ["QUALITY_MODES", "QualityConfig", "PSNR_CAP", "ViewScore", "score_view", "QualityStats", "QualityTracker", "is_held_out", "HoldoutPolicy"]

QUALITY_MODES = ("none", "new_keyframes", "holdout")


@dataclass
class QualityConfig:
    """Live map quality (``quality.*``, read at start-up)."""

    mode: str = param("new_keyframes", "Which keyframes score the map: new_keyframes = each new keyframe, rendered "
                                        "from the map before the window holding it is fused (costs no data); "
                                        "holdout = every holdout_every_n-th keyframe, never fed to a window; none = no scoring",
                      choices=QUALITY_MODES)
    holdout_every_n: int = param(5, "holdout mode: every N-th admitted keyframe is held out and scored", 2, 1000)
    render_scale: float = param(0.5, "Scores are rendered at this fraction of the model input size (bounds the "
                                     "cost)", 0.05, 1.0)


PSNR_CAP = 100.0
"""dB; a render with MSE ≤ 1e-10 (identical images) scores this instead of +inf."""


@dataclass(frozen=True)
class ViewScore:
    """One view's quality: PSNR in dB (≤ PSNR_CAP), SSIM in [-1, 1]; NaN when the mask was empty."""

    psnr: float
    ssim: float


def _check_pair(rendered: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None) -> None:
    if rendered.dim() != 3 or rendered.shape != truth.shape:
        raise ValueError(f"rendered and truth must both be (C, H, W); got {tuple(rendered.shape)}, "
                         f"{tuple(truth.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(rendered.shape[-2:]):
        raise ValueError(f"mask must be (H, W) = {tuple(rendered.shape[-2:])}, got {tuple(mask.shape)}")


def score_view(rendered: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> ViewScore:
    """PSNR and SSIM of a render against the true image.

    rendered, truth: (3, H, W) float in [0, 1]; mask: optional (H, W) bool, the pixels to score
    (e.g. where the map drew something). With a mask, PSNR is over the masked pixels and SSIM
    is the mean of the local SSIM map over windows centred on masked pixels (all pixels
    still feed the windows). An empty mask gives NaN scores.
    """
    _check_pair(rendered, truth, mask)
    x, y = rendered.detach().float(), truth.detach().to(rendered.device).float()
    sq = (x - y).pow(2).mean(0)  # (H, W)
    win, sigma = ssim_window(*x.shape[-2:])
    smap = ssim_map(x[None], y[None], 1.0, win, sigma)[0].mean(0)  # (H - win + 1, W - win + 1)
    if mask is None:
        err, s = float(sq.mean()), float(smap.mean())
    else:
        m = mask.to(x.device, torch.bool)
        if not bool(m.any()):
            return ViewScore(math.nan, math.nan)
        r = win // 2
        m_valid = m[r : r + smap.shape[0], r : r + smap.shape[1]]
        err = float(sq[m].mean())
        s = float(smap[m_valid].mean()) if bool(m_valid.any()) else math.nan
    return ViewScore(min(psnr_from_mse(err), PSNR_CAP), s)


@dataclass(frozen=True)
class QualityStats:
    """A snapshot of a :class:`QualityTracker` (NaN before the first score)."""

    count: int
    psnr_latest: float
    psnr_mean: float
    ssim_latest: float
    ssim_mean: float


class QualityTracker:
    """Latest value, running mean and count of PSNR and SSIM. Thread-safe; O(1) per update.

    Scores with a non-finite PSNR or SSIM (an empty mask) are not counted; ``skipped`` says how many.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._count = 0
        self._skipped = 0
        self._sum_psnr = 0.0
        self._sum_ssim = 0.0
        self._latest = ViewScore(math.nan, math.nan)

    def update(self, score: ViewScore) -> bool:
        """Add one view's score; returns False (and counts it as skipped) when it is not finite."""
        finite = math.isfinite(score.psnr) and math.isfinite(score.ssim)
        with self._lock:
            if not finite:
                self._skipped += 1
                return False
            self._count += 1
            self._sum_psnr += score.psnr
            self._sum_ssim += score.ssim
            self._latest = score
        return True

    @property
    def skipped(self) -> int:
        with self._lock:
            return self._skipped

    def stats(self) -> QualityStats:
        with self._lock:
            n = self._count
            mean_p = self._sum_psnr / n if n else math.nan
            mean_s = self._sum_ssim / n if n else math.nan
            return QualityStats(n, self._latest.psnr, mean_p, self._latest.ssim, mean_s)

    def reset(self) -> None:
        """Forget every score (a map reset or load)."""
        with self._lock:
            self._reset_locked()


def is_held_out(index: int, every_n: int) -> bool:
    """Is keyframe number ``index`` (0-based admission order) held out? Every ``every_n``-th is
    (indices n-1, 2n-1, ...), so the first keyframes always reach the model; ``every_n`` ≤ 1 = none
    (holding out every keyframe would starve the map)."""
    return every_n > 1 and index % every_n == every_n - 1


class HoldoutPolicy:
    """Counts admitted keyframes and says which to hold out (see :func:`is_held_out`).

    A held-out keyframe is scored against the map and never fed to a window.
    """

    def __init__(self, every_n: int) -> None:
        if every_n < 0:
            raise ValueError(f"every_n must be >= 0 (0 = hold nothing out), got {every_n}")
        self.every_n = int(every_n)
        self._index = 0

    def next(self) -> bool:
        """Call once per admitted keyframe, in order; True = hold this one out."""
        held = is_held_out(self._index, self.every_n)
        self._index += 1
        return held

    def reset(self) -> None:
        self._index = 0
