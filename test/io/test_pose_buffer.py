"""Specification of ilrm_ros.io.pose_buffer: a ROS-free tf2-like buffer and the TF wait queue.

Expected transforms are built by hand (rotation matrices from axis/angle, products written
out), never read back from the buffer.
"""
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from ilrm_ros.core.rotations import quat_xyzw_to_matrix
from ilrm_ros.io.pending_queue import PendingQueue
from ilrm_ros.io.pose_buffer import PoseBuffer, TransformRejected
from ilrm_ros.io.pose_tree import ConnectivityError, ExtrapolationError, FrameNotFound, TransformError

S = 1_000_000_000  # ns per second


def quat(axis, deg):
    """(x, y, z, w) for a rotation of `deg` degrees about `axis`."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    half = np.radians(deg) / 2
    return np.array([*(np.sin(half) * axis), np.cos(half)])


def rot(axis, deg):
    """Rodrigues' formula, independent of the quaternion code under test."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx


def T(axis, deg, t):
    out = np.eye(4)
    out[:3, :3] = rot(axis, deg)
    out[:3, 3] = t
    return out


def angle_deg(R):
    return np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


# --------------------------------------------------------------------------- basics


def test_direct_lookup_returns_T_parent_child_and_its_inverse():
    buf = PoseBuffer()
    buf.set_transform("map", "base", 5 * S, [1, 2, 3], quat((0, 0, 1), 90))
    expected = T((0, 0, 1), 90, [1, 2, 3])
    np.testing.assert_allclose(buf.lookup("map", "base", 5 * S), expected, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("base", "map", 5 * S), np.linalg.inv(expected), atol=1e-12)
    # T_target_source maps points given in source coordinates into target coordinates:
    # the base origin is at (1, 2, 3) in the map; the base x axis points along map +y.
    p = buf.lookup("map", "base", 5 * S) @ np.array([1.0, 0, 0, 1])
    np.testing.assert_allclose(p[:3], [1, 3, 3], atol=1e-12)


