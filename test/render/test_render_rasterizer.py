"""The pure-PyTorch rasterizer and the render() entry point, on CPU.

Footprints are checked against closed forms, compositing against a dense per-pixel
reference built on gsplat's own pure-torch projection, gradients against finite differences.
"""
import math

import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render import RasterConfig, normalized_depth, render, render_gaussians
from ilrm_ros.render.blending import _composite_step, _CompositeStep, _pixel_basis
from ilrm_ros.render.projection import covariance_3d, project
from ilrm_ros.render.raster_config import ALPHA_MIN
from ilrm_ros.render.torch_rasterizer import rasterize
from support import look_from


def intrinsics(f: float, cx: float, cy: float, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def cameras(viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> PinholeCameras:
    return PinholeCameras(viewmats, Ks, width, height)


def gaussians(means, quats, scales, opacities, colors) -> Gaussians:
    return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)


def identity_quats(n: int, dtype=torch.float32) -> torch.Tensor:
    q = torch.zeros(n, 4, dtype=dtype)
    q[:, 0] = 1.0
    return q



def random_scene(n: int, seed: int = 0, dtype=torch.float32) -> dict:
    """Gaussians around the origin, seen from a few metres away."""
    gen = torch.Generator().manual_seed(seed)
    return dict(
        means=(torch.rand(n, 3, generator=gen, dtype=dtype) - 0.5) * 2.0,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=dtype), dim=-1),
        scales=torch.rand(n, 3, generator=gen, dtype=dtype) * 0.15 + 0.02,
        opacities=torch.rand(n, generator=gen, dtype=dtype) * 0.9 + 0.05,
        colors=torch.rand(n, 3, generator=gen, dtype=dtype),
    )


