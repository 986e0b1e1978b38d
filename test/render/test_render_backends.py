"""How render() hands Gaussians and cameras to gsplat, checked on CPU with a stand-in gsplat.

The real comparison of the two rasterizers needs CUDA (test_render_gsplat.py); this one
pins the call itself: argument order, gsplat options, and how its "RGB+D" output and
alphas become a RenderOutput.
"""
import sys
from types import SimpleNamespace

import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render.raster_config import EPS2D
from ilrm_ros.render.render import _render_gsplat


def test_gsplat_gets_the_fields_in_its_order_and_rgb_plus_accumulated_depth_comes_back(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    g = Gaussians(means=torch.randn(5, 3, generator=gen), quats=torch.randn(5, 4, generator=gen),
                  scales=torch.rand(5, 3, generator=gen), opacities=torch.rand(5, generator=gen),
                  colors=torch.rand(5, 3, generator=gen))
    cams = PinholeCameras(torch.eye(4).repeat(2, 1, 1), torch.eye(3).repeat(2, 1, 1), 7, 4)
    rendered = torch.rand(2, 4, 7, 4, generator=gen)
    alphas = torch.rand(2, 4, 7, 1, generator=gen)
    calls = []

    def rasterization(*args, **kwargs):
        calls.append((args, kwargs))
        return rendered, alphas, {}

    monkeypatch.setitem(sys.modules, "gsplat", SimpleNamespace(rasterization=rasterization))
    out = _render_gsplat(g, cams, torch.tensor([0.1, 0.2, 0.3]), 0.05, 50.0)

    (args, kwargs), = calls
    expected = (g.means, g.quats, g.scales, g.opacities, g.colors, cams.viewmats, cams.Ks, 7, 4)
    assert len(args) == len(expected)
    for got, want in zip(args, expected):
        assert got is want
    assert kwargs["near_plane"] == 0.05 and kwargs["far_plane"] == 50.0 and kwargs["eps2d"] == EPS2D
    assert kwargs["render_mode"] == "RGB+D" and kwargs["sh_degree"] is None
    torch.testing.assert_close(kwargs["backgrounds"], torch.tensor([0.1, 0.2, 0.3]).expand(2, 3))
    assert torch.equal(out.rgb, rendered[..., :3]) and torch.equal(out.depth, rendered[..., 3])
    assert torch.equal(out.alpha, alphas[..., 0])
