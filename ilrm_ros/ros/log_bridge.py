"""Python ``logging`` (the ROS-free core, Pillow, warnings) through the node's ROS logger.

Without a handler, ``logging`` warnings of the core reach stderr as bare text with no
severity and never /rosout. :func:`bridge_python_logging` forwards the ``ilrm_ros``
logger tree (and ``warnings.warn``) to the node's logger at the matching severity.
"""
from __future__ import annotations

import logging
from typing import Any


def ros_log(ros_logger: Any, level: int, message: str) -> None:
    """Log ``message`` at a ``logging`` level through an rclpy logger.

    rclpy remembers the severity of each call site (file and line) and raises
    ``ValueError: Logger severity cannot be changed between calls`` when one line logs
    at two severities, so every severity has a call line of its own here.
    """
    if level >= logging.ERROR:
        ros_logger.error(message)
    elif level >= logging.WARNING:
        ros_logger.warning(message)
    elif level >= logging.INFO:
        ros_logger.info(message)
    else:
        ros_logger.debug(message)


class RosLogHandler(logging.Handler):
    """A ``logging.Handler`` writing to an rclpy logger with the record's severity."""

    def __init__(self, ros_logger: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            ros_log(self.ros_logger, record.levelno, f"[{record.name}] {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def bridge_python_logging(ros_logger: Any, names: tuple[str, ...] = ("ilrm_ros", "py.warnings", "PIL"),
                          level: int = logging.INFO) -> RosLogHandler:
    """Attach one :class:`RosLogHandler` to each named logger (no propagation, so nothing is printed twice)."""
    handler = RosLogHandler(ros_logger, level)
    logging.captureWarnings(True)
    for name in names:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, RosLogHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(min(logger.level or level, level) if name == "ilrm_ros" else logging.WARNING)
        logger.propagate = False
    return handler
