"""Camera poses from TF: tf2_ros where a ROS install has it, our own buffer otherwise.

Both sources answer the same non-blocking question — "the pose of ``source`` in
``target`` at ``stamp``, or not yet" — so the node behaves the same on both routes.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.io.pose_buffer import PoseBuffer, TransformRejected
from ilrm_ros.io.rigid import make_transform

TAKE_PENDING_MAX = 32
"""The most /tf messages :meth:`OwnTfSource.take_pending` reads in one call (a callback stays short)."""

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
                 max_future_s: float = 0.0, callback_group: Any = None) -> None:
        from tf2_msgs.msg import TFMessage

        self.buffer = PoseBuffer(cache_time_s=cache_time_s, max_future_s=max_future_s)
        self.last_message_time: float | None = None
        self.on_update: Callable[[], None] | None = None
        self.reporter = reporter
        self.callback_group = callback_group
        """The /tf subscription's callback group (None: the node's default group)."""
        self._node = node
        guard = getattr(node, "guard", None)
        wrap = (lambda name, fn: guard(name)(fn)) if guard is not None else (lambda name, fn: fn)
        self._sub = node.create_subscription(TFMessage, "/tf",
                                             wrap("the /tf callback", lambda m: self._on_tf(m, False)),
                                             TF_QOS, callback_group=callback_group)
        self._taken = wrap("the /tf callback", lambda m: self._on_tf(m, False, notify=False))   # take_pending's
        node.create_subscription(TFMessage, "/tf_static", wrap("the /tf_static callback",
                                                               lambda m: self._on_tf(m, True)), TF_STATIC_QOS)
        self._can_take = True

    def set_max_future(self, seconds: float) -> None:
        """Change the future horizon (``frames.tf_max_future_s``) at runtime."""
        self.buffer.max_future_ns = int(round(max(0.0, seconds) * 1e9))

    def take_pending(self, limit: int = TAKE_PENDING_MAX) -> int:
        """Read up to ``limit`` /tf messages that have arrived but that the executor has not handed to
        their callback yet, as that callback would (without ``on_update``: the caller places its frames
        next). Returns how many were read.

        Why: rclpy's executors take one message per subscription and wait, so when a camera driver
        publishes an image right after the /tf sample that brackets its stamp, the image is often
        handled a whole executor cycle (~1 ms on a 2-core machine) before that sample. Only call this
        from a callback of ``callback_group``, and only when that group is mutually exclusive: the
        executor takes a subscription's message after it acquired the group, so it cannot take from
        /tf at the same time. Where this rclpy cannot take directly it reads nothing (the executor
        delivers the messages as before).
        """
        n = 0
        while self._can_take and n < limit:
            msg = self._take_one()
            if msg is None:
                break
            self._taken(msg)
            n += 1
        return n

    def _take_one(self):
        """One waiting /tf message, or None (none waiting, or no direct take in this rclpy)."""
        from rclpy.exceptions import InvalidHandle

        sub = self._sub
        try:
            with sub.handle:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
        except InvalidHandle:    # the subscription is being destroyed (shutdown)
            return None
        except AttributeError:   # an rclpy without Subscription.handle.take_message
            self._can_take = False
            self._node.get_logger().debug("this rclpy cannot take /tf messages directly: frames wait for "
                                          "the executor")
            return None
        return None if taken is None else taken[0]

    def _on_tf(self, msg, static: bool, notify: bool = True) -> None:
        self.last_message_time = time.monotonic()
        now_ns = self._node.get_clock().now().nanoseconds
        topic = "/tf_static" if static else "/tf"
        for ts in msg.transforms:
            try:
                self.buffer.set_transform_stamped(ts, static=static, now_ns=now_ns)
            except TransformRejected as exc:  # keep the rest of the message
                self._rejected(exc.reason, f"{exc.reason} on {topic}: {str(ts.child_frame_id)[:40]!r}",
                               f"{topic}: {exc}")
        if notify and self.on_update is not None:
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
    callback_group = None   # the listener's subscriptions use the node's default group

    def take_pending(self, limit: int = 0) -> int:
        """The listener owns the /tf subscription: nothing to read here (see OwnTfSource.take_pending)."""
        return 0

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
                   max_future_s: float = 0.0, callback_group: Any = None):
    """tf2_ros where importable, else our own buffer (with ``reporter``, the future horizon and the
    /tf subscription in ``callback_group``)."""
    if prefer_tf2_ros:
        try:
            import tf2_ros  # noqa: F401

            return Tf2RosSource(node)
        except ImportError:
            pass
    return OwnTfSource(node, reporter=reporter, max_future_s=max_future_s, callback_group=callback_group)
