"""A training run's state on disk: resumable checkpoints (``checkpoints/step_XXXXXXX.pt``:
model, optimizer, scheduler, RNGs, config), ``model_latest.pt`` (weights only) and the
fp16 export of the final weights."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Optional

import torch

from ilrm_ros.train.train_config import TrainConfig, config_from_dict, load_train_config


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
