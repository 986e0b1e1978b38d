"""iLRM: an iterative large reconstruction model (arXiv 2507.23277), in plain PyTorch.

Data path of :meth:`ILRM.forward` (shapes for B scenes, V views, H x W images, patch p,
viewpoint factor f, width d)::

    rays (computed once)  ─┬─ viewpoint grid (H/f x W/f) ── patchify ── Linear+LN ──▶ viewpoint tokens (B, V*Nv, d)
                           └─ full res (H x W) + RGB in [-1,1] ── patchify ── Linear+LN ──▶ image tokens (B*V, Ni, d)
    processor: [read block (per view cross-attn) , self block (global)] x iterations
    head: LN + Linear -> p*p*C values per viewpoint token -> one Gaussian per viewpoint-grid pixel

float32 inference without autograd builds the image tokenizer's input directly in token order and
runs every projection through oneDNN on CPU (model/fused.py, fused_tokens.py; same values to rounding).

Two parameter-name layouts match the authors' two checkpoints (``layout``):
- ``"re10k"``: ``input_tokenizer``/``input_layernorm`` (viewpoint tokens),
  ``support_tokenizer``/``support_layernorm`` (image tokens), ``token_decoder``; image
  token channels are (rgb, rays).
- ``"wide"`` (DL3DV): ``image_tokenizer`` / ``viewpoint_tokenizer`` as
  (Patchify, Linear, LayerNorm) sequences, ``viewpoint_token_decoder``; image token
  channels are (rays, rgb).

Conventions checked against the authors' public code with identical weights (float32,
every output field within 1e-5 relative): the head's p*p*C outputs are laid out
(ph pw c) like the tokenizer input; uplifted sub-queries are interleaved channel by
channel (see layers.ReadCrossAttention); quaternions are (w, x, y, z); the pixel offset
is in units of viewpoint-grid pixels, (dx, dy) order; q/k RMSNorm eps 1e-5.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ilrm_ros.geometry.cameras import (
    RAY_ENCODINGS,
    camera_rays,
    ray_channels,
    ray_features,
)
from ilrm_ros.core.gaussians import SH_C0, Gaussians
from ilrm_ros.geometry.normalization import POSE_NORMALIZATIONS
from ilrm_ros.model import fused as fz
from ilrm_ros.model.fused_head import gaussians, gaussians_torch
from ilrm_ros.model.fused_tokens import image_tokens, ray_rows, viewpoint_tokens
from ilrm_ros.model.head import activate_gaussians, activate_offsets
from ilrm_ros.model.layers import ATTENTION_BACKENDS, QK_NORM_EPS, Patchify, Processor, patchify

log = logging.getLogger(__name__)

__all__ = ["ILRMConfig", "ILRM", "load_model_config", "config_dir", "activate_offsets", "activate_gaussians", "SH_C0"]

LAYOUTS = ("re10k", "wide")


@dataclass
class ILRMConfig:
    """Architecture and output activations of an iLRM model."""

    name: str = "custom"
    """Preset name (informational)."""
    layout: str = "re10k"
    """Parameter-name layout and image-token channel order: "re10k" (rgb, rays) or "wide" (rays, rgb)."""
    dim: int = 768
    """Token width d."""
    iterations: int = 12
    """Update iterations; the processor has 2 * iterations blocks (read, self, read, ...)."""
    head_dim: int = 64
    """Attention head width (heads = dim / head_dim)."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * dim."""
    patch_size: int = 8
    """Patch size p of both tokenizers (and of the Gaussian head)."""
    ray_encoding: str = "plucker6"
    """"plucker6" = (o x d, d) or "plucker9" = (o, d, o x d), unit d."""
    viewpoint_factor: int = 1
    """Viewpoint-token grid stride relative to the image (1 = full, 2 = half resolution)."""
    uplift: int = 1
    """Token uplifting k in the read blocks (k sub-queries per viewpoint token)."""
    predict_offset: bool = False
    """Head also predicts a 2-D pixel offset ((sigmoid - 0.5) grid pixels) per Gaussian."""
    max_depth: float = 500.0
    """Distance along the ray = sigmoid(mean of the 3 xyz outputs) * max_depth (normalised units)."""
    scale_bias: float = -6.9
    """scale = exp(clamp(raw + scale_bias, max=scale_max_log))."""
    scale_max_log: float = -1.2
    """Upper clamp of log-scale."""
    opacity_bias: float = -2.0
    """opacity = sigmoid(raw + opacity_bias)."""
    init_std: float = 0.02
    """Std of the N(0, std) initialisation of all linear weights."""
    color_residual: bool = False
    """Not in the paper (off for re10k/dl3dv): colour = the input pixel colour (mean over the
    Gaussian's viewpoint-grid cell) + SH_C0 * raw, instead of 0.5 + SH_C0 * raw. The head then
    only corrects colours and training spends its steps on geometry -- what lets a small
    model learn in a CPU-hour. No parameters are added."""
    attention: str = "sdpa"
    """Attention backend: "sdpa" (torch scaled_dot_product_attention) or "reference"."""
    qk_norm_eps: float = QK_NORM_EPS
    """eps of the per-head q/k RMSNorm (the authors' 1e-5; checkpoints of our format 1 used 1e-6)."""
    # ---- how the model was trained: what the mapper feeds it by default
    pose_normalization: str = "ilrm_ros"
    """Frame and scale of the window cameras (geometry/normalization.py): "ilrm_ros" (first camera
    at the origin, largest camera distance 1), "re10k" or "wide" (the authors' mean-camera frame
    with their pipelines' translation scaling)."""
    input_height: int = 128
    """Image height the model was trained at (the node's default input size)."""
    input_width: int = 128
    """Image width the model was trained at."""
    window_views: int = 4
    """Default keyframes per window."""
    window_stride: int = 2
    """Default new keyframes between windows."""
    trained_views: tuple = (2, 8)
    """(min, max) views per window seen in training; far outside it the mapper warns."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.ray_encoding not in RAY_ENCODINGS:
            raise ValueError(f"ray_encoding must be one of {RAY_ENCODINGS}, got {self.ray_encoding!r}")
        if self.dim % self.head_dim:
            raise ValueError(f"dim {self.dim} must be a multiple of head_dim {self.head_dim}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}")
        for f in ("iterations", "patch_size", "viewpoint_factor", "uplift", "mlp_ratio"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1")
        if self.max_depth <= 0:
            raise ValueError("max_depth must be > 0")
        if self.pose_normalization not in POSE_NORMALIZATIONS:
            raise ValueError(f"pose_normalization must be one of {POSE_NORMALIZATIONS}, got {self.pose_normalization!r}")
        self.trained_views = tuple(int(v) for v in self.trained_views)
        if len(self.trained_views) != 2 or not 1 <= self.trained_views[0] <= self.trained_views[1]:
            raise ValueError(f"trained_views must be (min, max) with 1 <= min <= max, got {self.trained_views}")
        step = self.patch_size * self.viewpoint_factor
        if self.input_height % step or self.input_width % step:
            raise ValueError(f"input size {self.input_height}x{self.input_width} must be a multiple of {step}")

    @property
    def gaussian_channels(self) -> int:
        """Raw values per Gaussian C: xyz 3, colour 3, scale 3, rotation 4, opacity 1 (+ offset 2)."""
        return 14 + (2 if self.predict_offset else 0)

    @property
    def image_channels(self) -> int:
        return 3 + ray_channels(self.ray_encoding)

    def gaussians_per_view(self, height: int, width: int) -> int:
        return (height // self.viewpoint_factor) * (width // self.viewpoint_factor)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trained_views"] = list(self.trained_views)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ILRMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**d)


def config_dir() -> Path:
    """Folder of the named model configs (``ilrm_ros/configs/model``)."""
    return Path(__file__).resolve().parent.parent / "configs" / "model"


def load_model_config(name_or_path: str | Path) -> ILRMConfig:
    """Read a named preset (``"small"`` -> configs/model/small.yaml) or a YAML file path."""
    import yaml

    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        p = config_dir() / f"{name_or_path}.yaml"
        if not p.exists():
            available = sorted(q.stem for q in config_dir().glob("*.yaml"))
            raise FileNotFoundError(f"no model config {name_or_path!r}; available: {available}")
    with open(p) as fh:
        data = yaml.safe_load(fh) or {}
    data.setdefault("name", p.stem)
    return ILRMConfig.from_dict(data)


class ILRM(nn.Module):
    """Images + cameras -> 3D Gaussians (one per viewpoint-grid pixel of every view)."""

    def __init__(self, cfg: ILRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch_size
        n_ray = ray_channels(cfg.ray_encoding)
        out = p * p * cfg.gaussian_channels
        # Registration order mirrors each layout's state dict.
        if cfg.layout == "re10k":
            self.input_tokenizer = nn.Linear(n_ray * p * p, d, bias=False)
            self.input_layernorm = nn.LayerNorm(d, bias=False)
            self.support_tokenizer = nn.Linear(cfg.image_channels * p * p, d, bias=False)
            self.support_layernorm = nn.LayerNorm(d, bias=False)
            self.processor = self._make_processor()
            self.token_decoder = nn.Sequential(nn.LayerNorm(d, bias=False), nn.Linear(d, out, bias=False))
        else:
            self.image_tokenizer = nn.Sequential(
                Patchify(p), nn.Linear(cfg.image_channels * p * p, d, bias=False), nn.LayerNorm(d, bias=False)
            )
            self.viewpoint_tokenizer = nn.Sequential(
                Patchify(p), nn.Linear(n_ray * p * p, d, bias=False), nn.LayerNorm(d, bias=False)
            )
            self.viewpoint_token_decoder = nn.Sequential(nn.LayerNorm(d, bias=False), nn.Linear(d, out, bias=False))
            self.processor = self._make_processor()
        self._fused = fz.WeightCache()
        self.reset_parameters()

    def _make_processor(self) -> Processor:
        c = self.cfg
        return Processor(c.dim, c.iterations, c.head_dim, c.mlp_ratio, c.uplift, c.attention, c.qk_norm_eps)

    def reset_parameters(self) -> None:
        """Linear weights ~ N(0, init_std); norm weights = 1 (no-op for meta-device models)."""
        for m in self.modules():
            if getattr(m, "weight", None) is not None and m.weight.is_meta:
                continue
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)
            elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)

    def set_attention_backend(self, backend: str) -> None:
        """Switch all attention layers between ``"sdpa"`` and ``"reference"``."""
        self.processor.set_backend(backend)
        self.cfg.attention = backend

    @property
    def gradient_checkpointing(self) -> bool:
        return self.processor.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self.processor.gradient_checkpointing = bool(on)

    # ------------------------------------------------------------------ tokenizers
    def _viewpoint_tokens(self, rays: torch.Tensor) -> torch.Tensor:
        """rays: (N, h, w, R) channels last -> (N, Nv, d)."""
        x = rays.permute(0, 3, 1, 2)
        if self.cfg.layout == "re10k":
            return self.input_layernorm(self.input_tokenizer(patchify(x, self.cfg.patch_size)))
        return self.viewpoint_tokenizer(x)

    def _image_tokens(self, rgb: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
        """rgb: (N, 3, H, W) in [-1, 1]; rays: (N, H, W, R) -> (N, Ni, d)."""
        r = rays.permute(0, 3, 1, 2)
        if self.cfg.layout == "re10k":
            x = torch.cat((rgb, r), dim=1)
            return self.support_layernorm(self.support_tokenizer(patchify(x, self.cfg.patch_size)))
        return self.image_tokenizer(torch.cat((r, rgb), dim=1))

    def _decoder(self) -> nn.Sequential:
        return self.token_decoder if self.cfg.layout == "re10k" else self.viewpoint_token_decoder

    def _token_layers(self) -> tuple[nn.Linear, nn.LayerNorm, nn.Linear, nn.LayerNorm, nn.LayerNorm, nn.Linear]:
        """(image Linear, image LN, viewpoint Linear, viewpoint LN, decoder LN, decoder Linear) of either layout."""
        if self.cfg.layout == "re10k":
            return (self.support_tokenizer, self.support_layernorm, self.input_tokenizer, self.input_layernorm,
                    self.token_decoder[0], self.token_decoder[1])
        return (self.image_tokenizer[1], self.image_tokenizer[2], self.viewpoint_tokenizer[1],
                self.viewpoint_tokenizer[2], self.viewpoint_token_decoder[0], self.viewpoint_token_decoder[1])

    def _fused_io(self, images: torch.Tensor) -> bool:
        """Whether this forward takes the fused float32 inference path outside the processor too."""
        return self.processor.fused_enabled() and self.cfg.attention == "sdpa" and fz.fused_ok(images)

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tokenizers' and decoder's Linear weights, :func:`~ilrm_ros.model.fused.pack`-ed (cached)."""
        img, _, vp, _, _, dec = self._token_layers()
        return self._fused.get((img.weight, vp.weight, dec.weight), lambda *w: tuple(fz.pack(t) for t in w))

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, return_offsets: bool = False
    ) -> Gaussians | tuple[Gaussians, torch.Tensor | None]:
        """Predict Gaussians for a batch of posed views.

        images: (B, V, 3, H, W) RGB in [0, 1]; c2w: (B, V, 4, 4) OpenCV camera-to-world
        (normally already window-normalised); K: (B, V, 3, 3) pixel intrinsics.
        H and W must be multiples of patch_size * viewpoint_factor.
        Returns Gaussians with fields (B, N, k), N = V * (H/f) * (W/f), in the frame of
        ``c2w``, ordered view-major then row-major over the viewpoint grid. With
        ``return_offsets`` also the pixel offsets (B, V, H/f, W/f, 2) or None. Gaussian
        fields are float32 (float64 for float64 images), also under autocast.
        """
        cfg = self.cfg
        b, v, _, H, W = images.shape
        f, p = cfg.viewpoint_factor, cfg.patch_size
        if H % (p * f) or W % (p * f):
            raise ValueError(f"image size {H}x{W} must be divisible by patch*viewpoint_factor = {p * f}")
        # Geometry (rays, Gaussian placement) stays in float32 even under autocast.
        gdtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        c2w = c2w.to(gdtype)
        K = K.to(gdtype)
        h, w = H // f, W // f
        if self._fused_io(images):  # same values: token-order inputs, oneDNN GEMMs, compiled CPU kernels
            _, img_ln, _, vp_ln, dec_ln, _ = self._token_layers()
            w_img, w_vp, w_dec = self._packed()
            rays = ray_rows(c2w, K, cfg.ray_encoding)   # the cameras' ray rows, for both tokenizers and the head
            x_img = image_tokens(images, c2w, K, p, cfg.ray_encoding, cfg.layout == "re10k", rays)
            img_tokens = fz.layer_norm(img_ln, fz.linear(x_img, w_img))  # (B*V, Ni, d)
            x_vp = viewpoint_tokens(c2w, K, (h, w), f, p, cfg.ray_encoding, rays).to(images.dtype)
            vp_tokens = fz.layer_norm(vp_ln, fz.linear(x_vp, w_vp))     # (B*V, Nv, d)
            x = self.processor(vp_tokens.reshape(b, v * vp_tokens.shape[1], cfg.dim), img_tokens)
            raw = fz.linear(fz.layer_norm(dec_ln, x), w_dec)               # (B, V*Nv, p*p*C)
            g, offsets = gaussians(raw, images, c2w, K, cfg, rays.direction)
        else:
            with torch.autocast(device_type=images.device.type, enabled=False):
                o_vp, d_vp = camera_rays(c2w, K, H, W, f)  # (B, V, h, w, 3)
                rays_vp = ray_features(o_vp, d_vp, cfg.ray_encoding).flatten(0, 1).to(images.dtype)
                rays_full = rays_vp if f == 1 else ray_features(*camera_rays(c2w, K, H, W, 1),
                                                                cfg.ray_encoding).flatten(0, 1).to(images.dtype)
            img_tokens = self._image_tokens(images.flatten(0, 1) * 2.0 - 1.0, rays_full)  # (B*V, Ni, d)
            vp_tokens = self._viewpoint_tokens(rays_vp)  # (B*V, Nv, d)
            x = self.processor(vp_tokens.reshape(b, v * vp_tokens.shape[1], cfg.dim), img_tokens)
            g, offsets = gaussians_torch(self._decoder()(x), images, c2w, K, cfg)
        if return_offsets:
            return g, offsets
        return g


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (works on meta-device models too)."""
    return sum(t.numel() for t in model.parameters())


__all__.append("count_parameters")
