"""Window refinement: a few photometric optimisation steps on one window's feed-forward Gaussians.

    Gaussians (activated) ──to_unconstrained──▶ means, log scales, raw quats, logit opacities, colours
    ──Adam on L1 (+ SSIM) of render_gaussians(context cameras) vs context images──▶ ──activate──▶ Gaussians

Only the window's own Gaussians and its own keyframes (the context views) take part; the map
is not touched. The renderer is the package's differentiable one (gsplat on CUDA, the torch
rasterizer on CPU). Colours are optimised directly and projected back into [0, 1] after each
step (the model clamps them, so many sit exactly at 0 or 1 where a logit would barely move).
No scale grows past the largest of the Gaussians given: one Gaussian grown over a room (seen
behind surfaces in the views fitted) covers every other view of it.

Time: ``window_budget_s`` bounds the whole call, evaluations included. Before each step the
loop predicts its cost from the last measured step (the first as 3x the initial evaluation,
per view rendered)
and stops when elapsed + predicted step + the final evaluation would pass the budget, so the
budget is exceeded by at most the error of one step's prediction.

Determinism: on CPU the result is a function of the inputs and ``seed`` (the seed picks the
views of each step when ``views_per_iter`` is set); gsplat's CUDA backward uses atomics, so
on a GPU results agree only to float rounding.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.params import param
from ilrm_ros.render.metrics import psnr_from_mse, ssim
from ilrm_ros.render.render import render_gaussians

log = logging.getLogger(__name__)

__all__ = ["RefineConfig", "RefineStats", "Schedule", "WindowViews", "WorkingViews", "refine_window",
           "optimise_gaussians", "working_views", "to_unconstrained", "activate", "warm_up"]

OPACITY_EPS = 1e-4
"""Opacities are clamped into [eps, 1 - eps] before the logit (fp32 sigmoid saturates to 1)."""
SCALE_MIN = 1e-8
"""Smallest linear scale before the log."""


@dataclass
class RefineConfig:
    """How a window's Gaussians are refined against its own keyframes (``refine.*``, read at start-up)."""

    window_iters: int = param(0, "Photometric optimisation steps on each window's Gaussians against its own "
                                 "keyframes, after the model and before fusion (0 = off)", 0, 100_000)
    window_budget_s: float = param(0.25, "Hard wall-clock budget of one window's refinement in seconds, "
                                        "evaluations included (0 = no time limit, only window_iters)", 0.0, 3600.0)
    lr_means: float = param(1e-3, "Adam step of the means as a fraction of the window's scene scale (median "
                                  "distance of its Gaussians to the centroid of its cameras)", 0.0, 1.0)
    lr_scales: float = param(8e-2, "Adam step of the log scales", 0.0, 1.0)
    lr_quats: float = param(1e-3, "Adam step of the raw (unnormalised) quaternions", 0.0, 1.0)
    lr_opacities: float = param(0.1, "Adam step of the opacity logits", 0.0, 10.0)
    lr_colors: float = param(1e-3, "Adam step of the RGB colours (kept in [0, 1])", 0.0, 1.0)
    ssim_weight: float = param(0.0, "Weight of the SSIM term: loss = (1 - w) L1 + w (1 - SSIM); 0 = L1 only "
                                    "(cheaper)", 0.0, 1.0)
    views_per_iter: int = param(0, "Keyframes rendered per step, drawn with seed (0 = all of the window's)", 0, 64)
    downscale: int = param(2, "Window refinement optimises at 1/downscale of the model input size (about "
                              "downscale^2 fewer pixels per step)", 1, 16)
    seed: int = param(0, "Seeds the choice of keyframes per step (the only randomness)", 0, 2**31 - 1)
    map_enabled: bool = param(False, "Background map refinement: while no window waits, optimise the map's "
                                     "Gaussians seen by one stored keyframe at a time and publish the changed "
                                     "chunks (off = the map changes only by fusion)")
    map_step_budget_s: float = param(0.4, "Wall-clock budget of one background map refinement step in seconds "
                                          "(gathering, optimisation and write-back)", 0.01, 60.0)
    map_iters_per_step: int = param(10, "Optimisation steps of one background map refinement step", 1, 10_000)
    map_rounds: int = param(4, "Rounds over the stored keyframes the background refiner makes after each window "
                               "before it pauses until the next one", 1, 1000)
    map_views_per_iter: int = param(2, "Keyframes rendered per optimisation step of a map refinement step, drawn "
                                       "with seed from its 1 + map_covisible keyframes (0 = all of them)", 0, 64)
    map_covisible: int = param(5, "Covisible keyframes (closest camera centres) optimised together with the "
                                  "chosen one in a map refinement step", 0, 8)
    map_publish_period_s: float = param(1.0, "Background map refinement sends its changed chunks at most this often, "
                                             "each chunk's newest content once (0 = after every step)", 0.0, 60.0)
    map_downscale: int = param(1, "Background map refinement optimises at 1/map_downscale of the keyframes' size "
                                  "(the map is looked at in full)", 1, 16)

    def __post_init__(self) -> None:
        if (self.window_iters < 0 or self.views_per_iter < 0 or self.map_views_per_iter < 0 or self.downscale < 1
                or self.map_downscale < 1):
            raise ValueError("window_iters, views_per_iter and map_views_per_iter must be >= 0, downscale and "
                             f"map_downscale >= 1; got {self.window_iters}, {self.views_per_iter}, "
                             f"{self.map_views_per_iter}, {self.downscale}, {self.map_downscale}")
        if (self.map_step_budget_s <= 0.0 or self.map_iters_per_step < 1 or self.map_covisible < 0
                or self.map_rounds < 1):
            raise ValueError("map_step_budget_s must be > 0, map_iters_per_step >= 1, map_covisible >= 0, "
                             f"map_rounds >= 1; got {self.map_step_budget_s}, {self.map_iters_per_step}, "
                             f"{self.map_covisible}, {self.map_rounds}")
        if self.ssim_weight < 0.0 or self.ssim_weight > 1.0:
            raise ValueError(f"ssim_weight must be in [0, 1], got {self.ssim_weight}")


