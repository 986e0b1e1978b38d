"""The torch rasterizer against gsplat's CUDA rasterizer on the same scenes (needs a GPU).

Skipped without CUDA (see test/conftest.py). gsplat compiles its kernels on first use,
so the first test can take minutes on a fresh machine.
"""
import math

import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render import render, render_gaussians

pytestmark = pytest.mark.gpu


def scene(n: int, seed: int = 0, device: str = "cuda") -> dict[str, torch.Tensor]:
    """Gaussians in the frustum of the cameras below, 2–6 m away, scales 1–20 cm."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=gen) * 4 + 2
    xy = (torch.rand(n, 2, generator=gen) * 2 - 1) * z[:, None] * 0.6
    return {k: v.to(device) for k, v in dict(
        means=torch.cat([xy, z[:, None]], 1),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        scales=torch.rand(n, 3, generator=gen) * 0.19 + 0.01,
        opacities=torch.rand(n, generator=gen) * 0.9 + 0.05,
        colors=torch.rand(n, 3, generator=gen),
    ).items()}


def cameras(device: str = "cuda", width: int = 96, height: int = 64) -> PinholeCameras:
    viewmats = torch.eye(4).repeat(2, 1, 1)
    angle = math.radians(10)
    viewmats[1, :3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                        [-math.sin(angle), 0, math.cos(angle)]])
    viewmats[1, :3, 3] = torch.tensor([0.3, -0.1, 0.2])
    Ks = torch.tensor([[[80.0, 0, width / 2], [0, 80.0, height / 2], [0, 0, 1]],
                       [[70.0, 0, width / 2 - 3], [0, 72.0, height / 2 + 2], [0, 0, 1]]])
    return PinholeCameras(viewmats.to(device), Ks.to(device), width, height)


@pytest.mark.parametrize("n", [50, 3000])
def test_torch_rasterizer_matches_gsplat_images(n):
    pytest.importorskip("gsplat")
    s = scene(n)
    cams = cameras()
    bg = torch.tensor([0.2, 0.4, 0.9], device="cuda")
    ref = render(Gaussians(**s), cams, background=bg, backend="gsplat")
    ours = render(Gaussians(**s), cams, background=bg, backend="torch")
    assert ref.alpha.mean() > 0.2
    assert (ours.rgb - ref.rgb).abs().mean() < 1e-3 and (ours.rgb - ref.rgb).abs().max() < 2e-2
    assert (ours.alpha - ref.alpha).abs().mean() < 1e-3
    assert (ours.expected_depth() - ref.expected_depth()).abs().mean() < 1e-2
    # the CPU path renders the same picture
    cpu = render(Gaussians(**s).to("cpu"), cameras("cpu"), background=bg.cpu())
    assert (cpu.rgb - ref.rgb.cpu()).abs().mean() < 1e-3


def test_torch_rasterizer_gradients_match_gsplat():
    pytest.importorskip("gsplat")
    cams = cameras()
    probe = torch.randn(2, cams.height, cams.width, 3, generator=torch.Generator().manual_seed(1)).cuda()
    grads = {}
    for backend in ("gsplat", "torch"):
        s = {k: v.clone().requires_grad_(True) for k, v in scene(500, seed=2).items()}
        out = render(Gaussians(**s), cams, background=torch.ones(3, device="cuda"), backend=backend)
        ((out.rgb * probe).sum() + 0.1 * out.depth.sum()).backward()
        grads[backend] = {k: v.grad for k, v in s.items()}
    for name in ("means", "quats", "scales", "opacities", "colors"):
        a, b = grads["torch"][name].flatten(), grads["gsplat"][name].flatten()
        cosine = torch.nn.functional.cosine_similarity(a, b, dim=0)
        assert cosine > 0.99, (name, cosine.item())
        assert (a - b).norm() / b.norm() < 0.1, name


def test_auto_backend_uses_gsplat_for_cuda_tensors_and_render_gaussians_agrees():
    pytest.importorskip("gsplat")
    s = scene(200, seed=3)
    cams = cameras()
    auto = render(Gaussians(**s), cams)
    explicit = render(Gaussians(**s), cams, backend="gsplat")
    torch.testing.assert_close(auto.rgb, explicit.rgb)
    via_poses = render_gaussians(Gaussians(**s), torch.linalg.inv(cams.viewmats), cams.Ks, cams.width, cams.height)
    torch.testing.assert_close(via_poses.rgb, explicit.rgb, atol=1e-4, rtol=0)
