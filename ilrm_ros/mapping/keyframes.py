"""Keyframe selection by motion/time thresholds, and a bounded keyframe store.

``KeyframePolicy.admit(frame)`` decides whether a posed :class:`Frame` becomes a keyframe
by comparing it with the last *admitted* one; ``KeyframeBuffer`` keeps the most recent
keyframes in a ring with monotonically increasing ids, so a scheduler can ask for "the
last V keyframes" (:meth:`KeyframeBuffer.latest`) and "how many arrived since id k"
(:meth:`KeyframeBuffer.num_since`).
"""
from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from ilrm_ros.core.params import param
from ilrm_ros.core.rotations import rotation_angle
from ilrm_ros.io.frames import NS_PER_S, Frame, Keyframe

logger = logging.getLogger(__name__)


@dataclass
class KeyframeConfig:
    """Keyframe selection (parameters ``keyframes.*``): thresholds of :class:`KeyframePolicy`,
    all relative to the last admitted keyframe, and the size of the :class:`KeyframeBuffer`."""

    min_translation_m: float = param(0.10, "Admit a keyframe after this much camera translation", 0.0, 100.0,
                                     runtime=True)
    """Admit when the camera centre moved at least this far (metres)."""
    min_rotation_deg: float = param(10.0, "Admit a keyframe after this much camera rotation", 0.0, 180.0,
                                    runtime=True)
    """Admit when the camera turned at least this much (degrees, geodesic angle)."""
    max_interval_s: float = param(2.0, "Admit a keyframe after this long even without motion (0 = never)",
                                  0.0, 3600.0, runtime=True)
    """Admit when this much time passed, even without motion (0 or ``math.inf``: never)."""
    min_interval_s: float = param(0.0, "Never admit two keyframes closer in time than this", 0.0, 60.0,
                                  runtime=True)
    """Never admit two keyframes closer in time than this (seconds)."""
    capacity: int = param(64, "Keyframes kept in memory", 2, 10000)
    """Keyframes the buffer holds (the oldest go first)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when the thresholds cannot work together."""
        for name in ("min_translation_m", "min_rotation_deg", "max_interval_s", "min_interval_s"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.max_interval_s > 0 and self.min_interval_s > self.max_interval_s:
            raise ValueError(
                f"min_interval_s ({self.min_interval_s}) > max_interval_s ({self.max_interval_s})"
            )


@dataclass(frozen=True)
class Decision:
    """Outcome of :meth:`KeyframePolicy.decide`.

    reason: ``"first"``, ``"translation"``, ``"rotation"``, ``"interval"`` when admitted;
    ``"too_soon"``, ``"not_newer"``, ``"no_motion"`` when not.
    """

    admitted: bool
    reason: str
    translation_m: float = 0.0
    rotation_deg: float = 0.0
    interval_s: float = 0.0


class KeyframePolicy:
    """Motion/time keyframe selection; stateful (remembers the last admitted frame).

    ``KeyframePolicy()``, ``KeyframePolicy(KeyframeConfig(...))`` (copied) or keyword
    overrides ``KeyframePolicy(min_translation_m=0.2)``. Rules, in order:

    1. the first frame is admitted;
    2. a frame not newer than the last keyframe, or within ``min_interval_s`` of it, is not;
    3. otherwise it is admitted if it moved ``>= min_translation_m``, turned
       ``>= min_rotation_deg`` or comes ``>= max_interval_s`` (when > 0) after the last keyframe.
    """

    def __init__(self, config: KeyframeConfig | None = None, **overrides: float) -> None:
        self.config = replace(config or KeyframeConfig(), **overrides)
        self._last_c2w: np.ndarray | None = None
        self._last_stamp_ns: int | None = None

    def reset(self) -> None:
        """Forget the last keyframe: the next frame is admitted."""
        self._last_c2w = None
        self._last_stamp_ns = None

    def decide(self, frame: Frame, commit: bool = True) -> Decision:
        """Evaluate ``frame`` (must have a pose); ``commit`` records it when admitted.

        Raises ValueError when ``frame.c2w`` is None.
        """
        if frame.c2w is None:
            raise ValueError("KeyframePolicy needs a posed frame (frame.c2w is None)")
        cfg = self.config
        c2w = np.asarray(frame.c2w, dtype=np.float64)
        if self._last_c2w is None or self._last_stamp_ns is None:
            decision = Decision(True, "first")
        else:
            interval_s = (frame.stamp_ns - self._last_stamp_ns) / NS_PER_S
            translation = float(np.linalg.norm(c2w[:3, 3] - self._last_c2w[:3, 3]))
            rotation = math.degrees(rotation_angle(self._last_c2w[:3, :3].T @ c2w[:3, :3]))
            measured = dict(translation_m=translation, rotation_deg=rotation, interval_s=interval_s)
            if interval_s <= 0:
                decision = Decision(False, "not_newer", **measured)
            elif interval_s < cfg.min_interval_s:
                decision = Decision(False, "too_soon", **measured)
            elif translation >= cfg.min_translation_m:
                decision = Decision(True, "translation", **measured)
            elif rotation >= cfg.min_rotation_deg:
                decision = Decision(True, "rotation", **measured)
            elif cfg.max_interval_s > 0 and interval_s >= cfg.max_interval_s:
                decision = Decision(True, "interval", **measured)
            else:
                decision = Decision(False, "no_motion", **measured)
        if decision.admitted and commit:
            self._last_c2w = c2w.copy()
            self._last_stamp_ns = frame.stamp_ns
        return decision

    def admit(self, frame: Frame) -> bool:
        """True (and remembered as the last keyframe) when ``frame`` should become a keyframe."""
        return self.decide(frame).admitted


class KeyframeBuffer:
    """Ring buffer of the newest ``capacity`` keyframes with ids 0, 1, 2, … (never reused).

    Thread-safe. Lists are returned oldest first (chronological order of admission).
    """

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._ring: deque[Keyframe] = deque(maxlen=self.capacity)
        self._next_id = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._ring)

    def __iter__(self) -> Iterator[Keyframe]:
        return iter(self.snapshot())

    @property
    def next_id(self) -> int:
        """Id the next added keyframe will get (== number ever added)."""
        with self._lock:
            return self._next_id

    @property
    def total_added(self) -> int:
        """Keyframes ever added (== :attr:`next_id`)."""
        with self._lock:
            return self._next_id

    @property
    def last_id(self) -> int:
        """Id of the newest keyframe ever added, -1 before the first."""
        with self._lock:
            return self._next_id - 1

    @property
    def evicted(self) -> int:
        """Keyframes pushed out of the ring (or cleared) so far."""
        with self._lock:
            return self._next_id - len(self._ring)

    def add(self, frame: Frame) -> Keyframe:
        """Store ``frame`` as the newest keyframe (evicting the oldest when full)."""
        with self._lock:
            keyframe = Keyframe(id=self._next_id, frame=frame)
            self._next_id += 1
            self._ring.append(keyframe)
        return keyframe

    def snapshot(self) -> list[Keyframe]:
        """All held keyframes, oldest first."""
        with self._lock:
            return list(self._ring)

    def latest(self, n: int) -> list[Keyframe]:
        """The newest ``min(n, len)`` keyframes, oldest first (n <= 0 gives [])."""
        if n <= 0:
            return []
        with self._lock:
            held = len(self._ring)
            return [self._ring[i] for i in range(max(0, held - n), held)]

    def since(self, keyframe_id: int) -> list[Keyframe]:
        """Held keyframes with id > ``keyframe_id``, oldest first (-1: all held)."""
        with self._lock:
            return [kf for kf in self._ring if kf.id > keyframe_id]

    def num_since(self, keyframe_id: int) -> int:
        """How many keyframes were added after ``keyframe_id`` (evicted ones included)."""
        with self._lock:
            return max(0, self._next_id - 1 - int(keyframe_id))

    def get(self, keyframe_id: int) -> Keyframe | None:
        """The keyframe with this id if still held."""
        with self._lock:
            if not self._ring:
                return None
            index = int(keyframe_id) - self._ring[0].id
            return self._ring[index] if 0 <= index < len(self._ring) else None

    def clear(self) -> None:
        """Drop all keyframes; ids keep counting (never reused)."""
        with self._lock:
            self._ring.clear()
