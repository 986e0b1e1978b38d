"""Specification of io.input_stage: decode -> intrinsics -> frame id -> pose lookup -> place, or a named drop."""
from types import SimpleNamespace

import numpy as np
import pytest

from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import Frame
from ilrm_ros.io.input_stage import FOCAL_RANGE, MAX_TRANSLATION_M, InputLimits, InputRejected, InputStage, intrinsics, \
    place, usable_pose

W, H = 64, 48


def info(k=None, d=(), p=()):
    k = k or [50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1]
    return SimpleNamespace(k=k, width=W, height=H, d=list(d), p=list(p), binning_x=0, binning_y=0, roi=None)


def image(width=W, height=H, encoding="rgb8", data=None, frame_id="cam", step=None):
    step = 3 * width if step is None else step
    data = bytes(step * height) if data is None else data
    header = SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=5, nanosec=7))
    return SimpleNamespace(header=header, width=width, height=height, encoding=encoding, step=step, data=data,
                           is_bigendian=0)


def rejected(fn) -> str:
    with pytest.raises(InputRejected) as exc:
        fn()
    return exc.value.rejection.reason


def stage(**kw):
    s = InputStage(**kw)
    s.set_camera_info(info())
    return s


def test_a_valid_image_becomes_a_frame_with_its_stamp_intrinsics_and_frame():
    frame, notes = stage().frame(image(), compressed=False)
    assert frame.rgb.shape == (H, W, 3) and frame.stamp_ns == 5_000_000_007 and frame.frame_id == "cam"
    np.testing.assert_allclose(frame.K, np.reshape(info().k, (3, 3)))
    assert notes == []


def test_the_declared_size_is_checked_before_the_pixels_are_touched():
    # 100000 x 100000 declared with 12 bytes of data: too large, not a decode error
    assert rejected(lambda: stage().frame(image(100_000, 100_000, data=bytes(12)), False)) == "too_large"
    small = stage(limits=InputLimits(max_pixels=W * H - 1))
    assert rejected(lambda: small.frame(image(), False)) == "too_large"
    bytes_limited = stage(limits=InputLimits(max_pixels=0, max_decoded_bytes=3 * W * H - 1))
    assert rejected(lambda: bytes_limited.frame(image(), False)) == "too_large"


def test_a_compressed_bomb_is_refused_from_its_header(tmp_path):
    import hostile_cases as hc

    msg = SimpleNamespace(header=image().header, format="png", data=hc.png_with_header(65000, 65000))
    with pytest.raises(InputRejected) as exc:
        stage().frame(msg, compressed=True)
    assert exc.value.rejection.reason == "too_large" and "4225000000" in str(exc.value)  # 65000 x 65000


def test_an_undecodable_payload_is_described_by_its_bytes_not_by_a_python_object():
    msg = SimpleNamespace(header=image().header, format="jpeg", data=b"\x00\x01\x02garbage")
    with pytest.raises(InputRejected) as exc:
        stage().frame(msg, compressed=True)
    assert "BytesIO" not in str(exc.value) and "00 01 02" in str(exc.value)


@pytest.mark.parametrize("frame_id", ["", " ", "/", "//"])
def test_a_blank_frame_id_is_a_named_drop_unless_camera_frame_overrides_it(frame_id):
    assert rejected(lambda: stage().frame(image(frame_id=frame_id), False)) == "bad_frame_id"
    frame, _ = stage(camera_frame="override_optical").frame(image(frame_id=frame_id), False)
    assert frame.frame_id == "override_optical"


def test_no_camera_info_is_its_own_drop_reason():
    assert rejected(lambda: InputStage().frame(image(), False)) == "no_camera_info"


@pytest.mark.parametrize("focal", [1e-30, FOCAL_RANGE[0] * W * 0.5, FOCAL_RANGE[1] * W * 2, 1e30])
def test_absurd_focal_lengths_are_dropped(focal):
    bad = info([focal, 0, 31.5, 0, focal, 23.5, 0, 0, 1])
    assert rejected(lambda: intrinsics(bad, (H, W), rectified=False)) == "bad_camera_info"


