"""Checkpoints: our own format and the authors' published layouts.

Our format (``"format": "ilrm_ros/1"``) is a ``torch.save`` dict::

    {"format": "ilrm_ros/1", "config": ILRMConfig.to_dict(), "state_dict": {...},
     "dtype": "float32" | "float16", "meta": {"step": ..., "data_seed": ..., ...}}

It holds only plain Python values and tensors, so it loads with ``weights_only=True``.
fp16 storage halves the file for shipping; it is loaded back as float32.

The authors' layouts accepted by :func:`load_official`:
(a) a Lightning checkpoint, weights under ``state_dict`` with keys prefixed
    ``encoder.scaler.`` (other entries — optimizer states, other sub-modules — ignored);
(b) a dict with the weights under ``model`` (the DL3DV release);
(c) a plain state dict (also ``.safetensors``), or one of our own checkpoints.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ilrm_ros.model.ilrm import ILRM, ILRMConfig

log = logging.getLogger(__name__)

FORMAT = "ilrm_ros/1"
SHIPPED_CHECKPOINT = "ilrm_small.pt"

__all__ = [
    "FORMAT",
    "LoadReport",
    "CheckpointShapeError",
    "save_checkpoint",
    "load_checkpoint",
    "load_official",
    "extract_state_dict",
    "match_state_dict",
    "default_checkpoint_path",
]


class CheckpointShapeError(ValueError):
    """Raised when checkpoint tensors match model names but not their shapes."""

    def __init__(self, mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
        self.mismatches = mismatches
        lines = [f"  {k}: checkpoint {list(a)} vs model {list(b)}" for k, (a, b) in sorted(mismatches.items())]
        super().__init__(f"{len(mismatches)} tensor(s) have the wrong shape for this model:\n" + "\n".join(lines))


@dataclass
class LoadReport:
    """What :func:`load_official` did.

    layout: "lightning" | "model" | "plain" | "ilrm_ros"; prefix: the key prefix stripped;
    loaded: model keys filled; missing: model keys the checkpoint lacks (left as they were);
    unexpected: checkpoint keys under the prefix with no model counterpart;
    ignored: wrapper entries (top-level non-weight entries and keys outside the prefix).
    """

    source: str
    layout: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model tensor was loaded and nothing under the prefix was left over."""
        return not self.missing and not self.unexpected

    def summary(self, limit: int = 10) -> str:
        def names(xs: list[str]) -> str:
            more = f" ... (+{len(xs) - limit})" if len(xs) > limit else ""
            return ", ".join(xs[:limit]) + more

        parts = [f"{self.source}: layout={self.layout} prefix={self.prefix!r} loaded={len(self.loaded)}"]
        if self.missing:
            parts.append(f"missing ({len(self.missing)}): {names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected ({len(self.unexpected)}): {names(self.unexpected)}")
        if self.ignored:
            parts.append(f"ignored ({len(self.ignored)}): {names(self.ignored)}")
        return "\n  ".join(parts)


