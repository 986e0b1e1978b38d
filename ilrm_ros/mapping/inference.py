"""The model inside the mapper: load it, feed it as it was trained, run a window, watch its pace.

    checkpoint ──load_model_file──▶ ILRM + ModelSource (architecture, input size, pose rule)
    model.* + window.* ──fill_model_defaults──▶ 0-valued sizes/window replaced by the architecture's
    keyframes ──stack──▶ images, c2w, K ──normalize_cameras──▶ model ──▶ Gaussians + Similarity
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ilrm_ros.core.params import param
from ilrm_ros.geometry.normalization import normalize_cameras
from ilrm_ros.geometry.poses import Similarity
from ilrm_ros.io.frames import Keyframe
from ilrm_ros.mapping.scheduler import WindowConfig
from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.model.ilrm import ILRM, ILRMConfig
from ilrm_ros.model.loading import ModelSource, load_model_file

log = logging.getLogger(__name__)

__all__ = ["ModelConfig", "resolve_device", "load_model", "fill_model_defaults", "views_warning", "predict_window",
           "camera_rig", "warm_up_model", "KeepUpMonitor"]


@dataclass
class ModelConfig:
    """Which model runs where, on what input, and which of its Gaussians a window keeps (``model.*``)."""

    checkpoint: str = param("", "Checkpoint path: ours, the authors' re10k .ckpt / dl3dv .pt, a state dict or "
                                ".safetensors; empty = the checkpoint shipped with the package")
    architecture: str = param("auto", "Model architecture: auto (from the tensors), re10k, dl3dv or a config name / "
                                      "YAML")
    trust_pickle: bool = param(False, "Allow checkpoints holding Python objects besides tensors (only for files you "
                                      "trust)")
    device: str = param("auto", "Where the model runs", choices=("auto", "cuda", "cpu"))
    height: int = param(0, "Model input height; 0 = the architecture's (re10k 256, dl3dv 544, ours 128)", 16, 4096,
                        special=(0,))
    width: int = param(0, "Model input width; 0 = the architecture's (re10k 256, dl3dv 960, ours 128)", 16, 4096,
                       special=(0,))
    resize_mode: str = param("crop", "How images are fitted to the model size", choices=("crop", "pad", "stretch"))
    max_gaussians_per_window: int = param(0, "Keep at most this many Gaussians per window, highest opacity first "
                                             "(0 = all)", 0, 10_000_000)
    min_opacity: float = param(0.005, "Drop window Gaussians below this opacity", 0.0, 1.0)


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA falls back with a warning."""
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        log.warning("device 'cuda' requested but CUDA is not available: running on CPU")
    return torch.device("cpu")


def load_model(m: ModelConfig, device: torch.device) -> tuple[ILRM, ModelSource]:
    """The model ``model.checkpoint`` names (any layout; "" = the shipped one), on ``device``."""
    return load_model_file(m.checkpoint or None, m.architecture, device, m.trust_pickle)


def fill_model_defaults(model: ModelConfig, window: WindowConfig, model_cfg: ILRMConfig) -> dict[str, int]:
    """Replace 0-valued ``model.height/width`` and ``window.size/stride`` by the architecture's own.

    Mutates ``model`` and ``window`` in place (the node and the mapper share them); returns
    what was filled, by parameter name. The stride never exceeds the window size.
    """
    filled: dict[str, int] = {}
    sections = {"model": model, "window": window}
    for section, name, value in (("model", "height", model_cfg.input_height), ("model", "width", model_cfg.input_width),
                                 ("window", "size", model_cfg.window_views),
                                 ("window", "stride", min(model_cfg.window_stride, window.size or 10**9))):
        sec = sections[section]
        if getattr(sec, name) == 0:
            setattr(sec, name, int(value))
            filled[f"{section}.{name}"] = int(value)
    step = model_cfg.patch_size * model_cfg.viewpoint_factor
    if model.height % step or model.width % step:
        raise ValueError(f"model input {model.height}x{model.width} must be a multiple of {step} "
                         f"for this architecture ({model_cfg.name})")
    return filled


def views_warning(window_size: int, model_cfg: ILRMConfig) -> str | None:
    """A warning when the window is far outside the views the model was trained on (< min/2 or > 2 max)."""
    lo, hi = model_cfg.trained_views
    if window_size * 2 < lo or window_size > 2 * hi:
        return (f"window.size {window_size} is far outside the {lo}-{hi} views {model_cfg.name} was trained on; "
                "expect poor maps")
    return None


