"""What planners get over real DDS: ~/occupancy/grid (nav_msgs/OccupancyGrid), ~/occupancy/voxels
(PointCloud2), ~/occupancy/esdf (DistanceMapSlice), all latched in the map frame, and the
~/query_occupancy service, from the running node fed a generated sequence (tiny untrained
model: the plumbing, not the quality; quality is scored in test/mapping/test_occupancy*.py)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Point  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from ilrm_ros.mapping.occupancy import CellState  # noqa: E402
from ilrm_ros.model.checkpoint import save_checkpoint  # noqa: E402
from ilrm_ros.model.ilrm import ILRM, load_model_config  # noqa: E402
from ilrm_ros.msg import DistanceMapSlice  # noqa: E402
from ilrm_ros.ros.node import MappingNode  # noqa: E402
from ilrm_ros.ros.player import SequencePlayer, matrix_to_transform  # noqa: E402
from ilrm_ros.ros.qos import LATCHED  # noqa: E402
from ilrm_ros.srv import QueryOccupancy  # noqa: E402

pytestmark = [pytest.mark.ros]
RES = 32


class Harness:
    def __init__(self, tmp) -> None:
        ckpt = tmp / "tiny.pt"
        save_checkpoint(ckpt, ILRM(load_model_config("tiny")), {"note": "untrained, for plumbing tests"})
        self.node = MappingNode(parameter_overrides=[
            Parameter("model.checkpoint", value=str(ckpt)), Parameter("model.height", value=RES),
            Parameter("model.width", value=RES), Parameter("input.qos", value="reliable"),
            Parameter("input.image_topic", value="/occ/image"), Parameter("input.camera_info_topic", value="/occ/info"),
            Parameter("keyframes.min_translation_m", value=0.0), Parameter("keyframes.min_rotation_deg", value=0.0),
            Parameter("render.publish", value=False), Parameter("occupancy.enabled", value=True),
            Parameter("occupancy.publish_period_s", value=0.0),
            Parameter("occupancy.render_scale", value=1.0), Parameter("occupancy.min_alpha", value=0.0),
            Parameter("window.max_queue", value=8)])
        self.user = Node("occupancy_user")
        self.player = SequencePlayer(self.user, "/occ/image", "/occ/info")
        self.got: dict[str, list] = {"grid": [], "voxels": [], "esdf": []}
        for key, typ in (("grid", OccupancyGrid), ("voxels", PointCloud2), ("esdf", DistanceMapSlice)):
            self.user.create_subscription(typ, f"/ilrm_mapping/occupancy/{key}", self.got[key].append, LATCHED)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.executor.add_node(self.user)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def wait(self, pred, timeout=60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not pred():
            time.sleep(0.05)
        return pred()

    def call(self, srv_type, name, request):
        client = self.user.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10.0)
        fut = client.call_async(request)
        assert self.wait(fut.done, 30), f"{name} timed out"
        return fut.result()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from ilrm_ros.data.synth import SynthConfig, synth_sequence

    rclpy.init()
    h = Harness(tmp_path_factory.mktemp("occ"))
    try:
        assert h.wait(lambda: h.player.pub_image.get_subscription_count() > 0, 30)
        h.player.publish_static()
        _, seq = synth_sequence(3, 0, SynthConfig(width=RES, height=RES, num_frames=6, trajectory="ground",
                                                  shadows=False))
        h.player.publish_camera_info(seq.K[0], RES, RES)
        time.sleep(0.3)
        for i in range(6):
            h.player.publish_frame(seq.images, seq.c2w, seq.K, i, period_s=0.5)
            time.sleep(0.1)
        assert h.wait(lambda: h.node.mapper.num_windows >= 2 and h.node.worker.idle(), 120), "no windows"
        yield h
    finally:
        h.node.shutdown()
        h.executor.shutdown()
        h.node.destroy_node()
        h.user.destroy_node()
        rclpy.shutdown()


def test_grid_voxels_and_esdf_arrive_latched_in_the_map_frame(harness):
    h = harness
    with h.node.mapper.map_lock:
        occupied = len(h.node.mapper.occupancy.grid.voxels(CellState.OCCUPIED))
    # the node is idle: wait for the last publication (grid, ESDF and voxels go out together)
    assert h.wait(lambda: all(h.got[k] for k in h.got) and len({len(v) for v in h.got.values()}) == 1
                  and h.got["voxels"][-1].width == occupied, 20), {k: len(v) for k, v in h.got.items()}
    grid, esdf, vox = h.got["grid"][-1], h.got["esdf"][-1], h.got["voxels"][-1]
    assert grid.header.frame_id == esdf.header.frame_id == vox.header.frame_id == "map"
    n = grid.info.width * grid.info.height
    assert n > 0 and len(grid.data) == n and len(esdf.data) == n
    assert set(np.unique(np.asarray(grid.data)).tolist()) <= {-1, 0, 100}
    assert grid.info.resolution == pytest.approx(0.05) and esdf.info == grid.info
    data = np.asarray(esdf.data, np.float32)
    assert np.all((data == esdf.unknown_value) == (np.asarray(grid.data) == -1))
    assert np.all(np.abs(data[data != esdf.unknown_value]) <= esdf.max_distance + 1e-6)
    assert vox.width == occupied and vox.point_step == 12 and [f.name for f in vox.fields] == ["x", "y", "z"]
    # a subscriber that comes late still gets the latest grid (what a Nav2 static layer needs)
    late: list = []
    sub = h.user.create_subscription(OccupancyGrid, "/ilrm_mapping/occupancy/grid", late.append, LATCHED)
    try:
        assert h.wait(lambda: late, 10)
        assert late[-1].info.width == h.got["grid"][-1].info.width
    finally:
        h.user.destroy_subscription(sub)


def test_query_service_answers_state_and_distance_in_any_tf_frame(harness):
    h = harness
    grid = h.node.mapper.occupancy.grid
    with h.node.mapper.map_lock:     # a known grid: one occupied voxel with free space next to it
        grid.reset()
        for _ in range(3):
            grid.integrate(np.array([[40, 0, 10], [41, 0, 10]]), np.array([[44, 0, 10]]))
    req = QueryOccupancy.Request()
    req.points = [Point(x=2.225, y=0.025, z=0.525), Point(x=2.025, y=0.025, z=0.525), Point(x=9.0, y=9.0, z=9.0)]
    resp = h.call(QueryOccupancy, "/ilrm_mapping/query_occupancy", req)
    assert resp.success, resp.message
    assert list(resp.states) == [QueryOccupancy.Response.OCCUPIED, QueryOccupancy.Response.FREE,
                                 QueryOccupancy.Response.UNKNOWN]
    np.testing.assert_allclose(resp.distances, [0.0, 0.2, resp.max_distance], atol=1e-5)
    # the same points asked in a frame 1 m behind the map's x axis
    T = np.eye(4)
    T[0, 3] = 1.0
    h.player.pub_tf.publish(TFMessage(transforms=[matrix_to_transform(T, "map", "occ_query_frame",
                                                                      h.player.stamp_of(0, 0.5))]))
    req.header.frame_id = "occ_query_frame"
    req.points = [Point(x=1.225, y=0.025, z=0.525)]
    assert h.wait(lambda: h.call(QueryOccupancy, "/ilrm_mapping/query_occupancy", req).success, 10)
    resp = h.call(QueryOccupancy, "/ilrm_mapping/query_occupancy", req)
    assert list(resp.states) == [QueryOccupancy.Response.OCCUPIED]
    req.header.frame_id = "no_such_frame"
    bad = h.call(QueryOccupancy, "/ilrm_mapping/query_occupancy", req)
    assert not bad.success and "no_such_frame" in bad.message
    req.header.frame_id = ""
    req.points = [Point(x=float("nan"), y=0.0, z=0.0)]
    bad = h.call(QueryOccupancy, "/ilrm_mapping/query_occupancy", req)
    assert not bad.success and "finite" in bad.message and len(bad.states) == 0


def test_reset_republishes_an_empty_grid(harness):
    h = harness
    n = len(h.got["grid"])
    assert h.call(Trigger, "/ilrm_mapping/reset", Trigger.Request()).success
    assert h.wait(lambda: len(h.got["grid"]) > n, 10)
    assert len(h.got["grid"][-1].data) == 0 and h.node.mapper.occupancy.grid.num_blocks == 0


def test_the_shipped_rviz_config_shows_the_grid_and_the_voxels_latched():
    import yaml
    from pathlib import Path

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "ilrm.rviz").read_text())
    displays = {d["Topic"]["Value"]: d for d in doc["Visualization Manager"]["Displays"] if "Topic" in d}
    grid, voxels = displays["/ilrm_mapping/occupancy/grid"], displays["/ilrm_mapping/occupancy/voxels"]
    assert grid["Class"] == "rviz_default_plugins/Map" and voxels["Class"] == "rviz_default_plugins/PointCloud2"
    assert voxels["Style"] == "Boxes" and voxels["Size (m)"] == pytest.approx(0.05)
    for d in (grid, voxels):
        assert d["Enabled"] and d["Topic"]["Durability Policy"] == "Transient Local"
