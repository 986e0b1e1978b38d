"""Evaluation against two baselines: `ilrm-ros eval --checkpoint CKPT --data DIR --views V`.

For every scene a deterministic window is built (``data.view_sampling.eval_window_indices``: T
targets fixed whatever V is, V context views spread over the rest). The model predicts
Gaussians from the context in the window-normalised frame and renders the targets.
Two baselines score the same targets:

* ``nearest_view`` — the context image whose camera centre is nearest to the target's
  (ties broken by the angle between optical axes), copied as the prediction;
* ``mean_color`` — every pixel set to the mean RGB of the context images.

``--json PATH`` writes ``{"model": {"psnr", "ssim"}, "nearest_view": {...},
"mean_color": {...}, "views": V, "per_scene": [...]}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ilrm_ros.core.progress import track
from ilrm_ros.data.view_sampling import eval_window_indices
from ilrm_ros.train.dataset import SceneData, load_scenes, normalize_targets_with_scale
from ilrm_ros.render.metrics import psnr, ssim
from ilrm_ros.train.metrics import load_lpips
from ilrm_ros.train.step import pick_device, render_targets_rgbd

log = logging.getLogger(__name__)

METHODS = ("model", "nearest_view", "mean_color")


def nearest_view_indices(ctx_c2w: torch.Tensor, tgt_c2w: torch.Tensor, rel_tol: float = 1e-6) -> torch.Tensor:
    """For each target, the context view with the nearest camera centre.

    Centres closer than ``rel_tol`` (relative) count as ties, broken by the smallest
    angle between optical (z) axes, then by the lowest index.
    ctx_c2w (V, 4, 4), tgt_c2w (T, 4, 4) -> (T,) long.
    """
    d = torch.cdist(tgt_c2w[:, :3, 3].double(), ctx_c2w[:, :3, 3].double())  # (T, V)
    cos = (tgt_c2w[:, None, :3, 2].double() * ctx_c2w[None, :, :3, 2].double()).sum(-1)  # (T, V)
    out = []
    for t in range(d.shape[0]):
        dmin = d[t].min()
        tied = d[t] <= dmin + rel_tol * max(1.0, float(dmin))
        score = torch.where(tied, cos[t], torch.full_like(cos[t], -math.inf))
        out.append(int(score.argmax()))
    return torch.tensor(out, dtype=torch.long)


def mean_color_prediction(ctx_images: torch.Tensor, n_targets: int) -> torch.Tensor:
    """Constant images of the mean context colour: (V, 3, H, W) -> (T, 3, H, W)."""
    mean = ctx_images.float().mean(dim=(0, 2, 3))
    return mean.view(1, 3, 1, 1).expand(n_targets, 3, *ctx_images.shape[-2:]).clone()


def _scores(pred: torch.Tensor, target: torch.Tensor, lpips_fn: Optional[Callable]) -> dict:
    """Per-scene means over targets; pred/target (T, 3, H, W)."""
    pred = pred.clamp(0, 1)
    out = {"psnr": float(psnr(pred, target).mean()), "ssim": float(ssim(pred, target).mean())}
    if lpips_fn is not None:
        out["lpips"] = float(lpips_fn(pred, target).mean())
    return out


DEPTH_MIN_ALPHA = 0.5
"""Target pixels whose rendered opacity is below this carry no depth to score."""


def depth_scores(depth: torch.Tensor, alpha: torch.Tensor, true: torch.Tensor) -> dict:
    """Rendered vs true z-depth (same units) over pixels with true > 0 and alpha > DEPTH_MIN_ALPHA.

    depth: (T, H, W) accumulated rendered z; alpha, true: (T, H, W). Returns ``abs_rel``
    (mean |d − d*| / d*), ``delta1`` (share with max(d/d*, d*/d) < 1.25), ``median_ratio``
    (median d / d*) and ``coverage`` (share of true-depth pixels scored); NaN when none is.
    """
    valid = (true > 0) & (alpha > DEPTH_MIN_ALPHA)
    n_true = int((true > 0).sum())
    if not bool(valid.any()):
        return {"abs_rel": float("nan"), "delta1": float("nan"), "median_ratio": float("nan"),
                "coverage": 0.0}
    d, t = depth[valid] / alpha[valid], true[valid]
    ratio = d / t
    return {"abs_rel": float(((d - t).abs() / t).mean()),
            "delta1": float((torch.maximum(ratio, 1.0 / ratio.clamp_min(1e-9)) < 1.25).float().mean()),
            "median_ratio": float(ratio.median()), "coverage": float(valid.sum()) / max(1, n_true)}


def resize_views(images: torch.Tensor, K: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize float images (V, 3, H, W) to ``size`` = (h, w) and rescale pixel K (V, 3, 3)."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(size):
        return images, K
    out = F.interpolate(images, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    K = K.clone()
    K[:, 0, :] *= size[1] / w
    K[:, 1, :] *= size[0] / h
    K[:, 2, :] = torch.tensor([0.0, 0.0, 1.0])
    return out.clamp(0, 1), K


@dataclass(frozen=True)
class EvalSettings:
    """What every scene of one evaluation shares."""

    views: int
    """Context views V."""
    targets: int = 2
    """Held-out target views per scene."""
    span: Optional[int] = None
    """Window: the first ``span`` frames of each scene (None = all)."""
    background: Sequence[float] = (1.0, 1.0, 1.0)
    """Render background, RGB."""
    model_size: Optional[tuple[int, int]] = None
    """(h, w): run the model on context views resized to that size; the targets are always
    rendered and scored at the scene's own resolution. None: the scene's size."""


@torch.no_grad()
def evaluate_scene(model, scene: SceneData, settings: EvalSettings, device: torch.device,
                   lpips_fn: Optional[Callable] = None) -> dict:
    """Scores of the model and both baselines on one scene's deterministic window (and the
    model's rendered target depth against the scene's, when it has depth: ``depth``)."""
    background = torch.tensor(list(settings.background), dtype=torch.float32)
    model_size = settings.model_size
    ctx, tgt = eval_window_indices(len(scene), settings.views, settings.targets, settings.span)
    ci, ti = torch.tensor(ctx), torch.tensor(tgt)
    imgs = scene.images.permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    ctx_img, tgt_img = imgs[ci], imgs[ti]
    h, w = ctx_img.shape[-2:]

    ctx_n, tgt_n, scale = normalize_targets_with_scale(scene.c2w[ci], scene.c2w[ti], model.cfg.pose_normalization)
    m_img, m_K = resize_views(ctx_img, scene.K[ci], model_size) if model_size else (ctx_img, scene.K[ci])
    g = model(m_img[None].to(device), ctx_n[None].to(device), m_K[None].to(device))
    rgb, depth, alpha = render_targets_rgbd(g, tgt_n[None].to(device), scene.K[ti][None].to(device), w, h,
                                            background.to(device))
    pred = rgb[0].float().cpu()

    nn_idx = nearest_view_indices(scene.c2w[ci], scene.c2w[ti])
    row = {"scene": scene.name, "context": ctx, "targets": tgt,
           "model": _scores(pred, tgt_img, lpips_fn),
           "nearest_view": _scores(ctx_img[nn_idx], tgt_img, lpips_fn),
           "mean_color": _scores(mean_color_prediction(ctx_img, len(tgt)), tgt_img, lpips_fn)}
    if scene.depths is not None:
        row["depth"] = depth_scores(depth[0].float().cpu() * scale, alpha[0].float().cpu(), scene.depths[ti].float())
    return row


def aggregate(rows: Sequence[dict]) -> dict:
    """Mean of the per-scene scores for every method."""
    out = {}
    for m in METHODS:
        keys = rows[0][m].keys() if rows else ("psnr", "ssim")
        out[m] = {k: (sum(r[m][k] for r in rows) / len(rows) if rows else float("nan")) for k in keys}
    with_depth = [r["depth"] for r in rows if "depth" in r and r["depth"]["coverage"] > 0]
    if with_depth:
        out["depth"] = {k: sum(d[k] for d in with_depth) / len(with_depth) for k in with_depth[0]}
    return out


def evaluate(model, scenes: Sequence[SceneData], settings: EvalSettings, device: str | torch.device = "cpu",
             lpips_fn: Optional[Callable] = None) -> dict:
    """Evaluate on every scene with enough frames; returns the JSON-ready report."""
    device = torch.device(device)
    model.eval()
    rows = []
    views, targets = settings.views, settings.targets
    for s in track(scenes, "eval", unit="scene", logger=log):
        n = len(s) if settings.span is None else min(settings.span, len(s))
        if n < views + targets:
            log.warning("skipping %s: %d frames < %d views + %d targets", s.name, n, views, targets)
            continue
        rows.append(evaluate_scene(model, s, settings, device, lpips_fn))
    report = aggregate(rows)
    report["views"] = views
    report["per_scene"] = rows
    return report


def format_table(report: dict) -> str:
    """A plain-text table of the averaged scores."""
    has_lpips = "lpips" in report["model"]
    lines = [f"views V={report['views']}, scenes={len(report['per_scene'])}",
             f"{'method':<14} {'PSNR':>8} {'SSIM':>8} {'LPIPS':>8}"]
    for m in METHODS:
        r = report[m]
        lp = f"{r['lpips']:8.4f}" if has_lpips else f"{'n/a':>8}"
        lines.append(f"{m:<14} {r['psnr']:8.3f} {r['ssim']:8.4f} {lp}")
    if "depth" in report:
        d = report["depth"]
        lines.append(f"model depth at the targets: AbsRel {d['abs_rel']:.3f}, delta<1.25 {d['delta1']:.3f}, "
                     f"median ratio {d['median_ratio']:.3f}, coverage {d['coverage']:.3f}")
    return "\n".join(lines)


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros eval",
                                 description="Evaluate a checkpoint against nearest-view and mean-colour baselines.")
    ap.add_argument("--checkpoint", required=True,
                    help="any checkpoint model.checkpoint accepts (ours, the authors' .ckpt/.pt, state dict, .safetensors)")
    ap.add_argument("--architecture", default="auto", help="auto (detected), re10k, dl3dv or a config name / YAML")
    ap.add_argument("--trust-pickle", action="store_true", help="allow Python objects in the file (trusted files only)")
    ap.add_argument("--data", required=True, help="scene folder (compact scenes or transforms.json datasets)")
    ap.add_argument("--views", type=int, required=True, help="context views V")
    ap.add_argument("--targets", type=int, default=2, help="held-out target views per scene")
    ap.add_argument("--span", type=int, default=16, help="window: the first SPAN frames of each scene (0 = all)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize scenes (default native size)")
    ap.add_argument("--model-size", type=int, nargs=2, metavar=("H", "W"),
                    help="run the model on context views resized to HxW (targets stay at the data size); "
                         "default: the data size")
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--background", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="write the report as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from ilrm_ros.model.loading import CheckpointError, load_model_file

    device = pick_device(args.device)
    try:
        model, _ = load_model_file(args.checkpoint, args.architecture, device, args.trust_pickle)
    except CheckpointError as exc:
        print(f"ilrm-ros eval: {exc}", file=sys.stderr)
        return 2
    model = model.float().to(device)
    scenes = load_scenes(args.data, size=tuple(args.size) if args.size else None, max_scenes=args.max_scenes)
    settings = EvalSettings(args.views, args.targets, args.span or None, tuple(args.background),
                            tuple(args.model_size) if args.model_size else None)
    report = evaluate(model, scenes, settings, device, load_lpips(device))
    print(format_table(report))
    if not report["per_scene"]:
        print("no scene had enough frames", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
