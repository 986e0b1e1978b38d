"""The compiled CPU compositing kernel (render/native.py) computes what the torch steps compute.

The torch steps of ``blending.composite`` are its reference twin: same images, depths, alphas
and gradients (float32 tolerance) on random scenes, several tile sizes, opaque and sparse
scenes, and cameras that see nothing. On a machine with a C compiler the kernel must build:
``make setup`` builds it, so a missing library there is a failure, not a skip.
"""
import shutil
from dataclasses import replace

import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render import RasterConfig, native
from ilrm_ros.render.blending import bin_to_tiles
from ilrm_ros.render.projection import project
from ilrm_ros.render.torch_rasterizer import rasterize
from support import look_from

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and native.load() is None,
                                reason="no C compiler and no built kernel on this machine")


def test_the_kernel_is_built_where_a_compiler_exists(capsys):
    assert native.status() == "", native.status()
    assert native.cli_main([]) == 0 and "loaded from" in capsys.readouterr().out  # `ilrm-ros kernels`


def test_a_build_into_another_folder_loads_and_without_a_library_the_twins_run(tmp_path, monkeypatch):
    built = native.build(tmp_path / "lib.so")
    monkeypatch.setenv(native.ENV_PATH, str(built))
    native.reload()
    try:
        assert native.status() == ""
        monkeypatch.setenv(native.ENV_PATH, str(tmp_path / "missing.so"))
        native.reload()
        assert native.load() is None and "not built" in native.status()
        fields, cams = scene(50, 9), rig(1, 16, 16)   # without the library the torch twins draw
        fallback, _ = run(fields, cams, RasterConfig(), grad=False)
        twins, _ = run(fields, cams, RasterConfig(native=False), grad=False)
        assert all(torch.equal(a, b) for a, b in zip(fallback, twins))
    finally:
        monkeypatch.delenv(native.ENV_PATH)
        native.reload()
    assert native.status() == ""


def assert_close_but_for_flips(a: torch.Tensor, b: torch.Tensor, atol: float, flip: float, share: float = 2e-3):
    """a ≈ b within atol, except a share of elements may differ by up to ``flip``: the two evaluate the
    exponent in different orders (the reference from its tile's centre), so an alpha at the 1/255 cut or a
    transmittance at the 1e-4 stop may fall on the other side of it."""
    diff = (a - b).abs()
    assert float(diff.max()) <= flip, float(diff.max())
    assert float((diff > atol).float().mean()) <= share, float((diff > atol).float().mean())


def scene(n: int, seed: int, opacity: tuple[float, float] = (0.05, 0.95), spread: float = 2.0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return dict(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * spread,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        scales=torch.rand(n, 3, generator=gen) * 0.15 + 0.01,
        opacities=torch.rand(n, generator=gen) * (opacity[1] - opacity[0]) + opacity[0],
        colors=torch.rand(n, 3, generator=gen),
    )


def rig(n_cams: int, width: int, height: int) -> PinholeCameras:
    eyes = [(0.3 * c - 0.2, -0.1 * c, -3.0 + 0.2 * c) for c in range(n_cams)]
    viewmats = torch.stack([torch.linalg.inv(look_from(e)) for e in eyes])
    f = 0.9 * max(width, height)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).expand(n_cams, 3, 3)
    return PinholeCameras(viewmats, K.contiguous(), width, height)


def run(fields: dict, cams: PinholeCameras, config: RasterConfig, grad: bool):
    leaves = {k: v.clone().requires_grad_(grad) for k, v in fields.items()}
    rgb, depth, alpha = rasterize(Gaussians(**leaves), cams, background=torch.tensor([0.2, 0.3, 0.4]), config=config)
    grads = {}
    if grad:
        gen = torch.Generator().manual_seed(1)
        weights = [torch.rand(t.shape, generator=gen) for t in (rgb, depth, alpha)]
        loss = sum((w * t).sum() for w, t in zip(weights, (rgb, depth, alpha)))
        loss.backward()
        grads = {k: v.grad for k, v in leaves.items()}
    return (rgb.detach(), depth.detach(), alpha.detach()), grads


@pytest.mark.parametrize("tile_size", [4, 8, 16])
@pytest.mark.parametrize("case", ["mixed", "opaque", "sparse"])
def test_kernel_matches_the_torch_steps_forward_and_backward(tile_size, case):
    params = {"mixed": dict(n=300, seed=0), "opaque": dict(n=400, seed=1, opacity=(0.9, 1.0)),
              "sparse": dict(n=40, seed=2, spread=4.0)}[case]
    fields = scene(**params)
    cams = rig(2, 37, 29)  # sizes not a multiple of the tile
    config = RasterConfig(tile_size=tile_size)
    fast, fast_grads = run(fields, cams, config, grad=True)
    ref, ref_grads = run(fields, cams, replace(config, native=False), grad=True)
    for a, b in zip(fast, ref):
        assert_close_but_for_flips(a, b, atol=2e-5, flip=5e-3)
    assert float(fast[2].max()) > 0.5  # something was drawn
    for name in fields:
        scale = float(ref_grads[name].abs().max()) + 1e-12
        assert_close_but_for_flips(fast_grads[name] / scale, ref_grads[name] / scale, atol=2e-4, flip=5e-2)


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_skipping_rows_out_of_reach_changes_no_bit(tile_size):
    """The kernel skips the rows of a tile a Gaussian cannot reach above the alpha cut: images, depths, alphas
    and every gradient are bit for bit those of evaluating every row; with small, thin and rotated Gaussians
    (near-degenerate conics), faint ones (opacity at the cut) and sizes not a multiple of the tile."""
    fields = scene(600, seed=5, spread=3.0)
    gen = torch.Generator().manual_seed(6)
    fields["scales"][:200] = torch.rand(200, 3, generator=gen) * 0.004 + 1e-4             # a pixel or less
    fields["scales"][200:400, 0] = 1e-5                                                    # needles, any angle
    fields["scales"][200:400, 1:] = torch.rand(200, 2, generator=gen) * 0.3 + 0.05
    fields["opacities"][400:450] = torch.rand(50, generator=gen) * 0.01 + 0.002            # around 1/255
    cams = rig(2, 45, 38)
    config = RasterConfig(tile_size=tile_size)
    try:
        native.skip_rows(False)
        every, every_grads = run(fields, cams, config, grad=True)
    finally:
        native.skip_rows(True)
    skipped, skipped_grads = run(fields, cams, config, grad=True)
    assert float(every[2].max()) > 0.5
    for a, b in zip(skipped, every):
        assert torch.equal(a, b)
    for name in fields:
        assert torch.equal(skipped_grads[name], every_grads[name]), name


