"""Conversions between Gaussian rows and ROS messages, and the 1 MiB message rule."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ilrm_ros.core.wire import GAUSSIAN_FIELDS, MAX_MESSAGE_BYTES, max_gaussians_per_message  # noqa: E402
from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction  # noqa: E402
from ilrm_ros.msg import GaussianChunk  # noqa: E402
from ilrm_ros.ros.conversions import array_to_cloud, cloud_to_array, msg_to_update, update_to_msg  # noqa: E402


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, len(GAUSSIAN_FIELDS))).astype(np.float32)


def test_cloud_round_trip_is_exact_and_declares_float32_fields():
    rows = _rows(100)
    cloud = array_to_cloud(rows, Header(frame_id="map"))
    assert [f.name for f in cloud.fields] == list(GAUSSIAN_FIELDS)
    assert all(f.datatype == PointField.FLOAT32 for f in cloud.fields)
    assert cloud.width == 100 and cloud.height == 1 and cloud.point_step == 56 and cloud.is_dense
    np.testing.assert_array_equal(cloud_to_array(deserialize_message(serialize_message(cloud), PointCloud2)), rows)


def test_cloud_reader_honours_padding_field_order_and_big_endian():
    rows = _rows(10)
    step = 64  # 8 bytes of padding per point, fields reversed in memory
    buf = np.zeros((10, step), np.uint8)
    fields = []
    for i, name in enumerate(GAUSSIAN_FIELDS):
        off = 4 * (len(GAUSSIAN_FIELDS) - 1 - i)
        buf[:, off:off + 4] = rows[:, i].astype(">f4").view(np.uint8).reshape(10, 4)
        fields.append(PointField(name=name, offset=off, datatype=PointField.FLOAT32, count=1))
    cloud = PointCloud2(height=1, width=10, fields=fields, is_bigendian=True, point_step=step, row_step=step * 10,
                        data=buf.tobytes(), is_dense=True)
    np.testing.assert_array_equal(cloud_to_array(cloud), rows)


def test_cloud_without_gaussian_fields_is_rejected_clearly():
    cloud = PointCloud2(fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1)])
    with pytest.raises(ValueError, match="lacks Gaussian fields"):
        cloud_to_array(cloud)


def test_fullest_chunk_message_stays_within_one_mebibyte():
    n = max_gaussians_per_message()
    u = ChunkUpdate(UpdateAction.UPSERT, "m" * 64, (1, 2, 3), 2.0, 1, rows=_rows(n), keyframe_ids=tuple(range(64)))
    size = len(serialize_message(update_to_msg(u, Header(frame_id="map"))))
    assert size <= MAX_MESSAGE_BYTES
    assert size > 0.99 * MAX_MESSAGE_BYTES - 4096, "the per-message budget wastes space"


def test_delete_and_clear_chunks_carry_no_points():
    for action in (UpdateAction.DELETE, UpdateAction.CLEAR):
        msg = update_to_msg(ChunkUpdate(action, "a", (0, 0, 0), 1.0, 3), Header(frame_id="map"))
        assert msg.action == int(action) and msg.gaussians.width == 0 and len(msg.gaussians.data) == 0


def test_a_chunk_round_trips_with_every_field_and_bounds_computed_when_unset():
    u = ChunkUpdate(UpdateAction.UPSERT, "session", (-3, 0, 7), 2.0, 41, rows=_rows(50), part=1, num_parts=2,
                    window_id=9, keyframe_ids=(4, 5, 6, 7))
    back = msg_to_update(deserialize_message(serialize_message(update_to_msg(u, Header(frame_id="map"))),
                                             GaussianChunk))
    np.testing.assert_array_equal(back.rows, u.rows)
    assert (back.map_id, back.key, back.chunk_size, back.revision) == ("session", (-3, 0, 7), 2.0, 41)
    assert (back.part, back.num_parts, back.window_id, back.keyframe_ids) == (1, 2, 9, (4, 5, 6, 7))
    np.testing.assert_allclose(back.bounds_min, u.rows[:, :3].min(0), rtol=1e-6)
    np.testing.assert_allclose(back.bounds_max, u.rows[:, :3].max(0), rtol=1e-6)


def test_the_bag_tool_and_the_node_write_the_same_chunk_messages():
    """One builder (core/wire.py), two bindings: what the bag tool writes reads back in rclpy as
    exactly the node's message for the same part."""
    pytest.importorskip("rosbags")
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from ilrm_ros.core.wire import chunk_message
    from ilrm_ros.tools.output_bag import msg_definition, rosbags_message_types

    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(msg_definition("GaussianChunk"), "ilrm_ros/msg/GaussianChunk"))
    T = ts.types
    bag_header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=12, nanosec=345), frame_id="map")
    for u in (ChunkUpdate(UpdateAction.UPSERT, "s", (1, -2, 3), 0.5, 7, rows=_rows(20), window_id=3,
                          keyframe_ids=(1, 2)),
              ChunkUpdate(UpdateAction.DELETE, "s", (0, 0, 1), 0.5, 8)):
        header = Header(frame_id="map")
        header.stamp.sec, header.stamp.nanosec = 12, 345
        bag_bytes = ts.serialize_cdr(chunk_message(rosbags_message_types(ts), u, bag_header),
                                     "ilrm_ros/msg/GaussianChunk")
        assert deserialize_message(bytes(bag_bytes), GaussianChunk) == update_to_msg(u, header)


def test_chunk_bytes_published_directly_read_back_as_the_built_message():
    from ilrm_ros.core.chunk_cdr import chunk_cdr

    header = Header(frame_id="map_frame")
    header.stamp.sec, header.stamp.nanosec = 77, 123_456_789
    updates = [ChunkUpdate(UpdateAction.UPSERT, "m1", (3, -4, 5), 2.0, 9, rows=_rows(300), window_id=4,
                           keyframe_ids=(10, 11)),
               ChunkUpdate(UpdateAction.DELETE, "m1", (0, 1, 0), 2.0, 10, window_id=5)]
    for u in updates:
        assert deserialize_message(chunk_cdr(u, 77, 123_456_789, "map_frame"), GaussianChunk) == update_to_msg(u, header)