def stack_window(keyframes: list[Keyframe], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keyframes -> images (1, V, 3, H, W) in [0, 1], c2w (V, 4, 4) float64, K (V, 3, 3) float32."""
    images = torch.from_numpy(np.stack([k.rgb for k in keyframes])).to(device)
    images = images.permute(0, 3, 1, 2).unsqueeze(0).float().div_(255.0)
    c2w = torch.from_numpy(np.stack([k.c2w for k in keyframes])).to(device, torch.float64)
    K = torch.from_numpy(np.stack([k.K for k in keyframes])).to(device, torch.float32)
    return images, c2w, K


def predict_window(model: ILRM, keyframes: list[Keyframe], device: torch.device) -> tuple[Gaussians, Similarity]:
    """Run iLRM on keyframes; returns (Gaussians (N, k) float32 in the normalised frame, Similarity to the map).

    Cameras are normalised by the rule the model was trained with
    (``model.cfg.pose_normalization``); CUDA runs under bf16 autocast (SDPA picks flash
    attention), geometry stays float32 inside the model.
    """
    images, c2w, K = stack_window(keyframes, device)
    c2w_n, sim = normalize_cameras(c2w, model.cfg.pose_normalization)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        g = model(images, c2w_n.float()[None], K[None])
    return g.flatten().map(lambda t: t.float()), sim


def camera_rig(views: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain window of cameras: c2w (1, V, 4, 4) side by side along x over [-1, 1] (OpenCV, looking down
    +z) and K (1, V, 3, 3) with f = 0.9 max(H, W) and the principal point at the image centre."""
    c2w = torch.eye(4).repeat(1, views, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(-1.0, 1.0, views) if views > 1 else 0.0
    f = 0.9 * max(height, width)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).repeat(1, views, 1, 1)
    return c2w, K


class _LargestOutput(TorchFunctionMode):
    """Records the largest storage (bytes) among the results of every torch call made under it from Python
    (functions, tensor methods, ``torch.ops``). A function mode, not a dispatch mode: a forward under a
    dispatch mode left ~70 MB more resident than a plain one."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.bytes = max(self.bytes, t.untyped_storage().nbytes())
        return out


def warm_up_model(model: ILRM, views: int, height: int, width: int, device: torch.device) -> int:
    """One forward of a gray window of ``views`` frames at ``height`` x ``width``, as the node runs them: the
    fused path packs its weights and the kernels pay their first-call costs here instead of in the first
    window. Returns the bytes of the largest tensor that forward allocates on the CPU (0 on a GPU); the
    node keeps tensors of that size on the heap (``ros.memory.mmap_threshold_for``)."""
    images = torch.full((1, views, 3, height, width), 0.5, device=device)
    c2w, K = camera_rig(views, height, width)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    largest = _LargestOutput()
    with torch.inference_mode(), autocast, largest:
        model(images, c2w.to(device), K.to(device))
    return largest.bytes if device.type == "cpu" else 0


@dataclass
class KeepUpMonitor:
    """Is the model fast enough for the keyframe rate? Window time vs keyframe interval x stride.

    Keyframe intervals (their arrival times in the node, their stamps offline) are smoothed; the
    verdict is only given after ``min_keyframes`` keyframes. ``check`` returns a warning
    message the first time a window is too slow, then None (warn once).
    """

    stride: int
    min_keyframes: int = 4
    smoothing: float = 0.2
    interval_s: float = 0.0
    _last_stamp_ns: int | None = None
    _count: int = 0
    warned: bool = False

    def on_keyframe(self, stamp_ns: int) -> None:
        """A keyframe was admitted at ``stamp_ns`` (any clock in ns, the same for every call)."""
        if self._last_stamp_ns is not None and stamp_ns > self._last_stamp_ns:
            dt = (stamp_ns - self._last_stamp_ns) * 1e-9
            self.interval_s = dt if self._count <= 1 else (1 - self.smoothing) * self.interval_s + self.smoothing * dt
        self._last_stamp_ns = stamp_ns
        self._count += 1

    def budget_s(self) -> float:
        """Time a window may take before windows pile up: keyframe interval x stride (0 = unknown yet)."""
        return self.interval_s * self.stride if self._count >= self.min_keyframes else 0.0

    def check(self, window_s: float) -> str | None:
        budget = self.budget_s()
        if self.warned or budget <= 0.0 or window_s <= budget:
            return None
        self.warned = True
        return (f"the model cannot keep up: a window took {window_s:.2f} s but keyframes arrive every "
                f"{self.interval_s:.2f} s x stride {self.stride} = {budget:.2f} s; windows will be coalesced "
                "(use a GPU, a smaller model.height/width or window.size, or a larger window.stride)")

    def reset(self) -> None:
        self._last_stamp_ns, self._count = None, 0
