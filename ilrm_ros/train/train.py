"""Training loop for iLRM: `ilrm-ros train --config CFG [--data DIR] [--out RUN_DIR] [--steps N] [--resume]`.

Each step samples V ∈ [views_min, views_max] context views (one V for the whole batch,
so one model learns to serve 2–8 views) and T target views per window, predicts
Gaussians from the context in the window-normalised frame, renders the targets with
``render_gaussians`` and minimises MSE + λ·(1 − SSIM).

A run directory holds: ``config.yaml`` (resolved config), ``log.csv``, ``loss.png``,
``checkpoints/step_XXXXXXX.pt`` (full training state, resumable) and ``model_latest.pt``
(weights only, loadable by ``ilrm_ros.model.checkpoint.load_checkpoint``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import yaml

from ilrm_ros.train.dataset import Batch, SceneData, load_scenes, make_batch, sample_window_indices
from ilrm_ros.train.losses import LossConfig, reconstruction_loss
from ilrm_ros.train.metrics import load_lpips, psnr
from ilrm_ros.render.panels import line_chart

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
CSV_FIELDS = ["step", "loss", "mse", "ssim", "psnr", "lr", "views", "grad_norm", "sec_per_step",
              "target_images_per_s", "elapsed_s"]


@dataclass
class TrainConfig:
    """Everything one training run needs; saved resolved next to the outputs."""

    model: str = "small"
    """Model config name (ilrm_ros/configs/model/<name>.yaml) or path."""
    data: str = "data/synth_train"
    """Folder of scenes (compact scenes or transforms.json datasets)."""
    out: str = "runs/small"
    """Run directory (config, CSV log, plot, checkpoints)."""
    init_from: str = ""
    """Optional checkpoint whose weights start the run (e.g. low-res pre-training)."""
    data_seed: Optional[int] = None
    """Seed the training data was generated with (recorded in metadata only)."""
    image_size: list = field(default_factory=lambda: [64, 64])
    """Training resolution (h, w); scenes are resized to it once at load time."""
    max_scenes: Optional[int] = None
    steps: int = 2000
    batch_size: int = 4
    views_min: int = 2
    views_max: int = 8
    targets: int = 2
    window_span: int = 16
    """Context and targets come from this many consecutive frames."""
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    ssim_weight: float = 0.2
    lpips_weight: float = 0.0
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Render background, RGB; white like the node (config.RenderConfig.background)."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """torch.set_num_threads (0 = leave torch's default)."""
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 3


# --------------------------------------------------------------------------- config I/O

def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or a name looked up in ilrm_ros/configs/train/."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise FileNotFoundError(f"no train config {name_or_path!r} (looked in {CONFIG_DIR})")


def _coerce(cfg_field: dataclasses.Field, value: Any) -> Any:
    if isinstance(value, str) and cfg_field.type in ("int", "float", "bool", "Optional[int]"):
        return yaml.safe_load(value)
    return value


def config_from_dict(d: dict) -> TrainConfig:
    """Build a TrainConfig, rejecting unknown keys."""
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"unknown train config keys: {sorted(unknown)}")
    return TrainConfig(**{k: _coerce(names[k], v) for k, v in d.items()})


def load_train_config(name_or_path: str, overrides: Optional[dict] = None) -> TrainConfig:
    with open(resolve_config_path(name_or_path)) as f:
        d = yaml.safe_load(f) or {}
    d.update(overrides or {})
    return config_from_dict(d)


def resume_config(name_or_path: str, overrides: Optional[dict] = None) -> TrainConfig:
    """The config a resumed run continues with: the one saved in the run's latest
    checkpoint (so a resume repeats the original run), then ``overrides`` on top.
    Falls back to ``name_or_path`` + overrides when the run has no checkpoint yet."""
    fresh = load_train_config(name_or_path, overrides)
    ckpt = latest_checkpoint(Path(fresh.out))
    if ckpt is None:
        return fresh
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["train_config"]
    saved.update(overrides or {})
    return config_from_dict(saved)


def save_config(cfg: TrainConfig, path: Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)


# --------------------------------------------------------------------------- pieces

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


def render_targets(gaussians, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                   background: torch.Tensor) -> torch.Tensor:
    """Render each window's Gaussians from its target cameras.

    gaussians: fields (B, N, k); c2w (B, T, 4, 4); K (B, T, 3, 3) -> (B, T, 3, H, W).
    """
    from ilrm_ros.render.render import render_gaussians

    outs = []
    for b in range(c2w.shape[0]):
        gb = gaussians.map(lambda t, b=b: t[b].float())
        out = render_gaussians(gb, c2w[b].float(), K[b].float(), width, height, background=background)
        outs.append(out.rgb.permute(0, 3, 1, 2))
    return torch.stack(outs)


