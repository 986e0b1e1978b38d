"""Publish a posed image sequence as a robot would: images, camera_info and TF over DDS.

Used by the demo and the end-to-end tests. The TF tree follows REP 105:
``map -> odom`` (identity, on /tf), ``odom -> base_link`` (the robot's motion, on /tf),
``base_link -> camera_link -> camera_optical_frame`` (fixed, on /tf_static; the optical
frame is x right, y down, z forward as REP 103 prescribes for cameras).
"""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.core.rotations import R_BODY_OPTICAL, matrix_to_quat_xyzw
from ilrm_ros.io.rigid import rigid_transform
from ilrm_ros.ros.conversions import camera_info_msg
from ilrm_ros.ros.tf_source import TF_QOS, TF_STATIC_QOS

# base_link -> camera_link: 10 cm forward, 30 cm up; camera_link -> optical: the REP 103 rotation.
BASE_TO_CAMERA_LINK = np.array([[1, 0, 0, 0.10], [0, 1, 0, 0.0], [0, 0, 1, 0.30], [0, 0, 0, 1]], dtype=np.float64)
CAMERA_LINK_TO_OPTICAL = rigid_transform(R_BODY_OPTICAL, np.zeros(3))
CAMERA_FRAME = "camera_optical_frame"


def matrix_to_transform(T: np.ndarray, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    """(4, 4) pose of ``child`` in ``parent`` -> TransformStamped."""
    x, y, z, w = matrix_to_quat_xyzw(T[:3, :3])
    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = parent, child
    ts.header.stamp.sec, ts.header.stamp.nanosec = ns_to_stamp(stamp_ns)
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = (float(v) for v in T[:3, 3])
    ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z, ts.transform.rotation.w = \
        float(x), float(y), float(z), float(w)
    return ts


def base_pose_from_camera(c2w: np.ndarray) -> np.ndarray:
    """Robot base pose in map from the optical frame's pose (inverse of the fixed mounting)."""
    return c2w @ np.linalg.inv(BASE_TO_CAMERA_LINK @ CAMERA_LINK_TO_OPTICAL)


def rgb_image_msg(rgb: np.ndarray, header: Header) -> Image:
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                 data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


class SequencePlayer:
    """Publishes frames i of a PosedImages-like sequence (images (N,H,W,3) uint8, c2w (N,4,4), K (N,3,3))."""

    def __init__(self, node: Node, image_topic: str = "/image", info_topic: str = "/camera_info",
                 start_ns: int = 1_000_000_000_000) -> None:
        self.node = node
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = node.create_publisher(Image, image_topic, qos)
        self.pub_info = node.create_publisher(CameraInfo, info_topic, qos)
        self.pub_tf = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.pub_tf_static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.start_ns = start_ns

    def wait_for_subscribers(self, timeout_s: float = 20.0, give_up=None) -> bool:
        """Wait until the mapping node subscribed to images (DDS discovery takes a moment).

        ``give_up``: optional callable checked while waiting (e.g. "the node's process exited");
        when it returns True the wait ends at once with False.
        """
        import rclpy

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pub_image.get_subscription_count() > 0 and self.pub_info.get_subscription_count() > 0:
                return True
            if give_up is not None and give_up():
                return False
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return False

    def publish_static(self) -> None:
        self.pub_tf_static.publish(TFMessage(transforms=[
            matrix_to_transform(BASE_TO_CAMERA_LINK, "base_link", "camera_link", 0),
            matrix_to_transform(CAMERA_LINK_TO_OPTICAL, "camera_link", CAMERA_FRAME, 0),
        ]))

    def publish_camera_info(self, K: np.ndarray, width: int, height: int) -> None:
        """A first CameraInfo, so the node knows the intrinsics before the first image."""
        header = Header(frame_id=CAMERA_FRAME)
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(self.start_ns)
        self.pub_info.publish(camera_info_msg(K, width, height, header))

    def stamp_of(self, i: int, period_s: float) -> int:
        return self.start_ns + int(round(i * period_s * 1e9))

    def publish_frame(self, images, c2w, K, i: int, period_s: float = 0.5, stamp_index: int | None = None) -> int:
        """TF for frame i (slightly before and after its stamp, so lookups can interpolate),
        then camera_info and the image. The stamp is that of ``stamp_index`` (default i), so a
        sequence can be replayed with increasing time. Returns the image stamp (ns)."""
        stamp = self.stamp_of(i if stamp_index is None else stamp_index, period_s)
        base = base_pose_from_camera(np.asarray(c2w[i], np.float64))
        for dt in (-1_000_000, 1_000_000):  # ±1 ms around the image time
            self.pub_tf.publish(TFMessage(transforms=[
                matrix_to_transform(np.eye(4), "map", "odom", stamp + dt),
                matrix_to_transform(base, "odom", "base_link", stamp + dt),
            ]))
        header = Header(frame_id=CAMERA_FRAME)
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(stamp)
        h, w = images[i].shape[:2]
        self.pub_info.publish(camera_info_msg(K[i], w, h, header))
        self.pub_image.publish(rgb_image_msg(images[i], header))
        return stamp
