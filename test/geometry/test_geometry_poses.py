"""Window normalisation and its exact inverse on cameras and Gaussians (property tests)."""
import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.rotations import quat_to_rotmat
from ilrm_ros.geometry import poses
from ilrm_ros.geometry.poses import Similarity, normalize_window, transform_gaussians, transform_gaussians_torch

_numpy_path = poses._transform_numpy

SEEDS = range(8)


def _random_rotation(gen, *shape, dtype=torch.float64):
    return quat_to_rotmat(torch.randn(*shape, 4, generator=gen, dtype=dtype))


def _random_similarity(gen) -> Similarity:
    scale = float(torch.exp(torch.randn(1, generator=gen, dtype=torch.float64) * 1.5))
    return Similarity(_random_rotation(gen), torch.randn(3, generator=gen, dtype=torch.float64) * 10, scale)


def _random_c2w(gen, v, spread=2.0):
    c2w = torch.eye(4, dtype=torch.float64).repeat(v, 1, 1)
    c2w[:, :3, :3] = _random_rotation(gen, v)
    c2w[:, :3, 3] = torch.randn(v, 3, generator=gen, dtype=torch.float64) * spread + 50.0
    return c2w


def _random_gaussians(gen, n, dtype=torch.float64) -> Gaussians:
    q = torch.randn(n, 4, generator=gen, dtype=dtype)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen, dtype=dtype),
        quats=q / q.norm(dim=-1, keepdim=True),
        scales=torch.rand(n, 3, generator=gen, dtype=dtype) + 0.01,
        opacities=torch.rand(n, generator=gen, dtype=dtype),
        colors=torch.rand(n, 3, generator=gen, dtype=dtype),
    )


def _covariance(g: Gaussians) -> torch.Tensor:
    R = quat_to_rotmat(g.quats)
    return R @ torch.diag_embed(g.scales**2) @ R.mT


