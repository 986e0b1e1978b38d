"""Window pose normalisation per architecture, and the exact way back to metres (geometry/normalization.py)."""
import math

import pytest
import torch

from ilrm_ros.geometry.normalization import RE10K_SPREAD, mean_camera_frame, normalize_cameras
from ilrm_ros.core.rotations import quat_to_rotmat
from ilrm_ros.geometry.poses import transform_gaussians
from ilrm_ros.core.gaussians import Gaussians


def _pose(R: torch.Tensor, t) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, torch.as_tensor(t, dtype=torch.float64)
    return T


def _yaw(deg: float) -> torch.Tensor:
    """Rotation about the camera's y (down) axis."""
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def _window(n: int = 4, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.2 + torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    R = quat_to_rotmat(q)
    t = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.4 + torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)
    return torch.stack([_pose(R[i], t[i]) for i in range(n)])


def test_mean_camera_frame_of_two_cameras_turned_symmetrically_is_their_mean_pose():
    c2w = torch.stack([_pose(_yaw(20), [0.0, 0, 0]), _pose(_yaw(-20), [2.0, 0, 0])])
    R, t = mean_camera_frame(c2w)
    torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64))  # right, down, forward = x, y, z
    torch.testing.assert_close(t, torch.tensor([1.0, 0, 0], dtype=torch.float64))


@pytest.mark.parametrize("method", ["ilrm_ros", "ilrm_ros_floor", "re10k", "wide"])
def test_every_rule_returns_the_similarity_that_maps_the_normalised_cameras_back(method):
    c2w = _window()
    norm, sim = normalize_cameras(c2w, method)
    torch.testing.assert_close(sim.apply_c2w(norm), c2w)
    torch.testing.assert_close(norm[:, :3, :3] @ norm[:, :3, :3].mT, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))


def test_wide_rule_is_the_mean_frame_with_largest_translation_coordinate_one():
    c2w = _window()
    norm, sim = normalize_cameras(c2w, "wide")
    R, t = mean_camera_frame(c2w)
    expected = (c2w[:, :3, 3] - t) @ R
    expected = expected / expected.abs().max()
    torch.testing.assert_close(norm[:, :3, 3], expected)
    torch.testing.assert_close(norm[:, :3, :3], R.T @ c2w[:, :3, :3])
    assert norm[:, :3, 3].abs().max().item() == pytest.approx(1.0)


def test_re10k_rule_scales_the_spread_seen_from_the_first_camera_to_the_documented_value():
    # Two cameras 0.3 m apart along the first camera's x axis: spread 0.3 m -> RE10K_SPREAD units.
    c2w = torch.stack([_pose(_yaw(30), [1.0, 2.0, 3.0]), _pose(_yaw(30), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
                                                        + 0.3 * _yaw(30)[:, 0])])
    norm, sim = normalize_cameras(c2w, "re10k")
    assert sim.scale == pytest.approx(0.3 / RE10K_SPREAD)
    baseline = (norm[1, :3, 3] - norm[0, :3, 3]).norm().item()
    assert baseline == pytest.approx(RE10K_SPREAD)
    torch.testing.assert_close(norm[:, :3, 3].mean(0), torch.zeros(3, dtype=torch.float64))  # mean-camera origin


def test_a_camera_rotating_in_place_keeps_metres():
    c2w = torch.stack([_pose(_yaw(a), [1.0, 0, 0]) for a in (0, 15, 30)])
    for method in ("re10k", "wide"):
        norm, sim = normalize_cameras(c2w, method)
        assert sim.scale == 1.0 and torch.isfinite(norm).all()


@pytest.mark.parametrize("method", ["ilrm_ros", "ilrm_ros_floor", "re10k", "wide"])
def test_gaussians_a_model_places_on_a_known_wall_land_on_it_in_metres(method):
    """Known scene: a wall at z = 4 m in front of the cameras. A perfect model sees the window in
    its normalised frame, where the wall is at (4 - t_z)/s along the frame's axes; its Gaussians,
    mapped back by the returned similarity, must lie on the wall, with sizes in metres."""
    c2w = torch.stack([_pose(_yaw(a), [x, 0.1 * x, 0.0]) for a, x in ((5, 0.0), (-5, 0.25), (0, 0.5))])
    norm, sim = normalize_cameras(c2w, method)
    # Points on the wall, written in the normalised frame with the *documented* rule, computed here
    # independently of the code under test.
    wall = torch.tensor([[u, v, 4.0] for u in (-1.0, 0.0, 1.5) for v in (-0.5, 0.5)], dtype=torch.float64)
    if method in ("ilrm_ros", "ilrm_ros_floor"):
        R, t = c2w[0, :3, :3], c2w[0, :3, 3]
        s = ((c2w[:, :3, 3] - t) @ R).norm(dim=-1).max()
        if method == "ilrm_ros_floor":  # this 0.5 m window is under the 1 m floor: metres
            s = max(float(s), 1.0)
    else:
        R, t = mean_camera_frame(c2w)
        if method == "wide":
            s = ((c2w[:, :3, 3] - t) @ R).abs().max()
        else:
            s = ((c2w[:, :3, 3] - c2w[0, :3, 3]) @ c2w[0, :3, :3]).abs().max() / RE10K_SPREAD
    seen = ((wall - t) @ R) / s
    g = Gaussians(means=seen.float(), quats=torch.tensor([[1.0, 0, 0, 0]]).expand(6, 4),
                  scales=torch.full((6, 3), 0.01), opacities=torch.ones(6), colors=torch.ones(6, 3))
    back = transform_gaussians(g, sim)
    torch.testing.assert_close(back.means.double(), wall, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.scales.double(), torch.full((6, 3), 0.01 * float(s), dtype=torch.float64),
                               atol=1e-7, rtol=1e-5)


def test_unknown_rules_are_refused():
    with pytest.raises(ValueError, match="pose normalisation"):
        normalize_cameras(_window(), "colmap")


def test_floor_rule_keeps_metres_for_narrow_windows_and_matches_ilrm_ros_for_wide_ones():
    from ilrm_ros.geometry.normalization import ILRM_ROS_FLOOR_M

    narrow = torch.stack([_pose(torch.eye(3), [0, 0, 0]), _pose(_yaw(5), [0.3, 0, 0]), _pose(_yaw(-5), [0.1, 0.05, 0])])
    c2w_n, sim = normalize_cameras(narrow.double(), "ilrm_ros_floor")
    assert sim.scale == pytest.approx(ILRM_ROS_FLOOR_M)  # a 0.3 m window: 1 m per unit, not 0.3
    assert float(c2w_n[:, :3, 3].norm(dim=-1).max()) == pytest.approx(0.3, abs=1e-9)
    wide = narrow.clone().double()
    wide[:, :3, 3] *= 10.0  # 3 m: above the floor, the same frame and scale as "ilrm_ros"
    a, sa = normalize_cameras(wide, "ilrm_ros_floor")
    b, sb = normalize_cameras(wide, "ilrm_ros")
    assert sa.scale == pytest.approx(sb.scale) == pytest.approx(3.0)
    assert torch.allclose(a, b)
