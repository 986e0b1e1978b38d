"""Specification of ilrm_ros.mapping.keyframes: motion/time keyframe policy and the keyframe ring."""
import gc
import math
import weakref

import numpy as np
import pytest

from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.keyframes import KeyframeBuffer, KeyframePolicy, KeyframeConfig

S = 1_000_000_000
K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])


def pose(t=(0.0, 0.0, 0.0), axis=(0.0, 1.0, 0.0), deg=0.0) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(deg)
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + math.sin(a) * Kx + (1 - math.cos(a)) * Kx @ Kx
    T[:3, 3] = t
    return T


def frame(stamp_s: float, c2w: np.ndarray | None) -> Frame:
    return Frame(np.zeros((24, 32, 3), np.uint8), K, int(round(stamp_s * S)), "cam", c2w)


# --------------------------------------------------------------------------- policy


def test_first_frame_is_always_admitted():
    policy = KeyframePolicy()
    decision = policy.decide(frame(100.0, pose()))
    assert decision.admitted and decision.reason == "first"


def test_translation_threshold():
    policy = KeyframePolicy(min_translation_m=0.10, max_interval_s=math.inf)
    assert policy.admit(frame(0.0, pose()))
    assert not policy.admit(frame(0.1, pose((0.06, 0.0, 0.07))))  # 0.092 m
    decision = policy.decide(frame(0.2, pose((0.0, 0.0, 0.11))))
    assert decision.admitted and decision.reason == "translation"
    assert decision.translation_m == pytest.approx(0.11)


def test_rotation_threshold_about_any_axis():
    policy = KeyframePolicy(min_rotation_deg=10.0, max_interval_s=math.inf)
    assert policy.admit(frame(0.0, pose(axis=(1, 1, 0), deg=30)))
    # 9 deg more about another axis, composed on the right (camera frame): still below
    near = pose(axis=(1, 1, 0), deg=30) @ pose(axis=(0, 0, 1), deg=9)
    assert not policy.admit(frame(0.1, near))
    far = pose(axis=(1, 1, 0), deg=30) @ pose(axis=(0, 0, 1), deg=11)
    decision = policy.decide(frame(0.2, far))
    assert decision.admitted and decision.reason == "rotation"
    assert decision.rotation_deg == pytest.approx(11.0)


def test_time_threshold_admits_a_still_camera_periodically():
    policy = KeyframePolicy(max_interval_s=2.0)
    assert policy.admit(frame(0.0, pose()))
    assert not policy.admit(frame(1.9, pose()))
    decision = policy.decide(frame(2.1, pose()))
    assert decision.admitted and decision.reason == "interval"
    assert not policy.admit(frame(3.0, pose()))  # measured from the new keyframe at 2.1 s


def test_motion_is_measured_from_the_last_admitted_keyframe_not_the_last_frame():
    policy = KeyframePolicy(min_translation_m=0.10, max_interval_s=math.inf)
    assert policy.admit(frame(0.0, pose()))
    assert not policy.admit(frame(0.1, pose((0.06, 0, 0))))  # 6 cm from the keyframe
    assert policy.admit(frame(0.2, pose((0.12, 0, 0))))  # 6 cm from the last frame, 12 cm from the keyframe


def test_min_interval_blocks_even_large_motion():
    policy = KeyframePolicy(min_interval_s=0.5)
    assert policy.admit(frame(0.0, pose()))
    decision = policy.decide(frame(0.3, pose((5.0, 0, 0), deg=90)))
    assert not decision.admitted and decision.reason == "too_soon"
    assert policy.admit(frame(0.6, pose((5.0, 0, 0))))


def test_frames_not_newer_than_the_last_keyframe_are_refused():
    policy = KeyframePolicy()
    assert policy.admit(frame(5.0, pose()))
    assert policy.decide(frame(5.0, pose((1, 0, 0)))).reason == "not_newer"
    assert policy.decide(frame(4.0, pose((1, 0, 0)))).reason == "not_newer"


def test_decide_without_commit_and_reset_leave_or_clear_the_state():
    policy = KeyframePolicy(max_interval_s=math.inf)
    assert policy.decide(frame(0.0, pose()), commit=False).admitted
    assert policy.decide(frame(0.1, pose()), commit=False).reason == "first"  # nothing was recorded
    assert policy.admit(frame(0.2, pose()))
    assert not policy.admit(frame(0.3, pose()))
    policy.reset()
    assert policy.admit(frame(0.4, pose()))