@dataclass(frozen=True)
class Schedule:
    """When an optimisation stops and which views judge it: at most ``iters`` steps within ``budget_s`` seconds
    (0 = no time limit), ``preempt`` (optional) asked before every step (True ends the loop: "preempted", e.g. a
    new window waits), and the context PSNR before/after measured on the first ``scored_views`` views (0 = all)."""

    iters: int
    budget_s: float
    preempt: Callable[[], bool] | None = None
    scored_views: int = 0


@dataclass
class RefineStats:
    """What one refinement did: steps, wall time (s), context PSNR (dB) before and after, the
    mean step time (s), and why it stopped ("off", "iters", "budget", "preempted", "no_gain":
    context PSNR did not improve, so the input was returned)."""

    iterations: int
    seconds: float
    psnr_before: float
    psnr_after: float
    step_s: float
    stopped_by: str

    @property
    def gain_db(self) -> float:
        return self.psnr_after - self.psnr_before


class WindowViews(Protocol):
    """The window's cameras in the Gaussians' frame (``fusion.WindowCameras`` is one):
    c2w (V, 4, 4) OpenCV camera-to-world, K (V, 3, 3) pixel intrinsics of the images."""

    c2w: Tensor
    K: Tensor


@dataclass
class WorkingViews:
    """Context views at the working resolution: c2w (V, 4, 4), K (V, 3, 3), images (V, 3, h, w)."""

    c2w: Tensor
    K: Tensor
    images: Tensor


def to_unconstrained(g: Gaussians) -> dict[str, Tensor]:
    """Activated Gaussians (..., N, k) -> leaf tensors of the optimisation, same shapes:
    means, log scales, quats (raw), opacity logits, colours."""
    opa = g.opacities.detach().clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
    return {"means": g.means.detach().clone(), "scales": g.scales.detach().clamp_min(SCALE_MIN).log(),
            "quats": g.quats.detach().clone(), "opacities": torch.logit(opa),
            "colors": g.colors.detach().clone()}


def activate(p: dict[str, Tensor]) -> Gaussians:
    """Inverse of :func:`to_unconstrained` (differentiable): unit quats, linear scales, opacities in (0, 1)."""
    return Gaussians(means=p["means"], quats=F.normalize(p["quats"], dim=-1), scales=p["scales"].exp(),
                     opacities=torch.sigmoid(p["opacities"]), colors=p["colors"])


