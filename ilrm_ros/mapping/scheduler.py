"""Sliding windows of keyframes, and the worker thread that runs them.

WindowScheduler decides *when* a window is due (size V, stride, minimum period);
WindowWorker runs windows off the caller's thread through a bounded queue: when the
model falls behind, a newer window replaces the oldest waiting one (coalescing) and
the replacement is counted, so callers never block and memory never grows.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ilrm_ros.core.params import param

log = logging.getLogger(__name__)


@dataclass
class WindowConfig:
    """When windows are due and how many may wait (parameters ``window.*``).

    ``size`` and ``stride`` 0 mean "the model's own" until ``inference.fill_model_defaults``
    replaces them; a scheduler needs them filled.
    """

    size: int = param(0, "Keyframes per iLRM window (V); 0 = what the model was trained on (re10k 2, dl3dv 16, "
                         "ours 4)", 2, 64, special=(0,))
    stride: int = param(0, "New keyframes needed before the next window; 0 = the model's default (re10k 1, "
                           "dl3dv 8, ours 2)", 1, 64, special=(0,))
    min_period_s: float = param(0.0, "Minimum wall time between two windows", 0.0, 3600.0, runtime=True)
    max_queue: int = param(1, "Windows waiting for the model; older ones are coalesced away", 1, 16)


@dataclass
class Window:
    """V keyframes to reconstruct together.

    window_id: increasing index; keyframes: oldest first; trigger_time: monotonic clock
    value when the window's newest keyframe arrived (for end-to-end latency);
    submit_time: when it was handed to the worker (0 = not yet).
    """

    window_id: int
    keyframes: list[Any]
    trigger_time: float
    submit_time: float = 0.0

    @property
    def keyframe_ids(self) -> list[int]:
        return [int(k.id) for k in self.keyframes]


class WindowScheduler:
    """Emit a window of the newest ``size`` keyframes every ``stride`` new keyframes.

    The first window is due as soon as ``size`` keyframes exist; after that one is due
    when at least ``stride`` keyframes arrived since the last window and at least
    ``min_period_s`` passed.
    """

    def __init__(self, cfg: WindowConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._new = 0
        self._total = 0
        self._last_time: float | None = None
        self._next_id = 0

    def on_keyframe(self) -> None:
        self._new += 1
        self._total += 1

    def due(self) -> bool:
        if self._total < self.cfg.size:
            return False
        first = self._last_time is None
        if not first and self._new < self.cfg.stride:
            return False
        return first or self._clock() - self._last_time >= self.cfg.min_period_s

    def take(self, newest_keyframes: Sequence[Any], trigger_time: float | None = None) -> Window:
        """Build the window from the newest keyframes (oldest first) and reset the counter."""
        kfs = list(newest_keyframes)[-self.cfg.size:]
        if len(kfs) < self.cfg.size:
            raise ValueError(f"need {self.cfg.size} keyframes for a window, got {len(kfs)}")
        now = self._clock()
        self._last_time = now
        self._new = 0
        window = Window(self._next_id, kfs, now if trigger_time is None else trigger_time)
        self._next_id += 1
        return window

    def reset(self) -> None:
        self._new = self._total = 0
        self._last_time = None


@dataclass
class WorkerStats:
    submitted: int = 0
    processed: int = 0
    coalesced: int = 0
    failed: int = 0
    out_of_memory: int = 0
    busy: bool = False
    idle_work: bool = False
    """Idle work (e.g. background map refinement) has more to do: the map may still change."""
    queue_depth: int = 0
    last_error: str = ""
    errors: dict[str, int] = field(default_factory=dict)


class WindowWorker:
    """One thread that runs ``process(window)`` for queued windows.

    ``process`` returns a result handed to ``on_result`` (on the worker thread). An
    exception in ``process`` is logged (once per kind, then throttled), counted and
    the window skipped; the worker keeps going. Out-of-memory is counted separately.

    ``idle`` (optional): called on the worker thread while no window waits, one bounded piece of
    work per call (e.g. a map refinement step); it returns False when there is nothing to do, and
    the worker then sleeps until the next window (``stats.idle_work`` says which). The queue is
    checked before every call, so a window waits at most for the call in progress, which can poll
    :meth:`window_waiting` to end early. Its exceptions are logged and stop idle work until the
    next window.

    ``on_start`` (optional): called once on the worker thread before it takes any window (e.g. the
    model's warm-up forward, so its memory lands in the arena the windows use); the worker counts as
    busy meanwhile, and an exception there is logged and the worker goes on.
    """

    def __init__(self, process: Callable[[Window], Any], on_result: Callable[[Any], None],
                 max_queue: int = 1, name: str = "ilrm-window-worker",
                 idle: Callable[[], bool] | None = None, on_start: Callable[[], None] | None = None) -> None:
        self._process = process
        self._on_result = on_result
        self._idle = idle
        self._on_start = on_start
        self._queue: collections.deque[Window] = collections.deque()
        self._max_queue = max(1, int(max_queue))
        self._cv = threading.Condition()
        self._stop = False
        self.stats = WorkerStats(idle_work=idle is not None, busy=on_start is not None)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, window: Window) -> bool:
        """Queue a window; returns False when an older waiting window was coalesced away.

        Then yields the GIL once (``time.sleep(0)``), so the woken worker starts now: otherwise it
        waits until the submitting thread and the executor block (~0.7 ms in the node on 2 cores).
        """
        coalesced = self._enqueue(window)
        time.sleep(0)
        return not coalesced

    def _enqueue(self, window: Window) -> bool:
        """Queue ``window`` (coalescing the oldest waiting ones past ``max_queue``); True if any was."""
        with self._cv:
            coalesced = False
            while len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.stats.coalesced += 1
                coalesced = True
            window.submit_time = time.monotonic()
            self._queue.append(window)
            self.stats.submitted += 1
            self.stats.queue_depth = len(self._queue)
            self._cv.notify()
        return coalesced

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self.stats.busy

    def window_waiting(self) -> bool:
        """Whether a window is queued (idle work asks this to yield early)."""
        with self._cv:
            return bool(self._queue)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and nothing runs (tests, offline tools, shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue or self.stats.busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(remaining if remaining is not None else 0.1)
        return True

    def stop(self, timeout: float = 30.0, drain: bool = False) -> None:
        """Stop the thread; the running window finishes, waiting ones run only with ``drain``."""
        if drain:
            self.wait_idle(timeout)
        with self._cv:
            self._stop = True
            self._queue.clear()
            self._cv.notify_all()
        self._thread.join(timeout)

    def _start(self) -> None:
        """``on_start``, once, before the first window."""
        try:
            if self._on_start is not None:
                self._on_start()
        except Exception as exc:  # noqa: BLE001 - a failed start-up step must never kill the worker
            log.error("worker start-up step failed (%s): %s", type(exc).__name__, exc, exc_info=True)
        finally:
            with self._cv:
                self.stats.busy = False
                self._cv.notify_all()

    def _run(self) -> None:
        self._start()
        while True:
            with self._cv:
                while not self._queue and not self._stop and not self.stats.idle_work:
                    self._cv.wait()
                if self._stop:
                    return
                window = self._queue.popleft() if self._queue else None
                self.stats.queue_depth = len(self._queue)
                self.stats.busy = window is not None
            if window is None:  # no window waits: one piece of idle work
                self.stats.idle_work = self._run_idle()
                continue
            try:
                result = self._process(window)
                self._on_result(result)
                self.stats.processed += 1
            except Exception as exc:  # noqa: BLE001 - a failed window must never kill the worker
                self._record_failure(window, exc)
            finally:
                self.stats.idle_work = self._idle is not None  # a new window: new work for idle
                with self._cv:
                    self.stats.busy = False
                    self._cv.notify_all()

    def _run_idle(self) -> bool:
        """One call of ``idle``; False (no more idle work until the next window) when it says so or fails."""
        try:
            return bool(self._idle())
        except Exception as exc:  # noqa: BLE001 - idle work must never kill the worker
            log.error("idle work failed (%s): %s; paused until the next window", type(exc).__name__, exc,
                      exc_info=True)
            return False

    def _record_failure(self, window: Window, exc: Exception) -> None:
        kind = type(exc).__name__
        is_oom = "OutOfMemory" in kind or "out of memory" in str(exc).lower()
        if is_oom:
            self.stats.out_of_memory += 1
            _release_accelerator_memory()
        self.stats.failed += 1
        self.stats.last_error = f"window {window.window_id}: {kind}: {exc}"
        seen = self.stats.errors.get(kind, 0)
        self.stats.errors[kind] = seen + 1
        if seen == 0 or (seen + 1) % 100 == 0:  # first time, then every 100th
            log.error("window %d failed (%s, %d so far); skipped, map kept: %s", window.window_id, kind, seen + 1,
                      exc, exc_info=seen == 0 and not is_oom)


def _release_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
