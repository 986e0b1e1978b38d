"""Progress of long-running tools (``ilrm-ros data synth``, ``train``, ``eval``, ``bag``,
``bench map-soak``).

On a terminal (the stream, stderr by default, is a TTY) a tqdm bar with rate and ETA;
log records emitted meanwhile are routed around the bar. Anywhere else (CI, a pipe, a
log file) plain INFO lines through ``logging``, at most one per ``every_s`` seconds or
per ``every_pct`` per cent, plus a final one::

    with Progress(len(jobs), "synth", unit="scene", logger=log) as bar:
        for job in jobs:
            run(job)
            bar.update()

    for scene in track(scenes, "eval", unit="scene", logger=log):
        ...

tqdm is imported only when a bar is drawn, so headless runs (the GPU check) do not need it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressConfig:
    """How often the headless path logs."""

    every_s: float = 5.0
    """A line at least this often (seconds) while items complete."""
    every_pct: float = 10.0
    """And one each time this many per cent more are done."""


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Counts completed items of a known ``total``; use it as a context manager.

    ``logger`` names the tool in the headless lines (default: this module's logger).
    ``clock`` (seconds, monotonic) is injectable for tests.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", logger: logging.Logger | None = None,
                 stream: TextIO | None = None, config: ProgressConfig = ProgressConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(int(total), 0)
        self.desc, self.unit = desc, unit
        self.done = 0
        self.status = ""
        self._logger = logger or _log
        self._stream = sys.stderr if stream is None else stream
        self._config = config
        self._clock = clock
        self._start = self._last_t = clock()
        self._last_bucket = 0
        self._final_logged = False
        self._bar: Any = None
        self._exit = contextlib.ExitStack()

    @property
    def uses_bar(self) -> bool:
        """True when a tqdm bar is drawn (the stream is a terminal)."""
        return self._bar is not None

    def __enter__(self) -> "Progress":
        if is_terminal(self._stream):
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._exit.enter_context(logging_redirect_tqdm())
            self._bar = self._exit.enter_context(
                tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self._stream, dynamic_ncols=True))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_status(self, text: str) -> None:
        """Short state shown after the counts (bar postfix / end of the log line)."""
        self.status = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        bucket = self._bucket(self.done)
        if self.total and self.done >= self.total:
            self._log_final("done")
        elif now - self._last_t >= self._config.every_s or bucket > self._last_bucket:
            self._log_line(now)
        self._last_bucket = bucket

    def close(self) -> None:
        """Final line (headless) or bar closed; idempotent."""
        if self._bar is None and not self._final_logged:
            self._log_final("done" if self.done >= self.total else "stopped")
        self._exit.close()

    # ------------------------------------------------------------------ headless lines
    def _bucket(self, done: int) -> int:
        if self.total <= 0 or self._config.every_pct <= 0:
            return 0
        return int(100.0 * done / self.total // self._config.every_pct)

    def _log_line(self, now: float) -> None:
        elapsed = now - self._start
        eta = elapsed / self.done * (self.total - self.done) if self.done else math.inf
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self._logger.info("%s: %d/%d %s (%.0f%%), %s elapsed, ETA %s%s", self.desc, self.done, self.total, self.unit,
                          pct, format_duration(elapsed), format_duration(eta), self._suffix())
        self._last_t = now

    def _log_final(self, word: str) -> None:
        elapsed = self._clock() - self._start
        self._logger.info("%s: %s, %d/%d %s in %s%s", self.desc, word, self.done, self.total, self.unit,
                          format_duration(elapsed), self._suffix())
        self._final_logged = True

    def _suffix(self) -> str:
        return f"; {self.status}" if self.status else ""


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
          logger: logging.Logger | None = None, stream: TextIO | None = None,
          config: ProgressConfig = ProgressConfig()) -> Iterator[T]:
    """Yield ``items`` while showing their progress (``total`` defaults to ``len(items)``)."""
    n = len(items) if total is None else total  # type: ignore[arg-type]
    with Progress(n, desc, unit, logger, stream, config) as bar:
        for item in items:
            yield item
            bar.update()
