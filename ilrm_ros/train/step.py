"""One optimisation step of iLRM and what it needs: device, model, AdamW with warm-up +
cosine schedule, batch sampling (one V per batch), rendering the targets and the loss."""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ilrm_ros.data.view_sampling import sample_window_indices
from ilrm_ros.train.dataset import Batch, SceneData, make_batch
from ilrm_ros.train.losses import LossConfig, depth_loss, reconstruction_loss
from ilrm_ros.render.metrics import psnr
from ilrm_ros.train.train_config import TrainConfig

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and other 1-D parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))


def render_targets_rgbd(gaussians, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                        background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render each window's Gaussians from its target cameras.

    gaussians: fields (B, N, k); c2w (B, T, 4, 4); K (B, T, 3, 3) -> rgb (B, T, 3, H, W),
    accumulated depth (B, T, H, W) and alpha (B, T, H, W) (``RenderOutput``'s conventions).
    """
    from ilrm_ros.render.render import render_gaussians

    rgb, depth, alpha = [], [], []
    for b in range(c2w.shape[0]):
        gb = gaussians.map(lambda t, b=b: t[b].float())
        out = render_gaussians(gb, c2w[b].float(), K[b].float(), width, height, background=background)
        rgb.append(out.rgb.permute(0, 3, 1, 2))
        depth.append(out.depth)
        alpha.append(out.alpha)
    return torch.stack(rgb), torch.stack(depth), torch.stack(alpha)


def draw_span(lo: int, hi: int, rng: random.Random) -> int:
    """A window span in frames, log-uniform over [lo, hi] (narrow and wide windows alike)."""
    lo, hi = max(1, min(lo, hi)), max(1, hi)
    return min(hi, max(lo, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))))


def sample_batch(scenes: list[SceneData], cfg: TrainConfig, rng: random.Random,
                 pose_normalization: str = "ilrm_ros") -> Batch:
    """One training batch with a single V drawn from [views_min, views_max]; each window's span
    is ``window_span``, or drawn by :func:`draw_span` when ``window_span_min`` > 0. Cameras are
    normalised by the model's rule (``pose_normalization``)."""
    v = rng.randint(cfg.views_min, cfg.views_max)
    picks = []
    for _ in range(cfg.batch_size):
        si = rng.randrange(len(scenes))
        span = cfg.window_span
        if cfg.window_span_min > 0:
            span = draw_span(max(cfg.window_span_min, v + cfg.targets), cfg.window_span, rng)
        ctx, tgt = sample_window_indices(len(scenes[si]), v, cfg.targets, span, rng)
        picks.append((si, ctx, tgt))
    return make_batch(scenes, picks, pose_normalization)


def autocast_ctx(device: torch.device):
    """bf16 autocast on GPU, plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class StepResult:
    loss: float
    mse: float
    ssim: float
    psnr: float
    grad_norm: float
    views: int
    depth: float | None = None
    """Mean |log depth error| of the targets (when the batch has true depth), else None."""


def train_step(model: torch.nn.Module, batch: Batch, opt: torch.optim.Optimizer, cfg: TrainConfig,
               device: torch.device, background: torch.Tensor,
               lpips_fn: Optional[Callable] = None) -> StepResult:
    """One optimisation step on one batch (model in train mode)."""
    batch = batch.to(device)
    h, w = batch.tgt_images.shape[-2:]
    with autocast_ctx(device):
        g = model(batch.ctx_images, batch.ctx_c2w, batch.ctx_K)
    pred, depth, alpha = render_targets_rgbd(g, batch.tgt_c2w, batch.tgt_K, w, h, background)
    terms = reconstruction_loss(pred, batch.tgt_images, LossConfig(cfg.ssim_weight, cfg.lpips_weight), lpips_fn)
    total, d_err = terms.total, None
    if batch.tgt_depths is not None:
        d = depth_loss(depth, alpha, batch.tgt_depths)
        d_err = float(d.detach())
        if cfg.depth_weight > 0:
            total = total + cfg.depth_weight * d
    opt.zero_grad(set_to_none=True)
    total.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    opt.step()
    with torch.no_grad():
        p = psnr(pred.detach().clamp(0, 1), batch.tgt_images).mean().item()
    return StepResult(total.item(), terms.mse.item(), terms.ssim.item(), p, float(gn),
                      int(batch.ctx_images.shape[1]), d_err)


def build_model(cfg: TrainConfig, device: torch.device):
    from ilrm_ros.model.ilrm import ILRM, load_model_config

    model = ILRM(load_model_config(cfg.model))
    if cfg.init_from:
        from ilrm_ros.model.checkpoint import load_checkpoint

        src, meta = load_checkpoint(cfg.init_from)
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        log.info("initialised from %s (step %s); missing %d unexpected %d", cfg.init_from,
                 meta.get("step"), len(missing), len(unexpected))
    return model.to(device)
