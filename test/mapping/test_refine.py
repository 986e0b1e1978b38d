"""Window refinement (mapping/refine.py): it fits the context views, keeps to its time budget,
is deterministic under a seed and leaves the Gaussians' conventions and shapes intact."""
import math
from types import SimpleNamespace

import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.mapping.refine import (RefineConfig, Schedule, activate, optimise_gaussians, refine_window,
                                     to_unconstrained)
from ilrm_ros.render.metrics import psnr
from ilrm_ros.render.render import render_gaussians
from support import look_from

SIZE = 24



def truth_scene(n: int = 60, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 2.0,
                     quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                     scales=torch.rand(n, 3, generator=gen) * 0.1 + 0.08,
                     opacities=torch.rand(n, generator=gen) * 0.4 + 0.5,
                     colors=torch.rand(n, 3, generator=gen))


def perturbed(g: Gaussians, seed: int = 1) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    n = len(g)
    return Gaussians(means=g.means + 0.05 * torch.randn(n, 3, generator=gen), quats=g.quats,
                     scales=g.scales * 1.3, opacities=g.opacities * 0.7,
                     colors=(g.colors + 0.2 * torch.randn(n, 3, generator=gen)).clamp(0, 1))


@pytest.fixture(scope="module")
def case():
    """Truth Gaussians rendered from 3 cameras as the context images; perturbed Gaussians to refine."""
    g = truth_scene()
    c2w = torch.stack([look_from([x, -0.4, -3.5]) for x in (-0.7, 0.0, 0.7)])
    K = torch.tensor([[SIZE * 1.0, 0.0, SIZE / 2], [0.0, SIZE * 1.0, SIZE / 2], [0.0, 0.0, 1.0]]).expand(3, 3, 3)
    with torch.no_grad():
        images = render_gaussians(g, c2w, K, SIZE, SIZE).rgb.permute(0, 3, 1, 2).contiguous()
    return SimpleNamespace(truth=g, start=perturbed(g), cams=SimpleNamespace(c2w=c2w, K=K), images=images)


def context_psnr(g: Gaussians, case) -> float:
    with torch.no_grad():
        pred = render_gaussians(g, case.cams.c2w, case.cams.K, SIZE, SIZE).rgb.permute(0, 3, 1, 2)
    return float(psnr(pred, case.images).mean())


