"""The mapping node end to end over real DDS, with a real (tiny, untrained) iLRM.

A player node publishes a generated sequence (images, camera_info, /tf, /tf_static) into
the running `ilrm_mapping` node; the test listens like a downstream user would.
Quality against baselines is checked with the shipped checkpoint in test_node_quality.py.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ilrm_ros.mapping.chunks import MapReplica, UpdateAction  # noqa: E402
from ilrm_ros.io.frames import ns_to_stamp  # noqa: E402
from ilrm_ros.model.checkpoint import save_checkpoint  # noqa: E402
from ilrm_ros.model.ilrm import ILRM, load_model_config  # noqa: E402
from ilrm_ros.msg import GaussianChunk, MapInfo  # noqa: E402
from ilrm_ros.ros.conversions import cloud_to_array, msg_to_update  # noqa: E402
from ilrm_ros.ros.node import MappingNode  # noqa: E402
from ilrm_ros.ros.qos import CHUNK_QOS  # noqa: E402
from ilrm_ros.ros.conversions import camera_info_msg  # noqa: E402
from ilrm_ros.ros.player import CAMERA_FRAME, SequencePlayer, matrix_to_transform  # noqa: E402
from ilrm_ros.srv import LoadMap, RenderView, SaveMap  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RES = 64


def _sequence(n: int):
    from ilrm_ros.data.synth import SynthConfig, synth_sequence

    _, posed = synth_sequence(3, 0, SynthConfig(width=RES, height=RES, num_frames=n, trajectory="ground",
                                                 shadows=False))
    return posed


class Harness:
    """The node under test and a user-side node, spun by one executor in a thread."""

    def __init__(self, tmp: Path) -> None:
        ckpt = tmp / "tiny.pt"
        torch_model = ILRM(load_model_config("tiny"))
        save_checkpoint(ckpt, torch_model, {"note": "untrained, for plumbing tests"})
        self.node = MappingNode(parameter_overrides=[
            Parameter("model.checkpoint", value=str(ckpt)), Parameter("model.height", value=RES),
            Parameter("model.width", value=RES), Parameter("input.qos", value="reliable"),
            Parameter("input.image_topic", value="/e2e/image"),
            Parameter("input.camera_info_topic", value="/e2e/camera_info"),
            Parameter("frames.tf_timeout_s", value=2.0), Parameter("map.publish_period_s", value=0.0),
            Parameter("diagnostics.period_s", value=0.2), Parameter("keyframes.min_translation_m", value=0.0),
            Parameter("keyframes.min_rotation_deg", value=0.0), Parameter("window.max_queue", value=8),
            Parameter("refine.window_iters", value=2), Parameter("refine.window_budget_s", value=0.0)])
        self.user = Node("e2e_user")
        self.player = SequencePlayer(self.user, "/e2e/image", "/e2e/camera_info")
        self.chunks: list[GaussianChunk] = []
        self.rendered: list[Image] = []
        self.rendered_info: list[CameraInfo] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.user.create_subscription(GaussianChunk, "/ilrm_mapping/chunks", self.chunks.append, CHUNK_QOS)
        self.user.create_subscription(Image, "/ilrm_mapping/rendered/image", self.rendered.append, 10)
        self.user.create_subscription(CameraInfo, "/ilrm_mapping/rendered/camera_info", self.rendered_info.append, 10)
        self.user.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(self.user)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait(self, pred, timeout=60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def wait_idle(self, timeout=120.0) -> bool:
        return self.wait(lambda: self.node.input.waiting() == 0 and self.node.worker.idle(), timeout)

    def call(self, srv_type, name, request, timeout=60.0):
        client = self.user.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10.0), f"{name} not available"
        fut = client.call_async(request)
        assert self.wait(fut.done, timeout), f"{name} timed out"
        return fut.result()

    def counter(self, key: str) -> int:
        return int(self.node.counters.snapshot().get(key, 0))

    def close(self) -> None:
        self.node.shutdown()
        self.executor.shutdown()
        self.node.destroy_node()
        self.user.destroy_node()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    rclpy.init()
    h = Harness(tmp_path_factory.mktemp("node"))
    try:
        assert h.wait(lambda: h.player.pub_image.get_subscription_count() > 0
                      and h.player.pub_info.get_subscription_count() > 0, 30)
        h.player.publish_static()
        yield h
    finally:
        h.close()
        rclpy.shutdown()


@pytest.fixture(scope="module")
def mapped(harness):
    """Play 10 frames; every frame is a keyframe, so windows of 4 with stride 2 -> 4 windows."""
    seq = _sequence(10)
    harness.player.publish_camera_info(seq.K[0], RES, RES)
    time.sleep(0.3)
    for i in range(len(seq.images)):
        harness.player.publish_frame(seq.images, seq.c2w, seq.K, i, period_s=0.5)
        time.sleep(0.15)
    assert harness.wait(lambda: harness.node.mapper.num_windows >= 4, 180), "windows were not processed"
    assert harness.wait_idle()
    time.sleep(0.5)  # the last chunk messages are in flight
    return seq


def _map_rows_by_chunk(node: MappingNode) -> dict:
    with node.mapper.map_lock:
        return {k: c.rows.numpy().copy() for k, c in node.mapper.map.chunks.items() if len(c)}


def test_chunk_stream_rebuilds_the_node_map_bit_for_bit(harness, mapped):
    replica = MapReplica()
    for msg in harness.chunks:
        replica.apply(msg_to_update(msg))
    rebuilt, truth = replica.chunk_arrays(), _map_rows_by_chunk(harness.node)
    assert set(rebuilt) == set(truth) and len(truth) > 0
    for key in truth:
        np.testing.assert_array_equal(rebuilt[key], truth[key])
    assert all(m.header.frame_id == "map" for m in harness.chunks)
    revisions = [m.revision for m in harness.chunks]
    assert revisions == sorted(revisions), "revisions must not go backwards"


def test_a_late_subscriber_gets_the_latched_map_and_map_info(harness, mapped):
    late = Node("e2e_late_subscriber")
    got: dict = {}
    late.create_subscription(PointCloud2, "/ilrm_mapping/map", lambda m: got.__setitem__("map", m), LATCHED)
    late.create_subscription(MapInfo, "/ilrm_mapping/map_info", lambda m: got.__setitem__("info", m), LATCHED)
    harness.executor.add_node(late)
    try:
        assert harness.wait(lambda: "map" in got and "info" in got, 20)
    finally:
        harness.executor.remove_node(late)
        late.destroy_node()
    n = harness.node.mapper.stats()["num_gaussians"]
    assert n > 0 and got["map"].width == n and got["info"].num_gaussians == n
    assert got["info"].num_windows == harness.node.mapper.num_windows
    # live map quality (the default: each new keyframe scored before its window) and window refinement
    info, stats = got["info"], harness.node.mapper.stats()
    assert info.quality_mode == "new_keyframes" and info.quality_count == stats["quality_count"] > 0
    assert info.quality_psnr_mean_db == pytest.approx(stats["quality_psnr_mean_db"], rel=1e-6)
    assert info.quality_psnr_mean_db > 0
    assert -1 <= info.quality_ssim_mean <= 1
    assert np.isfinite([info.quality_psnr_latest_db, info.quality_ssim_latest]).all()
    assert info.last_refine_iterations == 2 and info.last_refine_s > 0 and np.isfinite(info.last_refine_gain_db)
    assert info.refine_gain_mean_db == pytest.approx(stats["refine_gain_mean_db"], rel=1e-6)
    assert got["map"].header.frame_id == "map"
    assert np.isfinite(cloud_to_array(got["map"])).all()


def test_diagnostics_report_the_live_map_quality_and_refinement(harness, mapped):
    n = len(harness.diagnostics)
    assert harness.wait(lambda: len(harness.diagnostics) > n, 10)
    statuses = {st.name: st for st in harness.diagnostics[-1].status}
    q = {kv.key: kv.value for kv in statuses["ilrm_mapping: map quality"].values}
    assert q["quality_mode"] == "new_keyframes"
    assert int(q["quality_count"]) == harness.node.mapper.stats()["quality_count"] > 0
    assert float(q["quality_psnr_mean_db"]) > 0 and -1 <= float(q["quality_ssim_mean"]) <= 1
    assert int(q["refine_windows"]) == harness.node.mapper.num_windows and "refine_gain_mean_db" in q


def test_each_window_is_rendered_at_its_newest_keyframe_with_matching_camera_info(harness, mapped):
    assert len(harness.rendered) >= 4 and len(harness.rendered_info) >= 4
    img, info = harness.rendered[-1], harness.rendered_info[-1]
    assert (img.width, img.height, img.encoding) == (RES, RES, "rgb8")
    assert img.header.frame_id == CAMERA_FRAME and info.header.frame_id == CAMERA_FRAME
    assert (info.width, info.height) == (RES, RES)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), mapped.K[-1], rtol=1e-5)


def test_render_view_service_renders_any_pose(harness, mapped):
    req = RenderView.Request()
    req.header.frame_id = "map"
    T = mapped.c2w[5].astype(np.float64)
    req.pose.position.x, req.pose.position.y, req.pose.position.z = (float(v) for v in T[:3, 3])
    req.pose.orientation = matrix_to_transform(T, "map", "x", 0).transform.rotation
    req.camera_info = camera_info_msg(mapped.K[5], 48, 40, Header())
    resp = harness.call(RenderView, "/ilrm_mapping/render_view", req)
    assert resp.success, resp.message
    assert (resp.image.width, resp.image.height, resp.image.encoding) == (48, 40, "rgb8")
    assert (resp.depth.width, resp.depth.height, resp.depth.encoding) == (48, 40, "32FC1")
    bad = RenderView.Request()  # all-zero intrinsics
    resp = harness.call(RenderView, "/ilrm_mapping/render_view", bad)
    assert not resp.success and "camera_info" in resp.message


def test_bad_input_is_counted_skipped_and_the_map_is_kept(harness, mapped):
    before = harness.node.mapper.stats()["num_gaussians"]
    pub = harness.player.pub_image
    header = Header(frame_id=CAMERA_FRAME)
    header.stamp.sec, header.stamp.nanosec = ns_to_stamp(harness.player.stamp_of(100, 0.5))
    # 1. an encoding we do not support
    drops = harness.counter("dropped_decode_error")
    pub.publish(Image(header=header, height=2, width=2, encoding="yuv422", step=4, data=bytes(8)))
    # 2. a frame whose optical frame is not in the TF tree
    tf_drops = harness.counter("dropped_tf_timeout")
    ghost = Header(frame_id="ghost_optical_frame", stamp=header.stamp)
    pub.publish(Image(header=ghost, height=RES, width=RES, encoding="rgb8", step=3 * RES, data=bytes(3 * RES * RES)))
    # 3. a pose with NaN in it
    pose_drops = harness.counter("dropped_bad_pose")
    bad = np.eye(4)
    bad[0, 3] = np.nan
    from tf2_msgs.msg import TFMessage

    stamp = harness.player.stamp_of(101, 0.5)
    harness.player.pub_tf.publish(TFMessage(transforms=[matrix_to_transform(bad, "map", "nan_optical_frame",
                                                                            stamp)]))
    nan_header = Header(frame_id="nan_optical_frame")
    nan_header.stamp.sec, nan_header.stamp.nanosec = ns_to_stamp(stamp)
    pub.publish(Image(header=nan_header, height=RES, width=RES, encoding="rgb8", step=3 * RES,
                      data=bytes(3 * RES * RES)))
    assert harness.wait(lambda: harness.counter("dropped_decode_error") == drops + 1, 10)
    # the NaN transform is refused by the TF buffer, so that frame waits for TF like the ghost
    # frame, and both are dropped after frames.tf_timeout_s
    assert harness.wait(lambda: harness.counter("dropped_tf_timeout") == tf_drops + 2, 10)
    assert harness.counter("dropped_bad_pose") == pose_drops
    if harness.node.tf.name == "ilrm_ros.PoseBuffer":
        assert harness.node.tf.buffer.try_lookup("map", "nan_optical_frame", stamp) is None
    assert harness.node.mapper.stats()["num_gaussians"] == before
    # diagnostics report the drops by reason
    n = len(harness.diagnostics)
    assert harness.wait(lambda: len(harness.diagnostics) > n + 1, 10)
    values = {kv.key: kv.value for st in harness.diagnostics[-1].status for kv in st.values}
    assert int(values["dropped_decode_error"]) >= 1 and int(values["dropped_tf_timeout"]) >= 1


def test_save_reset_load_round_trip_through_services(harness, mapped, tmp_path):
    n = harness.node.mapper.stats()["num_gaussians"]
    saved = harness.call(SaveMap, "/ilrm_mapping/save_map", SaveMap.Request(path=str(tmp_path / "m.ply")))
    assert saved.success and saved.num_gaussians == n and Path(saved.path).exists()
    from plyfile import PlyData

    assert PlyData.read(saved.path)["vertex"].count == n
    k = len(harness.chunks)
    reset = harness.call(Trigger, "/ilrm_mapping/reset", Trigger.Request())
    assert reset.success and harness.node.mapper.stats()["num_gaussians"] == 0
    assert harness.wait(lambda: any(m.action == GaussianChunk.CLEAR for m in harness.chunks[k:]), 10)
    loaded = harness.call(LoadMap, "/ilrm_mapping/load_map", LoadMap.Request(path=saved.path))
    assert loaded.success and loaded.num_gaussians == n
    failed = harness.call(LoadMap, "/ilrm_mapping/load_map", LoadMap.Request(path=str(tmp_path / "missing.ply")))
    assert not failed.success and harness.node.mapper.stats()["num_gaussians"] == n
    time.sleep(0.5)
    replica = MapReplica()
    for msg in harness.chunks:
        replica.apply(msg_to_update(msg))
    assert sum(len(a) for a in replica.chunk_arrays().values()) == n
    assert any(msg_to_update(m).action == UpdateAction.CLEAR for m in harness.chunks[k:])


def test_parameters_are_declared_with_descriptions_and_validated_at_runtime(harness):
    from rcl_interfaces.srv import DescribeParameters, SetParameters

    from ilrm_ros.mapping.config import parameter_specs

    names = [s.name for s in parameter_specs()]
    desc = harness.call(DescribeParameters, "/ilrm_mapping/describe_parameters",
                        DescribeParameters.Request(names=names))
    by_name = {d.name: d for d in desc.descriptors}
    assert set(by_name) == set(names)
    assert all(d.description for d in by_name.values())
    assert by_name["window.size"].read_only and by_name["window.size"].integer_range[0].from_value == 0  # 0 = the model's own
    assert not by_name["keyframes.min_translation_m"].read_only

    def set_param(name, value):
        p = Parameter(name, value=value).to_parameter_msg()
        return harness.call(SetParameters, "/ilrm_mapping/set_parameters", SetParameters.Request(parameters=[p]))

    ok = set_param("keyframes.min_translation_m", 0.0)
    assert ok.results[0].successful
    assert not set_param("keyframes.min_rotation_deg", 500.0).results[0].successful  # outside [0, 180]
    assert not set_param("render.source", "somewhere").results[0].successful  # not a choice
    assert not set_param("window.size", 6).results[0].successful  # fixed at start-up
    assert harness.node.cfg.window.size == 4


def test_the_node_warms_its_model_up_at_start_and_knows_its_largest_tensor(harness):
    """One forward at the configured window and size on the worker thread before its first window: the fused
    weights are packed and the size of the forward's largest tensor (for the malloc threshold,
    ros/memory.py) is known."""
    node = harness.node
    assert node.worker.wait_idle(60)
    assert node.activation_bytes > 0
    assert node.mapper.model.processor.blocks[0].read_ff._fused._key is not None
