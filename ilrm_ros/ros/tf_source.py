"""Camera poses from TF: tf2_ros where a ROS install has it, our own buffer otherwise.

Both sources answer the same non-blocking question — "the pose of ``source`` in
``target`` at ``stamp``, or not yet" — so the node behaves the same on both routes.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.io.pose_buffer import PoseBuffer, TransformRejected
from ilrm_ros.io.rigid import make_transform

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transform_to_matrix(t) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) float64."""
    return make_transform((t.translation.x, t.translation.y, t.translation.z),
                          (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))


class OwnTfSource:
    """Subscribes /tf and /tf_static and feeds a ROS-free PoseBuffer (the pip route).

    ``on_update`` (optional, no arguments) is called after every TF message, so frames
    waiting for their pose are placed as soon as it arrives rather than at the next
    tick of the node's resolver timer.

    Transforms the buffer refuses (invalid, a loop, far ahead of the node's clock) are
    counted as ``tf_rejected_<reason>`` and named through ``reporter`` (else logged); the
    rest of the message is kept.
    """

    name = "ilrm_ros.PoseBuffer"
    poll_period_s = 0.1
    """Period of the node's resolver timer: only expires frames whose TF never came."""

    def __init__(self, node: Node, cache_time_s: float = 10.0, reporter: DropReporter | None = None,
                 max_future_s: float = 0.0) -> None:
        from tf2_msgs.msg import TFMessage

        self.buffer = PoseBuffer(cache_time_s=cache_time_s, max_future_s=max_future_s)
        self.last_message_time: float | None = None
        self.on_update: Callable[[], None] | None = None
        self.reporter = reporter
        self._node = node
        guard = getattr(node, "guard", None)
        wrap = (lambda name, fn: guard(name)(fn)) if guard is not None else (lambda name, fn: fn)
        node.create_subscription(TFMessage, "/tf", wrap("the /tf callback", lambda m: self._on_tf(m, False)), TF_QOS)
        node.create_subscription(TFMessage, "/tf_static", wrap("the /tf_static callback",
                                                               lambda m: self._on_tf(m, True)), TF_STATIC_QOS)

    def set_max_future(self, seconds: float) -> None:
        """Change the future horizon (``frames.tf_max_future_s``) at runtime."""
        self.buffer.max_future_ns = int(round(max(0.0, seconds) * 1e9))

    def _on_tf(self, msg, static: bool) -> None:
        self.last_message_time = time.monotonic()
        now_ns = self._node.get_clock().now().nanoseconds
        topic = "/tf_static" if static else "/tf"
        for ts in msg.transforms:
            try:
                self.buffer.set_transform_stamped(ts, static=static, now_ns=now_ns)
            except TransformRejected as exc:  # keep the rest of the message
                self._rejected(exc.reason, f"{exc.reason} on {topic}: {str(ts.child_frame_id)[:40]!r}",
                               f"{topic}: {exc}")
        if self.on_update is not None:
            self.on_update()

    def _rejected(self, reason: str, cause: str, message: str) -> None:
        if self.reporter is not None:
            self.reporter.tf_rejected(reason, cause, message)
        else:
            self._node.get_logger().warning(f"ignoring a transform: {message}", throttle_duration_sec=5.0)

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray | None:
        """T_target_source (4, 4) at stamp, or None while TF cannot answer yet."""
        return self.buffer.try_lookup(target, source, stamp_ns)


class Tf2RosSource:
    """tf2_ros.Buffer + TransformListener (a ROS install).

    The listener owns the /tf subscription, so there is no per-message hook: waiting
    frames are placed by the node's resolver timer (``on_update`` is never called).
    """

    name = "tf2_ros.Buffer"
    on_update = None

    def set_max_future(self, seconds: float) -> None:
        """tf2_ros has no future horizon; the parameter only applies to our own buffer."""
    poll_period_s = 0.05
    """Period of the node's resolver timer: it places frames whose TF came after them."""

    def __init__(self, node: Node, cache_time_s: float = 10.0) -> None:
        import tf2_ros
        from rclpy.duration import Duration

        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
        self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        self.last_message_time = None

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray | None:
        from rclpy.time import Time

        sec, nsec = ns_to_stamp(stamp_ns)
        try:
            ts = self.buffer.lookup_transform(target, source, Time(seconds=sec, nanoseconds=nsec))
        except self._tf2.TransformException:  # lookup, connectivity, extrapolation, invalid argument …
            return None
        self.last_message_time = time.monotonic()
        return transform_to_matrix(ts.transform)


def make_tf_source(node: Node, prefer_tf2_ros: bool = True, reporter: DropReporter | None = None,
                   max_future_s: float = 0.0):
    """tf2_ros where importable, else our own buffer (with ``reporter`` and the future horizon)."""
    if prefer_tf2_ros:
        try:
            import tf2_ros  # noqa: F401

            return Tf2RosSource(node)
        except ImportError:
            pass
    return OwnTfSource(node, reporter=reporter, max_future_s=max_future_s)
