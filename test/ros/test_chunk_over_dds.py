"""GaussianChunk travels between two processes over real DDS with every field intact."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction  # noqa: E402
from ilrm_ros.msg import GaussianChunk  # noqa: E402
from ilrm_ros.ros.conversions import update_to_msg  # noqa: E402

pytestmark = pytest.mark.ros


def _random_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.concatenate([rng.uniform(-5, 5, (n, 3)), rng.uniform(0, 1, (n, 4)),
                           rng.uniform(0.001, 0.1, (n, 3)), q], axis=1).astype(np.float32)


def test_chunk_published_in_one_process_arrives_intact_in_another(tmp_path: Path):
    rng = np.random.default_rng(7)
    sent = [_random_gaussians(n, rng) for n in (1500, 3)]
    topic = "/ilrm_test/chunks"
    peer = subprocess.Popen([sys.executable, str(Path(__file__).with_name("chunk_echo.py")), topic, str(tmp_path),
                             str(len(sent))])
    rclpy.init()
    node = Node("chunk_sender")
    try:
        pub = node.create_publisher(GaussianChunk, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert pub.get_subscription_count() == 1, "peer never subscribed"
        for i, pts in enumerate(sent):
            header = Header(frame_id="map")
            header.stamp.sec = 100 + i
            pub.publish(update_to_msg(ChunkUpdate(UpdateAction.UPSERT, "session-a", (-3, 0, 7), 2.0, 41 + i,
                                                  rows=pts, part=i, num_parts=2, window_id=9,
                                                  keyframe_ids=(4, 5, 6, 7)), header))
        assert peer.wait(timeout=60) == 0
    finally:
        if peer.poll() is None:
            peer.kill()
        node.destroy_node()
        rclpy.shutdown()
    for i, pts in enumerate(sent):
        got = np.load(tmp_path / f"{i}.npz")
        np.testing.assert_array_equal(got["points"], pts)
        assert got["chunk_key"].tolist() == [-3, 0, 7]
        assert int(got["revision"]) == 41 + i and int(got["part"]) == i and int(got["num_parts"]) == 2
        assert int(got["action"]) == GaussianChunk.UPSERT
        assert str(got["map_id"]) == "session-a" and str(got["frame_id"]) == "map"
        assert got["keyframe_ids"].tolist() == [4, 5, 6, 7]
        np.testing.assert_allclose(got["bounds"], np.concatenate([pts[:, :3].min(0), pts[:, :3].max(0)]), rtol=1e-6)
