"""Counting and naming what the mapper skips: one line per cause per window, with a count.

Every dropped frame (and every refused transform, every internal error) is counted under
its *reason* (``dropped_decode_error``, ``tf_rejected_loop`` …, the keys diagnostics
publish) and named in the log by its *cause* (``encoding 'yuv422'``): the first event of a
cause is logged at once with its full message; further events of the same cause within
``window_s`` are only counted, and when the window is over one summary line says how many
there were ("23 frames dropped in the last 5 s [decode_error]: encoding 'yuv422'"). Causes
are throttled independently, so a flood of one never hides another. ROS-free: the node
passes its logger, the offline tools a ``logging`` logger.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

Emit = Callable[[int, str], None]
"""emit(logging level, message)."""


class Counters:
    """Thread-safe named counters (drops by reason, received messages)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: collections.Counter[str] = collections.Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)

    def total(self, prefix: str) -> int:
        """Sum of the counters whose name starts with ``prefix``."""
        with self._lock:
            return sum(v for k, v in self._c.items() if k.startswith(prefix))


@dataclass
class _Window:
    opened: float
    count: int = 0  # events after the one logged when the window opened


def logging_emit(logger: logging.Logger) -> Emit:
    """An ``emit`` that writes to a ``logging`` logger."""
    return lambda level, message: logger.log(level, message)


class DropReporter:
    """Counts events by key and logs each (key, cause) once per window with a count.

    emit:     ``emit(level, message)``; called without the reporter's lock held.
    window_s: throttle window per cause.
    clock:    monotonic seconds (injectable for tests).
    """

    def __init__(self, emit: Emit, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.window_s = float(window_s)
        self.clock = clock
        self.counters = Counters()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._nouns: dict[str, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ events

    def drop(self, reason: str, cause: str, message: str, n: int = 1) -> None:
        """``n`` frames dropped for ``reason`` (counted as ``dropped_<reason>``)."""
        self.event(f"dropped_{reason}", cause, f"dropped {'a frame' if n == 1 else f'{n} frames'}: {message}",
                   n, noun="frames dropped")

    def tf_rejected(self, reason: str, cause: str, message: str) -> None:
        """A transform refused by the TF buffer (counted as ``tf_rejected_<reason>``)."""
        self.event(f"tf_rejected_{reason}", cause, f"ignored a transform: {message}", noun="transforms ignored")

    def warn(self, key: str, cause: str, message: str) -> None:
        """A named warning that drops nothing (counted as ``warned_<key>``)."""
        self.event(f"warned_{key}", cause, message, noun="warnings")

    def event(self, key: str, cause: str, message: str, n: int = 1, noun: str = "events",
              level: int = logging.WARNING) -> None:
        """Count ``n`` under ``key``; log ``message`` if ``(key, cause)`` is outside its window."""
        self.counters.add(key, n)
        now = self.clock()
        out = self._due(now)
        with self._lock:
            self._nouns[key] = noun
            window = self._windows.get((key, cause))
            if window is None:
                self._windows[(key, cause)] = _Window(opened=now)
                out.append((level, f"{message} [{key}]"))
            else:
                window.count += n
        for lvl, line in out:
            self.emit(lvl, line)

    def flush(self) -> None:
        """Log the summaries of windows that are over (call periodically, e.g. with diagnostics)."""
        for level, line in self._due(self.clock()):
            self.emit(level, line)

    def _due(self, now: float) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        with self._lock:
            for (key, cause), window in list(self._windows.items()):
                if now - window.opened < self.window_s:
                    continue
                del self._windows[(key, cause)]
                if window.count:  # the first event of the window was logged on its own
                    out.append((logging.WARNING, f"{window.count + 1} {self._nouns.get(key, 'events')} in the last "
                                                 f"{self.window_s:g} s [{key}]: {cause}"))
        return out