def working_views(cameras: WindowViews, images: Tensor, downscale: int, like: Tensor) -> WorkingViews:
    """Cameras and images on the Gaussians' device/dtype, box-downscaled by ``downscale``.

    images (V, 3, H, W) in [0, 1] -> (V, 3, H // s, W // s); K rows 0-1 divided by s (pixel
    centres at (j + 0.5) map exactly onto the pooled grid).
    """
    c2w = torch.as_tensor(cameras.c2w).to(like.device, like.dtype).reshape(-1, 4, 4)
    K = torch.as_tensor(cameras.K).to(like.device, like.dtype).reshape(-1, 3, 3).clone()
    img = images.to(like.device, like.dtype)
    if img.dim() != 4 or img.shape[1] != 3 or img.shape[0] != c2w.shape[0] or K.shape[0] != c2w.shape[0]:
        raise ValueError(f"images must be (V, 3, H, W) with V = {c2w.shape[0]} cameras and K (V, 3, 3); "
                         f"got {tuple(img.shape)}, K {tuple(K.shape)}")
    if downscale > 1:
        h, w = img.shape[-2] // downscale * downscale, img.shape[-1] // downscale * downscale
        img = F.avg_pool2d(img[..., :h, :w], downscale)
        K[:, :2] /= downscale
    return WorkingViews(c2w=c2w, K=K, images=img)


def _render(g: Gaussians, views: WorkingViews, idx: Tensor | None, background: Tensor | None) -> Tensor:
    """Render the views ``idx`` (None = all) -> (C, 3, h, w)."""
    c2w, K = (views.c2w, views.K) if idx is None else (views.c2w[idx], views.K[idx])
    h, w = views.images.shape[-2:]
    out = render_gaussians(g, c2w, K, w, h, background=background)
    return out.rgb.permute(0, 3, 1, 2)


def _context_psnr(params: dict[str, Tensor], views: WorkingViews, scored: int, background: Tensor | None) -> float:
    """PSNR (dB) of the first ``scored`` context views together (all of them when ``scored`` >= V), from the
    pooled MSE."""
    idx = None if scored >= views.c2w.shape[0] else torch.arange(scored)
    with torch.no_grad():
        pred = _render(activate(params), views, idx, background)
        target = views.images if idx is None else views.images[idx]
        return psnr_from_mse(float((pred.clamp(0, 1) - target).pow(2).mean()))


def _largest_finite(x: Tensor) -> float:
    """The largest finite value of ``x`` (inf when there is none: nothing to cap by)."""
    finite = x[torch.isfinite(x)]
    return float(finite.max()) if finite.numel() else math.inf


def _scene_scale(means: Tensor, c2w: Tensor) -> float:
    """Median distance of the means (..., N, 3) to the centroid of the camera centres (metres)."""
    centroid = c2w[:, :3, 3].mean(0)
    d = (means.detach().reshape(-1, 3) - centroid).norm(dim=-1)
    return max(float(d.median()) if d.numel() else 1.0, 1e-6)


def _idle_adam() -> torch.optim.Adam:
    """An Adam over one throwaway tensor that moves nothing."""
    return torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.0)


def warm_up() -> None:
    """Pay torch.optim's first-use cost now: the first optimiser built in a process imports torch._dynamo
    (≈1 s on this CPU), which would otherwise fall into the first refinement's time budget."""
    _idle_adam()


def _optimizer(params: dict[str, Tensor], cfg: RefineConfig, scene_scale: float) -> torch.optim.Adam:
    """Adam (torch's fused kernel on CPU and CUDA: one pass per tensor) with one step size per field; a field
    whose step size is 0 stays as it is."""
    lrs = {"means": cfg.lr_means * scene_scale, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacities, "colors": cfg.lr_colors}
    for t in params.values():
        t.requires_grad_(True)
    groups = [{"params": [params[name]], "lr": lr} for name, lr in lrs.items() if lr > 0.0]
    if not groups:   # nothing to move
        return _idle_adam()
    try:
        return torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-15, fused=True)
    except RuntimeError:   # a device or torch build without the fused kernel
        return torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-15)


def _loss(pred: Tensor, target: Tensor, ssim_weight: float) -> Tensor:
    """(1 − λ)·L1 + λ·(1 − SSIM) of (C, 3, h, w) images."""
    l1 = (pred - target).abs().mean()
    if ssim_weight <= 0.0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(pred, target).mean())


def _step(params: dict[str, Tensor], opt: torch.optim.Adam, views: WorkingViews, idx: Tensor | None,
          cfg: RefineConfig, background: Tensor | None, max_log_scale: float) -> float:
    """One Adam step on the views ``idx``; colours projected into [0, 1], log scales to at most
    ``max_log_scale``. Returns the loss."""
    for t in params.values():
        t.grad = None
    target = views.images if idx is None else views.images[idx]
    loss = _loss(_render(activate(params), views, idx, background), target, cfg.ssim_weight)
    loss.backward()
    opt.step()
    with torch.no_grad():
        params["colors"].clamp_(0.0, 1.0)
        params["scales"].clamp_(max=max_log_scale)
    return float(loss.detach())


