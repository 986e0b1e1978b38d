"""How many camera images were lost before they reached the node (ROS-free).

Images lost in transport are never seen, so they can only be inferred:

* **publication sequence numbers** (exact): rmw implementations that fill
  ``MessageInfo.publication_sequence_number`` (Fast DDS does) number each writer's samples
  1, 2, 3 …; a jump of k means k − 1 samples were lost. A number that does not increase
  means another writer (or a restarted one): the count continues from there, nothing is
  counted as lost.
* **stamp gaps** (an estimate, when no sequence numbers come): a camera stamps at a steady
  period; the median of recent stamp steps is taken as that period, and a step of ``n``
  periods (n ≥ 1.5) counts ``round(n) − 1`` lost images. Steps longer than
  ``max_gap_periods`` periods are treated as a pause of the camera, not as losses.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque

MIN_STEPS = 5


class DeliveryTracker:
    """Counts received images and infers lost ones (see the module docstring). Thread-safe."""

    def __init__(self, window: int = 50, max_gap_periods: float = 100.0) -> None:
        self._steps: deque[int] = deque(maxlen=int(window))
        self._max_gap = float(max_gap_periods)
        self._lock = threading.Lock()
        self.received = 0
        self.lost_by_sequence = 0
        self.lost_by_stamps = 0
        self._last_seq = 0
        self._sequenced = False
        self._last_stamp: int | None = None

    def observe(self, stamp_ns: int, publication_seq: int = 0) -> None:
        """One image arrived with header stamp ``stamp_ns`` and (0 = unknown) its writer's sequence number."""
        with self._lock:
            self.received += 1
            if publication_seq > 0:
                self._sequenced = True
                if self._last_seq and publication_seq > self._last_seq:
                    self.lost_by_sequence += publication_seq - self._last_seq - 1
                self._last_seq = publication_seq
            self._observe_stamp(int(stamp_ns))

    def _observe_stamp(self, stamp_ns: int) -> None:
        last, self._last_stamp = self._last_stamp, stamp_ns if self._last_stamp is None else max(
            self._last_stamp, stamp_ns)
        if last is None or stamp_ns <= last:
            return
        step = stamp_ns - last
        if len(self._steps) >= MIN_STEPS:
            period = statistics.median(self._steps)
            periods = step / period
            if 1.5 <= periods <= self._max_gap:
                self.lost_by_stamps += int(round(periods)) - 1
                return  # a gap is not a sample of the period
            if periods > self._max_gap:
                return
        self._steps.append(step)

    def snapshot(self) -> dict:
        """``received``, ``lost``, ``delivery_ratio`` (received / (received + lost)) and the ``source``."""
        with self._lock:
            if self._sequenced:
                lost, source = self.lost_by_sequence, "publication_sequence"
            elif len(self._steps) >= MIN_STEPS:
                lost, source = self.lost_by_stamps, "stamp_gaps"
            else:
                lost, source = 0, "unknown"
            expected = self.received + lost
            return {"received": self.received, "lost": lost, "source": source,
                    "delivery_ratio": (self.received / expected) if expected else None}
