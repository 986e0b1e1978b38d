"""input.qos auto over real DDS: the image subscription follows the camera publishers' reliability.

A reliable camera gets a reliable reader (large images need fragment repair); as soon as a
best-effort camera publishes on the topic the reader goes back to best effort (a reliable
reader would get nothing from it); the switch loses no frames of a steady stream.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ilrm_ros.mapping.config import config_from_flat  # noqa: E402
from ilrm_ros.ros.camera_input import ImageSubscription  # noqa: E402

pytestmark = [pytest.mark.ros]


def _wait(pred, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()


def test_auto_follows_the_publishers_and_the_switch_loses_no_frames():
    rclpy.init()
    node, camera = rclpy.create_node("camera_input_under_test"), rclpy.create_node("cameras")
    node.cfg = config_from_flat({"input.qos": "auto"})
    stamps: list[int] = []
    images = ImageSubscription(node, "/cam_input_test/image", lambda msg: stamps.append(msg.header.stamp.nanosec),
                               None)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(camera)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    stop = threading.Event()
    try:
        assert images.qos == "sensor_data"  # nobody publishes yet: the reader that matches any writer
        reliable = camera.create_publisher(Image, "/cam_input_test/image",
                                           QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        assert _wait(lambda: reliable.get_subscription_count() > 0)
        data = np.zeros(12, np.uint8).tobytes()
        sent: list[int] = []

        def stream():
            i = 0
            while not stop.is_set():
                i += 1
                msg = Image(height=2, width=2, encoding="rgb8", step=6, data=data)
                msg.header.stamp.nanosec = i
                reliable.publish(msg)
                sent.append(i)
                time.sleep(0.02)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        assert _wait(lambda: len(stamps) > 5)
        images.adapt()
        assert images.qos == "reliable"
        time.sleep(1.0)
        images.adapt()  # the old reader goes once the new one matched
        stop.set()
        streamer.join()
        time.sleep(0.5)
        assert set(range(min(stamps), max(sent) + 1)) <= set(stamps), "frames lost in the switch"

        camera.create_publisher(Image, "/cam_input_test/image",
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert _wait(lambda: len(node.get_publishers_info_by_topic("/cam_input_test/image")) == 2)
        images.adapt()
        assert images.qos == "sensor_data"
    finally:
        stop.set()
        executor.shutdown()
        node.destroy_node()
        camera.destroy_node()
        rclpy.shutdown()
