"""A bounded retry queue for frames waiting until TF can place them (ROS-free)."""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from ilrm_ros.io.frames import NS_PER_S

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T]):
    item: T
    stamp_ns: int
    pushed_ns: int
    stalled_ns: int  # the queue's stalled time when the item was pushed


class PendingQueue(Generic[T]):
    """Bounded retry queue for items (frames) waiting until TF can place them.

    capacity:  most items held; pushing into a full queue drops the item with the oldest
               stamp (counted in ``dropped``).
    timeout_s: an item that has *waited* longer than this (``now_ns - pushed_ns``, both in
               the caller's clock: ROS or wall time, as long as it is the same one) is
               returned as expired.
    stall_s:   a gap longer than this between two calls (push or pop) means the caller could
               not run (the process was descheduled, a clock jumped): that time does not count
               as waiting. Otherwise the first pass after a stall would expire items whose TF
               arrived during it and is still queued behind that pass. Callers that pass
               every ~0.1 s (the node's resolver timer) see gaps this long only in stalls.

    Typical use (every timer tick)::

        ready, expired = queue.pop_ready(lambda f, t: buffer.try_lookup("map", f.frame_id, t), now)
    """

    def __init__(self, capacity: int = 64, timeout_s: float = 1.0, stall_s: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        if not stall_s > 0:
            raise ValueError(f"stall_s must be > 0, got {stall_s}")
        self.capacity = int(capacity)
        self.timeout_ns = int(round(timeout_s * NS_PER_S))
        self.stall_ns = int(round(stall_s * NS_PER_S))
        self._items: list[_Pending[T]] = []  # sorted by stamp
        self._lock = threading.Lock()
        self._last_call_ns: int | None = None
        self._stalled_ns = 0
        self.dropped = 0
        self.expired = 0
        self.resolved = 0
        self.stalls = 0

    def _note_call(self, now_ns: int) -> None:
        """Count a gap longer than ``stall_s`` since the previous call as stalled time (lock held)."""
        last = self._last_call_ns
        if last is not None and now_ns - last > self.stall_ns:
            self._stalled_ns += now_ns - last
            self.stalls += 1
        if last is None or now_ns > last:
            self._last_call_ns = now_ns

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, item: T, stamp_ns: int, now_ns: int) -> T | None:
        """Queue ``item`` (data time ``stamp_ns``) at ``now_ns``; returns the item dropped, if any."""
        with self._lock:
            self._note_call(int(now_ns))
            entry = _Pending(item, int(stamp_ns), int(now_ns), self._stalled_ns)
            keys = [p.stamp_ns for p in self._items]
            self._items.insert(bisect.bisect_right(keys, entry.stamp_ns), entry)
            if len(self._items) > self.capacity:
                self.dropped += 1
                return self._items.pop(0).item
        return None

    def pop_ready(
        self, resolver: Callable[[T, int], R | None], now_ns: int
    ) -> tuple[list[tuple[T, R]], list[T]]:
        """Resolve what can be resolved, expire what waited too long.

        resolver(item, stamp_ns) returns a result (e.g. the pose) or None when not yet
        possible. Returns ``(ready, expired)``: ``ready`` lists ``(item, result)`` in stamp
        order, ``expired`` the items that are still unresolved after waiting ``timeout_s``
        (stalls excluded). An item resolvable in the same call in which it would expire counts
        as ready. The resolver is called without the queue's lock held.
        """
        with self._lock:
            self._note_call(int(now_ns))
            stalled_now = self._stalled_ns
            entries = list(self._items)
        outcome: dict[int, tuple[bool, Any]] = {}  # id(entry) -> (resolved?, result)
        for entry in entries:
            result = resolver(entry.item, entry.stamp_ns)
            if result is not None:
                outcome[id(entry)] = (True, result)
            elif int(now_ns) - entry.pushed_ns - (stalled_now - entry.stalled_ns) > self.timeout_ns:
                outcome[id(entry)] = (False, None)
        ready: list[tuple[T, R]] = []
        expired: list[T] = []
        with self._lock:
            kept: list[_Pending[T]] = []
            for entry in self._items:  # entries dropped meanwhile by push() are not reported
                done = outcome.get(id(entry))
                if done is None:
                    kept.append(entry)
                elif done[0]:
                    ready.append((entry.item, done[1]))
                else:
                    expired.append(entry.item)
            self._items = kept
            self.resolved += len(ready)
            self.expired += len(expired)
        return ready, expired

    def clear(self) -> list[T]:
        """Remove and return every queued item."""
        with self._lock:
            items = [p.item for p in self._items]
            self._items.clear()
        return items
