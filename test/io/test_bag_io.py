"""rosbag2 round trips (mcap, sqlite3) and the TF layout of written bags.

TF interpolation/composition and image decoding are specified by their own modules'
tests (test/io/test_pose_buffer.py, test/io/test_image_codec.py).
"""
import math

import numpy as np
import pytest

from ilrm_ros.io.bags import (
    IMAGE_TYPE,
    INFO_TYPE,
    TF_TYPE,
    BagFormat,
    TfChain,
    read_bag,
    write_bag,
)
from ilrm_ros.data.path_geometry import body_to_camera_c2w
from ilrm_ros.io.transforms_json import PosedImages
from ilrm_ros.io.pose_buffer import PoseBuffer
from ilrm_ros.io.rigid import rigid_transform


def _posed(n=6, h=12, w=16, seed=0, stamps=True):
    rng = np.random.default_rng(seed)
    c2w = np.stack([
        body_to_camera_c2w(rng.uniform(-2, 2, 3), yaw=0.4 * i + rng.uniform(-0.1, 0.1),
                           pitch=rng.uniform(-0.3, 0.3), roll=rng.uniform(-0.2, 0.2))
        for i in range(n)
    ])
    k = np.array([[20.0, 0, w / 2], [0, 21.0, h / 2], [0, 0, 1]])
    return PosedImages(
        images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), c2w=c2w, K=np.stack([k] * n),
        names=[f"f{i}" for i in range(n)],
        timestamps=(1_700_000_000_000_000_000 + np.cumsum(rng.integers(80, 120, n)) * 1_000_000) if stamps else None,
    )


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _ancestors(buf, frame):
    """[frame, parent, grandparent, ..., root] walked with PoseBuffer.parent_of."""
    chain = [frame]
    while (parent := buf.parent_of(chain[-1])) is not None:
        chain.append(parent)
    return chain


# ----------------------------------------------------------------------------- bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip_gives_same_images_poses_and_intrinsics(tmp_path, storage):
    posed = _posed()
    write_bag(tmp_path / "bag", posed, BagFormat(storage=storage))
    back = read_bag(tmp_path / "bag")
    assert len(back) == len(posed)
    np.testing.assert_array_equal(back.images, posed.images)
    np.testing.assert_allclose(back.c2w, posed.c2w, atol=1e-5)
    np.testing.assert_array_equal(back.K, posed.K)
    np.testing.assert_array_equal(back.timestamps, posed.timestamps)


def test_bag_has_rep105_chain_and_camera_topics(tmp_path):
    from rosbags.rosbag2 import Reader

    posed = _posed(n=3)
    write_bag(tmp_path / "bag", posed, BagFormat(storage="mcap", rate_hz=10.0))
    with Reader(tmp_path / "bag") as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {"/tf": TF_TYPE, "/tf_static": TF_TYPE, "/camera/color/image_raw": IMAGE_TYPE,
                          "/camera/color/camera_info": INFO_TYPE}
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/camera/color/image_raw"] == 3 and counts["/camera/color/camera_info"] == 3
    assert counts["/tf"] > 2 * 3  # odom->base at twice the image rate plus map->odom samples
    # the chain itself: map -> odom -> base_link -> camera_link -> optical frame
    buf = PoseBuffer()
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    edge_stamps: dict = {}
    with Reader(tmp_path / "bag") as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype == TF_TYPE:
                for tr in ts.deserialize_cdr(raw, conn.msgtype).transforms:
                    q, t = tr.transform.rotation, tr.transform.translation
                    stamp = tr.header.stamp.sec * 10**9 + tr.header.stamp.nanosec
                    edge_stamps.setdefault(tr.child_frame_id, []).append(stamp)
                    buf.set_transform(tr.header.frame_id, tr.child_frame_id, stamp, [t.x, t.y, t.z],
                                      [q.x, q.y, q.z, q.w], static=conn.topic == "/tf_static")
    # map -> odom is never sampled at an image stamp (lookups interpolate it); TF spans the images
    assert not set(edge_stamps["odom"]) & set(posed.timestamps.tolist())
    for child in ("odom", "base_link"):
        assert min(edge_stamps[child]) < posed.timestamps[0] and max(edge_stamps[child]) > posed.timestamps[-1]
    assert _ancestors(buf, "camera_color_optical_frame") == [
        "camera_color_optical_frame", "camera_link", "base_link", "odom", "map"]
    # the optical frame looks along camera_link's x axis with image x to its right (-y)
    link_opt = buf.lookup("camera_link", "camera_color_optical_frame", int(posed.timestamps[1]))
    np.testing.assert_allclose(link_opt[:3, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(link_opt[:3, 0], [0, -1, 0], atol=1e-12)


def test_bag_round_trip_with_compressed_png_images_and_generated_stamps(tmp_path):
    posed = _posed(stamps=False)
    write_bag(tmp_path / "bag", posed, BagFormat(storage="sqlite3", compressed=True, rate_hz=15.0))
    back = read_bag(tmp_path / "bag")
    assert back.meta["image_topic"] == "/camera/color/image_raw/compressed"
    np.testing.assert_array_equal(back.images, posed.images)  # png is lossless
    np.testing.assert_allclose(back.c2w, posed.c2w, atol=1e-5)
    np.testing.assert_allclose(np.diff(back.timestamps), 1e9 / 15.0, atol=1)


def test_bag_jpeg_images_are_close(tmp_path):
    posed = _posed()
    posed.images[:] = 128  # flat images survive JPEG almost exactly
    write_bag(tmp_path / "bag", posed, BagFormat(compressed=True, compression_format="jpeg"))
    assert np.abs(read_bag(tmp_path / "bag").images.astype(int) - 128).max() <= 2


def test_read_bag_resolves_other_frames_and_custom_mounts(tmp_path):
    posed = _posed()
    mount = rigid_transform(_rot([0, 1, 0], 0.3), [0.2, -0.05, 0.4])  # pitched camera mount
    write_bag(tmp_path / "bag", posed, chain=TfChain(base_to_camera_link=mount, map_frame="world"))
    in_world = read_bag(tmp_path / "bag", target_frame="world")
    np.testing.assert_allclose(in_world.c2w, posed.c2w, atol=1e-5)
    in_odom = read_bag(tmp_path / "bag", target_frame="odom")
    assert np.abs(in_odom.c2w[:, :3, 3] - posed.c2w[:, :3, 3]).max() > 0.1  # odom drifts from the map
    base = read_bag(tmp_path / "bag", target_frame="world", camera_frame="base_link")
    expected = posed.c2w.astype(np.float64) @ np.linalg.inv(
        mount @ rigid_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]]), np.zeros(3)))
    np.testing.assert_allclose(base.c2w, expected, atol=1e-5)


