"""One way to name a model: any checkpoint file -> a ready ILRM and what it is.

``model.checkpoint`` (node parameter, launch argument, ``bag --set``, ``eval
--checkpoint``) goes through :func:`load_model_file`, which accepts our format (1 or 2),
the authors' Lightning ``.ckpt``, the DL3DV ``model`` dict, a plain state dict and
``.safetensors``. Our format carries its config; for the others the architecture is
detected from tensor names and shapes (:func:`~ilrm_ros.model.official.detect_architecture`),
or given with ``model.architecture``. Every failure is one ``CheckpointError`` line
naming the file and what was found.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ilrm_ros.model.checkpoint import (
    build_model,
    default_checkpoint_path,
    is_own_checkpoint,
    own_config_and_state,
    read_checkpoint_file,
)
from ilrm_ros.model.ilrm import ILRM, ILRMConfig, load_model_config
from ilrm_ros.model.official import detect_architecture, extract_state_dict

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "ModelSource", "load_model_file", "inspect_checkpoint", "file_digest"]


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is one line naming the file and the cause."""


@dataclass
class ModelSource:
    """Where a model came from and how it must be fed."""

    path: str
    layout: str
    """"ilrm_ros/2", "ilrm_ros/1", "lightning", "model", "plain" or "safetensors"."""
    architecture: str
    """Config name (re10k, dl3dv, small_rc, ...) or "custom"."""
    how: str
    """"file config", "detected" or "given" (model.architecture)."""
    config: ILRMConfig
    num_parameters: int
    stored_dtype: str
    prefix: str = ""
    ignored: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    model_id: str = ""

    def summary(self) -> dict[str, Any]:
        """What `ilrm-ros info --checkpoint` prints: layout, architecture, size, input it implies."""
        c = self.config
        return {
            "checkpoint": self.path,
            "layout": self.layout + (f" (prefix {self.prefix!r})" if self.prefix else ""),
            "architecture": f"{self.architecture} ({self.how})",
            "parameters": f"{self.num_parameters:,}",
            "stored dtype": self.stored_dtype,
            "input size": f"{c.input_height}x{c.input_width} (H x W; multiples of {c.patch_size * c.viewpoint_factor})",
            "pose normalisation": c.pose_normalization,
            "window": f"{c.window_views} views, stride {c.window_stride} (trained on {c.trained_views[0]}-"
                      f"{c.trained_views[1]} views)",
            "tokens": f"{c.ray_encoding} rays, viewpoint factor {c.viewpoint_factor}, uplift {c.uplift}, "
                      f"{'with' if c.predict_offset else 'no'} pixel offsets",
            "ignored entries": f"{len(self.ignored)}" + (f" (e.g. {self.ignored[:3]})" if self.ignored else ""),
            "model id": self.model_id,
        }


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """First 12 hex digits of the file's SHA-256 (streams; never loads the file at once)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:12]


def _stored_dtype(state: Mapping[str, torch.Tensor]) -> str:
    kinds = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    return "/".join(kinds) or "none"


def _resolve(obj: Any, path: Path, architecture: str) -> tuple[ILRMConfig, dict[str, torch.Tensor], ModelSource]:
    """Loaded file object -> (config, weights under model names, source description)."""
    src = str(path)
    if is_own_checkpoint(obj) and architecture == "auto":
        cfg, state = own_config_and_state(obj)
        source = ModelSource(src, obj["format"], cfg.name, "file config", cfg, 0, str(obj.get("dtype", "float32")),
                             meta=dict(obj.get("meta", {})))
        return cfg, state, source
    state, layout, ignored_top = extract_state_dict(obj)
    if path.suffix == ".safetensors":
        layout = "safetensors"
    det = detect_architecture(state, architecture, source=src)
    source = ModelSource(src, layout, det.name, det.how, det.config, 0, _stored_dtype(det.mapped), prefix=det.prefix,
                         ignored=ignored_top + det.ignored)
    return det.config, {k: v.float() for k, v in det.mapped.items()}, source


def _read(path: Path, trust_pickle: bool) -> Any:
    try:
        return read_checkpoint_file(path, trust_pickle)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e).splitlines()[0]) from e
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files: one clear line
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def _one_line(path: Path, exc: Exception) -> str:
    """The first line of ``exc``, naming ``path`` when it does not already."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return line if str(path) in line else f"{path}: {line}"


def _open(path: str | Path | None, architecture: str,
          trust_pickle: bool) -> tuple[Path, ILRMConfig, dict[str, torch.Tensor], ModelSource]:
    """Read and resolve a checkpoint ("" / None = the shipped one); its source is complete."""
    p = Path(path) if path else default_checkpoint_path()
    obj = _read(p, trust_pickle)
    try:
        cfg, state, source = _resolve(obj, p, architecture)
    except (ValueError, KeyError) as e:
        raise CheckpointError(_one_line(p, e)) from e
    source.num_parameters = sum(v.numel() for v in state.values())
    source.model_id = f"{p.name}@{file_digest(p)}"
    return p, cfg, state, source


def inspect_checkpoint(path: str | Path | None, architecture: str = "auto", trust_pickle: bool = False) -> ModelSource:
    """Describe a checkpoint without building the model (``None`` = the shipped one)."""
    return _open(path, architecture, trust_pickle)[3]


def load_model_file(
    path: str | Path | None, architecture: str = "auto", device: torch.device | str = "cpu", trust_pickle: bool = False
) -> tuple[ILRM, ModelSource]:
    """Any supported checkpoint (``None``/"" = the shipped one) -> (float32 model in eval mode, source).

    ``architecture``: "auto", "re10k", "dl3dv" or any config name / YAML path (overrides
    detection and our files' own config). Raises :class:`CheckpointError`.
    """
    p, cfg, state, source = _open(path, architecture, trust_pickle)
    try:
        model = build_model(cfg, state, device)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(_one_line(p, e)) from e
    log.info("model %s: %s, %s (%s), %s parameters, input %dx%d, poses %s", source.model_id, source.layout,
             source.architecture, source.how, f"{source.num_parameters:,}", cfg.input_height, cfg.input_width,
             cfg.pose_normalization)
    if source.ignored:
        log.info("ignored %d wrapper entries of %s (e.g. %s)", len(source.ignored), p.name, source.ignored[:3])
    return model, source


def random_model(architecture: str, seed: int = 0) -> ILRM:
    """A model of a named config with N(0, init_std) weights from ``seed`` (tests, GPU checks)."""
    torch.manual_seed(seed)
    return ILRM(load_model_config(architecture)).eval()


__all__.append("random_model")