def sample_batch(scenes: list[SceneData], cfg: TrainConfig, rng: random.Random) -> Batch:
    """One training batch with a single V drawn from [views_min, views_max]."""
    v = rng.randint(cfg.views_min, cfg.views_max)
    picks = []
    for _ in range(cfg.batch_size):
        si = rng.randrange(len(scenes))
        ctx, tgt = sample_window_indices(len(scenes[si]), v, cfg.targets, cfg.window_span, rng)
        picks.append((si, ctx, tgt))
    return make_batch(scenes, picks)


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


def train_step(model: torch.nn.Module, batch: Batch, opt: torch.optim.Optimizer, cfg: TrainConfig,
               device: torch.device, background: torch.Tensor,
               lpips_fn: Optional[Callable] = None) -> StepResult:
    """One optimisation step on one batch (model in train mode)."""
    batch = batch.to(device)
    h, w = batch.tgt_images.shape[-2:]
    with autocast_ctx(device):
        g = model(batch.ctx_images, batch.ctx_c2w, batch.ctx_K)
    pred = render_targets(g, batch.tgt_c2w, batch.tgt_K, w, h, background)
    terms = reconstruction_loss(pred, batch.tgt_images, LossConfig(cfg.ssim_weight, cfg.lpips_weight), lpips_fn)
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    opt.step()
    with torch.no_grad():
        p = psnr(pred.detach().clamp(0, 1), batch.tgt_images).mean().item()
    return StepResult(terms.total.item(), terms.mse.item(), terms.ssim.item(), p, float(gn),
                      int(batch.ctx_images.shape[1]))


# --------------------------------------------------------------------------- checkpoints

def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The training-state checkpoint with the highest step in ``run_dir`` (or None)."""
    cks = sorted(checkpoint_dir(run_dir).glob("step_*.pt"))
    return cks[-1] if cks else None


def rng_state(rng: random.Random) -> dict:
    st = {"python": rng.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(rng: random.Random, st: dict) -> None:
    rng.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def model_meta(cfg: TrainConfig, step: int, extra: Optional[dict] = None) -> dict:
    meta = {"model_config": cfg.model, "train_config": dataclasses.asdict(cfg), "step": step,
            "data_seed": cfg.data_seed, "image_size": list(cfg.image_size)}
    meta.update(extra or {})
    return meta


def save_training_state(run_dir: Path, step: int, model, opt, sched, rng: random.Random,
                        cfg: TrainConfig) -> Path:
    """Write ``checkpoints/step_XXXXXXX.pt`` (full state) + ``model_latest.pt``; prune old ones."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng_state(rng),
                "train_config": dataclasses.asdict(cfg)}, tmp)
    tmp.replace(path)
    from ilrm_ros.model.checkpoint import save_checkpoint

    save_checkpoint(run_dir / "model_latest.pt", model, model_meta(cfg, step))
    for old in sorted(d.glob("step_*.pt"))[:-max(1, cfg.keep_checkpoints)]:
        old.unlink()
    return path


# --------------------------------------------------------------------------- logging