def test_read_bag_keeps_the_tf_of_a_whole_long_bag(tmp_path):
    # 4 images 6 s apart: an 18 s bag, longer than a live TF buffer's default 10 s history
    posed = _posed(n=4)
    posed.timestamps = 1_700_000_000_000_000_000 + np.arange(4, dtype=np.int64) * 6_000_000_000
    write_bag(tmp_path / "bag", posed)
    back = read_bag(tmp_path / "bag")
    np.testing.assert_array_equal(back.timestamps, posed.timestamps)
    np.testing.assert_allclose(back.c2w, posed.c2w, atol=1e-5)


def test_read_bag_skips_images_outside_tf_coverage(tmp_path):
    posed = _posed(n=5)
    write_bag(tmp_path / "bag", posed)
    # nothing but the static transforms is known in an unrelated frame: every lookup fails
    with pytest.raises(ValueError, match="could be posed"):
        read_bag(tmp_path / "bag", target_frame="elsewhere")


def test_read_bag_rejects_ambiguous_or_missing_topics(tmp_path):
    write_bag(tmp_path / "bag", _posed(n=2))
    with pytest.raises(ValueError, match="not in bag"):
        read_bag(tmp_path / "bag", image_topic="/nope")


def test_write_bag_refuses_non_increasing_stamps(tmp_path):
    posed = _posed(n=3)
    posed.timestamps[2] = posed.timestamps[1]
    with pytest.raises(ValueError, match="increasing"):
        write_bag(tmp_path / "bag", posed)


def test_read_bag_drops_an_image_whose_pose_is_unusable_as_bad_pose_and_keeps_the_others(tmp_path):
    from ilrm_ros.io.drop_report import DropReporter
    from ilrm_ros.io.input_stage import MAX_TRANSLATION_M

    posed = _posed(n=5)
    posed.c2w[2, :3, 3] = [2 * MAX_TRANSLATION_M, 0.0, 0.0]  # TF can pose it, the input stage must not use it
    write_bag(tmp_path / "bag", posed)
    lines: list[str] = []
    reporter = DropReporter(lambda level, line: lines.append(line))
    back = read_bag(tmp_path / "bag", reporter=reporter)
    assert reporter.counters.snapshot() == {"dropped_bad_pose": 1}
    assert any("[dropped_bad_pose]" in line and "map origin" in line for line in lines)
    np.testing.assert_array_equal(back.timestamps, np.delete(posed.timestamps, 2))
    np.testing.assert_allclose(back.c2w, np.delete(posed.c2w, 2, axis=0), atol=1e-5)