@pytest.mark.parametrize("reference", ["first", "mean"])
@pytest.mark.parametrize("seed", SEEDS)
def test_normalized_window_has_unit_extent_and_round_trips(seed, reference):
    gen = torch.Generator().manual_seed(seed)
    c2w = _random_c2w(gen, 6)
    norm, sim = normalize_window(c2w, reference=reference)
    assert norm.shape == c2w.shape and norm.dtype == c2w.dtype
    assert torch.isclose(norm[:, :3, 3].norm(dim=-1).max(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(norm[:, :3, :3] @ norm[:, :3, :3].mT, torch.eye(3, dtype=torch.float64).expand(6, 3, 3))
    torch.testing.assert_close(sim.apply_c2w(norm), c2w)
    if reference == "first":
        torch.testing.assert_close(norm[0], torch.eye(4, dtype=torch.float64))
    else:
        torch.testing.assert_close(norm[:, :3, 3].mean(dim=0), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("seed", SEEDS)
def test_normalization_is_invariant_to_a_similarity_of_the_world(seed):
    """Moving, rotating and scaling the whole world leaves the normalised window unchanged."""
    gen = torch.Generator().manual_seed(seed)
    c2w = _random_c2w(gen, 5)
    world = _random_similarity(gen)
    n1, s1 = normalize_window(c2w)
    n2, s2 = normalize_window(world.apply_c2w(c2w))
    torch.testing.assert_close(n1, n2)
    assert s2.scale == pytest.approx(world.scale * s1.scale)


def test_normalization_in_float32_far_from_the_origin_stays_accurate():
    gen = torch.Generator().manual_seed(9)
    c2w = _random_c2w(gen, 4, spread=0.5)
    c2w[:, :3, 3] += 1000.0
    norm32, sim = normalize_window(c2w.float())
    norm64, _ = normalize_window(c2w)
    assert norm32.dtype == torch.float32
    torch.testing.assert_close(norm32.double(), norm64, atol=1e-4, rtol=0)


def test_degenerate_window_with_coincident_cameras_keeps_unit_scale():
    gen = torch.Generator().manual_seed(10)
    c2w = _random_c2w(gen, 4)
    c2w[:, :3, 3] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # rotating in place
    norm, sim = normalize_window(c2w)
    assert sim.scale == 1.0
    assert torch.isfinite(norm).all()
    torch.testing.assert_close(norm[:, :3, 3], torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(sim.apply_c2w(norm), c2w)
    # A single camera is degenerate as well.
    norm1, sim1 = normalize_window(c2w[:1])
    torch.testing.assert_close(norm1[0], torch.eye(4, dtype=torch.float64))
    assert sim1.scale == 1.0


def test_normalize_window_rejects_bad_input():
    with pytest.raises(ValueError):
        normalize_window(torch.eye(4))
    with pytest.raises(ValueError):
        normalize_window(torch.eye(4).expand(2, 4, 4), reference="median")


@pytest.mark.parametrize("seed", SEEDS)
def test_transformed_gaussians_have_covariance_s2_R_sigma_Rt(seed):
    gen = torch.Generator().manual_seed(seed)
    g = _random_gaussians(gen, 50)
    sim = _random_similarity(gen)
    h = transform_gaussians(g, sim)
    R, s = sim.rotation, sim.scale
    torch.testing.assert_close(h.means, s * g.means @ R.mT + sim.translation)
    torch.testing.assert_close(_covariance(h), s**2 * R @ _covariance(g) @ R.mT)
    torch.testing.assert_close(h.quats.norm(dim=-1), torch.ones(50, dtype=torch.float64))
    assert torch.equal(h.opacities, g.opacities) and torch.equal(h.colors, g.colors)


@pytest.mark.parametrize("seed", SEEDS)
def test_transform_then_inverse_is_identity_on_gaussians(seed):
    gen = torch.Generator().manual_seed(seed)
    g = _random_gaussians(gen, 20)
    sim = _random_similarity(gen)
    back = transform_gaussians(transform_gaussians(g, sim), sim.inverse())
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.scales, g.scales)
    torch.testing.assert_close(_covariance(back), _covariance(g))


def test_gaussians_seen_from_normalized_cameras_look_the_same_in_the_world():
    """A Gaussian's centre and covariance in camera coordinates survive denormalisation (up to s)."""
    gen = torch.Generator().manual_seed(11)
    c2w = _random_c2w(gen, 3)
    norm, sim = normalize_window(c2w)
    g = _random_gaussians(gen, 10)  # predicted in the normalised frame
    w = transform_gaussians(g, sim)
    for i in range(3):
        Rn, tn = norm[i, :3, :3], norm[i, :3, 3]
        Rw, tw = c2w[i, :3, :3], c2w[i, :3, 3]
        cam_n = (g.means - tn) @ Rn
        cam_w = (w.means - tw) @ Rw
        torch.testing.assert_close(cam_w, sim.scale * cam_n)
        torch.testing.assert_close(Rw.mT @ _covariance(w) @ Rw, sim.scale**2 * Rn.mT @ _covariance(g) @ Rn)


def test_transform_gaussians_keeps_batch_dims_and_dtype():
    gen = torch.Generator().manual_seed(12)
    g = _random_gaussians(gen, 6, dtype=torch.float32).map(lambda t: t.expand(2, *t.shape))
    sim = _random_similarity(gen)
    h = transform_gaussians(g, Similarity(sim.rotation.float(), sim.translation.float(), sim.scale))
    assert h.means.shape == (2, 6, 3) and h.quats.shape == (2, 6, 4) and h.means.dtype == torch.float32


def test_similarity_matrix_and_inverse_agree():
    gen = torch.Generator().manual_seed(13)
    sim = _random_similarity(gen)
    torch.testing.assert_close(sim.matrix() @ sim.inverse().matrix(), torch.eye(4, dtype=torch.float64))
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    xh = torch.cat([x, torch.ones(7, 1, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(sim.apply_points(x), (xh @ sim.matrix().mT)[:, :3])


def test_min_scale_keeps_a_narrow_window_at_that_scale_and_leaves_wider_ones_alone():
    c2w = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    c2w[1, 0, 3], c2w[2, 1, 3] = 0.4, 0.2
    norm, sim = normalize_window(c2w, min_scale=2.0)
    assert sim.scale == 2.0 and float(norm[:, :3, 3].norm(dim=-1).max()) == pytest.approx(0.2)
    torch.testing.assert_close(sim.apply_c2w(norm), c2w)
    wide = c2w.clone()
    wide[:, :3, 3] *= 10.0  # 4 m: above the floor, max |t| = 1 as without it
    assert normalize_window(wide, min_scale=2.0)[1].scale == pytest.approx(normalize_window(wide)[1].scale)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_numpy_path_for_float32_cpu_gaussians_matches_its_torch_twin(seed, monkeypatch):
    gen = torch.Generator().manual_seed(seed)
    g = _random_gaussians(gen, 1000, dtype=torch.float32)
    sim64 = _random_similarity(gen)
    sim = Similarity(sim64.rotation.float(), sim64.translation.float(), sim64.scale)
    calls = []
    monkeypatch.setattr(poses, "_transform_numpy", lambda *a: calls.append(1) or _numpy_path(*a))
    fast, twin = transform_gaussians(g, sim), transform_gaussians_torch(g, sim)
    assert calls == [1]
    for name in ("means", "quats", "scales"):
        torch.testing.assert_close(getattr(fast, name), getattr(twin, name), rtol=1e-5, atol=1e-5)
    assert fast.means.dtype == torch.float32 and torch.equal(fast.opacities, g.opacities)


def test_gaussians_that_need_gradients_take_the_torch_path():
    gen = torch.Generator().manual_seed(13)
    g = _random_gaussians(gen, 8, dtype=torch.float32)
    g.means.requires_grad_(True)
    sim64 = _random_similarity(gen)
    h = transform_gaussians(g, Similarity(sim64.rotation.float(), sim64.translation.float(), sim64.scale))
    h.means.sum().backward()
    assert g.means.grad is not None