class StepClock:
    """A fake clock: every reading advances time by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 100.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_refinement_raises_context_psnr(case):
    out, stats = refine_window(case.start, case.cams, case.images, RefineConfig(window_iters=15, window_budget_s=0,
                                                                           downscale=1))
    before, after = context_psnr(case.start, case), context_psnr(out, case)
    assert stats.iterations == 15 and stats.stopped_by == "iters"
    assert after > before + 3.0, (before, after)
    assert stats.psnr_before == pytest.approx(before, abs=0.3) and stats.psnr_after == pytest.approx(after, abs=0.3)
    assert stats.gain_db > 3.0


def test_output_keeps_shapes_and_conventions(case):
    out, _ = refine_window(case.start, case.cams, case.images, RefineConfig(window_iters=3, window_budget_s=0,
                                                                           downscale=1))
    for name in ("means", "quats", "scales", "opacities", "colors"):
        a, b = getattr(case.start, name), getattr(out, name)
        assert a.shape == b.shape and a.dtype == b.dtype and not b.requires_grad, name
    assert torch.allclose(out.quats.norm(dim=-1), torch.ones(len(out)), atol=1e-5)
    assert (out.scales > 0).all() and (out.opacities > 0).all() and (out.opacities < 1).all()
    assert (out.colors >= 0).all() and (out.colors <= 1).all()
    assert not torch.equal(out.means, case.start.means)


def test_unconstrained_round_trip():
    g = truth_scene(20)
    back = activate(to_unconstrained(g))
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(back, name), getattr(g, name), atol=1e-5), name


def test_zero_iterations_returns_the_input(case):
    out, stats = refine_window(case.start, case.cams, case.images, RefineConfig(window_iters=0))
    assert out is case.start
    assert stats.iterations == 0 and stats.stopped_by == "off" and math.isnan(stats.psnr_before)


def test_budget_is_respected_with_a_fake_clock(case):
    clock = StepClock(0.25)  # every reading advances 0.25 s: the first evaluation and each step "take" 0.25 s
    budget = 2.0
    out, stats = refine_window(case.start, case.cams, case.images,
                               RefineConfig(window_iters=1000, window_budget_s=budget), clock=clock)
    assert stats.stopped_by == "budget" and out is not case.start
    assert stats.step_s == pytest.approx(0.25)
    assert stats.seconds <= budget + stats.step_s
    assert stats.seconds >= budget - 3 * stats.step_s  # it used the budget rather than stopping early


def test_slowing_steps_overrun_by_at_most_one_step(case):
    """Steps that get slower: the last step's time predicts the next one, so the overrun stays
    below one measured step."""
    readings = iter(100.0 + 0.05 * i * i for i in range(10_000))  # step k lasts ~0.1·k s
    budget = 3.0
    _, stats = refine_window(case.start, case.cams, case.images,
                             RefineConfig(window_iters=1000, window_budget_s=budget), clock=lambda: next(readings))
    assert stats.stopped_by == "budget" and stats.iterations > 2
    last_step = 0.05 * (2 * (stats.iterations + 2) + 1)  # an upper bound on the last step's length
    assert budget < stats.seconds + last_step
    assert stats.seconds <= budget + last_step


def test_preemption_ends_the_loop_before_the_next_step_and_keeps_the_gain(case):
    asked = []

    def window_waits() -> bool:  # a window arrives while the third step runs
        asked.append(True)
        return len(asked) > 3

    out, stats = optimise_gaussians(case.start, case.cams, case.images, RefineConfig(),
                                    Schedule(1000, 0.0, preempt=window_waits))
    assert stats.stopped_by == "preempted" and stats.iterations == 3 and len(asked) == 4
    assert stats.psnr_after > stats.psnr_before and out is not case.start


def test_scored_views_judge_the_result_on_the_first_views_only(case):
    """The map refiner scores a step on its chosen keyframe alone (scored_views=1): the reported PSNRs are
    those of the first view, before and after."""
    cfg = RefineConfig(downscale=1)
    out, stats = optimise_gaussians(case.start, case.cams, case.images, cfg, Schedule(8, 0.0, scored_views=1))

    def first_view_psnr(g: Gaussians) -> float:
        with torch.no_grad():
            pred = render_gaussians(g, case.cams.c2w[:1], case.cams.K[:1], SIZE, SIZE).rgb.permute(0, 3, 1, 2)
        return float(psnr(pred.clamp(0, 1), case.images[:1]).mean())

    assert stats.iterations == 8 and out is not case.start
    assert stats.psnr_before == pytest.approx(first_view_psnr(case.start), abs=0.05)
    assert stats.psnr_after == pytest.approx(first_view_psnr(out), abs=0.05)
    _, every = optimise_gaussians(case.start, case.cams, case.images, cfg, Schedule(8, 0.0))
    assert every.psnr_before == pytest.approx(context_psnr(case.start, case), abs=0.3)
    assert abs(every.psnr_before - stats.psnr_before) > 0.05   # the views differ, and so do their scores


def test_budget_smaller_than_the_first_step_runs_nothing(case):
    out, stats = refine_window(case.start, case.cams, case.images,
                               RefineConfig(window_iters=50, window_budget_s=0.6), clock=StepClock(0.25))
    assert out is case.start and stats.iterations == 0 and stats.stopped_by == "budget"


def test_same_seed_same_output(case):
    cfg = RefineConfig(window_iters=4, window_budget_s=0, views_per_iter=1, seed=7)
    a, _ = refine_window(case.start, case.cams, case.images, cfg)
    b, _ = refine_window(case.start, case.cams, case.images, cfg)
    c, _ = refine_window(case.start, case.cams, case.images, RefineConfig(window_iters=4, window_budget_s=0,
                                                                           views_per_iter=1, seed=8))
    assert torch.equal(a.means, b.means) and torch.equal(a.colors, b.colors)
    assert not torch.equal(a.means, c.means)


def test_downscale_refines_at_lower_resolution(case):
    """Optimising at half resolution still improves the full-resolution context views."""
    big = 2 * SIZE
    K = case.cams.K.clone()
    K[:, :2] *= 2
    with torch.no_grad():
        images = render_gaussians(case.truth, case.cams.c2w, K, big, big).rgb.permute(0, 3, 1, 2).contiguous()
        before = render_gaussians(case.start, case.cams.c2w, K, big, big).rgb.permute(0, 3, 1, 2)
    cams = SimpleNamespace(c2w=case.cams.c2w, K=K)
    out, stats = refine_window(case.start, cams, images, RefineConfig(window_iters=10, window_budget_s=0, downscale=2))
    with torch.no_grad():
        after = render_gaussians(out, case.cams.c2w, K, big, big).rgb.permute(0, 3, 1, 2)
    assert stats.iterations == 10
    assert float(psnr(after, images).mean()) > float(psnr(before, images).mean()) + 1.0


def test_rejects_mismatched_views(case):
    with pytest.raises(ValueError):
        refine_window(case.start, case.cams, case.images[:2], RefineConfig(window_iters=1))


def test_the_optimiser_is_adam_with_one_step_size_per_field():
    """The refinement's optimiser (torch's fused Adam) moves each field as plain Adam with that field's step
    size (means in units of the scene scale), and leaves a field whose step size is 0 alone."""
    from ilrm_ros.mapping.refine import _optimizer

    gen = torch.Generator().manual_seed(0)
    params = to_unconstrained(perturbed(truth_scene(30)))
    grads = [{k: torch.randn(v.shape, generator=gen) for k, v in params.items()} for _ in range(4)]
    cfg = RefineConfig(lr_quats=0.0)
    opt = _optimizer(params, cfg, scene_scale=2.0)
    ref = {k: v.detach().clone() for k, v in params.items()}
    start = {k: v.detach().clone() for k, v in params.items()}
    lrs = {"means": cfg.lr_means * 2.0, "scales": cfg.lr_scales, "quats": 0.0, "opacities": cfg.lr_opacities,
           "colors": cfg.lr_colors}
    m = {k: torch.zeros_like(v) for k, v in ref.items()}
    v2 = {k: torch.zeros_like(v) for k, v in ref.items()}
    for step, g in enumerate(grads, start=1):
        for k, t in params.items():
            t.grad = g[k].clone()
        opt.step()
        for k in ref:   # Adam, written out: bias-corrected first and second moments
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v2[k] = 0.999 * v2[k] + 0.001 * g[k] ** 2
            ref[k] = ref[k] - lrs[k] * (m[k] / (1 - 0.9**step)) / ((v2[k] / (1 - 0.999**step)).sqrt() + 1e-15)
    for k, t in params.items():
        torch.testing.assert_close(t.detach(), ref[k], rtol=1e-5, atol=1e-6)
    assert torch.equal(params["quats"].detach(), start["quats"])
    assert not torch.equal(params["colors"].detach(), start["colors"])


def test_no_scale_grows_past_the_largest_given(case):
    """Gaussians too small for the views want to grow; none ends larger than the largest Gaussian it was given
    (one grown over the room would cover every view it was not fitted to), while the smaller ones do grow."""
    small = Gaussians(means=case.truth.means, quats=case.truth.quats, scales=case.truth.scales * 0.5,
                      opacities=case.truth.opacities, colors=case.truth.colors)
    out, stats = refine_window(small, case.cams, case.images, RefineConfig(window_iters=20, window_budget_s=0,
                                                                           downscale=1, lr_scales=0.2))
    largest = float(small.scales.max())
    assert stats.iterations == 20 and out is not small
    assert float(out.scales.max()) <= largest * (1 + 1e-5)
    grown = out.scales.amax(-1) > small.scales.amax(-1) * 1.2
    assert int(grown.sum()) > len(small) // 4   # the cap binds only at the top
    assert int((out.scales.amax(-1) >= largest * 0.999).sum()) > 1   # several reached it


def test_the_scale_cap_is_the_largest_finite_scale_given():
    """A NaN or infinite scale among those given does not become the cap (clamping by NaN would make every
    scale NaN); with no finite scale there is nothing to cap by."""
    from ilrm_ros.mapping.refine import _largest_finite

    logs = torch.tensor([[-3.0, float("nan"), -1.5], [float("inf"), -2.0, float("-inf")]])
    assert _largest_finite(logs) == -1.5
    assert _largest_finite(torch.tensor([float("nan"), float("inf")])) == math.inf
