"""Rays and intrinsics: pixel-centre convention, Plücker identities, strided grids."""
import math

import pytest
import torch

from ilrm_ros.geometry.cameras import (
    PinholeCameras,
    camera_rays,
    denormalize_intrinsics,
    normalize_intrinsics,
    pixel_centers,
    plucker_rays,
    ray_features,
    rays_through_pixels,
    scale_intrinsics,
)
from ilrm_ros.core.rotations import quat_to_rotmat


def _random_cameras(b: int, v: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.randn(b, v, 4, generator=gen, dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(b, v, 1, 1)
    c2w[..., :3, :3] = quat_to_rotmat(q)
    c2w[..., :3, 3] = torch.randn(b, v, 3, generator=gen, dtype=torch.float64) * 3
    K = torch.zeros(b, v, 3, 3, dtype=torch.float64)
    K[..., 0, 0] = 40 + 20 * torch.rand(b, v, generator=gen, dtype=torch.float64)
    K[..., 1, 1] = 40 + 20 * torch.rand(b, v, generator=gen, dtype=torch.float64)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = 17.0, 13.0, 1.0
    return c2w, K


def _project(c2w: torch.Tensor, K: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """World points (..., N, 3) -> pixel coordinates (..., N, 2)."""
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    Xc = (X - t[..., None, :]) @ R
    uvw = Xc @ K.mT
    return uvw[..., :2] / uvw[..., 2:]


def test_pixel_centers_sit_at_half_integers_and_scale_with_stride():
    uv = pixel_centers(4, 6)
    assert uv.shape == (4, 6, 2)
    assert uv[0, 0].tolist() == [0.5, 0.5]
    assert uv[3, 5].tolist() == [5.5, 3.5]
    uv2 = pixel_centers(4, 6, stride=2)
    assert uv2.shape == (2, 3, 2)
    assert uv2[0, 0].tolist() == [1.0, 1.0]  # centre of the 2x2 block of pixels 0..1
    assert uv2[1, 2].tolist() == [5.0, 3.0]
    with pytest.raises(ValueError):
        pixel_centers(5, 6, stride=2)


def test_points_along_each_ray_project_back_to_their_pixel():
    gen = torch.Generator().manual_seed(1)
    c2w, K = _random_cameras(2, 3, gen)
    H, W = 8, 12
    o, d = camera_rays(c2w, K, H, W)
    assert o.shape == d.shape == (2, 3, H, W, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 3, H, W, dtype=torch.float64))
    X = (o + 2.5 * d).reshape(2, 3, H * W, 3)
    uv = _project(c2w, K, X)
    torch.testing.assert_close(uv, pixel_centers(H, W, dtype=torch.float64).reshape(H * W, 2).expand_as(uv))
    # Rays point forward (+z in the camera frame).
    z_cam = (d.reshape(2, 3, -1, 3) @ c2w[..., :3, :3])[..., 2]
    assert (z_cam > 0).all()


def test_strided_rays_equal_full_res_rays_of_resized_intrinsics():
    gen = torch.Generator().manual_seed(2)
    c2w, K = _random_cameras(1, 2, gen)
    _, d_strided = camera_rays(c2w, K, 16, 8, stride=2)
    _, d_resized = camera_rays(c2w, scale_intrinsics(K, 0.5), 8, 4, stride=1)
    torch.testing.assert_close(d_strided, d_resized)


def test_plucker_moment_is_origin_cross_direction_and_orthogonal_to_direction():
    gen = torch.Generator().manual_seed(3)
    c2w, K = _random_cameras(1, 2, gen)
    r = plucker_rays(c2w, K, 8, 8)
    assert r.shape == (1, 2, 6, 8, 8)
    m, d = r[:, :, :3], r[:, :, 3:]
    torch.testing.assert_close((m * d).sum(dim=2), torch.zeros(1, 2, 8, 8, dtype=torch.float64))
    # The moment does not depend on which point of the line is used as origin.
    o, dd = camera_rays(c2w, K, 8, 8)
    shifted = ray_features(o + 3.0 * dd, dd, "plucker6")
    torch.testing.assert_close(shifted.movedim(-1, -3), r)


def test_plucker9_layout_is_origin_direction_moment():
    gen = torch.Generator().manual_seed(4)
    c2w, K = _random_cameras(1, 1, gen)
    r9 = plucker_rays(c2w, K, 8, 8, stride=2, encoding="plucker9")
    r6 = plucker_rays(c2w, K, 8, 8, stride=2)
    assert r9.shape == (1, 1, 9, 4, 4)
    torch.testing.assert_close(r9[:, :, 0:3], c2w[:, :, :3, 3, None, None].expand(1, 1, 3, 4, 4))
    torch.testing.assert_close(r9[:, :, 3:6], r6[:, :, 3:6])
    torch.testing.assert_close(r9[:, :, 6:9], r6[:, :, 0:3])
    with pytest.raises(ValueError):
        ray_features(r9[..., :3, 0, 0], r9[..., 3:6, 0, 0], "plucker7")


def test_rays_through_pixels_handle_skew():
    c2w = torch.eye(4, dtype=torch.float64)
    K = torch.tensor([[50.0, 5.0, 10.0], [0.0, 40.0, 8.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    uv = torch.tensor([[3.0, 7.0], [10.0, 8.0]], dtype=torch.float64)
    d = rays_through_pixels(c2w, K, uv)
    proj = (d @ K.mT)
    torch.testing.assert_close(proj[:, :2] / proj[:, 2:], uv)
    torch.testing.assert_close(d[1], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_normalized_intrinsics_round_trip_and_divide_by_image_size():
    K = torch.tensor([[100.0, 0.0, 64.0], [0.0, 90.0, 48.0], [0.0, 0.0, 1.0]])
    Kn = normalize_intrinsics(K, height=96, width=128)
    assert math.isclose(Kn[0, 0].item(), 100 / 128) and math.isclose(Kn[1, 2].item(), 0.5)
    assert Kn[2].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(denormalize_intrinsics(Kn, 96, 128), K)


def test_pinhole_cameras_from_poses_hold_world_to_camera_matrices_of_one_or_many_views():
    c2w, K = _random_cameras(1, 3, torch.Generator().manual_seed(4))
    cams = PinholeCameras.from_c2w(c2w[0], K[0], 34, 26)
    assert len(cams) == 3 and (cams.width, cams.height) == (34, 26)
    torch.testing.assert_close(cams.viewmats @ c2w[0], torch.eye(4, dtype=torch.float64).expand(3, 4, 4))
    one = PinholeCameras.from_c2w(c2w[0, 1], K[0, 1], 34, 26)
    assert one.viewmats.shape == (1, 4, 4) and one.Ks.shape == (1, 3, 3)
    torch.testing.assert_close(one.viewmats[0], cams.viewmats[1])
