"""Batches, target normalisation, baselines and the LR schedule (window selection: test/data/test_view_sampling.py)."""
import math

import pytest
import torch

from ilrm_ros.train.dataset import make_batch, normalize_targets_with_scale, resize_scene, SceneData
from ilrm_ros.train.evaluate import aggregate, mean_color_prediction, nearest_view_indices
from ilrm_ros.train.step import lr_factor


def _pose(center, yaw_deg=0.0):
    a = math.radians(yaw_deg)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    c2w[:3, 3] = torch.tensor(center, dtype=torch.float32)
    return c2w


def test_targets_are_normalised_with_the_context_similarity():
    ctx = torch.stack([_pose([1, 2, 3], 10), _pose([3, 2, 3], 30), _pose([1, 4, 3], -20)])
    # a target identical to a context camera must land exactly on that camera's normalised pose
    ctx_n, tgt_n, _ = normalize_targets_with_scale(ctx, ctx[1:2].clone())
    assert torch.allclose(tgt_n[0], ctx_n[1], atol=1e-5)
    assert ctx_n[:, :3, 3].norm(dim=-1).max().item() == pytest.approx(1.0, abs=1e-5)


def test_make_batch_stacks_windows_in_model_layout():
    n, h, w = 6, 8, 12
    scene = SceneData("s", torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8),
                      torch.stack([_pose([i * 0.1, 0, 0]) for i in range(n)]),
                      torch.tensor([[10.0, 0, 6], [0, 10, 4], [0, 0, 1]]).expand(n, 3, 3).clone())
    b = make_batch([scene], [(0, [0, 2, 4], [1, 3]), (0, [1, 3, 5], [0, 2])])
    assert b.ctx_images.shape == (2, 3, 3, h, w) and b.tgt_images.shape == (2, 2, 3, h, w)
    assert b.ctx_c2w.shape == (2, 3, 4, 4) and b.tgt_K.shape == (2, 2, 3, 3)
    assert 0.0 <= b.ctx_images.min() and b.ctx_images.max() <= 1.0
    assert torch.allclose(b.ctx_images[0, 1], scene.images[2].permute(2, 0, 1).float() / 255)


def test_resize_scales_intrinsics_with_the_image():
    imgs = torch.zeros(2, 64, 32, 3, dtype=torch.uint8)
    K = torch.tensor([[40.0, 0, 16], [0, 40, 32], [0, 0, 1]]).expand(2, 3, 3).clone()
    out, K2 = resize_scene(imgs, K, (32, 16))
    assert out.shape == (2, 32, 16, 3)
    assert torch.allclose(K2[0], torch.tensor([[20.0, 0, 8], [0, 20, 16], [0, 0, 1]]))


def test_nearest_view_uses_camera_centre_distance():
    ctx = torch.stack([_pose([0, 0, 0]), _pose([1, 0, 0]), _pose([2, 0, 0])])
    tgt = torch.stack([_pose([1.9, 0, 0]), _pose([0.4, 0, 0])])
    assert nearest_view_indices(ctx, tgt).tolist() == [2, 0]


def test_nearest_view_breaks_distance_ties_by_viewing_angle():
    ctx = torch.stack([_pose([-1, 0, 0], 40), _pose([1, 0, 0], 5)])
    tgt = _pose([0, 0, 0], 0)[None]
    assert nearest_view_indices(ctx, tgt).tolist() == [1]
    ctx_swapped = torch.stack([_pose([-1, 0, 0], 5), _pose([1, 0, 0], 40)])
    assert nearest_view_indices(ctx_swapped, tgt).tolist() == [0]


def test_mean_color_baseline_is_the_mean_context_colour_everywhere():
    ctx = torch.zeros(2, 3, 4, 5)
    ctx[0, 0] = 1.0  # one red image and one black image -> (0.5, 0, 0)
    pred = mean_color_prediction(ctx, 3)
    assert pred.shape == (3, 3, 4, 5)
    assert torch.allclose(pred[:, 0], torch.full((3, 4, 5), 0.5)) and pred[:, 1:].abs().max() == 0


def test_aggregate_averages_per_scene_scores_per_method():
    rows = [{m: {"psnr": p, "ssim": s} for m in ("model", "nearest_view", "mean_color")}
            for p, s in ((10.0, 0.2), (20.0, 0.4))]
    agg = aggregate(rows)
    assert agg["model"] == {"psnr": 15.0, "ssim": pytest.approx(0.3)}


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55)
    assert f[110] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:]))


def test_window_spans_are_drawn_log_uniformly_between_the_bounds():
    import random

    from ilrm_ros.train.step import draw_span

    rng = random.Random(0)
    spans = [draw_span(4, 32, rng) for _ in range(4000)]
    assert min(spans) == 4 and max(spans) == 32
    # log-uniform: the geometric middle (~11 frames) splits the draws in half
    below = sum(s < 11.3 for s in spans) / len(spans)
    assert 0.45 < below < 0.55, below
    assert draw_span(40, 32, rng) == 32  # lower bound above the upper one: the upper one wins