def dense_reference(scene: dict, viewmats, Ks, width, height, background, near=0.01, far=1e4):
    """Per-pixel compositing over *all* Gaussians with gsplat's rules, no tiles, no culling boxes.

    Projection comes from gsplat's own pure-torch implementation (independent of ours).
    """
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        scene["means"], covars, viewmats, Ks, width, height, eps2d=0.3, near_plane=near, far_plane=far)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(means2d)
    images, depth_maps, alphas = [], [], []
    for c in range(viewmats.shape[0]):
        valid = (radii[c] > 0).all(-1)
        order = [i for i in torch.argsort(depths[c]).tolist() if valid[i]]
        trans = torch.ones(pix.shape[0], dtype=pix.dtype)
        rgb = torch.zeros(pix.shape[0], 3, dtype=pix.dtype)
        dep = torch.zeros(pix.shape[0], dtype=pix.dtype)
        done = torch.zeros(pix.shape[0], dtype=torch.bool)
        for i in order:
            d = pix - means2d[c, i]
            a, b, cc = conics[c, i]
            sigma = 0.5 * (a * d[:, 0] ** 2 + cc * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
            alpha = (scene["opacities"][i] * torch.exp(-sigma)).clamp(max=0.999)
            use = (alpha >= ALPHA_MIN) & (sigma >= 0) & ~done
            next_t = trans * (1 - alpha)
            done = done | (use & (next_t <= 1e-4))
            use = use & (next_t > 1e-4)
            w = torch.where(use, alpha * trans, 0.0)
            rgb += w[:, None] * scene["colors"][i]
            dep += w * depths[c, i]
            trans = torch.where(use, next_t, trans)
        images.append((rgb + trans[:, None] * background).reshape(height, width, 3))
        depth_maps.append(dep.reshape(height, width))
        alphas.append((1 - trans).reshape(height, width))
    return torch.stack(images), torch.stack(depth_maps), torch.stack(alphas)


def test_isotropic_gaussian_footprint_matches_the_analytic_gaussian():
    width = height = 33
    f, z, opacity = 40.0, 4.0, 0.8
    # centre on the middle pixel's centre; pick the scale so that the dilated variance is 4 px²
    K = intrinsics(f, 16.5, 16.5)[None]
    scale = math.sqrt(4.0 - 0.3) * z / f
    color, bg = torch.tensor([1.0, 0.5, 0.25]), torch.tensor([0.0, 0.2, 1.0])
    out = render(gaussians(torch.tensor([[0.0, 0.0, z]]), identity_quats(1), torch.full((1, 3), scale),
                           torch.tensor([opacity]), color[None]),
                 cameras(torch.eye(4)[None], K, width, height), background=bg)

    ys, xs = torch.meshgrid(torch.arange(height) - 16.0, torch.arange(width) - 16.0, indexing="ij")
    expected = opacity * torch.exp(-(xs**2 + ys**2) / (2 * 4.0))
    expected = torch.where(expected >= ALPHA_MIN, expected, 0.0)
    assert out.alpha[0, 16, 16] == pytest.approx(opacity, abs=1e-6)  # the peak is the opacity
    torch.testing.assert_close(out.alpha[0], expected, atol=2e-6, rtol=0)
    # alpha halves first at ceil(σ·sqrt(2 ln 2)) = 3 pixels from the centre
    row = out.alpha[0, 16, 16:]
    assert int(torch.nonzero(row < opacity / 2)[0]) == 3
    torch.testing.assert_close(out.rgb[0], expected[..., None] * color + (1 - expected[..., None]) * bg,
                               atol=2e-6, rtol=0)
    torch.testing.assert_close(out.depth[0], expected * z, atol=1e-5, rtol=0)


def test_alpha_of_a_single_gaussian_is_clamped_to_0999():
    out = render(gaussians(torch.tensor([[0.0, 0.0, 3.0]]), identity_quats(1), torch.full((1, 3), 0.3),
                           torch.ones(1), torch.ones(1, 3)),
                 cameras(torch.eye(4)[None], intrinsics(20, 8.5, 8.5)[None], 16, 16))
    assert out.alpha.max().item() == pytest.approx(0.999, abs=1e-6)


def test_rotation_quaternion_is_w_first():
    """An x-elongated Gaussian turned 90° about the optical axis (w,x,y,z) becomes y-elongated."""
    cams = cameras(torch.eye(4)[None], intrinsics(30.0, 10.0, 10.0)[None], 20, 20)
    kw = dict(means=torch.tensor([[0.0, 0.0, 3.0]]), scales=torch.tensor([[0.4, 0.1, 0.1]]),
              opacities=torch.tensor([0.9]), colors=torch.ones(1, 3))
    flat = render(gaussians(quats=identity_quats(1), **kw), cams).alpha[0]
    half = math.sqrt(0.5)
    turned = render(gaussians(quats=torch.tensor([[half, 0.0, 0.0, half]]), **kw), cams).alpha[0]
    assert (flat[10, :] > 0.1).sum() > 2 * (flat[:, 10] > 0.1).sum()  # wide along x
    torch.testing.assert_close(turned, flat.T, atol=1e-5, rtol=0)


def test_near_opaque_gaussian_hides_a_farther_one_whatever_the_input_order():
    red_near = dict(mean=[0.0, 0.0, 2.0], color=[1.0, 0.0, 0.0])
    blue_far = dict(mean=[0.0, 0.0, 4.0], color=[0.0, 0.0, 1.0])
    K = intrinsics(20.0, 8.0, 8.0)[None]

    def draw(items):
        return render(gaussians(torch.tensor([i["mean"] for i in items]), identity_quats(2), torch.full((2, 3), 0.5),
                                torch.full((2,), 0.99), torch.tensor([i["color"] for i in items])),
                      cameras(torch.eye(4)[None], K, 16, 16))

    a, b = draw([red_near, blue_far]), draw([blue_far, red_near])
    centre = a.rgb[0, 8, 8]
    assert centre[0] > 0.95 and centre[2] < 0.05
    assert a.expected_depth()[0, 8, 8] == pytest.approx(2.0, abs=0.05)
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.depth, b.depth)