# --------------------------------------------------------------------------- our format
def default_checkpoint_path() -> Path:
    """Where the shipped checkpoint lives: ``ilrm_ros/checkpoints/ilrm_small.pt``."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / SHIPPED_CHECKPOINT


def _plain(obj: Any) -> Any:
    """Meta values as plain Python (so the file loads with weights_only=True)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def save_checkpoint(path: str | Path, model: ILRM, meta: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` (config + weights) and ``meta`` atomically; fp16 storage if ``half``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = torch.float16 if half else torch.float32
    state = {
        k: (v.detach().to("cpu", store) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "dtype": "float16" if half else "float32",
        "meta": _plain(meta or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("saved checkpoint %s (%s, %d tensors)", path, payload["dtype"], len(state))
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[ILRM, dict]:
    """Read one of our checkpoints -> (model in eval mode, float32, on ``device``; meta dict)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not an {FORMAT} checkpoint (format={found!r}); "
            "use load_official() for the authors' checkpoints"
        )
    cfg = ILRMConfig.from_dict(dict(ckpt["config"]))
    with torch.device("meta"):
        model = ILRM(cfg)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval(), dict(ckpt.get("meta", {}))


# --------------------------------------------------------------------------- authors' layouts
def _is_tensor_map(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Find the weights in a loaded checkpoint object.

    Returns ``(state_dict, layout, ignored_top_level_keys)``; ``layout`` is "ilrm_ros",
    "lightning" (under ``state_dict``), "model" (under ``model``) or "plain".
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a dict of weights")
    if obj.get("format") == FORMAT:
        return dict(obj["state_dict"]), "ilrm_ros", [k for k in obj if k != "state_dict"]
    for key, layout in (("state_dict", "lightning"), ("model", "model")):
        if isinstance(obj.get(key), Mapping):
            inner = obj[key]
            tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
            ignored = [str(k) for k in obj if k != key] + [f"{key}/{k}" for k in inner if k not in tensors]
            return tensors, layout, ignored
    if _is_tensor_map(obj):
        return dict(obj), "plain", []
    raise ValueError(
        "no weights found: expected a Lightning checkpoint ('state_dict'), a dict with 'model', "
        f"a plain state dict or an {FORMAT} checkpoint; top-level keys: {sorted(map(str, obj))[:20]}"
    )


def _prefix_for(key: str, targets: set[str]) -> str | None:
    """The dot-aligned prefix whose removal turns ``key`` into a target name, if any."""
    if key in targets:
        return ""
    parts = key.split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[i:]) in targets:
            return ".".join(parts[:i]) + "."
    return None


def match_state_dict(
    state: Mapping[str, torch.Tensor], target_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], str, list[str], list[str], list[str]]:
    """Map checkpoint names onto model names and check shapes (no data is copied).

    The key prefix is detected as the one under which most checkpoint keys name model
    tensors (e.g. ``encoder.scaler.``). Returns ``(mapped, prefix, missing, unexpected,
    ignored)``: keys outside the prefix are ``ignored``; keys under it with no model
    counterpart are ``unexpected``. Raises :class:`CheckpointShapeError` listing every
    name-matched tensor whose shape differs, and ``ValueError`` if no name matches.
    """
    targets = set(target_shapes)
    votes = Counter(p for p in (_prefix_for(k, targets) for k in state) if p is not None)
    if not votes:
        sample = sorted(state)[:8]
        raise ValueError(f"no checkpoint tensor name matches this model (first keys: {sample})")
    prefix = votes.most_common(1)[0][0]
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    for k, v in state.items():
        if not k.startswith(prefix):
            ignored.append(k)
            continue
        name = k[len(prefix) :]
        if name in targets:
            mapped[name] = v
        else:
            unexpected.append(k)
    mismatches = {
        k: (tuple(v.shape), tuple(target_shapes[k])) for k, v in mapped.items() if tuple(v.shape) != tuple(target_shapes[k])
    }
    if mismatches:
        raise CheckpointShapeError(mismatches)
    missing = [k for k in target_shapes if k not in mapped]
    return mapped, prefix, missing, unexpected, ignored


def _read(path: Path, trust_pickle: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds Python objects besides tensors (common in Lightning checkpoints); "
            "if you trust its source, pass trust_pickle=True"
        ) from e


def load_official(
    path_or_state_dict: str | Path | Mapping[str, Any],
    model: nn.Module,
    strict: bool = False,
    trust_pickle: bool = False,
) -> LoadReport:
    """Load the authors' (or any compatible) weights into ``model`` by name.

    Accepts a path (``.ckpt``/``.pt``/``.pth``/``.safetensors``) or an already loaded dict
    in one of the layouts of the module docstring. Shapes must match exactly
    (:class:`CheckpointShapeError` lists offenders); with ``strict`` any missing or
    unexpected key raises ``KeyError`` before anything is copied. Tensors are cast to the
    model's dtype. Returns a :class:`LoadReport` (also logged).
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source = str(path_or_state_dict)
        obj = _read(Path(path_or_state_dict), trust_pickle)
    else:
        source = "<state dict>"
        obj = path_or_state_dict
    state, layout, ignored_top = extract_state_dict(obj)
    target = model.state_dict()
    mapped, prefix, missing, unexpected, ignored = match_state_dict(state, {k: tuple(v.shape) for k, v in target.items()})
    report = LoadReport(
        source=source, layout=layout, prefix=prefix, loaded=sorted(mapped), missing=missing,
        unexpected=unexpected, ignored=ignored_top + ignored,
    )
    if strict and not report.ok:
        raise KeyError("checkpoint does not cover the model exactly:\n  " + report.summary(limit=50))
    with torch.no_grad():
        for k, v in mapped.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
    if report.ignored:
        log.info("ignored %d wrapper entries (e.g. %s)", len(report.ignored), report.ignored[:5])
    if report.ok:
        log.info("loaded %s", report.summary())
    else:
        log.warning("partial load: %s", report.summary())
    return report