def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def truncate_log(path: Path, max_step: int) -> None:
    """Drop rows logged after ``max_step`` (steps redone after a resume)."""
    rows = [r for r in read_log(path) if int(r["step"]) <= max_step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def plot_log(csv_path: Path, png_path: Path) -> None:
    rows = read_log(csv_path)
    if not rows:
        return
    xs = [float(r["step"]) for r in rows]
    line_chart(png_path, xs, {"training loss (MSE + lambda*(1-SSIM))": {"loss": [float(r["loss"]) for r in rows]},
                              "training PSNR (dB)": {"psnr": [float(r["psnr"]) for r in rows]}})


# --------------------------------------------------------------------------- main loop

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


def train(cfg: TrainConfig, resume: bool = False, scenes: Optional[list[SceneData]] = None,
          until: Optional[int] = None) -> dict:
    """Run (or continue) training; returns a summary dict.

    ``scenes`` bypasses loading from ``cfg.data``; ``until`` stops (with a checkpoint)
    after that step without changing the schedule, which is laid out for ``cfg.steps``.
    """
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)

    ckpt_path = latest_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        cfg = dataclasses.replace(cfg, init_from="")  # the weights come from the checkpoint
    save_config(cfg, run_dir / "config.yaml")

    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    if scenes is None:
        scenes = load_scenes(cfg.data, size=size, max_scenes=cfg.max_scenes,
                             min_frames=cfg.views_min + cfg.targets)
    if not scenes:
        raise RuntimeError(f"no scenes found in {cfg.data}")

    model = build_model(cfg, device)
    model.train()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    start = 0
    if ckpt_path is not None:
        st = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        set_rng_state(rng, st["rng"])
        start = int(st["step"])
        truncate_log(run_dir / "log.csv", start)
        log.info("resumed from %s at step %d", ckpt_path, start)
    elif resume:
        log.info("--resume: no checkpoint in %s, starting from scratch", run_dir)

    lpips_fn = load_lpips(device) if cfg.lpips_weight > 0 else None
    background = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2f M params; %d scenes at %dx%d; steps %d -> %d on %s",
             cfg.model, n_params / 1e6, len(scenes), size[0], size[1], start, cfg.steps, device)

    prev = read_log(run_dir / "log.csv")
    elapsed0 = float(prev[-1]["elapsed_s"]) if prev else 0.0
    t0 = time.time()
    acc: list[StepResult] = []
    t_last = time.time()
    step = start
    last: Optional[StepResult] = None
    end = cfg.steps if until is None else min(cfg.steps, until)
    for step in range(start + 1, end + 1):
        batch = sample_batch(scenes, cfg, rng)
        res = train_step(model, batch, opt, cfg, device, background, lpips_fn)
        sched.step()
        if not math.isfinite(res.loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        acc.append(res)
        last = res
        if step % cfg.log_every == 0 or step == end:
            dt = (time.time() - t_last) / len(acc)
            row = {"step": step,
                   "loss": f"{sum(r.loss for r in acc) / len(acc):.6f}",
                   "mse": f"{sum(r.mse for r in acc) / len(acc):.6f}",
                   "ssim": f"{sum(r.ssim for r in acc) / len(acc):.5f}",
                   "psnr": f"{sum(r.psnr for r in acc) / len(acc):.3f}",
                   "lr": f"{sched.get_last_lr()[0]:.3e}",
                   "views": f"{sum(r.views for r in acc) / len(acc):.2f}",
                   "grad_norm": f"{sum(r.grad_norm for r in acc) / len(acc):.4f}",
                   "sec_per_step": f"{dt:.3f}",
                   "target_images_per_s": f"{cfg.batch_size * cfg.targets / max(dt, 1e-9):.2f}",
                   "elapsed_s": f"{elapsed0 + time.time() - t0:.1f}"}
            append_log(run_dir / "log.csv", row)
            log.info("step %d/%d loss %s psnr %s lr %s V %s %s s/step %s img/s", step, cfg.steps, row["loss"],
                     row["psnr"], row["lr"], row["views"], row["sec_per_step"], row["target_images_per_s"])
            acc, t_last = [], time.time()
        if step % cfg.ckpt_every == 0 or step == end:
            save_training_state(run_dir, step, model, opt, sched, rng, cfg)
            plot_log(run_dir / "log.csv", run_dir / "loss.png")
    return {"run_dir": str(run_dir), "step": step, "start_step": start, "wall_s": time.time() - t0,
            "last_loss": None if last is None else last.loss}


# --------------------------------------------------------------------------- export

def export_model(src: str | Path, dst: str | Path, extra_meta: Optional[dict] = None) -> dict:
    """Copy a run's ``model_latest.pt`` to a shippable fp16 checkpoint + ``<dst>.json``.

    The JSON holds the checkpoint's meta (train config, step, data seed, ...) plus
    ``extra_meta`` (e.g. the reproduce command and evaluation results) and the file size.
    """
    import hashlib
    import json

    from ilrm_ros.model.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(src)
    meta.update(extra_meta or {})
    dst = Path(dst)
    save_checkpoint(dst, model, meta, half=True)
    info = {"file": dst.name, "bytes": dst.stat().st_size,
            "sha256": hashlib.sha256(dst.read_bytes()).hexdigest(),
            "model_config": model.cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float16", **meta}
    dst.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


# --------------------------------------------------------------------------- CLI

def _parse_set(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        if not _:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        out[k.strip()] = yaml.safe_load(v)
    return out


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros train", description="Train iLRM on posed image scenes.")
    ap.add_argument("--config", required=True, help="train config name (configs/train/<name>.yaml) or YAML path")
    ap.add_argument("--data", help="scene folder (overrides the config)")
    ap.add_argument("--out", help="run directory (overrides the config)")
    ap.add_argument("--steps", type=int, help="total number of steps (overrides the config)")
    ap.add_argument("--until", type=int, help="stop (with a checkpoint) after this step; the schedule stays "
                    "laid out for --steps (reproduces snapshots of a longer run)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the run directory")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    ap.add_argument("--export", metavar="PATH", help="afterwards, write the final weights as an fp16 checkpoint "
                    "(+ PATH.json metadata), e.g. ilrm_ros/checkpoints/ilrm_small.pt")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    overrides = _parse_set(args.set)
    for k in ("data", "out", "steps"):
        if getattr(args, k) is not None:
            overrides[k] = getattr(args, k)
    cfg = resume_config(args.config, overrides) if args.resume else load_train_config(args.config, overrides)
    summary = train(cfg, resume=args.resume, until=args.until)
    print(f"done: {summary['run_dir']} step {summary['step']} ({summary['wall_s']:.1f} s)")
    if args.export:
        info = export_model(Path(cfg.out) / "model_latest.pt", args.export,
                            {"reproduce": "ilrm-ros train " + " ".join(argv if argv is not None else sys.argv[1:])})
        print(f"exported {args.export} ({info['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