def test_same_frame_is_identity_and_unknown_frames_raise_frame_not_found():
    buf = PoseBuffer()
    buf.set_transform("map", "base", S, [1, 0, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(buf.lookup("base", "base", 123), np.eye(4))
    with pytest.raises(FrameNotFound, match="'camera'"):
        buf.lookup("map", "camera", S)
    with pytest.raises(FrameNotFound):
        buf.lookup("ghost", "ghost", S)
    assert issubclass(FrameNotFound, LookupError) and issubclass(FrameNotFound, TransformError)


def test_chain_of_frames_through_a_common_ancestor():
    # map -> odom (static) -> base (dynamic) -> camera (static);  map -> marker (dynamic)
    links = {
        ("map", "odom"): ((0, 0, 1), 10, [5, 0, 0], True),
        ("odom", "base"): ((0, 0, 1), 30, [1, 1, 0], False),
        ("base", "camera"): ((1, 0, 0), -90, [0.2, 0, 0.5], True),
        ("map", "marker"): ((0, 1, 0), 45, [0, 3, 1], False),
    }
    buf = PoseBuffer()
    for (parent, child), (axis, deg, t, static) in links.items():
        buf.set_transform(parent, child, 2 * S, t, quat(axis, deg), static=static)
    T_map_odom, T_odom_base, T_base_cam, T_map_marker = (T(a, d, t) for a, d, t, _ in links.values())

    T_map_cam = T_map_odom @ T_odom_base @ T_base_cam
    np.testing.assert_allclose(buf.lookup("map", "camera", 2 * S), T_map_cam, atol=1e-12)
    expected = np.linalg.inv(T_map_cam) @ T_map_marker  # marker in camera coordinates
    np.testing.assert_allclose(buf.lookup("camera", "marker", 2 * S), expected, atol=1e-12)
    # sibling subtree below the ancestor: odom <- camera needs only odom->base->camera
    np.testing.assert_allclose(buf.lookup("odom", "camera", 2 * S), T_odom_base @ T_base_cam, atol=1e-12)


def test_disconnected_trees_raise_connectivity_error():
    buf = PoseBuffer()
    buf.set_transform("map", "base", S, [0, 0, 0], [0, 0, 0, 1])
    buf.set_transform("world", "robot2", S, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ConnectivityError, match="not connected"):
        buf.lookup("base", "robot2", S)
    assert issubclass(ConnectivityError, LookupError)


# --------------------------------------------------------------------------- time


def two_sample_buffer():
    buf = PoseBuffer()
    buf.set_transform("map", "base", 10 * S, [0, 0, 0], quat((0, 0, 1), 0))
    buf.set_transform("map", "base", 12 * S, [2, -4, 6], quat((0, 0, 1), 90))
    return buf


def test_interpolation_midpoint_lerps_translation_and_slerps_rotation():
    buf = two_sample_buffer()
    mid = buf.lookup("map", "base", 11 * S)
    np.testing.assert_allclose(mid[:3, 3], [1, -2, 3], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], rot((0, 0, 1), 45), atol=1e-12)


def test_interpolation_at_a_quarter_is_slerp_not_normalised_lerp():
    quarter = two_sample_buffer().lookup("map", "base", 10 * S + S // 2)
    np.testing.assert_allclose(quarter[:3, 3], [0.5, -1, 1.5], atol=1e-12)
    # slerp: 22.5 deg exactly; normalised lerp of the quaternions would give ~21.6 deg
    assert angle_deg(quarter[:3, :3]) == pytest.approx(22.5, abs=1e-9)


def test_slerp_takes_the_short_way_when_quaternion_signs_differ():
    buf = PoseBuffer()
    buf.set_transform("map", "base", 0, [0, 0, 0], quat((0, 0, 1), 0))
    buf.set_transform("map", "base", 2 * S, [0, 0, 0], -quat((0, 0, 1), 90))  # same rotation, other sign
    np.testing.assert_allclose(buf.lookup("map", "base", S)[:3, :3], rot((0, 0, 1), 45), atol=1e-12)


def test_static_transforms_are_valid_at_any_time():
    buf = PoseBuffer()
    buf.set_transform("base", "camera", 5 * S, [0.1, 0, 0.3], quat((0, 1, 0), 20), static=True)
    expected = T((0, 1, 0), 20, [0.1, 0, 0.3])
    for stamp in (0, 1, 5 * S, 10**18):
        np.testing.assert_allclose(buf.lookup("base", "camera", stamp), expected, atol=1e-12)


@pytest.mark.parametrize("stamp, direction", [(13 * S, "future"), (9 * S, "past"), (12 * S + 1, "future")])
def test_extrapolation_raises_with_direction(stamp, direction):
    buf = two_sample_buffer()
    with pytest.raises(ExtrapolationError, match=direction) as info:
        buf.lookup("map", "base", stamp)
    err = info.value
    assert err.direction == direction and err.requested_ns == stamp
    assert (err.oldest_ns, err.newest_ns, err.frame) == (10 * S, 12 * S, "base")
    assert isinstance(err, LookupError)
    assert not buf.can_transform("map", "base", stamp)
    assert buf.try_lookup("map", "base", stamp) is None
    assert buf.can_transform("map", "base", 12 * S) and buf.try_lookup("map", "base", 10 * S) is not None


def test_a_single_sample_answers_only_its_own_time():
    buf = PoseBuffer()
    buf.set_transform("map", "base", 7 * S, [1, 0, 0], [0, 0, 0, 1])
    assert buf.can_transform("map", "base", 7 * S)
    with pytest.raises(ExtrapolationError, match="future"):
        buf.lookup("map", "base", 7 * S + 1)


def test_stamp_zero_means_latest_common_time_of_the_chain():
    buf = PoseBuffer()
    for sec in range(0, 6):  # odom->base up to t=5
        buf.set_transform("odom", "base", sec * S, [sec, 0, 0], [0, 0, 0, 1])
    for sec in range(0, 4):  # map->odom only up to t=3
        buf.set_transform("map", "odom", sec * S, [0, 10 * sec, 0], [0, 0, 0, 1])
    buf.set_transform("base", "camera", 0, [0, 0, 1], [0, 0, 0, 1], static=True)  # static: no constraint

    assert buf.latest_common_time("map", "camera") == 3 * S
    T_latest, used = buf.lookup_stamped("map", "camera", 0)
    assert used == 3 * S
    np.testing.assert_allclose(T_latest[:3, 3], [3, 30, 1])
    # only static links between the frames: time does not matter, reported as 0
    assert buf.lookup_stamped("base", "camera", 0)[1] == 0


# --------------------------------------------------------------------------- storage


def test_old_samples_are_pruned_so_memory_stays_bounded():
    buf = PoseBuffer(cache_time_s=1.0)
    for i in range(1000):  # 10 s at 100 Hz
        buf.set_transform("map", "base", i * S // 100, [i, 0, 0], [0, 0, 0, 1])
    assert buf.num_samples("base") == 101  # [8.99 s, 9.99 s]
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("map", "base", 5 * S)
    np.testing.assert_allclose(buf.lookup("map", "base", 9 * S)[:3, 3], [900, 0, 0])


def test_sample_count_is_capped_even_within_the_time_window():
    buf = PoseBuffer(cache_time_s=10.0, max_samples_per_link=50)
    for i in range(500):
        buf.set_transform("map", "base", i * 1000, [i, 0, 0], [0, 0, 0, 1])  # 1 MHz: all within 10 s
    assert buf.num_samples("base") == 50


def test_out_of_order_inserts_are_sorted():
    buf = PoseBuffer()
    buf.set_transform("map", "base", 0, [0, 0, 0], [0, 0, 0, 1])
    buf.set_transform("map", "base", 2 * S, [20, 0, 0], [0, 0, 0, 1])
    buf.set_transform("map", "base", 1 * S, [4, 0, 0], [0, 0, 0, 1])  # arrives late
    np.testing.assert_allclose(buf.lookup("map", "base", S // 2)[:3, 3], [2, 0, 0])
    np.testing.assert_allclose(buf.lookup("map", "base", 3 * S // 2)[:3, 3], [12, 0, 0])


def test_inserts_older_than_the_cache_and_repeated_stamps_are_ignored():
    buf = PoseBuffer(cache_time_s=1.0)
    assert buf.set_transform("map", "base", 10 * S, [1, 0, 0], [0, 0, 0, 1])
    assert not buf.set_transform("map", "base", 8 * S, [2, 0, 0], [0, 0, 0, 1])  # 2 s older than newest
    assert not buf.set_transform("map", "base", 10 * S, [3, 0, 0], [0, 0, 0, 1])  # repeated stamp
    assert buf.rejected == 2 and buf.num_samples("base") == 1
    np.testing.assert_allclose(buf.lookup("map", "base", 10 * S)[:3, 3], [1, 0, 0])


def test_reparenting_is_per_sample_as_in_tf2():
    buf = PoseBuffer()
    buf.set_transform("odom", "base", S, [1, 0, 0], [0, 0, 0, 1])
    buf.set_transform("map", "base", 2 * S, [5, 0, 0], [0, 0, 0, 1])
    assert buf.parent_of("base") == "map" and buf.num_samples("base") == 2
    np.testing.assert_allclose(buf.lookup("map", "base", 2 * S)[:3, 3], [5, 0, 0])
    np.testing.assert_allclose(buf.lookup("odom", "base", S)[:3, 3], [1, 0, 0])
    # between samples of different parents the earlier one holds (no interpolation across parents)
    np.testing.assert_allclose(buf.lookup("odom", "base", 3 * S // 2)[:3, 3], [1, 0, 0])


def test_a_one_off_reparenting_sample_only_governs_until_the_next_sample():
    buf = PoseBuffer()
    buf.set_transform("map", "odom", 0, [0, 0, 0], [0, 0, 0, 1], static=True)
    for i in range(5):
        parent = "map" if i == 2 else "odom"  # a glitch at t = 2 s re-parents base to map
        buf.set_transform(parent, "base", i * S, [i, 0, 0], [0, 0, 0, 1])
    assert buf.lookup("map", "base", 2 * S)[0, 3] == 2
    np.testing.assert_allclose(buf.lookup("map", "base", 7 * S // 2)[:3, 3], [3.5, 0, 0])
    assert buf.parent_of("base") == "odom"


def test_a_dynamic_sample_for_a_static_frame_does_not_replace_the_static_transform():
    buf = PoseBuffer()
    buf.set_transform("base", "camera", 0, [0, 0, 0.3], [0, 0, 0, 1], static=True)
    buf.set_transform("map", "base", S, [1, 0, 0], [0, 0, 0, 1])
    buf.set_transform("map", "base", 3 * S, [3, 0, 0], [0, 0, 0, 1])
    buf.set_transform("odom", "camera", 2 * S, [9, 9, 9], [0, 0, 0, 1])  # hostile re-parenting
    np.testing.assert_allclose(buf.lookup("map", "camera", 5 * S // 2)[:3, 3], [2.5, 0, 0.3])
    np.testing.assert_allclose(buf.lookup("odom", "camera", 2 * S)[:3, 3], [9, 9, 9])


def test_a_transform_that_would_close_a_loop_is_rejected_and_the_tree_is_unchanged():
    buf = PoseBuffer()
    buf.set_transform("map", "odom", S, [0, 0, 0], [0, 0, 0, 1])
    buf.set_transform("odom", "base", S, [1, 0, 0], [0, 0, 0, 1])
    with pytest.raises(TransformRejected, match="loop") as info:
        buf.set_transform("base", "map", S, [0, 0, 0], [0, 0, 0, 1])
    assert info.value.reason == "loop" and buf.rejections["loop"] == 1
    assert buf.parent_of("map") is None
    np.testing.assert_allclose(buf.lookup("map", "base", S)[:3, 3], [1, 0, 0])


def test_samples_far_ahead_of_the_clock_are_rejected_by_name():
    buf = PoseBuffer(max_future_s=10.0)
    now = 100 * S
    assert buf.set_transform("map", "base", now, [0, 0, 0], [0, 0, 0, 1], now_ns=now)
    with pytest.raises(TransformRejected, match="ahead of the clock") as info:
        buf.set_transform("map", "base", now + 10**6 * S, [0, 0, 0], [0, 0, 0, 1], now_ns=now)
    assert info.value.reason == "future"
    assert buf.set_transform("map", "base", now + S, [1, 0, 0], [0, 0, 0, 1], now_ns=now)
    np.testing.assert_allclose(buf.lookup("map", "base", now + S // 2)[:3, 3], [0.5, 0, 0])


def test_without_a_clock_a_far_future_outlier_is_dropped_once_the_stream_goes_on():
    buf = PoseBuffer(cache_time_s=10.0, recover_after=3)
    buf.set_transform("map", "base", 100 * S, [0, 0, 0], [0, 0, 0, 1])
    buf.set_transform("map", "base", 10**6 * S, [7, 7, 7], [0, 0, 0, 1])  # poison: everything older is pruned
    assert not buf.set_transform("map", "base", 101 * S, [1, 0, 0], [0, 0, 0, 1])
    assert not buf.set_transform("map", "base", 102 * S, [2, 0, 0], [0, 0, 0, 1])
    assert buf.set_transform("map", "base", 103 * S, [3, 0, 0], [0, 0, 0, 1])  # third in a row: recovered
    assert buf.set_transform("map", "base", 104 * S, [4, 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("map", "base", 207 * S // 2)[:3, 3], [3.5, 0, 0])


@pytest.mark.parametrize("frame_id", ["", " ", "/", "//", " / "])
def test_blank_frame_ids_are_rejected_as_invalid_not_crashes(frame_id):
    buf = PoseBuffer()
    with pytest.raises(TransformRejected) as info:
        buf.set_transform("map", frame_id, S, [0, 0, 0], [0, 0, 0, 1])
    assert info.value.reason == "invalid"
    assert buf.try_lookup("map", frame_id, S) is None


def test_a_zero_quaternion_is_rejected_not_taken_for_the_identity():
    with pytest.raises(TransformRejected, match="not unit"):
        PoseBuffer().set_transform("map", "base", S, [0, 0, 0], [0, 0, 0, 0])


@pytest.mark.parametrize(
    "args, match",
    [
        (("map", "map", 0, [0, 0, 0], [0, 0, 0, 1]), "own parent"),
        (("map", "", 0, [0, 0, 0], [0, 0, 0, 1]), "empty"),
        (("map", "base", 0, [np.nan, 0, 0], [0, 0, 0, 1]), "non-finite"),
        (("map", "base", 0, [0, 0, 0], [0, 0, 0, 2]), "not unit"),
        (("map", "base", 0, [0, 0], [0, 0, 0, 1]), r"\(3,\)"),
    ],
)
def test_malformed_transforms_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        PoseBuffer().set_transform(*args)


def test_slightly_unnormalised_quaternions_are_normalised_and_leading_slashes_stripped():
    buf = PoseBuffer()
    buf.set_transform("/map", "/base", S, [0, 0, 0], 1.005 * quat((0, 0, 1), 60))
    R = buf.lookup("map", "/base", S)[:3, :3]
    np.testing.assert_allclose(R, rot((0, 0, 1), 60), atol=1e-12)
    assert buf.frames() == {"map", "base"}


def transform_stamped(parent, child, sec, nanosec, t, q):
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=nanosec)),
        child_frame_id=child,
        transform=SimpleNamespace(translation=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                                  rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])),
    )


def test_tf_messages_are_read_by_duck_typing_and_bad_entries_skipped():
    buf = PoseBuffer()
    msg = SimpleNamespace(transforms=[
        transform_stamped("map", "base", 3, 500, [1, 2, 3], quat((0, 0, 1), 90)),
        transform_stamped("map", "broken", 3, 500, [np.inf, 0, 0], [0, 0, 0, 1]),
        transform_stamped("base", "camera", 0, 0, [0, 0, 1], [0, 0, 0, 1]),
    ])
    assert buf.set_tf_message(msg) == 2
    assert "broken" not in buf.frames()
    np.testing.assert_allclose(buf.lookup("map", "base", 3 * S + 500), T((0, 0, 1), 90, [1, 2, 3]), atol=1e-12)


def test_concurrent_inserts_and_lookups_do_not_corrupt_the_buffer():
    buf = PoseBuffer(cache_time_s=0.5)
    errors = []

    def writer():
        for i in range(2000):
            buf.set_transform("map", "base", i * S // 1000, [i, 0, 0], [0, 0, 0, 1])

    def reader():
        for _ in range(2000):
            try:
                T_mb, used = buf.lookup_stamped("map", "base", 0)
                if T_mb[0, 3] != used * 1000 // S:  # translation x equals the sample index
                    errors.append((T_mb[0, 3], used))
            except TransformError:
                pass

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert buf.num_samples("base") <= 501


# --------------------------------------------------------------------------- pending queue


def test_pending_items_come_out_when_the_resolver_can_answer():
    queue = PendingQueue(capacity=8, timeout_s=1.0)
    queue.push("a", stamp_ns=2 * S, now_ns=0)
    queue.push("b", stamp_ns=1 * S, now_ns=0)
    available = {"b": "pose_b"}
    ready, expired = queue.pop_ready(lambda item, stamp: available.get(item), now_ns=S // 2)
    assert ready == [("b", "pose_b")] and expired == [] and len(queue) == 1
    available["a"] = "pose_a"
    ready, expired = queue.pop_ready(lambda item, stamp: available.get(item), now_ns=S // 2)
    assert ready == [("a", "pose_a")] and len(queue) == 0
    assert queue.resolved == 2


def test_resolver_receives_the_item_stamp():
    queue = PendingQueue()
    queue.push("x", stamp_ns=42, now_ns=0)
    seen = []
    queue.pop_ready(lambda item, stamp: seen.append((item, stamp)), now_ns=0)
    assert seen == [("x", 42)]


def test_items_waiting_longer_than_the_timeout_expire():
    queue = PendingQueue(capacity=8, timeout_s=1.0)
    queue.push("old", stamp_ns=0, now_ns=0)
    queue.push("new", stamp_ns=S, now_ns=S)
    never = lambda item, stamp: None  # noqa: E731
    assert queue.pop_ready(never, now_ns=S) == ([], [])  # "old" waited exactly 1 s: not yet
    ready, expired = queue.pop_ready(never, now_ns=S + 1)
    assert (ready, expired) == ([], ["old"]) and len(queue) == 1 and queue.expired == 1
    # an item that resolves in the call where it would expire counts as ready
    ready, expired = queue.pop_ready(lambda item, stamp: "pose", now_ns=10 * S)
    assert ready == [("new", "pose")] and expired == []


def test_a_full_queue_drops_the_oldest_stamp_and_counts_it():
    queue = PendingQueue(capacity=3, timeout_s=5.0)
    for name, stamp in [("t2", 2), ("t1", 1), ("t3", 3)]:
        assert queue.push(name, stamp_ns=stamp, now_ns=0) is None
    assert queue.push("t4", stamp_ns=4, now_ns=0) == "t1"
    assert queue.dropped == 1 and len(queue) == 3
    ready, _ = queue.pop_ready(lambda item, stamp: stamp, now_ns=0)
    assert [item for item, _ in ready] == ["t2", "t3", "t4"]  # stamp order


def test_pending_queue_with_pose_buffer_waits_for_tf_then_releases_the_frame():
    buf = PoseBuffer()
    queue = PendingQueue(capacity=4, timeout_s=1.0)
    resolve = lambda frame_id, stamp: buf.try_lookup("map", frame_id, stamp)  # noqa: E731
    buf.set_transform("map", "camera", 1 * S, [0, 0, 0], [0, 0, 0, 1])
    queue.push("camera", stamp_ns=int(1.5 * S), now_ns=0)  # image newer than the newest TF
    assert queue.pop_ready(resolve, now_ns=S // 10) == ([], [])
    buf.set_transform("map", "camera", 2 * S, [2, 0, 0], [0, 0, 0, 1])  # TF catches up
    ready, expired = queue.pop_ready(resolve, now_ns=S // 5)
    assert expired == [] and len(ready) == 1
    np.testing.assert_allclose(ready[0][1][:3, 3], [1, 0, 0])


# --------------------------------------------------------------------------- tf2_ros parity


def test_lookups_match_tf2_ros_where_it_is_installed():
    tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros needs a ROS install")
    from geometry_msgs.msg import TransformStamped
    from rclpy.duration import Duration
    from rclpy.time import Time

    ours, theirs = PoseBuffer(cache_time_s=10.0), tf2_ros.Buffer(cache_time=Duration(seconds=10))
    rng = np.random.default_rng(0)
    links = [("map", "odom", True), ("odom", "base", False), ("base", "camera", True), ("map", "marker", False)]
    for parent, child, static in links:
        for k in range(1 if static else 5):
            stamp = (k + 1) * S // 2
            t = rng.normal(size=3)
            q = rng.normal(size=4)
            q /= np.linalg.norm(q)
            ours.set_transform(parent, child, stamp, t, q, static=static)
            msg = TransformStamped()
            msg.header.frame_id, msg.child_frame_id = parent, child
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, S)
            (msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z) = t
            (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
             msg.transform.rotation.w) = q
            (theirs.set_transform_static if static else theirs.set_transform)(msg, "test")
    for target, source in [("map", "camera"), ("camera", "marker"), ("marker", "base")]:
        for stamp in (S // 2, S, 7 * S // 4, 5 * S // 2, 0):
            ts = theirs.lookup_transform(target, source, Time(nanoseconds=stamp))
            tr, ro = ts.transform.translation, ts.transform.rotation
            expected = np.eye(4)
            expected[:3, :3] = quat_xyzw_to_matrix([ro.x, ro.y, ro.z, ro.w])
            expected[:3, 3] = [tr.x, tr.y, tr.z]
            np.testing.assert_allclose(ours.lookup(target, source, stamp), expected, atol=1e-9)


def test_a_stall_of_the_caller_does_not_count_as_waiting_for_tf():
    """After the process could not run for 3 s, the first passes must not expire frames whose TF came in
    meanwhile and is still queued behind them: only serviced time counts towards the timeout."""
    queue = PendingQueue(capacity=8, timeout_s=2.0, stall_s=1.0)
    never = lambda item, stamp: None  # noqa: E731
    queue.push("f", stamp_ns=0, now_ns=0)
    assert queue.pop_ready(never, now_ns=S // 2) == ([], [])
    assert queue.pop_ready(never, now_ns=S // 2 + 3 * S) == ([], [])   # 3 s without a call: a stall
    assert queue.stalls == 1 and len(queue) == 1
    assert queue.pop_ready(never, now_ns=4 * S) == ([], [])              # 1 s of serviced waiting
    for t in range(41, 51):                                               # a resolver timer at 0.1 s
        assert queue.pop_ready(never, now_ns=t * S // 10) == ([], [])   # 2.0 s serviced at t = 5.0 s
    ready, expired = queue.pop_ready(never, now_ns=51 * S // 10)
    assert expired == ["f"] and queue.stalls == 1


def test_regular_calls_are_no_stall():
    queue = PendingQueue(capacity=8, timeout_s=1.0, stall_s=1.0)
    never = lambda item, stamp: None  # noqa: E731
    queue.push("f", stamp_ns=0, now_ns=0)
    for t in range(1, 11):
        assert queue.pop_ready(never, now_ns=t * S // 10) == ([], [])
    assert queue.pop_ready(never, now_ns=11 * S // 10) == ([], ["f"]) and queue.stalls == 0
