"""transforms.json reading/writing and the OpenGL <-> OpenCV camera convention."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from ilrm_ros.core.rotations import rot_z
from ilrm_ros.io.transforms_json import (
    PosedImages,
    load_transforms_json,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    write_transforms_json,
)


def _gl_pose(yaw, t):
    """A camera in OpenGL convention: rotation about world z, then placed at t."""
    m = np.eye(4)
    m[:3, :3] = rot_z(yaw)
    m[:3, 3] = t
    return m


def _random_images(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_opengl_camera_looking_down_minus_z_looks_down_plus_z_in_opencv():
    c2w_gl = np.eye(4)  # OpenGL camera at the origin looks along its -z axis = world -z
    c2w_cv = opengl_to_opencv_c2w(c2w_gl)
    forward_cv = c2w_cv[:3, :3] @ np.array([0, 0, 1.0])  # OpenCV looks along its +z
    forward_gl = c2w_gl[:3, :3] @ np.array([0, 0, -1.0])
    np.testing.assert_allclose(forward_cv, forward_gl)
    np.testing.assert_allclose(forward_cv, [0, 0, -1.0])
    # image "up" in OpenGL is +y; in OpenCV image "down" is +y: they must be opposite
    np.testing.assert_allclose(c2w_cv[:3, 1], -c2w_gl[:3, 1])
    np.testing.assert_allclose(c2w_cv[:3, 0], c2w_gl[:3, 0])  # right stays right


def test_opengl_opencv_conversion_keeps_centre_and_round_trips():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    c2w = np.eye(4)
    c2w[:3, :3] = q
    c2w[:3, 3] = rng.normal(size=3)
    cv = opengl_to_opencv_c2w(c2w)
    np.testing.assert_allclose(cv[:3, 3], c2w[:3, 3])
    assert np.linalg.det(cv[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(opencv_to_opengl_c2w(cv), c2w, atol=1e-12)
    batch = np.stack([c2w, np.eye(4)])
    np.testing.assert_allclose(opencv_to_opengl_c2w(opengl_to_opencv_c2w(batch)), batch, atol=1e-12)


def test_point_in_front_of_opengl_camera_has_positive_opencv_depth():
    c2w_gl = _gl_pose(0.7, [1.0, 2.0, 0.5])
    point = c2w_gl[:3, 3] + c2w_gl[:3, :3] @ np.array([0.1, -0.2, -3.0])  # 3 m in front (GL -z)
    w2c_cv = np.linalg.inv(opengl_to_opencv_c2w(c2w_gl))
    p_cam = w2c_cv[:3, :3] @ point + w2c_cv[:3, 3]
    assert p_cam[2] == pytest.approx(3.0)
    assert p_cam[1] == pytest.approx(0.2)  # GL y up -0.2 -> CV y down +0.2


def _write_dataset(root, images, poses_gl, frame_level_intrinsics, ext=True):
    (root / "imgs").mkdir(parents=True)
    h, w = images.shape[1:3]
    meta = {"frames": []}
    intr = {"fl_x": 50.0, "fl_y": 52.0, "cx": w / 2 - 1, "cy": h / 2 + 1, "w": w, "h": h}
    if not frame_level_intrinsics:
        meta.update(intr)
    for i, (im, pose) in enumerate(zip(images, poses_gl)):
        Image.fromarray(im).save(root / "imgs" / f"f{i}.png")
        fr = {"file_path": f"imgs/f{i}.png" if ext else f"./imgs/f{i}", "transform_matrix": pose.tolist()}
        if frame_level_intrinsics:
            fr.update({**intr, "fl_x": 50.0 + i})
        meta["frames"].append(fr)
    (root / "transforms.json").write_text(json.dumps(meta))


def test_reader_takes_top_level_intrinsics_and_converts_poses(tmp_path):
    images = _random_images(3, 20, 30)
    poses = [_gl_pose(0.3 * i, [i, 0.5, 1.0]) for i in range(3)]
    _write_dataset(tmp_path, images, poses, frame_level_intrinsics=False)
    data = load_transforms_json(tmp_path)
    assert isinstance(data, PosedImages) and len(data) == 3
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_allclose(data.K[1], [[50, 0, 14], [0, 52, 11], [0, 0, 1]])
    np.testing.assert_allclose(data.c2w, np.stack([opengl_to_opencv_c2w(p) for p in poses]), atol=1e-6)
    assert data.c2w.dtype == np.float32 and data.K.dtype == np.float32
    assert data.names == ["f0", "f1", "f2"]
    assert data.depths is None


def test_reader_takes_per_frame_intrinsics_and_paths_without_extension(tmp_path):
    images = _random_images(2, 16, 16, seed=1)
    _write_dataset(tmp_path, images, [np.eye(4)] * 2, frame_level_intrinsics=True, ext=False)
    data = load_transforms_json(tmp_path / "transforms.json")
    assert data.K[0, 0, 0] == 50.0 and data.K[1, 0, 0] == 51.0
    np.testing.assert_array_equal(data.images, images)


def test_reader_accepts_blender_camera_angle_x_and_rgba(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :10, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba).save(tmp_path / "r_0.png")
    angle = 0.6911112070083618
    meta = {"camera_angle_x": angle, "frames": [{"file_path": "./r_0", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    data = load_transforms_json(tmp_path)
    f = 0.5 * 20 / math.tan(0.5 * angle)
    np.testing.assert_allclose(data.K[0], [[f, 0, 10], [0, f, 5], [0, 0, 1]], rtol=1e-6)
    np.testing.assert_array_equal(data.images[0, 0, 0], [200, 0, 0])
    np.testing.assert_array_equal(data.images[0, 0, 15], [255, 255, 255])  # composited on white


def test_reader_rescales_intrinsics_stated_for_another_resolution(tmp_path):
    images = _random_images(1, 10, 20)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    meta = {"fl_x": 100.0, "fl_y": 100.0, "cx": 20.0, "cy": 10.0, "w": 40, "h": 20,
            "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    np.testing.assert_allclose(load_transforms_json(tmp_path).K[0], [[50, 0, 10], [0, 50, 5], [0, 0, 1]])


def test_reader_loads_png_millimetre_and_npy_metre_depth(tmp_path):
    images = _random_images(2, 8, 8)
    _write_dataset(tmp_path, images, [np.eye(4)] * 2, frame_level_intrinsics=False)
    depth_mm = np.full((8, 8), 1234, dtype=np.uint16)
    Image.fromarray(depth_mm).save(tmp_path / "d0.png")
    np.save(tmp_path / "d1.npy", np.full((8, 8), 2.5, dtype=np.float32))
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"][0]["depth_file_path"] = "d0.png"
    meta["frames"][1]["depth_file_path"] = "d1.npy"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    data = load_transforms_json(tmp_path)
    np.testing.assert_allclose(data.depths[0], 1.234, rtol=1e-6)
    np.testing.assert_allclose(data.depths[1], 2.5)


@pytest.mark.parametrize("depth_format,atol", [("png", 5e-4), ("npy", 0.0)])
def test_writer_then_reader_round_trips(tmp_path, depth_format, atol):
    rng = np.random.default_rng(5)
    n = 3
    c2w = np.stack([opengl_to_opencv_c2w(_gl_pose(0.5 * i, rng.normal(size=3))) for i in range(n)])
    k = np.array([[40.0, 0, 16], [0, 41.0, 12], [0, 0, 1]])
    posed = PosedImages(
        images=_random_images(n, 24, 32, seed=9), c2w=c2w, K=np.stack([k] * n),
        names=[f"img_{i}" for i in range(n)], depths=rng.uniform(0.3, 9.0, size=(n, 24, 32)),
        timestamps=np.array([10, 20, 35]),
    )
    path = write_transforms_json(tmp_path / "out", posed, depth_format=depth_format)
    meta = json.loads(path.read_text())
    assert "fl_x" in meta and "fl_x" not in meta["frames"][0]  # shared K at top level
    back = load_transforms_json(tmp_path / "out")
    np.testing.assert_array_equal(back.images, posed.images)
    np.testing.assert_allclose(back.c2w, posed.c2w, atol=1e-6)
    np.testing.assert_allclose(back.K, posed.K)
    np.testing.assert_allclose(back.depths, posed.depths, atol=atol)
    np.testing.assert_array_equal(back.timestamps, posed.timestamps)
    assert back.names == posed.names


def test_writer_puts_differing_intrinsics_per_frame(tmp_path):
    k0 = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    k1 = k0.copy()
    k1[0, 0] = 45.0
    posed = PosedImages(_random_images(2, 24, 32), np.stack([np.eye(4)] * 2), np.stack([k0, k1]), ["a", "b"])
    meta = json.loads(write_transforms_json(tmp_path, posed).read_text())
    assert "fl_x" not in meta and meta["frames"][1]["fl_x"] == 45.0
    np.testing.assert_allclose(load_transforms_json(tmp_path).K, posed.K)


def test_posed_images_validates_shapes_and_subsets():
    with pytest.raises(ValueError):
        PosedImages(_random_images(2, 4, 4), np.zeros((3, 4, 4)), np.zeros((2, 3, 3)), ["a", "b"])
    p = PosedImages(_random_images(4, 4, 4), np.stack([np.eye(4)] * 4), np.stack([np.eye(3)] * 4),
                    list("abcd"), timestamps=np.arange(4))
    sub = p.subset([3, 1])
    assert sub.names == ["d", "b"] and list(sub.timestamps) == [3, 1]
    np.testing.assert_array_equal(sub.images[0], p.images[3])