def test_pixel_stops_before_transmittance_would_drop_to_1e_minus_4():
    """gsplat's rule: the Gaussian that would bring T to ≤ 1e-4 and everything behind it are skipped."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    colors = torch.eye(3)
    out = render(gaussians(means, identity_quats(3), torch.full((3, 3), 0.5), torch.ones(3), colors),
                 cameras(torch.eye(4)[None], intrinsics(20.0, 8.5, 8.5)[None], 16, 16), background=torch.ones(3))
    # first: α = 0.999 -> T = 1e-3; the second would give T = 1e-6, so the pixel is done
    torch.testing.assert_close(out.rgb[0, 8, 8], torch.tensor([0.999 + 0.001, 0.001, 0.001]), atol=1e-6, rtol=0)
    assert out.alpha[0, 8, 8].item() == pytest.approx(0.999, abs=1e-6)


def test_tiled_compositing_matches_a_dense_per_pixel_reference():
    scene = random_scene(40, seed=1)
    scene["scales"] = scene["scales"] * 2.5  # overlapping, partly saturating footprints
    c2w = torch.stack([look_from([0.3, -0.4, -3.5]), look_from([-2.0, 0.5, -2.5])])
    viewmats = torch.linalg.inv(c2w)
    Ks = torch.stack([intrinsics(30.0, 18.0, 11.0), intrinsics(26.0, 17.0, 12.5)])
    bg = torch.tensor([0.1, 0.5, 0.9])
    out = render(Gaussians(**scene), cameras(viewmats, Ks, 37, 23), background=bg)
    rgb, depth, alpha = dense_reference(scene, viewmats, Ks, 37, 23, bg)
    assert alpha.mean() > 0.3 and (alpha > 0.99).any()  # overlaps, some pixels saturate
    torch.testing.assert_close(out.rgb, rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=1e-3, rtol=0)


def test_projection_matches_gsplat_pure_torch_projection():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    scene = random_scene(200, seed=2)
    scene["means"][:20, 2] = -4.0  # some behind the camera
    viewmats = torch.linalg.inv(look_from([0.5, -0.5, -3.0]))[None]
    Ks = intrinsics(40.0, 30.0, 20.0)[None]
    ours = project(Gaussians(**scene), cameras(viewmats, Ks, 60, 40))
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], compute_preci=False)
    torch.testing.assert_close(covariance_3d(scene["quats"], scene["scales"]), covars)
    radii, means2d, depths, conics, _ = _fully_fused_projection(scene["means"], covars, viewmats, Ks, 60, 40)
    vis = ours.visible
    assert 50 < int(vis.sum()) <= 180
    assert not vis[0, :20].any()
    assert ((radii[vis] > 0).all(-1)).all()  # everything we keep, gsplat keeps
    torch.testing.assert_close(ours.means2d[vis], means2d[vis])
    torch.testing.assert_close(ours.depths[vis], depths[vis])
    torch.testing.assert_close(ours.conics[vis], conics[vis], rtol=1e-4, atol=1e-6)
    assert (ours.radii[vis] <= radii[vis]).all()  # opacity-aware boxes are never larger


def _tiny_differentiable_scene(dtype=torch.float64):
    means = torch.tensor([[0.1, -0.2, 3.0], [-0.3, 0.2, 3.5], [0.2, 0.3, 4.0]], dtype=dtype)
    quats = torch.nn.functional.normalize(torch.tensor(
        [[0.9, 0.1, -0.2, 0.3], [0.5, 0.5, 0.1, -0.4], [0.2, -0.7, 0.6, 0.1]], dtype=dtype), dim=-1)
    scales = torch.tensor([[0.3, 0.2, 0.25], [0.4, 0.2, 0.3], [0.3, 0.5, 0.2]], dtype=dtype)
    opacities = torch.tensor([0.7, 0.5, 0.9], dtype=dtype)
    colors = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.7]], dtype=dtype)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)


@pytest.mark.parametrize("analytic", [True, False], ids=["hand-written-backward", "autograd-reference"])
@pytest.mark.parametrize("name", ["means", "quats", "scales", "opacities", "colors"])
def test_gradients_match_finite_differences(name, analytic):
    """d/dx of a random projection of (rgb, depth, alpha), central differences in float64."""
    dtype = torch.float64
    scene = _tiny_differentiable_scene(dtype)
    viewmats = torch.eye(4, dtype=dtype)[None]
    Ks = intrinsics(14.0, 6.1, 5.9, dtype)[None]
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=dtype)
    cfg = RasterConfig(tile_size=4, chunk=2, analytic_backward=analytic)  # several tiles and steps
    gen = torch.Generator().manual_seed(7)
    probes = [torch.randn(1, 12, 12, 3, generator=gen, dtype=dtype),
              torch.randn(1, 12, 12, generator=gen, dtype=dtype),
              torch.randn(1, 12, 12, generator=gen, dtype=dtype)]

    def loss(x):
        outs = rasterize(Gaussians(**{**scene, name: x}), cameras(viewmats, Ks, 12, 12), background=bg, config=cfg)
        return sum((o * p).sum() for o, p in zip(outs, probes))

    x = scene[name].clone().requires_grad_(True)
    loss(x).backward()
    eps = 1e-6
    numeric = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            step = torch.zeros_like(x).view(-1)
            step[i] = eps
            step = step.view_as(x)
            numeric.view(-1)[i] = (loss(x + step) - loss(x - step)) / (2 * eps)
    assert numeric.abs().max() > 1e-3  # the probe actually depends on this input
    torch.testing.assert_close(x.grad, numeric, atol=1e-6, rtol=1e-4)


def test_hand_written_step_backward_matches_autograd_of_the_reference_step():
    """Random compositing steps, including saturating pixels, clamped and skipped alphas, done pixels."""
    gen = torch.Generator().manual_seed(11)
    dtype = torch.float64
    basis = _pixel_basis(4, dtype, torch.device("cpu"))
    coef = torch.randn(5, 6, 24, generator=gen, dtype=dtype) * 0.05
    coef[:, 5] = torch.rand(5, 24, generator=gen, dtype=dtype) * 5 - 6.0  # log-alphas e^-6 (skipped) .. e^-1
    coef[1, 5, ::3] = 1.0  # alpha clamped to 0.999: these pixels saturate
    feats = torch.cat([torch.rand(5, 24, 3, generator=gen, dtype=dtype), torch.ones(5, 24, 1, dtype=dtype)], -1)
    trans = torch.rand(5, 16, generator=gen, dtype=dtype)
    trans[0, :4] = 0.0  # pixels already done
    grad_out = torch.randn(5, 16, 4, generator=gen, dtype=dtype)

    def grads(fn):
        inputs = [t.clone().requires_grad_(True) for t in (coef, feats, trans)]
        out, done = fn(basis, *inputs)
        (out * grad_out).sum().backward()
        return out.detach(), done, [t.grad for t in inputs]

    out_ref, done_ref, grads_ref = grads(_composite_step)
    out, done, grads_fast = grads(_CompositeStep.apply)
    assert done_ref.any() and not done_ref.all()  # some pixels saturate within the step
    torch.testing.assert_close(out, out_ref)
    assert torch.equal(done, done_ref)
    for fast, ref in zip(grads_fast, grads_ref):
        torch.testing.assert_close(fast, ref)


def test_gradients_reach_every_gaussian_input_in_float32():
    scene = {k: v.float().requires_grad_(True) for k, v in _tiny_differentiable_scene().items()}
    out = render(Gaussians(**scene), cameras(torch.eye(4)[None], intrinsics(14.0, 6.0, 6.0)[None], 12, 12))
    (out.rgb.sum() + out.depth.sum()).backward()
    for name, t in scene.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_empty_scene_renders_the_background_with_zero_alpha():
    bg = torch.tensor([0.3, 0.6, 0.9])
    out = render(Gaussians.empty(), cameras(torch.eye(4)[None].repeat(2, 1, 1), intrinsics(10, 5, 4)[None].repeat(2, 1, 1),
                                            10, 8), background=bg)
    assert out.rgb.shape == (2, 8, 10, 3) and out.depth.shape == (2, 8, 10) and out.alpha.shape == (2, 8, 10)
    assert torch.equal(out.rgb, bg.expand(2, 8, 10, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()


@pytest.mark.parametrize("z", [-3.0, 0.0, 0.005, 2e4], ids=["behind", "at-camera", "inside-near", "beyond-far"])
def test_gaussians_outside_the_depth_range_are_invisible(z):
    means = torch.tensor([[0.0, 0.0, z]], requires_grad=True)
    out = render(gaussians(means, identity_quats(1), torch.full((1, 3), 0.5), torch.ones(1), torch.ones(1, 3)),
                 cameras(torch.eye(4)[None], intrinsics(20, 8.5, 8.5)[None], 16, 16))
    assert (out.alpha == 0).all() and (out.rgb == 0).all()
    out.rgb.sum().backward()  # still differentiable, with zero gradient
    assert torch.equal(means.grad, torch.zeros_like(means))


def test_off_image_gaussians_are_culled():
    out = render(gaussians(torch.tensor([[5.0, 0.0, 3.0]]), identity_quats(1), torch.full((1, 3), 0.05),
                           torch.ones(1), torch.ones(1, 3)),
                 cameras(torch.eye(4)[None], intrinsics(20, 8.5, 8.5)[None], 16, 16))
    assert (out.alpha == 0).all()


def test_a_batch_of_cameras_equals_rendering_each_camera_alone():
    scene = random_scene(60, seed=3)
    c2w = torch.stack([look_from(p) for p in ([0.0, 0.0, -4.0], [3.0, -1.0, -2.0], [-2.5, 0.5, 2.5])])
    Ks = torch.stack([intrinsics(28.0, 16.0, 12.0)] * 3)
    together = render(Gaussians(**scene), cameras(torch.linalg.inv(c2w), Ks, 32, 24))
    for c in range(3):
        alone = render(Gaussians(**scene), cameras(torch.linalg.inv(c2w[c:c + 1]), Ks[c:c + 1], 32, 24))
        torch.testing.assert_close(together.rgb[c], alone.rgb[0])
        torch.testing.assert_close(together.depth[c], alone.depth[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(together.rgb[0], together.rgb[1])


def test_background_is_blended_by_the_remaining_transmittance():
    scene = random_scene(30, seed=4)
    cams = cameras(torch.linalg.inv(look_from([0.0, 0.0, -4.0]))[None], intrinsics(20.0, 12.0, 12.0)[None], 24, 24)
    white = render(Gaussians(**scene), cams, background=torch.ones(3))
    black = render(Gaussians(**scene), cams)
    torch.testing.assert_close(white.rgb - black.rgb, (1 - black.alpha)[..., None].expand(-1, -1, -1, 3),
                               atol=1e-6, rtol=0)
    assert (black.alpha == 0).any() and (black.alpha > 0.5).any()


@pytest.mark.parametrize("cfg", [RasterConfig(tile_size=8), RasterConfig(tile_size=4, chunk=3),
                                 RasterConfig(tile_size=16, chunk=4, max_pairs=256 * 4)],
                         ids=["tile8", "tile4-chunk3", "tiny-memory-budget"])
def test_result_does_not_depend_on_tiling_chunking_or_memory_budget(cfg):
    scene = random_scene(80, seed=5)
    cams = cameras(torch.linalg.inv(look_from([0.5, 0.2, -3.5]))[None], intrinsics(30.0, 20.0, 15.0)[None], 40, 30)
    ref = render(Gaussians(**scene), cams, background=torch.ones(3))
    other = render(Gaussians(**scene), cams, background=torch.ones(3), raster_config=cfg)
    torch.testing.assert_close(other.rgb, ref.rgb, atol=2e-5, rtol=0)
    torch.testing.assert_close(other.alpha, ref.alpha, atol=2e-5, rtol=0)


def test_render_gaussians_converts_camera_to_world_poses():
    g = Gaussians(means=torch.tensor([[1.0, 0.0, 5.0]]), quats=identity_quats(1), scales=torch.full((1, 3), 0.2),
                  opacities=torch.tensor([0.9]), colors=torch.ones(1, 3))
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([1.0, 0.0, 1.0])  # camera 1 m right of and 1 m behind the origin
    out = render_gaussians(g, c2w[None], intrinsics(20.0, 10.0, 10.0)[None], 20, 20)
    peak = torch.nonzero(out.alpha[0] == out.alpha[0].max())[0].tolist()
    assert peak == [9, 9] or peak == [10, 10] or out.alpha[0, 9:11, 9:11].max() == out.alpha.max()
    assert out.expected_depth()[0, 9:11, 9:11].mean().item() == pytest.approx(4.0, abs=1e-3)
    # a batched Gaussians container (B, N, k) and an unbatched pose render the same
    batched = g.map(lambda t: t[None])
    torch.testing.assert_close(render_gaussians(batched, c2w, intrinsics(20.0, 10.0, 10.0), 20, 20).rgb, out.rgb)


def test_normalized_depth_divides_accumulated_depth_by_alpha():
    depth = torch.tensor([[[2.0, 0.0, 1e-9]]])
    alpha = torch.tensor([[[0.5, 0.0, 1e-9]]])
    torch.testing.assert_close(normalized_depth(depth, alpha), torch.tensor([[[4.0, 0.0, 0.0]]]))


def test_cpu_tensors_never_reach_gsplat():
    scene = random_scene(5)
    args = (Gaussians(**scene), cameras(torch.eye(4)[None], intrinsics(10, 5, 5)[None], 10, 10))
    with pytest.raises(ValueError, match="CUDA"):
        render(*args, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        render(*args, backend="opengl")
    torch.testing.assert_close(render(*args).rgb, render(*args, backend="torch").rgb)


def test_bad_shapes_are_rejected_with_the_field_name():
    scene = random_scene(5)
    scene["opacities"] = scene["opacities"][:, None]
    with pytest.raises(ValueError, match="opacities"):
        render(Gaussians(**scene), cameras(torch.eye(4)[None], intrinsics(10, 5, 5)[None], 10, 10))


def test_surface_depth_is_depth_over_alpha_where_something_was_hit_and_nan_elsewhere():
    from ilrm_ros.render.render import RenderOutput

    depth = torch.tensor([[[1.0, 0.3, 0.0]]])
    alpha = torch.tensor([[[0.5, 0.2, 0.0]]])
    out = RenderOutput(rgb=torch.zeros(1, 1, 3, 3), depth=depth, alpha=alpha)
    d = out.surface_depth(0.25)
    assert d[0, 0, 0] == pytest.approx(2.0)
    assert torch.isnan(d[0, 0, 1:]).all()  # alpha 0.2 <= 0.25 and nothing hit
    assert out.surface_depth(0.1)[0, 0, 1] == pytest.approx(1.5)
