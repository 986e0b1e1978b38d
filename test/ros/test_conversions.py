"""Conversions between Gaussian rows and ROS messages, and the 1 MiB message rule."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ilrm_ros.msg import GaussianChunk  # noqa: E402
from ilrm_ros.ros.conversions import (GAUSSIAN_FIELDS, MAX_MESSAGE_BYTES, array_to_cloud,  # noqa: E402
                                      cloud_to_array, make_chunk_msg, max_gaussians_per_message)


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
    msg = make_chunk_msg(header=Header(frame_id="map"), map_id="m" * 64, chunk_key=(1, 2, 3), chunk_size=2.0,
                         action=GaussianChunk.UPSERT, revision=1, points=_rows(n), keyframe_ids=range(64))
    size = len(serialize_message(msg))
    assert size <= MAX_MESSAGE_BYTES
    assert size > 0.99 * MAX_MESSAGE_BYTES - 4096, "the per-message budget wastes space"


def test_delete_and_clear_chunks_carry_no_points():
    for action in (GaussianChunk.DELETE, GaussianChunk.CLEAR):
        msg = make_chunk_msg(header=Header(frame_id="map"), map_id="a", chunk_key=(0, 0, 0), chunk_size=1.0,
                             action=action, revision=3, points=None)
        assert msg.gaussians.width == 0 and len(msg.gaussians.data) == 0
