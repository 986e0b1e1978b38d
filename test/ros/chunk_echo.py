"""Peer process for the DDS tests: receives GaussianChunk messages and saves them.

Usage: python chunk_echo.py TOPIC OUT_DIR COUNT
Writes OUT_DIR/<i>.npz per received message (metadata + Gaussian rows) and
OUT_DIR/ready once its subscription exists.
"""
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node

from ilrm_ros.msg import GaussianChunk
from ilrm_ros.ros.conversions import cloud_to_array


def main() -> int:
    topic, out, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    rclpy.init()
    node = Node("chunk_echo")
    received: list[GaussianChunk] = []
    node.create_subscription(GaussianChunk, topic, received.append, 10)
    (out / "ready").touch()
    deadline = time.monotonic() + 60.0
    while len(received) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    for i, msg in enumerate(received):
        np.savez(out / f"{i}.npz", points=cloud_to_array(msg.gaussians), chunk_key=np.asarray(msg.chunk_key),
                 revision=msg.revision, action=msg.action, part=msg.part, num_parts=msg.num_parts,
                 map_id=msg.map_id, frame_id=msg.header.frame_id, keyframe_ids=np.asarray(msg.keyframe_ids),
                 bounds=np.array([msg.bounds_min.x, msg.bounds_min.y, msg.bounds_min.z,
                                  msg.bounds_max.x, msg.bounds_max.y, msg.bounds_max.z]))
    node.destroy_node()
    rclpy.shutdown()
    return 0 if len(received) >= count else 1


if __name__ == "__main__":
    sys.exit(main())