def test_a_principal_point_outside_the_image_and_distortion_on_raw_images_are_named_but_used():
    K, notes = intrinsics(info([50.0, 0, 400.0, 0, 50.0, 23.5, 0, 0, 1], d=[0.1, 0, 0, 0, 0]), (H, W), False)
    assert K[0, 2] == 400.0
    assert [n.key for n in notes] == ["principal_point_outside", "distortion_ignored"]
    _, notes = intrinsics(info(d=[0.1, 0, 0, 0, 0]), (H, W), rectified=True)
    assert notes == []  # rectified images come with the raw camera's distortion: expected


def test_rectified_images_take_their_intrinsics_from_the_projection_matrix():
    p = [40.0, 0, 30.0, 0, 0, 41.0, 22.0, 0, 0, 0, 1, 0]
    K, _ = intrinsics(info(p=p), (H, W), rectified=True)
    np.testing.assert_allclose(K, [[40, 0, 30], [0, 41, 22], [0, 0, 1]])
    K, _ = intrinsics(info(p=p), (H, W), rectified=False)
    assert K[0, 0] == 50.0


def test_place_validates_the_pose_and_refuses_cameras_far_from_the_origin():
    frame = Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=0, frame_id="c")
    T = np.eye(4)
    T[0, 3] = 2.0
    assert place(frame, T).c2w[0, 3] == 2.0
    T[0, 3] = 1e9
    assert rejected(lambda: place(frame, T)) == "bad_pose"
    assert rejected(lambda: place(frame, np.diag([1.0, 1.0, -1.0, 1.0]))) == "bad_pose"


def test_a_usable_pose_is_re_orthonormalised_and_bounded_on_every_axis():
    T = np.eye(4)
    T[:3, :3] += 1e-5
    T[2, 3] = -MAX_TRANSLATION_M
    c2w = usable_pose(T)
    np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
    assert c2w[2, 3] == -MAX_TRANSLATION_M
    T[2, 3] = -2 * MAX_TRANSLATION_M
    with pytest.raises(InputRejected, match="map origin") as exc:
        usable_pose(T)
    assert exc.value.rejection.cause == "camera too far from the map origin"


def test_the_stage_looks_up_validates_and_counts_each_drop_by_reason():
    lines: list[str] = []
    reporter = DropReporter(lambda level, line: lines.append(line))
    s = InputStage(camera_info_topic="/cam/camera_info", map_frame="world", reporter=reporter)
    assert s.accept(image(), compressed=False) is None
    assert "no camera_info received yet on '/cam/camera_info' [dropped_no_camera_info]" in lines[0]
    s.set_camera_info(info())
    frame = s.accept(image(), compressed=False)
    asked = []

    def poses(target, source, stamp_ns):
        asked.append((target, source, stamp_ns))
        T = np.eye(4)
        T[0, 3] = 1e9 if len(asked) == 1 else 2.0
        return T

    assert s.place(frame, s.lookup(frame, poses)) is None and frame.c2w is None  # too far from the origin
    assert s.place(frame, s.lookup(frame, poses)) is frame and frame.c2w[0, 3] == 2.0
    assert asked == [("world", "cam", 5_000_000_007)] * 2
    assert reporter.counters.snapshot() == {"dropped_no_camera_info": 1, "dropped_bad_pose": 1}


def test_a_jpeg_is_decoded_at_a_reduced_scale_for_a_small_model_with_matching_intrinsics():
    import io

    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(np.zeros((1080, 1920, 3), np.uint8)).save(out, format="JPEG")
    msg = SimpleNamespace(header=image().header, format="jpeg", data=out.getvalue())
    full_hd = SimpleNamespace(k=[1000.0, 0, 959.5, 0, 1000.0, 539.5, 0, 0, 1], width=1920, height=1080, d=[], p=[],
                              binning_x=0, binning_y=0, roi=None)
    small = InputStage(decode_size=(128, 128))
    small.set_camera_info(full_hd)
    frame, _ = small.frame(msg, compressed=True)
    assert frame.rgb.shape == (135, 240, 3)  # 1/8 scale, still >= 128 in both directions
    np.testing.assert_allclose(frame.K[0, 0], 1000.0 / 8)
    np.testing.assert_allclose(frame.K[:2, 2], [(959.5 + 0.5) / 8 - 0.5, (539.5 + 0.5) / 8 - 0.5])
    full = InputStage()
    full.set_camera_info(full_hd)
    assert full.frame(msg, compressed=True)[0].rgb.shape == (1080, 1920, 3)
