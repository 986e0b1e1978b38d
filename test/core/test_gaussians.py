"""Specification of ilrm_ros.core.gaussians: the Gaussians container."""
import torch

from ilrm_ros.core.gaussians import Gaussians


def _random(n: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(means=torch.randn(n, 3, generator=gen), quats=torch.randn(n, 4, generator=gen),
                     scales=torch.rand(n, 3, generator=gen), opacities=torch.rand(n, generator=gen),
                     colors=torch.rand(n, 3, generator=gen))


def test_index_with_a_mask_selects_the_same_gaussians_as_masking_each_field():
    g = _random(500)
    mask = g.opacities > 0.3
    got = g.index(mask)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(got, name), getattr(g, name)[mask]), name
    assert len(g.index(torch.zeros(500, dtype=torch.bool))) == 0


def test_index_with_indices_and_slices_keeps_torch_indexing():
    g = _random(50, seed=1)
    idx = torch.tensor([4, -1, 0])
    assert torch.equal(g.index(idx).means, g.means[idx])
    assert torch.equal(g.index(slice(10, 20)).colors, g.colors[10:20])


def test_index_with_a_mask_keeps_gradients():
    g = _random(20, seed=2)
    g.means.requires_grad_(True)
    g.index(g.opacities > 0.5).means.sum().backward()
    assert torch.equal(g.means.grad, (g.opacities > 0.5).float()[:, None].expand(20, 3))
