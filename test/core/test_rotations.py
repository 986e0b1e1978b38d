"""Specification of ilrm_ros.core.rotations: the one home of quaternion <-> matrix maths.

The batched torch functions take (w, x, y, z); the per-pose numpy ones (x, y, z, w), the
order of ROS messages. transforms3d (w first) is the independent reference for the torch
code, Rodrigues' formula for the numpy code.
"""
import numpy as np
import pytest
import torch
from transforms3d.quaternions import mat2quat, quat2mat

from ilrm_ros.core.rotations import (
    R_BODY_OPTICAL,
    matrix_to_quat_xyzw,
    project_to_rotation,
    quat_left_matrix,
    quat_multiply,
    quat_to_rotmat,
    quat_xyzw_to_matrix,
    rot_x,
    rot_y,
    rot_z,
    rotation_angle,
    rotmat_to_quat,
    slerp,
)

SEEDS = range(6)


def random_quats(gen: torch.Generator, n: int) -> torch.Tensor:
    """(n, 4) float64 quaternions of random norm in [0.01, 100] and random sign."""
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    norm = 10 ** (4 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 2)
    sign = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return q * norm * sign


def random_rotations(gen: torch.Generator, n: int) -> torch.Tensor:
    return quat_to_rotmat(torch.randn(n, 4, generator=gen, dtype=torch.float64))


