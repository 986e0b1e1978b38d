"""The node's camera input over real DDS.

input.qos auto: the image subscription follows the camera publishers' reliability.

A reliable camera gets a reliable reader (large images need fragment repair); as soon as a
best-effort camera publishes on the topic the reader goes back to best effort (a reliable
reader would get nothing from it); the switch loses no frames of a steady stream.

TF: an image whose /tf samples arrived just before it is placed in its own callback.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from ilrm_ros.io.drop_report import DropReporter  # noqa: E402
from ilrm_ros.io.frames import ns_to_stamp  # noqa: E402
from ilrm_ros.io.rigid import make_transform  # noqa: E402
from ilrm_ros.mapping.config import config_from_flat  # noqa: E402
from ilrm_ros.ros.camera_input import CameraInput, ImageSubscription  # noqa: E402
from ilrm_ros.ros.conversions import camera_info_msg  # noqa: E402
from ilrm_ros.ros.guard import CallbackGuard  # noqa: E402
from ilrm_ros.ros.player import matrix_to_transform, rgb_image_msg  # noqa: E402
from ilrm_ros.ros.tf_source import TF_QOS, OwnTfSource  # noqa: E402

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


def _input_node(name: str):
    """A bare node with what CameraInput reads from the mapping node (config, drop counters, guard)."""
    node = rclpy.create_node(name)
    node.cfg = config_from_flat({"input.image_topic": f"/{name}/image", "input.camera_info_topic": f"/{name}/info",
                                 "input.qos": "reliable", "model.height": 16, "model.width": 16})
    node.reporter = DropReporter(lambda level, message: None)
    node.counters = node.reporter.counters
    node.guard = CallbackGuard(node.reporter, lambda text: None)
    return node


@pytest.mark.parametrize("shared_group", [True, False], ids=["tf_in_the_input_group", "tf_elsewhere"])
def test_an_image_whose_tf_came_just_before_it_is_placed_in_its_own_callback(shared_group):
    """rclpy's executors hand over one message per subscription and wait, so an image sent right
    after the /tf samples around its stamp is often handled before them. With /tf in the image's
    (mutually exclusive) group the image callback reads those samples and places the frame at once;
    with /tf elsewhere the frame waits for the executor to deliver them."""
    rclpy.init()
    try:
        node, robot = _input_node(f"cam_tf_{int(shared_group)}"), rclpy.create_node("cam_tf_robot")
        group = MutuallyExclusiveCallbackGroup()
        tf = OwnTfSource(node, callback_group=group if shared_group else MutuallyExclusiveCallbackGroup())
        placed: list = []
        cam = CameraInput(node, tf, lambda frame, arrival: placed.append(frame), group)
        pub = robot.create_publisher(TFMessage, "/tf", TF_QOS)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        stamp, T = 3_000_000_000, make_transform((0.5, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0))
        header = Header(frame_id="cam_optical")
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(stamp)
        cam._on_camera_info(camera_info_msg(np.array([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]), 16, 16, header))
        for dt in (-1_000_000, 1_000_000):
            pub.publish(TFMessage(transforms=[matrix_to_transform(T, "map", "cam_optical", stamp + dt)]))
        time.sleep(0.5)   # delivered to the node's reader; nothing spins the node, so nobody handled them

        cam._on_image(rgb_image_msg(np.full((16, 16, 3), 90, np.uint8), header), {})   # the executor's call
        if shared_group:
            assert len(placed) == 1 and cam.waiting() == 0
            assert np.allclose(placed[0].c2w, T)
        else:
            assert placed == [] and cam.waiting() == 1
            assert tf.take_pending() == 2   # still there for the executor
        assert node.counters.total("dropped") == 0   # nothing dropped, no internal error
    finally:
        rclpy.shutdown()
