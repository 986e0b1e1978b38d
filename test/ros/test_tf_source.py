"""Our own TF source (the pip route) over real DDS: /tf in, poses out, waiting frames woken.

The node places a frame that arrived before its TF as soon as that TF is in the buffer:
OwnTfSource calls ``on_update`` after each /tf message, with the transform already
stored, so a lookup made from the hook succeeds (no wait for the resolver timer), and an
image callback in the /tf subscription's group can read the /tf messages that came before
the image but that the executor has not handed over yet (``take_pending``).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from ilrm_ros.io.rigid import make_transform  # noqa: E402
from ilrm_ros.ros.player import matrix_to_transform  # noqa: E402
from ilrm_ros.ros.tf_source import TF_QOS, OwnTfSource  # noqa: E402

pytestmark = [pytest.mark.ros]


@pytest.fixture
def ros():
    rclpy.init()
    node, user = Node("tf_source_under_test"), Node("tf_source_user")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(user)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node, user
    finally:
        executor.shutdown()
        node.destroy_node()
        user.destroy_node()
        rclpy.shutdown()


def _wait(pred, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


def test_on_update_runs_after_each_tf_message_with_the_transform_already_in_the_buffer(ros):
    node, user = ros
    source = OwnTfSource(node)
    stamp = 5_000_000_000
    seen: list[np.ndarray | None] = []
    source.on_update = lambda: seen.append(source.lookup("map", "cam_optical", stamp))
    pub = user.create_publisher(TFMessage, "/tf", TF_QOS)
    assert _wait(lambda: pub.get_subscription_count() > 0)
    T = make_transform((1.0, 2.0, 0.5), (0.0, 0.0, 0.0, 1.0))
    pub.publish(TFMessage(transforms=[matrix_to_transform(T, "map", "cam_optical", stamp - 1_000_000),
                                      matrix_to_transform(T, "map", "cam_optical", stamp + 1_000_000)]))
    assert _wait(lambda: len(seen) == 1)
    assert seen[0] is not None and np.allclose(seen[0], T)
    # a message the buffer refuses (NaN) still calls the hook, and nothing breaks
    bad = T.copy()
    bad[0, 3] = np.nan
    pub.publish(TFMessage(transforms=[matrix_to_transform(bad, "map", "other_optical", stamp)]))
    assert _wait(lambda: len(seen) == 2)
    assert source.lookup("map", "other_optical", stamp) is None


def _bracket(T: np.ndarray, child: str, stamp: int) -> list[TFMessage]:
    """Two /tf messages, 1 ms before and after ``stamp`` (as a driver publishes around an image)."""
    return [TFMessage(transforms=[matrix_to_transform(T, "map", child, stamp + dt)]) for dt in (-1_000_000, 1_000_000)]


def _take_until(source: OwnTfSource, count: int, timeout: float = 10.0) -> int:
    """Call take_pending until ``count`` messages were read (DDS delivers them in the background)."""
    taken, deadline = 0, time.monotonic() + timeout
    while taken < count and time.monotonic() < deadline:
        taken += source.take_pending()
        time.sleep(0.005)
    return taken


def test_take_pending_reads_the_tf_messages_no_executor_has_handled_yet():
    """Nothing spins the node: only take_pending reads /tf. It stores the transforms as the callback
    would, without on_update (its caller places the frames next), and reads each message once."""
    rclpy.init()
    node, robot = Node("tf_take_under_test"), Node("tf_take_robot")
    try:
        source = OwnTfSource(node, callback_group=MutuallyExclusiveCallbackGroup())
        hooks: list[int] = []
        source.on_update = lambda: hooks.append(1)
        pub = robot.create_publisher(TFMessage, "/tf", TF_QOS)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        T, stamp = make_transform((1.0, -2.0, 0.3), (0.0, 0.0, 0.0, 1.0)), 7_000_000_000
        assert source.take_pending() == 0
        assert source.lookup("map", "cam_optical", stamp) is None
        for msg in _bracket(T, "cam_optical", stamp):
            pub.publish(msg)
        assert _take_until(source, 2) == 2
        assert np.allclose(source.lookup("map", "cam_optical", stamp), T)
        assert hooks == []
        assert source.take_pending() == 0   # each message is read once

        for k in range(5):   # a burst: at most `limit` per call, the rest stays for the next one
            pub.publish(_bracket(T, f"other_{k}", stamp)[0])
        time.sleep(0.5)
        assert source.take_pending(limit=2) == 2
        assert _take_until(source, 3) == 3
    finally:
        node.destroy_node()
        robot.destroy_node()
        rclpy.shutdown()
