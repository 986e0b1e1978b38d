"""The depth term of the training loss: true depth travels into the batch in the window's
normalised frame, and the loss compares it with the rendered depth where both exist."""
import math

import numpy as np
import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.io.transforms_json import PosedImages
from ilrm_ros.render.render import render_gaussians
from ilrm_ros.train.dataset import SceneData, make_batch, to_scene_data
from ilrm_ros.train.losses import DEPTH_MIN_ALPHA, depth_loss


def _pose(x: float) -> torch.Tensor:
    c2w = torch.eye(4)
    c2w[0, 3] = x
    return c2w


def _scene(n: int = 5, h: int = 6, w: int = 8, depths: bool = True) -> SceneData:
    K = torch.tensor([[8.0, 0, 4], [0, 8, 3], [0, 0, 1]]).expand(n, 3, 3).clone()
    d = torch.full((n, h, w), 2.0, dtype=torch.float16) if depths else None
    return SceneData("s", torch.zeros((n, h, w, 3), dtype=torch.uint8), torch.stack([_pose(0.5 * i) for i in range(n)]),
                     K, d)


def test_batch_depth_scales_with_the_window_size():
    # the same scene with every distance doubled: the normalised depth must not change
    small, big = _scene(), _scene()
    big.c2w[:, :3, 3] *= 2.0
    big.depths = big.depths * 2
    b_small = make_batch([small], [(0, [0, 4], [2])])
    b_big = make_batch([big], [(0, [0, 4], [2])])
    assert torch.allclose(b_small.tgt_depths, b_big.tgt_depths, rtol=1e-3)
    # the first context camera sits at the origin and the farthest one at distance 1, so a
    # window whose context spans 2 m has 2 m per unit: a 2 m depth is 1 normalised unit
    assert float(b_small.tgt_depths.mean()) == pytest.approx(1.0, rel=1e-3)


def test_batch_has_no_depth_when_a_scene_lacks_it():
    b = make_batch([_scene(), _scene(depths=False)], [(0, [0, 4], [2]), (1, [0, 4], [2])])
    assert b.tgt_depths is None
    assert b.to("cpu").tgt_depths is None


def test_scene_data_keeps_depth_and_resizes_it_without_blending():
    depth = np.zeros((2, 4, 4), np.float32)
    depth[:, :, 2:] = 3.0  # a step edge: nearest-neighbour keeps only 0 and 3
    depth[0, 0, 0] = np.nan
    posed = PosedImages(np.zeros((2, 4, 4, 3), np.uint8), np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)),
                        np.tile(np.eye(3, dtype=np.float32), (2, 1, 1)), ["a", "b"], depths=depth)
    sd = to_scene_data(posed, "s", size=(2, 2))
    assert sd.depths.shape == (2, 2, 2) and sd.depths.dtype == torch.float16
    assert set(sd.depths.float().unique().tolist()) <= {0.0, 3.0}
    assert torch.isfinite(sd.depths).all()


def _wall(z: float) -> Gaussians:
    """An opaque fronto-parallel wall of Gaussians at depth z in front of an identity camera."""
    xs, ys = torch.meshgrid(torch.linspace(-2, 2, 25), torch.linspace(-2, 2, 25), indexing="ij")
    n = xs.numel()
    means = torch.stack([xs.flatten() * z / 2, ys.flatten() * z / 2, torch.full((n,), z)], -1)
    return Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(),
                     scales=torch.full((n, 3), 0.15 * z), opacities=torch.full((n,), 0.99),
                     colors=torch.full((n, 3), 0.5))


def test_depth_loss_is_the_mean_log_error_and_zero_at_the_truth():
    K = torch.tensor([[8.0, 0, 8], [0, 8, 8], [0, 0, 1]])
    out = render_gaussians(_wall(3.0), torch.eye(4), K, 16, 16)
    inside = out.alpha > 0.9
    true = torch.where(inside, torch.full_like(out.depth, 3.0), torch.zeros_like(out.depth))
    exact = depth_loss(out.depth * inside, torch.where(inside, out.alpha, torch.zeros_like(out.alpha)), true)
    assert float(exact) < 0.02
    doubled = depth_loss(out.depth * inside, torch.where(inside, out.alpha, torch.zeros_like(out.alpha)), true * 2)
    assert float(doubled) == pytest.approx(math.log(2.0), abs=0.03)


def test_depth_loss_ignores_pixels_without_truth_or_opacity_and_is_differentiable():
    depth = torch.tensor([[1.0, 5.0], [2.0, 9.0]], requires_grad=True)
    alpha = torch.tensor([[1.0, 1.0], [DEPTH_MIN_ALPHA / 2, 1.0]])
    true = torch.tensor([[1.0, 0.0], [4.0, 9.0]])
    loss = depth_loss(depth, alpha, true)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)  # only (0,0) and (1,1) count, both exact
    loss.backward()
    assert depth.grad is not None
    none = depth_loss(depth, torch.zeros_like(alpha), true)
    assert float(none) == 0.0 and none.requires_grad


def test_eval_depth_scores_relative_error_threshold_accuracy_and_coverage():
    from ilrm_ros.train.evaluate import depth_scores

    true = torch.tensor([[[2.0, 2.0], [4.0, 0.0]]])  # one pixel without truth
    alpha = torch.tensor([[[1.0, 0.5], [0.2, 1.0]]])  # 0.2 is below the scoring opacity
    depth = torch.tensor([[[2.0, 0.5 * 3.0], [1.0, 7.0]]])  # accumulated: the second pixel is 3.0 / 0.5 alpha
    s = depth_scores(depth, alpha, true)
    # scored: only (0,0) (exact); (0,1) has alpha 0.5, not above the threshold; (1,0) alpha 0.2; (1,1) no truth
    assert s["coverage"] == pytest.approx(1 / 3)
    assert s["abs_rel"] == pytest.approx(0.0) and s["delta1"] == pytest.approx(1.0)
    alpha[0, 0, 1] = 0.6
    s = depth_scores(depth * torch.tensor([[[1.0, 1.2], [1.0, 1.0]]]), alpha, true)
    # (0,1): 1.8 / 0.6 = 3.0 vs 2.0: relative error 0.5, ratio 1.5 > 1.25
    assert s["coverage"] == pytest.approx(2 / 3)
    assert s["abs_rel"] == pytest.approx(0.25) and s["delta1"] == pytest.approx(0.5)
    assert s["median_ratio"] in (pytest.approx(1.0), pytest.approx(1.5))
    none = depth_scores(depth, torch.zeros_like(alpha), true)
    assert none["coverage"] == 0.0 and math.isnan(none["abs_rel"])
