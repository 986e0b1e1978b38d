"""Small scenes, keyframes and maps shared by the map refinement specs (test_map_refine, test_held_chunks)."""
import numpy as np
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.io.frames import Frame, Keyframe
from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.refine import RefineConfig
from ilrm_ros.render.render import render_gaussians
from support import look_from

SIZE = 24
"""Keyframe width and height (pixels)."""


def scene(seed: int, n: int = 80, noise: float = 0.0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 2.0,
                  quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                  scales=torch.rand(n, 3, generator=gen) * 0.1 + 0.08,
                  opacities=torch.rand(n, generator=gen) * 0.4 + 0.5, colors=torch.rand(n, 3, generator=gen))
    if noise == 0.0:
        return g
    return Gaussians(means=g.means + noise * torch.randn(n, 3, generator=gen), quats=g.quats, scales=g.scales * 1.3,
                     opacities=g.opacities * 0.7,
                     colors=(g.colors + 0.2 * torch.randn(n, 3, generator=gen)).clamp(0, 1))


def keyframes(truth: Gaussians, n: int = 3) -> list[Keyframe]:
    """Keyframes rendering ``truth`` from n cameras in front of the scene."""
    K = np.array([[SIZE * 1.0, 0.0, SIZE / 2], [0.0, SIZE * 1.0, SIZE / 2], [0.0, 0.0, 1.0]])
    out = []
    for i, x in enumerate(np.linspace(-0.7, 0.7, n)):
        c2w = look_from([float(x), -0.4, -3.5])
        with torch.no_grad():
            rgb = render_gaussians(truth, c2w[None], torch.tensor(K, dtype=torch.float32)[None], SIZE, SIZE).rgb[0]
        rgb8 = (rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        out.append(Keyframe(id=i, frame=Frame(rgb=rgb8, K=K, stamp_ns=i, frame_id="cam", c2w=c2w.double().numpy())))
    return out


def a_map() -> GaussianMap:
    gmap = GaussianMap(MapConfig(chunk_size_m=0.5, min_opacity=0.05))
    gmap.add(scene(0, noise=0.05))
    return gmap


def cfg(**kw) -> RefineConfig:
    base = dict(map_enabled=True, map_iters_per_step=4, map_step_budget_s=60.0, downscale=1, lr_opacities=0.2)
    base.update(kw)
    return RefineConfig(**base)