def _view_picker(n_views: int, cfg: RefineConfig) -> Callable[[], Tensor | None]:
    """Per-step view indices: None (all) or ``views_per_iter`` distinct views drawn with ``seed``."""
    if cfg.views_per_iter == 0 or cfg.views_per_iter >= n_views:
        return lambda: None
    gen = torch.Generator().manual_seed(cfg.seed)
    return lambda: torch.randperm(n_views, generator=gen)[: cfg.views_per_iter].sort().values


def _out_of_time(elapsed: float, next_step_s: float, final_eval_s: float, budget_s: float) -> bool:
    return budget_s > 0.0 and elapsed + next_step_s + final_eval_s > budget_s


def refine_window(gaussians: Gaussians, cameras: WindowViews, images: Tensor, cfg: RefineConfig,
                  clock: Callable[[], float] = time.monotonic,
                  background: Tensor | None = None) -> tuple[Gaussians, RefineStats]:
    """Optimise one window's Gaussians against its context images with the differentiable renderer.

    gaussians: activated fields (..., N, k) (``core.gaussians``), in the cameras' frame;
    cameras: c2w (V, 4, 4), K (V, 3, 3) (:class:`WindowViews`); images: (V, 3, H, W) in [0, 1];
    background: (3,) or None (black), as the map is rendered; clock: seconds (injectable for tests).
    Returns (Gaussians with the input's shapes, dtype, device and conventions, detached; the
    input object itself when nothing ran or the context PSNR did not improve; RefineStats).
    """
    return optimise_gaussians(gaussians, cameras, images, cfg, Schedule(cfg.window_iters, cfg.window_budget_s),
                              clock, background)


def optimise_gaussians(gaussians: Gaussians, cameras: WindowViews, images: Tensor, cfg: RefineConfig,
                       schedule: Schedule, clock: Callable[[], float] = time.monotonic,
                       background: Tensor | None = None) -> tuple[Gaussians, RefineStats]:
    """The optimisation behind :func:`refine_window` and the map refiner (``map_refine``).

    As :func:`refine_window`, with when to stop and which views judge the result given explicitly
    (:class:`Schedule`); the learning rates, loss, views per step and seed come from cfg. What the
    steps gained before a preemption is kept as usual.
    """
    nan = math.nan
    max_iters, budget_s, preempt = schedule.iters, schedule.budget_s, schedule.preempt
    if max_iters == 0 or len(gaussians) == 0:
        return gaussians, RefineStats(0, 0.0, nan, nan, 0.0, "off")
    t0 = clock()
    views = working_views(cameras, images, cfg.downscale, gaussians.means)
    bg = None if background is None else background.to(gaussians.means)
    params = to_unconstrained(gaussians)
    max_log_scale = _largest_finite(params["scales"])   # no Gaussian grows past the largest it was given
    n_views = views.c2w.shape[0]
    scored = schedule.scored_views if 0 < schedule.scored_views < n_views else n_views
    psnr_before = _context_psnr(params, views, scored, bg)
    eval_s = clock() - t0
    opt = _optimizer(params, cfg, _scene_scale(gaussians.means, views.c2w))
    pick = _view_picker(n_views, cfg)
    per_step = cfg.views_per_iter if 0 < cfg.views_per_iter < n_views else n_views
    predicted = 3.0 * eval_s * per_step / scored   # fwd+bwd of a view ≈ 3-4 of its forwards
    iters, stopped_by, step_total = 0, "iters", 0.0
    now = clock()
    while iters < max_iters:
        if _out_of_time(now - t0, predicted, eval_s, budget_s):
            stopped_by = "budget"
            break
        if preempt is not None and preempt():
            stopped_by = "preempted"
            break
        _step(params, opt, views, pick(), cfg, bg, max_log_scale)
        start, now = now, clock()
        predicted = now - start
        step_total += predicted
        iters += 1
    for t in params.values():
        t.requires_grad_(False)
    psnr_after = _context_psnr(params, views, scored, bg) if iters else psnr_before
    step_s = step_total / iters if iters else 0.0
    if iters == 0 or not psnr_after > psnr_before:
        stopped_by = stopped_by if iters == 0 else "no_gain"
        stats = RefineStats(iters, clock() - t0, psnr_before, psnr_before, step_s, stopped_by)
        log.debug("refinement kept the input Gaussians (%s, %d steps)", stopped_by, iters)
        return gaussians, stats
    out = activate(params).detach()
    stats = RefineStats(iters, clock() - t0, psnr_before, psnr_after, step_s, stopped_by)
    log.debug("refinement: %d steps in %.2f s (%s), context PSNR %.2f -> %.2f dB",
              iters, stats.seconds, stopped_by, psnr_before, psnr_after)
    return out, stats