def rodrigues(axis, deg) -> np.ndarray:
    """Rotation of ``deg`` degrees about ``axis``, independent of any quaternion code."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx


def quat_xyzw(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    half = np.radians(deg) / 2
    return np.array([*(np.sin(half) * axis), np.cos(half)])


AXIS_ANGLES = [((0, 0, 1), 30), ((1, 2, 3), 170), ((1, 0, 0), -90), ((0, 1, 0), 0), ((0, 1, 1), 180)]


# --------------------------------------------------------------------------- torch (w, x, y, z)


@pytest.mark.parametrize("seed", SEEDS)
def test_torch_quat_to_rotmat_matches_transforms3d_for_any_norm_and_sign(seed):
    q = random_quats(torch.Generator().manual_seed(seed), 256)
    expected = torch.from_numpy(np.stack([quat2mat(row) for row in q.numpy()]))
    torch.testing.assert_close(quat_to_rotmat(q), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(quat_to_rotmat(-q), expected, rtol=0, atol=1e-12)


def test_torch_quat_to_rotmat_is_batched_over_leading_dims_and_keeps_float32():
    q = random_quats(torch.Generator().manual_seed(0), 24).float().reshape(2, 3, 4, 4)
    R = quat_to_rotmat(q)
    assert R.shape == (2, 3, 4, 3, 3) and R.dtype == torch.float32
    torch.testing.assert_close(R[1, 2, 3], quat_to_rotmat(q[1, 2, 3]))


def test_a_zero_quaternion_gives_the_identity_not_nan():
    torch.testing.assert_close(quat_to_rotmat(torch.zeros(4)), torch.eye(3))


def test_quaternion_convention_is_wxyz_active_rotation():
    """(cos 45°, 0, 0, sin 45°) turns +x into +y (90° about z), as in gsplat/3DGS."""
    c = 2**-0.5
    R = quat_to_rotmat(torch.tensor([c, 0.0, 0.0, c], dtype=torch.float64))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                               torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("seed", SEEDS)
def test_rotmat_to_quat_inverts_quat_to_rotmat_with_w_first_and_non_negative(seed):
    gen = torch.Generator().manual_seed(seed)
    R = random_rotations(gen, 64)
    q = rotmat_to_quat(R)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quat_to_rotmat(q), R)
    expected = torch.from_numpy(np.stack([mat2quat(m) for m in R.numpy()]))
    torch.testing.assert_close(q, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_hamilton_product_composes_like_the_matrix_product(seed):
    gen = torch.Generator().manual_seed(seed)
    R1, R2 = random_rotations(gen, 64), random_rotations(gen, 64)
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(rotmat_to_quat(R1), rotmat_to_quat(R2))), R1 @ R2)


def test_rotmat_to_quat_is_accurate_for_half_turns():
    for axis in torch.eye(3, dtype=torch.float64):
        R = 2 * torch.outer(axis, axis) - torch.eye(3, dtype=torch.float64)  # 180 degrees about axis
        q = rotmat_to_quat(R)
        torch.testing.assert_close(quat_to_rotmat(q), R)
        torch.testing.assert_close(q[1:].abs(), axis)


def test_project_to_rotation_returns_the_nearest_proper_rotation():
    gen = torch.Generator().manual_seed(0)
    R = random_rotations(gen, 16)
    torch.testing.assert_close(project_to_rotation(R), R)
    noisy = R + 0.05 * torch.randn(16, 3, 3, generator=gen, dtype=torch.float64)
    P = project_to_rotation(noisy)
    torch.testing.assert_close(P @ P.mT, torch.eye(3, dtype=torch.float64).expand(16, 3, 3))
    torch.testing.assert_close(torch.linalg.det(P), torch.ones(16, dtype=torch.float64))
    assert ((P - noisy).norm(dim=(-2, -1)) <= (R - noisy).norm(dim=(-2, -1)) + 1e-12).all()


# --------------------------------------------------------------------------- numpy (x, y, z, w)


@pytest.mark.parametrize(("axis", "deg"), AXIS_ANGLES)
def test_ros_order_quaternions_agree_with_rodrigues_both_ways(axis, deg):
    R = rodrigues(axis, deg)
    np.testing.assert_allclose(quat_xyzw_to_matrix(quat_xyzw(axis, deg)), R, atol=1e-12)
    q = matrix_to_quat_xyzw(R)
    assert q.shape == (4,) and q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
    np.testing.assert_allclose(quat_xyzw_to_matrix(q), R, atol=1e-12)


def test_ros_order_and_w_first_describe_the_same_rotation():
    q_wxyz = random_quats(torch.Generator().manual_seed(3), 32)
    for row, R in zip(q_wxyz.numpy(), quat_to_rotmat(q_wxyz).numpy()):
        np.testing.assert_allclose(quat_xyzw_to_matrix(row[[1, 2, 3, 0]]), R, atol=1e-12)


def test_slerp_interpolates_the_angle_and_takes_the_short_way():
    q0, q90 = quat_xyzw((0, 0, 1), 0), quat_xyzw((0, 0, 1), 90)
    np.testing.assert_allclose(quat_xyzw_to_matrix(slerp(q0, q90, 0.25)), rodrigues((0, 0, 1), 22.5), atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_to_matrix(slerp(q0, -q90, 0.5)), rodrigues((0, 0, 1), 45), atol=1e-12)
    np.testing.assert_allclose(slerp(q0, q90, 0.0), q0, atol=1e-15)


# --------------------------------------------------------------------------- numpy (3, 3) matrices


@pytest.mark.parametrize(("turn", "axis"), [(rot_x, (1, 0, 0)), (rot_y, (0, 1, 0)), (rot_z, (0, 0, 1))])
@pytest.mark.parametrize("deg", [-120.0, 0.0, 30.0, 90.0, 180.0])
def test_elementary_rotations_are_active_turns_about_their_axis(turn, axis, deg):
    R = turn(np.radians(deg))
    assert R.shape == (3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(R, rodrigues(axis, deg), atol=1e-15)


def test_rot_z_turns_x_towards_y():
    np.testing.assert_allclose(rot_z(np.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)


def test_rotation_angle_is_accurate_for_tiny_and_large_angles():
    for deg in (1e-6, 0.01, 10.0, 90.0, 179.0):
        assert rotation_angle(rot_z(np.radians(deg))) == pytest.approx(np.radians(deg), rel=1e-9)
    assert rotation_angle(rodrigues((1, 2, 3), 170)) == pytest.approx(np.radians(170), rel=1e-9)


def test_the_optical_frame_looks_along_body_x_with_image_x_to_the_right():
    forward, right, down = R_BODY_OPTICAL @ np.eye(3)[2], R_BODY_OPTICAL @ np.eye(3)[0], R_BODY_OPTICAL @ np.eye(3)[1]
    np.testing.assert_array_equal(forward, [1.0, 0.0, 0.0])  # optical z = body x (forward)
    np.testing.assert_array_equal(right, [0.0, -1.0, 0.0])   # optical x = body -y (right)
    np.testing.assert_array_equal(down, [0.0, 0.0, -1.0])    # optical y = body -z (down)


def test_the_left_matrix_of_a_quaternion_multiplies_like_the_hamilton_product():
    gen = torch.Generator().manual_seed(11)
    a, b = random_quats(gen, 5), random_quats(gen, 5)
    torch.testing.assert_close((quat_left_matrix(a) @ b[..., None])[..., 0], quat_multiply(a, b))
    one = a[0]   # one left factor for many quaternions: a single (N, 4) x (4, 4) product
    torch.testing.assert_close(b @ quat_left_matrix(one).mT, quat_multiply(one.expand_as(b), b))
