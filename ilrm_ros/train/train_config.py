"""The configuration of one training run (:class:`TrainConfig`): YAML files in
``ilrm_ros/configs/train/`` (or any path), ``--set`` overrides, unknown keys rejected."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"


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
    """Context and targets of a window are drawn from this many consecutive frames (the widest window)."""
    window_span_min: int = 0
    """> 0: each window's span is drawn log-uniformly from [window_span_min, window_span] (clamped
    to V + T), so narrow windows like the node's (a few keyframes ~0.1 m apart) are trained too;
    0: every window spans ``window_span``."""
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    ssim_weight: float = 0.2
    lpips_weight: float = 0.0
    depth_weight: float = 0.0
    """Weight of the log-depth term (train.losses.depth_loss) on scenes with true depth (generated ones)."""
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Render background, RGB; white like the node (config.RenderConfig.background)."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """torch.set_num_threads (0 = leave torch's default)."""
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 3
    time_budget_s: float = 0.0
    """Wall-clock limit of this call in seconds (0 = none): the loop stops with a checkpoint
    after the first step past it. The schedule stays laid out for ``steps``."""


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


def save_config(cfg: TrainConfig, path: Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)
