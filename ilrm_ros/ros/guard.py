"""The last-resort guard of every callback: no exception ever escapes into the executor.

An exception escaping a subscription, timer or service callback stops rclpy's executor and
with it the node. :func:`guarded` wraps a callback so that an unexpected exception is
counted under ``internal_error`` in diagnostics, its traceback logged once per context
(later ones are counted and summarised by the :class:`~ilrm_ros.io.drop_report.DropReporter`),
the frame or request dropped, and the node kept alive. Specific, expected problems are
handled where they happen; this is the net under them.
"""
from __future__ import annotations

import functools
import logging
import threading
import traceback
from typing import Any, Callable

from ilrm_ros.io.drop_report import DropReporter


class CallbackGuard:
    """Wraps callbacks; ``report`` receives the counts, ``log_traceback(text)`` the first traceback per context."""

    def __init__(self, reporter: DropReporter, log_traceback: Callable[[str], None]) -> None:
        self.reporter = reporter
        self.log_traceback = log_traceback
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def failed(self, context: str, exc: BaseException) -> None:
        """Count and name one internal error in ``context``."""
        with self._lock:
            first = context not in self._seen
            self._seen.add(context)
        if first:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log_traceback(f"internal error in {context} (input dropped, node keeps running):\n{tb}")
        self.reporter.event("dropped_internal_error", f"{context}: {type(exc).__name__}",
                            f"internal error in {context}: {type(exc).__name__}: {exc}", noun="internal errors",
                            level=logging.ERROR)

    def __call__(self, context: str, fallback: Callable[..., Any] | None = None):
        """Decorator: run the callback; on an exception count it and return ``fallback(*args, exc=...)``."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the last resort, by design
                    self.failed(context, exc)
                    return fallback(*args, exc=exc) if fallback is not None else None
            return guarded

        return wrap


def failed_response(request: Any, response: Any, exc: BaseException) -> Any:
    """Service fallback: ``success = False`` and the error in ``message`` (all our services have both)."""
    response.success = False
    response.message = f"internal error: {type(exc).__name__}: {exc}"
    return response
