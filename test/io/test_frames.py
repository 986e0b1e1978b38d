"""Specification of ilrm_ros.io.frames: Frame/Keyframe, fit_to_model, camera info, poses."""
from types import SimpleNamespace

import numpy as np
import pytest

from ilrm_ros.io.frames import (
    CameraInfoError,
    Frame,
    Keyframe,
    PoseError,
    camera_info_to_K,
    fit_intrinsics,
    fit_to_model,
    is_distorted,
    ns_to_stamp,
    stamp_to_ns,
    validate_pose,
)
from ilrm_ros.core.rotations import rot_z

K_VGA = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- time


def test_stamp_conversions_round_trip_including_negative_times():
    assert stamp_to_ns(SimpleNamespace(sec=12, nanosec=345)) == 12_000_000_345
    assert ns_to_stamp(12_000_000_345) == (12, 345)
    assert ns_to_stamp(-1) == (-1, 999_999_999)
    for ns in (0, 1, 999_999_999, 10**18 + 7, -(10**9) - 5):
        sec, nanosec = ns_to_stamp(ns)
        assert 0 <= nanosec < 10**9
        assert stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec)) == ns


# --------------------------------------------------------------------------- dataclasses


def test_frame_checks_shapes_and_normalises_dtypes():
    frame = Frame(np.zeros((4, 6, 3), np.uint8), K_VGA.astype(np.float32).tolist(), 5, "cam")
    assert frame.K.dtype == np.float64 and frame.K.shape == (3, 3)
    assert (frame.height, frame.width) == (4, 6)
    assert frame.c2w is None
    with pytest.raises(ValueError, match="uint8"):
        Frame(np.zeros((4, 6, 3), np.float32), K_VGA, 0, "cam")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        Frame(np.zeros((4, 6, 3), np.uint8), np.eye(4), 0, "cam")
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        Frame(np.zeros((4, 6, 3), np.uint8), K_VGA, 0, "cam", c2w=np.eye(3))


def test_keyframe_forwards_the_frame_fields():
    c2w = np.eye(4)
    c2w[:3, 3] = [1, 2, 3]
    frame = Frame(np.ones((2, 2, 3), np.uint8), K_VGA, 7, "cam", c2w)
    kf = Keyframe(id=3, frame=frame)
    assert kf.id == 3 and kf.stamp_ns == 7 and kf.frame_id == "cam"
    assert kf.rgb is frame.rgb and kf.K is frame.K and kf.c2w is frame.c2w


# --------------------------------------------------------------------------- fit_to_model


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = K @ X
    return x[:2] / x[2]


