"""The authors' checkpoint layouts: find the weights, map their names, detect the architecture.

Accepted containers (see :func:`extract_state_dict`):
(a) a Lightning checkpoint (``re10k_2view.ckpt``): weights under ``state_dict`` with keys
    prefixed ``encoder.scaler.``; other entries (epoch, optimizer states, hyper-parameters,
    other sub-modules such as a loss network) are ignored and listed;
(b) a dict with the weights under ``model`` (the DL3DV release, ``ilrm_undistort_dl3dv*.pt``);
(c) a plain state dict (also ``.safetensors``), or one of our own checkpoints.

:func:`detect_architecture` names the model a set of tensors belongs to by comparing
names and shapes with every model config we ship (``configs/model/*.yaml``, the authors'
``re10k`` and ``dl3dv`` first).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ilrm_ros.model.checkpoint import FORMAT, atomic_save, is_own_checkpoint, own_config_and_state, read_checkpoint_file
from ilrm_ros.model.ilrm import ILRM, ILRMConfig, config_dir, load_model_config

log = logging.getLogger(__name__)

__all__ = [
    "AUTHORS_ARCHITECTURES",
    "LoadReport",
    "CheckpointShapeError",
    "Detection",
    "extract_state_dict",
    "match_state_dict",
    "load_official",
    "detect_architecture",
    "model_shapes",
    "save_authors_layout",
]

#: The authors' released architectures and how their files hold the weights.
AUTHORS_ARCHITECTURES = {
    "re10k": {"container": "state_dict", "prefix": "encoder.scaler."},  # Lightning .ckpt
    "dl3dv": {"container": "model", "prefix": ""},  # ilrm_undistort_dl3dv*.pt
}


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
    if is_own_checkpoint(obj):  # format 1 is migrated to the current channel order
        return own_config_and_state(obj)[1], "ilrm_ros", [k for k in obj if k != "state_dict"]
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
        obj = read_checkpoint_file(Path(path_or_state_dict), trust_pickle)
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



# --------------------------------------------------------------------------- detection
def model_shapes(cfg: ILRMConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the model ``cfg`` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = ILRM(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass
class Detection:
    """Which model a set of tensors is: the config, its name, and how the names matched."""

    config: ILRMConfig
    name: str
    prefix: str
    how: str
    """"file config" (our format), "detected" (unique match) or "given" (model.architecture)."""
    mapped: dict[str, torch.Tensor] = field(default_factory=dict)
    """The weights under the model's names (the fit that decided the architecture)."""
    ignored: list[str] = field(default_factory=list)
    """Checkpoint keys outside the prefix."""


def _candidates() -> list[str]:
    """Config names to try, the authors' architectures first."""
    ours = sorted(p.stem for p in config_dir().glob("*.yaml") if p.stem not in AUTHORS_ARCHITECTURES)
    return list(AUTHORS_ARCHITECTURES) + ours


def _fit(state: Mapping[str, torch.Tensor], cfg: ILRMConfig, name: str, how: str) -> tuple[Detection | None, str]:
    """(the Detection if ``state`` holds exactly ``cfg``'s tensors else None, a short account of the fit)."""
    try:
        mapped, prefix, missing, unexpected, ignored = match_state_dict(state, model_shapes(cfg))
    except CheckpointShapeError as e:
        return None, f"{len(e.mismatches)} shape mismatches"
    except ValueError:
        return None, "no name matches"
    if missing or unexpected:
        return None, f"{len(missing)} missing, {len(unexpected)} unexpected"
    return Detection(cfg, name, prefix, how, mapped, ignored), "exact"


def detect_architecture(
    state: Mapping[str, torch.Tensor], architecture: str = "auto", source: str = "<state dict>"
) -> Detection:
    """Name the architecture of ``state`` from its tensor names and shapes.

    ``architecture``: "auto" tries every shipped config (the authors' ``re10k``/``dl3dv``
    first) and needs exactly one family of identical tensor sets; anything else is a
    config name or YAML path that must fit exactly. Raises ``ValueError`` with one line
    naming ``source`` and what was found.
    """
    if architecture != "auto":
        try:
            cfg = load_model_config(architecture)
        except FileNotFoundError as e:  # an unknown name: say which exist, in one line
            raise ValueError(f"model.architecture={architecture!r}: {str(e).splitlines()[0]}") from e
        det, how = _fit(state, cfg, cfg.name, "given")
        if det is None:
            raise ValueError(f"{source}: does not hold model.architecture={architecture!r} ({how}; "
                             f"{len(state)} tensors, e.g. {sorted(state)[:3]})")
        return det
    fits: dict[str, Detection] = {}
    accounts = []
    for name in _candidates():
        det, how = _fit(state, load_model_config(name), name, "detected")
        accounts.append(f"{name}: {how}")
        if det is not None:
            fits[name] = det
    authors = [n for n in fits if n in AUTHORS_ARCHITECTURES]
    if len(authors) == 1 or len(fits) == 1:
        return fits[authors[0] if authors else next(iter(fits))]
    if fits:
        raise ValueError(f"{source}: its tensors fit several configs with identical tensors ({', '.join(fits)}); "
                         "set model.architecture to one of them")
    raise ValueError(f"{source}: no known iLRM architecture matches its {len(state)} tensors "
                     f"(e.g. {sorted(state)[:3]}; {'; '.join(accounts[:2])}); "
                     "set model.architecture to a config name or YAML file")


# --------------------------------------------------------------------------- writing the authors' layouts
def save_authors_layout(model: ILRM, path: str | Path, architecture: str, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model``'s weights the way the authors' release holds ``architecture``.

    "re10k": a Lightning-style dict (weights under ``state_dict`` prefixed
    ``encoder.scaler.``, plus plain wrapper entries); "dl3dv": weights under ``model``.
    For tests, the GPU check and interoperability; our own format is ``save_checkpoint``.
    """
    spec = AUTHORS_ARCHITECTURES[architecture]
    state = {spec["prefix"] + k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if spec["container"] == "state_dict":
        payload: dict[str, Any] = {"state_dict": state, "epoch": 0, "global_step": 0,
                                   "pytorch-lightning_version": "2.x", "optimizer_states": []}
    else:
        payload = {"model": state, "step": 0}
    path = Path(path)
    atomic_save(payload, path)
    return path
