"""Specification of ilrm_ros.core.chunk_cdr: a chunk's serialized GaussianChunk, written directly, is byte for
byte what a ROS serializer writes for the message ``wire.chunk_message`` builds (rosbags', the reference twin
here; rclpy reads the bytes back as the same message: test/ros/test_conversions.py)."""
import numpy as np
import pytest

from ilrm_ros.core.chunk_cdr import chunk_cdr
from ilrm_ros.core.wire import chunk_message
from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction


@pytest.fixture(scope="module")
def rosbags():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from ilrm_ros.tools.output_bag import msg_definition, rosbags_message_types

    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(msg_definition("GaussianChunk"), "ilrm_ros/msg/GaussianChunk"))
    return ts, rosbags_message_types(ts)


def _updates() -> list[ChunkUpdate]:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((777, 14)).astype(np.float32)
    return [
        ChunkUpdate(UpdateAction.UPSERT, "map-7f3a", (1, -2, 3), 2.0, 41, rows=rows, window_id=9,
                    keyframe_ids=(4, 5, 6, 7)),                                            # bounds from the rows
        ChunkUpdate(UpdateAction.UPSERT, "m", (-1_000, 0, 7), 0.5, 2**40, rows=rows[:3], part=1, num_parts=3,
                    bounds_min=(-1.0, 0.25, 3.0), bounds_max=(2.0, 2.5, 4.0), window_id=2**33, keyframe_ids=(8,)),
        ChunkUpdate(UpdateAction.DELETE, "ab", (0, 0, 0), 1.0, 42, window_id=10),          # no rows, no ids
        ChunkUpdate(UpdateAction.CLEAR, "αβγ", (0, 0, 0), 1.0, 43, keyframe_ids=()),       # UTF-8 map id
    ]


@pytest.mark.parametrize("frame_id", ["map", "", "a_longer_map_frame"])   # moves everything after it
def test_the_bytes_are_those_of_the_serialized_chunk_message(rosbags, frame_id):
    ts, types = rosbags
    for u in _updates():
        T = ts.types
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1_700_000_123, nanosec=456_789),
                                          frame_id=frame_id)
        want = ts.serialize_cdr(chunk_message(types, u, header), "ilrm_ros/msg/GaussianChunk")
        got = chunk_cdr(u, 1_700_000_123, 456_789, frame_id)
        assert bytes(want) == got, (u.action, u.part, frame_id)


def test_rows_go_out_as_they_are_stored():
    rows = np.arange(28, dtype=np.float32).reshape(2, 14)
    u = ChunkUpdate(UpdateAction.UPSERT, "m", (0, 0, 0), 1.0, 1, rows=rows, keyframe_ids=(1,))
    data = chunk_cdr(u, 0, 0, "map")
    assert data.endswith(rows.tobytes() + b"\x01")          # the points, then is_dense
    assert data[:4] == b"\x00\x01\x00\x00"                   # CDR, little-endian
