"""Training loop for iLRM: `ilrm-ros train --config CFG [--data DIR] [--out RUN_DIR] [--steps N] [--resume]`.

Each step samples V ∈ [views_min, views_max] context views (one V for the whole batch,
so one model learns to serve 2–8 views) and T target views per window, predicts
Gaussians from the context in the window-normalised frame, renders the targets with
``render_gaussians`` and minimises MSE + λ·(1 − SSIM).

A run directory holds: ``config.yaml`` (resolved config), ``log.csv``, ``loss.png``,
``checkpoints/step_XXXXXXX.pt`` (full training state, resumable) and ``model_latest.pt``
(weights only, loadable by ``ilrm_ros.model.checkpoint.load_checkpoint``).

Pieces: the config (``train_config``), one step (``step``), the run's checkpoints and
export (``run_state``), its CSV log and plot (``run_log``).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import yaml

from ilrm_ros.core.progress import Progress
from ilrm_ros.train.dataset import SceneData, load_scenes
from ilrm_ros.train.metrics import load_lpips
from ilrm_ros.train.run_log import append_log, log_row, plot_log, read_log, truncate_log
from ilrm_ros.train.run_state import (
    export_model,
    latest_checkpoint,
    resume_config,
    save_training_state,
    set_rng_state,
)
from ilrm_ros.train.step import (
    StepResult,
    build_model,
    build_optimizer,
    build_scheduler,
    pick_device,
    sample_batch,
    train_step,
)
from ilrm_ros.train.train_config import TrainConfig, load_train_config, save_config

log = logging.getLogger(__name__)


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
    with Progress(end - start, "train", unit="step", logger=log) as bar:
        for step in range(start + 1, end + 1):
            batch = sample_batch(scenes, cfg, rng, model.cfg.pose_normalization)
            res = train_step(model, batch, opt, cfg, device, background, lpips_fn)
            sched.step()
            if not math.isfinite(res.loss):
                raise FloatingPointError(f"non-finite loss at step {step}")
            acc.append(res)
            last = res
            if step % cfg.log_every == 0 or step == end:
                row = log_row(step, acc, sched.get_last_lr()[0], (time.time() - t_last) / len(acc),
                              cfg.batch_size * cfg.targets, elapsed0 + time.time() - t0)
                append_log(run_dir / "log.csv", row)
                log.info("step %d/%d loss %s psnr %s depth |log err| %s lr %s V %s %s s/step %s img/s", step,
                         cfg.steps, row["loss"], row["psnr"], row["depth_log_err"] or "n/a", row["lr"], row["views"],
                         row["sec_per_step"], row["target_images_per_s"])
                bar.set_status(f"loss {row['loss']}, PSNR {row['psnr']} dB")
                acc, t_last = [], time.time()
            if step % cfg.ckpt_every == 0 or step == end:
                save_training_state(run_dir, step, model, opt, sched, rng, cfg)
                plot_log(run_dir / "log.csv", run_dir / "loss.png")
            bar.update()
            if cfg.time_budget_s > 0 and time.time() - t0 > cfg.time_budget_s and step < end:
                log.warning("time budget %.0f s spent at step %d/%d: stopping", cfg.time_budget_s, step, cfg.steps)
                save_training_state(run_dir, step, model, opt, sched, rng, cfg)
                break
    return {"run_dir": str(run_dir), "step": step, "start_step": start, "wall_s": time.time() - t0,
            "last_loss": None if last is None else last.loss}


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