def test_unposed_frames_are_an_error():
    with pytest.raises(ValueError, match="posed"):
        KeyframePolicy().admit(frame(0.0, None))


def test_config_defaults_overrides_and_validation():
    assert KeyframeConfig() == KeyframeConfig(0.10, 10.0, 2.0, 0.0)
    policy = KeyframePolicy(KeyframeConfig(min_translation_m=0.5), min_rotation_deg=3.0)
    assert (policy.config.min_translation_m, policy.config.min_rotation_deg) == (0.5, 3.0)
    with pytest.raises(ValueError, match="min_translation_m"):
        KeyframeConfig(min_translation_m=-0.1)
    with pytest.raises(ValueError, match="min_interval_s"):
        KeyframeConfig(min_interval_s=3.0, max_interval_s=2.0)
    with pytest.raises(TypeError):
        KeyframePolicy(min_translaton_m=0.2)  # typo in a threshold name is caught


# --------------------------------------------------------------------------- buffer


def filled(capacity: int, n: int) -> KeyframeBuffer:
    buf = KeyframeBuffer(capacity)
    for i in range(n):
        buf.add(frame(float(i), pose((i, 0, 0))))
    return buf


def test_ids_increase_monotonically_from_zero():
    buf = KeyframeBuffer(capacity=4)
    ids = [buf.add(frame(float(i), pose())).id for i in range(6)]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert (buf.last_id, buf.next_id, buf.total_added) == (5, 6, 6)


def test_ring_keeps_only_the_newest_capacity_keyframes():
    buf = filled(capacity=4, n=10)
    assert len(buf) == 4 and buf.evicted == 6
    assert [kf.id for kf in buf.snapshot()] == [6, 7, 8, 9]
    assert [kf.stamp_ns for kf in buf] == [6 * S, 7 * S, 8 * S, 9 * S]


def test_latest_returns_the_newest_n_oldest_first():
    buf = filled(capacity=8, n=5)
    assert [kf.id for kf in buf.latest(3)] == [2, 3, 4]
    assert [kf.id for kf in buf.latest(100)] == [0, 1, 2, 3, 4]
    assert buf.latest(0) == []


def test_since_and_num_since_answer_how_many_arrived_after_a_window():
    buf = filled(capacity=4, n=10)  # holds 6..9
    assert [kf.id for kf in buf.since(7)] == [8, 9]
    assert [kf.id for kf in buf.since(-1)] == [6, 7, 8, 9]
    assert buf.num_since(7) == 2
    assert buf.num_since(2) == 7  # counts keyframes already evicted from the ring
    assert buf.num_since(9) == 0 and KeyframeBuffer().num_since(-1) == 0


def test_scheduler_style_use_last_v_and_new_since_last_window():
    buf = KeyframeBuffer(capacity=16)
    for i in range(4):
        buf.add(frame(float(i), pose()))
    window = buf.latest(4)
    last_in_window = window[-1].id
    assert buf.num_since(last_in_window) == 0
    for i in range(4, 6):
        buf.add(frame(float(i), pose()))
    assert buf.num_since(last_in_window) == 2
    assert [kf.id for kf in buf.latest(4)] == [2, 3, 4, 5]


def test_get_finds_held_keyframes_only():
    buf = filled(capacity=3, n=5)  # holds 2..4
    assert buf.get(3).id == 3 and buf.get(3).c2w[0, 3] == 3
    assert buf.get(1) is None and buf.get(5) is None


def test_clear_empties_the_ring_but_never_reuses_ids():
    buf = filled(capacity=4, n=3)
    buf.clear()
    assert len(buf) == 0 and buf.latest(2) == [] and buf.get(0) is None
    assert buf.add(frame(9.0, pose())).id == 3
    assert buf.get(3) is not None


def test_evicted_frames_are_released_so_memory_stays_bounded():
    buf = KeyframeBuffer(capacity=2)
    first = frame(0.0, pose())
    watcher = weakref.ref(first)
    buf.add(first)
    del first
    for i in range(1, 4):
        buf.add(frame(float(i), pose()))
    gc.collect()
    assert watcher() is None


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        KeyframeBuffer(0)