def blob_image(h: int, w: int, uv: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian spot centred at pixel coordinates uv (pixel-centre convention)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xs - uv[0]) ** 2 + (ys - uv[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(255 * g).astype(np.uint8)[:, :, None], 3, axis=2)


def centroid(img: np.ndarray) -> np.ndarray:
    w = img[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize(
    "in_hw, out_hw, mode",
    [
        ((240, 320), (96, 96), "crop"),  # shrink, wide -> square
        ((240, 320), (96, 96), "pad"),
        ((240, 320), (96, 96), "stretch"),
        ((320, 240), (80, 120), "crop"),  # tall -> wide: crops rows
        ((60, 80), (150, 150), "crop"),  # enlarge (bilinear)
    ],
)
def test_fit_to_model_moves_image_content_exactly_where_the_new_K_projects(in_hw, out_hw, mode):
    h, w = in_hw
    K = np.array([[0.8 * w, 0.0, w / 2 - 3.3], [0.0, 0.8 * w, h / 2 + 2.1], [0.0, 0.0, 1.0]])
    X = np.array([0.07, -0.05, 1.0])  # a 3-D point in the camera frame, near the centre
    uv = project(K, X)
    sigma = 0.04 * max(h, w)
    img = blob_image(h, w, uv, sigma)

    out, K_new = fit_to_model(img, K, out_hw[0], out_hw[1], mode=mode)

    assert out.shape == (out_hw[0], out_hw[1], 3) and out.dtype == np.uint8
    expected = project(K_new, X)
    measured = centroid(out)
    np.testing.assert_allclose(measured, expected, atol=0.02)
    # The measurement tells conventions apart: ignoring the half-pixel shift
    # (x' = (x - x0) s) would predict a spot |1 - s| / 2 away, >= 0.25 px for these sizes.
    scale = np.diag(K_new)[:2] / np.diag(K)[:2]
    naive = expected - 0.5 * (scale - 1.0)
    assert np.max(np.abs(measured - naive)) > 0.2


def test_centred_principal_point_stays_centred_for_every_mode():
    for (h, w), (oh, ow) in [((480, 640), (256, 256)), ((480, 640), (540, 960)), ((7, 5), (3, 11))]:
        K = np.array([[100.0, 0.0, (w - 1) / 2], [0.0, 90.0, (h - 1) / 2], [0.0, 0.0, 1.0]])
        for mode in ("crop", "stretch"):
            K_new = fit_intrinsics(K, (h, w), (oh, ow), mode)
            np.testing.assert_allclose(K_new[:2, 2], [(ow - 1) / 2, (oh - 1) / 2], atol=1e-12)


def test_crop_keeps_square_pixels_and_scales_focal_lengths_by_the_resize_factor():
    out, K_new = fit_to_model(np.zeros((480, 640, 3), np.uint8), K_VGA, 256, 256, mode="crop")
    s = 256 / 480  # the 480x480 centre square is resized to 256x256
    np.testing.assert_allclose(K_new[0, 0], 525.0 * s)
    np.testing.assert_allclose(K_new[1, 1], 525.0 * s)
    # x0 = 80 columns cropped: cx' = (319.5 + 0.5 - 80) * s - 0.5
    np.testing.assert_allclose(K_new[0, 2], (319.5 + 0.5 - 80) * s - 0.5)
    np.testing.assert_allclose(K_new[1, 2], (239.5 + 0.5) * s - 0.5)
    np.testing.assert_array_equal(K_new[2], [0, 0, 1])


def test_stretch_scales_x_and_y_independently():
    _, K_new = fit_to_model(np.zeros((480, 640, 3), np.uint8), K_VGA, 240, 160, mode="stretch")
    np.testing.assert_allclose([K_new[0, 0], K_new[1, 1]], [525.0 * 160 / 640, 525.0 * 240 / 480])


def test_pad_keeps_the_whole_image_and_fills_the_border_with_pad_value():
    img = np.full((100, 200, 3), 200, np.uint8)
    out, K_new = fit_to_model(img, np.array([[100.0, 0, 99.5], [0, 100.0, 49.5], [0, 0, 1]]), 64, 64, "pad", pad_value=7)
    # 200x100 scaled by 0.32 -> 64x32, centred vertically: rows 16..47 are the image
    assert np.all(out[:16] == 7) and np.all(out[48:] == 7)
    assert np.all(out[16:48] == 200)
    np.testing.assert_allclose(K_new[1, 2], (49.5 + 0.5) * 0.32 - 0.5 + 16)


def test_same_size_returns_an_unchanged_copy():
    img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out, K_new = fit_to_model(img, K_VGA, 32, 48)
    np.testing.assert_array_equal(out, img)
    assert out is not img and not np.shares_memory(out, img)
    np.testing.assert_allclose(K_new, K_VGA)


def test_fit_to_model_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        fit_to_model(np.zeros((4, 4, 3), np.uint8), K_VGA, 2, 2, mode="zoom")
    with pytest.raises(ValueError, match="uint8"):
        fit_to_model(np.zeros((4, 4, 3), np.float32), K_VGA, 2, 2)
    with pytest.raises(ValueError, match="positive"):
        fit_to_model(np.zeros((4, 4, 3), np.uint8), K_VGA, 0, 2)


# --------------------------------------------------------------------------- camera info


def info(k, width=640, height=480, **extra):
    return SimpleNamespace(k=list(k), width=width, height=height, **extra)


def test_camera_info_to_K_reads_the_row_major_k_field():
    K = camera_info_to_K(info([500.0, 0, 320, 0, 510.0, 240, 0, 0, 1]))
    np.testing.assert_array_equal(K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    assert K.dtype == np.float64


def test_camera_info_to_K_accepts_a_rosbags_message():
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    types = ts.types
    msg = types["sensor_msgs/msg/CameraInfo"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam"),
        height=480, width=640, distortion_model="plumb_bob", d=np.zeros(5),
        k=K_VGA.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=np.zeros(12),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
    np.testing.assert_array_equal(camera_info_to_K(msg), K_VGA)
    assert not is_distorted(msg)
    msg.d[0] = 0.1
    assert is_distorted(msg)


@pytest.mark.parametrize(
    "k, match",
    [
        ([0.0] * 9, "not calibrated"),
        ([-500.0, 0, 320, 0, 500, 240, 0, 0, 1], "fx, fy > 0"),
        ([500.0, 0, 320, 0, 0, 240, 0, 0, 1], "fx, fy > 0"),
        ([500.0, 0, float("nan"), 0, 500, 240, 0, 0, 1], "non-finite"),
        ([500.0, 0, 320, 0, 500, 240, 0, 0, 2], "pinhole"),
        ([500.0, 0, 320, 0, 500, 240], "9 values"),
    ],
)
def test_camera_info_to_K_rejects_unusable_calibrations(k, match):
    with pytest.raises(CameraInfoError, match=match):
        camera_info_to_K(info(k))


def test_camera_info_to_K_rejects_zero_size_and_binning():
    k = K_VGA.reshape(-1)
    with pytest.raises(CameraInfoError, match="size"):
        camera_info_to_K(info(k, width=0))
    with pytest.raises(CameraInfoError, match="binning"):
        camera_info_to_K(info(k, binning_x=2, binning_y=2))


def test_camera_info_to_K_rescales_to_a_smaller_image_of_the_same_aspect():
    K = camera_info_to_K(info(K_VGA.reshape(-1)), image_hw=(240, 320))
    np.testing.assert_allclose(K[0, 0], 262.5)
    np.testing.assert_allclose(K[0, 2], (319.5 + 0.5) / 2 - 0.5)  # = 159.5, the new centre
    np.testing.assert_allclose(K[1, 2], 119.5)
    with pytest.raises(CameraInfoError, match="does not match"):
        camera_info_to_K(info(K_VGA.reshape(-1)), image_hw=(240, 240))


# --------------------------------------------------------------------------- poses


def test_validate_pose_returns_a_clean_copy_of_a_good_pose():
    T = np.eye(4)
    T[:3, :3] = rot_z(np.radians(30))
    T[:3, 3] = [1, 2, 3]
    out = validate_pose(T.astype(np.float32))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, T, atol=1e-6)


def test_validate_pose_reorthonormalises_small_noise():
    rng = np.random.default_rng(1)
    T = np.eye(4)
    T[:3, :3] = rot_z(np.radians(70)) + 1e-5 * rng.standard_normal((3, 3))
    out = validate_pose(T)
    R = out[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(R, rot_z(np.radians(70)), atol=1e-4)
    assert np.max(np.abs(T[:3, :3].T @ T[:3, :3] - np.eye(3))) > 1e-6  # input was not clean


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda T: T.__setitem__((0, 3), np.nan), "NaN"),
        (lambda T: T.__setitem__((1, 1), np.inf), "NaN"),
        (lambda T: T.__setitem__((slice(0, 3), slice(0, 3)), 1.1 * T[:3, :3]), "orthonormal"),
        (lambda T: T.__setitem__((2, 2), -1.0), "reflection"),
        (lambda T: T.__setitem__((3, 0), 0.5), "bottom row"),
    ],
)
def test_validate_pose_rejects_broken_poses(corrupt, match):
    T = np.eye(4)
    corrupt(T)
    with pytest.raises(PoseError, match=match):
        validate_pose(T)
    with pytest.raises(PoseError, match="4, 4"):
        validate_pose(np.eye(3))
