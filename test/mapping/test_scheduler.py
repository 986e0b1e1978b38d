"""Window scheduling and the non-blocking worker."""
import threading
import time
from types import SimpleNamespace

import pytest

from ilrm_ros.mapping.scheduler import Window, WindowConfig, WindowScheduler, WindowWorker


def _kfs(n):
    return [SimpleNamespace(id=i) for i in range(n)]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_first_window_waits_for_size_keyframes_then_every_stride():
    sched = WindowScheduler(WindowConfig(size=4, stride=2))
    kfs = _kfs(10)
    emitted = []
    for i in range(10):
        sched.on_keyframe()
        if sched.due():
            emitted.append(sched.take(kfs[: i + 1]).keyframe_ids)
    assert emitted == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]


def test_min_period_delays_windows():
    clock = FakeClock()
    sched = WindowScheduler(WindowConfig(size=2, stride=1, min_period_s=1.0), clock=clock)
    for _ in range(2):
        sched.on_keyframe()
    w0 = sched.take(_kfs(2))
    sched.on_keyframe()
    clock.t = 0.5
    assert not sched.due()
    clock.t = 1.0
    assert sched.due()
    assert sched.take(_kfs(3)).window_id == w0.window_id + 1


def test_take_refuses_short_windows():
    with pytest.raises(ValueError, match="need 4 keyframes"):
        WindowScheduler(WindowConfig(size=4)).take(_kfs(3))


def test_worker_never_blocks_the_caller_and_coalesces_when_behind():
    gate = threading.Event()
    done = []

    def slow(window):
        gate.wait(5)
        return window.window_id

    worker = WindowWorker(slow, done.append, max_queue=1)
    try:
        t0 = time.monotonic()
        for i in range(5):
            worker.submit(Window(i, [], 0.0))
            time.sleep(0.02)  # let the worker pick up window 0
        assert time.monotonic() - t0 < 1.0
        gate.set()
        assert worker.wait_idle(5)
        # window 0 was running; 1..3 were replaced by newer ones; 4 ran last
        assert done == [0, 4]
        assert worker.stats.coalesced == 3 and worker.stats.processed == 2
    finally:
        worker.stop()


def test_a_failing_window_is_counted_and_the_worker_keeps_going():
    results = []

    def process(window):
        if window.window_id == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return window.window_id

    worker = WindowWorker(process, results.append, max_queue=4)
    try:
        for i in range(3):
            worker.submit(Window(i, [], 0.0))
        assert worker.wait_idle(5)
        assert results == [0, 2]
        assert worker.stats.failed == 1 and worker.stats.out_of_memory == 1
        assert "window 1" in worker.stats.last_error
    finally:
        worker.stop()


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_idle_work_runs_only_while_no_window_waits_and_yields_to_a_new_one():
    events, lock = [], threading.Lock()
    state = {"steps": 3, "nothing_left": 0}

    def idle():
        with lock:
            if state["steps"] == 0:
                state["nothing_left"] += 1
                return False
            state["steps"] -= 1
            events.append("idle")
        time.sleep(0.05)  # one bounded step
        return True

    def process(window):
        with lock:
            events.append(f"window {window.window_id}")
        return window.window_id

    worker = WindowWorker(process, lambda r: None, max_queue=1, idle=idle)
    try:
        assert wait_for(lambda: state["nothing_left"] == 1)
        time.sleep(0.1)
        with lock:  # 3 steps, then idle said there is nothing left: asleep until a window comes
            assert events == ["idle"] * 3 and state["nothing_left"] == 1
            assert not worker.stats.idle_work     # diagnostics: the map no longer changes
            state["steps"] = 100
        worker.submit(Window(7, [], 0.0))
        assert wait_for(lambda: len(events) >= 5)   # the window ran first, then idle work resumed
        with lock:
            assert events[3] == "window 7" and set(events[4:]) == {"idle"}
        assert worker.stats.idle_work            # more idle work to do after the window
        t0 = time.monotonic()
        worker.submit(Window(8, [], 0.0))
        assert wait_for(lambda: "window 8" in events)
        assert time.monotonic() - t0 < 1.0   # it waited for the step in progress (0.05 s), not for 95 more
        with lock:
            assert state["steps"] > 50
    finally:
        worker.stop()


def test_long_idle_work_that_polls_window_waiting_yields_within_a_poll():
    polls = {"n": 0}
    started = threading.Event()

    def idle():  # a long step (up to 5 s) that checks for waiting windows every 10 ms
        started.set()
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end and not worker.window_waiting():
            polls["n"] += 1
            time.sleep(0.01)
        return True

    done = threading.Event()
    worker = WindowWorker(lambda w: done.set(), lambda r: None, idle=idle)
    try:
        assert started.wait(5) and not worker.window_waiting()
        time.sleep(0.05)
        t0 = time.monotonic()
        worker.submit(Window(1, [], 0.0))
        assert done.wait(5)
        assert time.monotonic() - t0 < 1.0 and polls["n"] > 0
    finally:
        worker.stop()


def test_failing_idle_work_is_paused_until_the_next_window():
    calls = []

    def idle():
        calls.append(1)
        raise ValueError("boom")

    worker = WindowWorker(lambda w: w.window_id, lambda r: None, idle=idle)
    try:
        assert wait_for(lambda: len(calls) == 1)
        time.sleep(0.1)
        assert len(calls) == 1
        worker.submit(Window(0, [], 0.0))
        assert wait_for(lambda: len(calls) == 2)
        time.sleep(0.1)
        assert len(calls) == 2
    finally:
        worker.stop()


def test_the_start_step_runs_once_on_the_worker_thread_before_the_first_window():
    seen: list[str] = []
    started = threading.Event()

    def on_start():
        seen.append(f"start on {threading.current_thread().name}")
        started.wait(5)

    worker = WindowWorker(lambda w: seen.append(f"window {w.window_id}"), lambda r: None, on_start=on_start,
                          name="start-test")
    try:
        assert not worker.idle()  # busy while starting
        worker.submit(Window(1, [], 0.0))
        started.set()
        assert worker.wait_idle(5)
        assert seen == ["start on start-test", "window 1"]
    finally:
        worker.stop()


def test_a_failing_start_step_is_logged_and_the_worker_goes_on(caplog):
    def on_start():
        raise RuntimeError("no model")

    done: list[int] = []
    worker = WindowWorker(lambda w: done.append(w.window_id), lambda r: None, on_start=on_start)
    try:
        worker.submit(Window(7, [], 0.0))
        assert worker.wait_idle(5)
        assert done == [7] and "start-up step failed" in caplog.text
    finally:
        worker.stop()
