"""The node, started as users start it, maps with the authors' checkpoints named by model.checkpoint.

Full-size random weights in both release layouts (the session fixture ``authors_checkpoints``);
the node runs in its own process (``python -m ilrm_ros.ros.node`` with the package's parameter
file, like ``ilrm_mapping`` / ``ros2 launch``); a player publishes images, camera_info and TF
over real DDS, and a user-side node receives the chunk stream.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402

from ilrm_ros.mapping.config import default_params_file  # noqa: E402
from ilrm_ros.mapping.chunks import MapReplica  # noqa: E402
from ilrm_ros.msg import GaussianChunk  # noqa: E402
from ilrm_ros.ros.conversions import msg_to_update  # noqa: E402
from ilrm_ros.ros.qos import CHUNK_QOS  # noqa: E402
from ilrm_ros.ros.player import SequencePlayer  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
H, W = 32, 48


def _start_node(checkpoint, topic: str, log_path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    params = [f"model.checkpoint:={checkpoint}", f"model.height:={H}", f"model.width:={W}", "model.device:=cpu",
              "keyframes.min_translation_m:=0.0", "keyframes.min_rotation_deg:=0.0", "input.qos:=reliable",
              "map.max_integration_distance_m:=0.0", "render.publish:=false", *extra]
    cmd = [sys.executable, "-m", "ilrm_ros.ros.node", "--params-file", str(default_params_file()), "--ros-args"]
    for p in params:
        cmd += ["-p", p]
    cmd += ["-r", f"image:={topic}/image", "-r", f"camera_info:={topic}/camera_info"]
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def user():
    rclpy.init()
    node = Node("authors_ckpt_user")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@pytest.mark.parametrize("arch", ["re10k", "dl3dv"])
def test_each_authors_checkpoint_maps_over_dds(user, authors_checkpoints, arch, tmp_path):
    from ilrm_ros.data.synth import SynthConfig, synth_sequence

    _, seq = synth_sequence(4, 0, SynthConfig(width=W, height=H, num_frames=5, trajectory="ground", shadows=False))
    chunks: list = []
    sub = user.create_subscription(GaussianChunk, "/ilrm_mapping/chunks", chunks.append, CHUNK_QOS)
    player = SequencePlayer(user, f"/authors_{arch}/image", f"/authors_{arch}/camera_info")
    extra = ("window.size:=2", "window.stride:=2") if arch == "dl3dv" else ()
    proc = _start_node(authors_checkpoints[arch], f"/authors_{arch}", tmp_path / "node.log", extra)
    try:
        assert player.wait_for_subscribers(timeout_s=120.0), (tmp_path / "node.log").read_text()[-2000:]
        player.publish_static()
        player.publish_camera_info(seq.K[0], W, H)
        for i in range(len(seq.images)):
            player.publish_frame(seq.images, seq.c2w, seq.K, i, period_s=0.5)
            rclpy.spin_once(user, timeout_sec=0.3)
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline and sum(len(m.gaussians.data) for m in chunks) == 0:
            rclpy.spin_once(user, timeout_sec=0.1)
        for _ in range(20):  # the rest of the window's chunk messages
            rclpy.spin_once(user, timeout_sec=0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
        user.destroy_subscription(sub)
    log = (tmp_path / "node.log").read_text()
    assert rc == 0, log[-2000:]
    replica = MapReplica()
    for m in chunks:
        replica.apply(msg_to_update(m))
    rows = np.concatenate(list(replica.chunk_arrays().values()))
    assert len(rows) > 0 and np.isfinite(rows).all()
    assert f"{arch} (detected)" in log and {"re10k": "poses re10k", "dl3dv": "poses wide"}[arch] in log


def test_a_checkpoint_of_another_architecture_stops_the_node_with_one_fatal_line(authors_checkpoints, tmp_path):
    proc = _start_node(authors_checkpoints["re10k"], "/authors_bad", tmp_path / "node.log",
                       ("model.architecture:=dl3dv",))
    rc = proc.wait(timeout=120)
    fatal = [line for line in (tmp_path / "node.log").read_text().splitlines() if "FATAL" in line]
    assert rc == 2 and len(fatal) == 1
    assert "cannot load the model" in fatal[0] and "re10k_2view.ckpt" in fatal[0] and "dl3dv" in fatal[0]
    assert "Traceback" not in (tmp_path / "node.log").read_text()