def test_kernel_without_gradients_matches_and_keeps_no_graph():
    fields = scene(200, 3)
    cams = rig(3, 32, 24)
    with torch.no_grad():
        fast, _ = run(fields, cams, RasterConfig(), grad=False)
        ref, _ = run(fields, cams, RasterConfig(native=False), grad=False)
    for a, b in zip(fast, ref):
        assert not a.requires_grad
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_cameras_that_see_nothing_give_background_and_zero_gradients():
    fields = scene(50, 4)
    fields["means"] = fields["means"] + torch.tensor([0.0, 0.0, -10.0])  # behind the camera at z = -3
    (rgb, depth, alpha), grads = run(fields, rig(1, 16, 16), RasterConfig(), grad=True)
    assert float(alpha.abs().max()) == 0.0 and float(depth.abs().max()) == 0.0
    torch.testing.assert_close(rgb, torch.tensor([0.2, 0.3, 0.4]).expand_as(rgb))
    assert all(float(g.abs().max()) == 0.0 for g in grads.values())


def test_results_do_not_depend_on_the_number_of_threads():
    fields = scene(300, 5)
    cams = rig(2, 40, 40)
    with torch.no_grad():
        proj = project(Gaussians(**fields), cams)
        bins = bin_to_tiles(proj, 40, 40, 8)
    tables = [proj.means2d.reshape(-1, 2), proj.conics.reshape(-1, 3), fields["opacities"].repeat(2),
              torch.cat([fields["colors"].repeat(2, 1), proj.depths.reshape(-1, 1)], 1)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            leaves = [t.clone().requires_grad_(True) for t in tables]
            out, trans = native.composite_native(*leaves, bins, 2, (40, 40), 8)
            (out.sum() + trans.square().sum()).backward()
            results.append([out, trans] + [t.grad for t in leaves])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_counting_sort_bins_equal_the_torch_sort_bins(tile_size):
    fields = scene(500, 6, spread=3.0)
    cams = rig(3, 45, 31)
    with torch.no_grad():
        proj = project(Gaussians(**fields), cams)
    fast = bin_to_tiles(proj, 45, 31, tile_size, use_native=True)
    ref = bin_to_tiles(proj, 45, 31, tile_size, use_native=False)
    assert fast.ids.numel() > 1000
    for name in ("ids", "starts", "counts"):
        assert torch.equal(getattr(fast, name).long(), getattr(ref, name).long()), name


def test_projection_matches_the_torch_twin_values_and_gradients():
    fields = scene(400, 7, spread=3.0)
    fields["quats"] = fields["quats"] * 1.7  # not unit: both normalise
    cams = rig(3, 48, 40)
    outs, grads = [], []
    for use_native in (True, False):
        leaves = {k: v.clone().requires_grad_(True) for k, v in fields.items()}
        proj = project(Gaussians(**leaves), cams, use_native=use_native)
        gen = torch.Generator().manual_seed(3)
        vis = proj.visible[..., None].float()
        loss = sum((torch.randn(t.shape, generator=gen) * (vis if t.dim() == 3 else vis[..., 0]) * t).sum()
                   for t in (proj.means2d, proj.conics, proj.depths))
        loss.backward()
        outs.append(proj)
        grads.append({k: leaves[k].grad for k in ("means", "quats", "scales")})
    fast, ref = outs
    assert torch.equal(fast.visible, ref.visible) and int(ref.visible.sum()) > 300
    assert torch.equal(fast.radii, ref.radii)
    vis = ref.visible
    torch.testing.assert_close(fast.means2d[vis], ref.means2d[vis], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fast.conics[vis], ref.conics[vis], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fast.depths, ref.depths, atol=1e-6, rtol=1e-6)
    for name in grads[0]:
        scale = float(grads[1][name].abs().max())
        torch.testing.assert_close(grads[0][name] / scale, grads[1][name] / scale, atol=1e-5, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_huge_gaussians_bin_and_blend_like_the_twin():
    """Boxes far wider than the image (scales of 1e9 m: radii past the int32 range) stay valid lists."""
    fields = scene(60, 8)
    fields["scales"][:3] = 1e9
    cams = rig(2, 24, 20)
    fast, _ = run(fields, cams, RasterConfig(), grad=True)
    ref, _ = run(fields, cams, RasterConfig(native=False), grad=True)
    for a, b in zip(fast, ref):
        assert torch.isfinite(a).all()
        assert_close_but_for_flips(a, b, atol=2e-5, flip=5e-3)
