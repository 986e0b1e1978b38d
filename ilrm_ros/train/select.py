"""Pick a run's snapshot on validation data and export it:
``python -m ilrm_ros.train.select --run RUN --data VAL --views 2 4 8 --out BEST.pt [--candidate PATH ...]``.

Candidates are the run's kept training-state checkpoints (``checkpoints/step_*.pt``) plus any
``--candidate`` checkpoint file (e.g. the one the run started from, so a fine-tune that only
got worse is not shipped). Each is scored by the mean model PSNR over the ``--views`` values
(and over the ``--span`` values: e.g. ``--span 16 6`` scores wide windows and narrow ones like
the node's) with :func:`ilrm_ros.train.evaluate.evaluate` on ``--data``, which must be **validation**
scenes, never the held-out ones the final numbers are reported on. The best one is written
in our format (fp16 by default) with the scores in its meta; ``--json`` writes all scores.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ilrm_ros.train.dataset import SceneData, load_scenes
from ilrm_ros.train.evaluate import EvalSettings, evaluate
from ilrm_ros.train.run_state import checkpoint_dir, model_meta
from ilrm_ros.train.step import pick_device
from ilrm_ros.train.train_config import config_from_dict

log = logging.getLogger(__name__)


def load_candidate(path: Path, device: torch.device):
    """(model, meta) of a training-state checkpoint or of any checkpoint file the loader accepts."""
    state = torch.load(path, map_location="cpu", weights_only=False) if path.name.startswith("step_") else None
    if isinstance(state, dict) and "train_config" in state and "model" in state:  # a training state
        from ilrm_ros.model.ilrm import ILRM, load_model_config

        cfg = config_from_dict(state["train_config"])
        model = ILRM(load_model_config(cfg.model))
        model.load_state_dict(state["model"])
        return model.to(device).eval(), model_meta(cfg, int(state["step"]))
    from ilrm_ros.model.loading import load_model_file

    model, _ = load_model_file(path, "auto", device, False)
    return model.float().to(device).eval(), {"init_checkpoint": str(path), "step": 0}


def validation_score(model, scenes: Sequence[SceneData], views: Sequence[int], device: torch.device,
                     spans: Sequence[Optional[int]] = (None,)) -> dict:
    """Mean model PSNR over ``views`` x ``spans`` (the selection key) and each window's
    model/baseline PSNR, keyed ``"V"`` (one span) or ``"V@span"`` (several; span None = all frames).
    A window no scene can hold (V + 2 targets > span) is left out, with a warning."""
    per_v = {}
    for span in spans:
        for v in views:
            if span is not None and v + 2 > span:
                log.warning("validation: V=%d does not fit a %d-frame span (+2 targets): left out", v, span)
                continue
            rep = evaluate(model, scenes, EvalSettings(v, 2, span), device)
            key = str(v) if len(spans) == 1 else f"{v}@{span or 'all'}"
            per_v[key] = {m: round(rep[m]["psnr"], 4) for m in ("model", "nearest_view", "mean_color")}
    mean = sum(r["model"] for r in per_v.values()) / max(1, len(per_v))
    return {"mean_model_psnr": round(mean, 4), "views": per_v}


def best_index(scores: Sequence[dict]) -> int:
    """Index of the highest mean validation PSNR (the earliest on ties)."""
    if not scores:
        raise ValueError("no candidates to choose from")
    return max(range(len(scores)), key=lambda i: (scores[i]["mean_model_psnr"], -i))


def candidates(run_dir: Path, extra: Sequence[Path] = ()) -> list[Path]:
    return list(extra) + sorted(checkpoint_dir(run_dir).glob("step_*.pt"))


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ilrm_ros.train.select", description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory of `ilrm-ros train`")
    ap.add_argument("--data", required=True, help="VALIDATION scenes (never the held-out set)")
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--span", type=int, nargs="+", default=[0],
                    help="windows over the first SPAN frames (0 = all); several spans are averaged")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize validation scenes")
    ap.add_argument("--candidate", type=Path, action="append", default=[], help="another checkpoint to compare")
    ap.add_argument("--out", type=Path, required=True, help="the chosen weights (our format)")
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    ap.add_argument("--json", type=Path, help="every candidate's scores and the choice")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from ilrm_ros.model.checkpoint import save_checkpoint

    device = pick_device(args.device)
    scenes = load_scenes(args.data, size=tuple(args.size) if args.size else None)
    paths = candidates(args.run, args.candidate)
    scores = []
    spans = [s or None for s in args.span]
    for p in paths:
        model, _ = load_candidate(p, device)
        with torch.no_grad():
            scores.append({"candidate": str(p), **validation_score(model, scenes, args.views, device, spans)})
        log.info("validation %s: mean model PSNR %.3f dB", p.name, scores[-1]["mean_model_psnr"])
    i = best_index(scores)
    model, meta = load_candidate(paths[i], device)
    meta.update({"selected_on": {"data": str(args.data), "scenes": len(scenes), **scores[i]}})
    save_checkpoint(args.out, model.cpu(), meta, dtype=args.dtype)
    log.info("chose %s (mean validation PSNR %.3f dB) -> %s", paths[i], scores[i]["mean_model_psnr"], args.out)
    if args.json:
        args.json.write_text(json.dumps({"chosen": str(paths[i]), "candidates": scores}, indent=1) + "\n")
    print(f"chose {paths[i]} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
