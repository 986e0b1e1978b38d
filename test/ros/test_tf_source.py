"""Our own TF source (the pip route) over real DDS: /tf in, poses out, waiting frames woken.

The node places a frame that arrived before its TF as soon as that TF is in the buffer:
OwnTfSource calls ``on_update`` after each /tf message, with the transform already
stored, so a lookup made from the hook succeeds (no wait for the resolver timer).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
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
