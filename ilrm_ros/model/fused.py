"""Fused inference kernels of the iLRM blocks (CPU-efficient twins of the plain code in layers.py).

The stored parameters keep the authors' layout (separate ``q``/``k``/``v`` in the read blocks,
interleaved uplift channels): the fused weights are derived on first use and cached per
module until a source parameter changes (in place or replaced). What the fused path does
differently, all with the same result to float32 rounding:

- one matmul for the read blocks' keys and values (``[k; v]`` stacked);
- the uplifted query rows and the projection's columns permuted once from the (d, u)
  interleave to (u, d), so sub-queries are adjacent without a transpose copy either way;
- heads stay in the projection's (B, N, H, D) memory: attention reads strided views and its
  output is already in the layout the output projection wants;
- on CPU, the q/k RMSNorm, attention and head merge in one compiled kernel
  (:mod:`ilrm_ros.model.native`) where it is built, reading the projections in place;
- the q/k RMSNorm as one sum-of-squares pass and one scaling pass; the k weight and the
  softmax scale folded into the q weight (``q.k`` is unchanged by moving a per-channel
  factor from k to q);
- residual adds folded into the output projections (``addmm``);
- on CPU, every projection through oneDNN's fused linear (:func:`pack`): weights re-laid out
  once for its GEMM, GELU applied inside the MLP's first GEMM and the residual add inside
  the last one. At these shapes (a few hundred tokens x 256 channels) oneDNN reaches
  ~200 GFLOP/s on 2 AVX-512 cores where the default sgemm behind ``F.linear`` gives
  110-130, and the separate GELU pass disappears. Where torch was built without oneDNN the
  plain ``F.linear``/``addmm`` kernels run instead (:data:`ONEDNN_LINEAR`).

Used only without autograd, in float32 and without autocast (:func:`fused_ok`): training,
bf16/fp16 and autocast runs take the plain path.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ilrm_ros.model import native

__all__ = ["fused_ok", "WeightCache", "ONEDNN_LINEAR", "pack", "linear", "linear_gelu", "linear_residual",
           "rms_scale", "qk_weight", "uplift_rows", "uplift_cols", "normed_heads", "normed_qk", "heads_view", "merged",
           "attend", "normed_attention_torch", "normed_attention", "self_attention", "layer_norm"]


def _onednn_linear():
    """torch's oneDNN fused-linear op (what inductor's CPU backend emits), or None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    ops = torch.ops.mkldnn
    has_ops = hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")
    return ops._linear_pointwise if has_ops else None


ONEDNN_LINEAR = _onednn_linear()
"""``torch.ops.mkldnn._linear_pointwise`` where this torch has it (CPU builds with oneDNN), else None."""


def fused_ok(x: torch.Tensor) -> bool:
    """Whether the fused path may run for activations ``x``: no autograd, float32, no autocast."""
    return (not torch.is_grad_enabled() and x.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type))


class WeightCache:
    """Derived weights cached until any of their source tensors changes (identity or version)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: tuple[torch.Tensor, ...] = ()

    def __deepcopy__(self, memo: dict) -> "WeightCache":
        """An empty cache: derived weights are rebuilt on first use (oneDNN-packed tensors cannot be copied)."""
        return WeightCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    @staticmethod
    def _stamp(sources: tuple[torch.Tensor, ...]) -> tuple:
        return tuple((id(t), t.data_ptr(), t._version, t.device, t.dtype) for t in sources)

    def get(self, sources: tuple[torch.Tensor, ...],
            build: Callable[..., tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """The cached ``build(*sources)`` (a tuple of tensors), rebuilt when a source changed."""
        key = self._stamp(sources)
        if key != self._key:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in any mode
                built = build(*(s.detach() for s in sources))
                # oneDNN-packed weights are new storage already; anything else may be a view of a source
                self._value = tuple(t if t.is_mkldnn else t.detach().clone() for t in built)
            self._key = key
        return self._value


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-row RMSNorm factor ``1 / sqrt(mean(x^2) + eps)`` over the last dim: (..., D) -> (..., 1).

    One reduction pass (``vector_norm``) instead of pow, mean and add.
    """
    ss = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return ss.square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def qk_weight(q_norm: torch.Tensor, k_norm: torch.Tensor) -> tuple[torch.Tensor]:
    """The per-channel factor of the normalised queries, (D,): q weight * k weight / sqrt(D).

    With it the keys are only normalised and attention runs with ``scale=1``.
    """
    return (q_norm * k_norm / math.sqrt(q_norm.shape[0]),)


def uplift_rows(weight: torch.Tensor, uplift: int) -> torch.Tensor:
    """Query weight (d*u, d_in) with output channels (d, u) (sub-query fastest) -> rows in (u, d) order."""
    du, d_in = weight.shape
    return weight.view(du // uplift, uplift, d_in).transpose(0, 1).reshape(du, d_in)


def uplift_cols(weight: torch.Tensor, uplift: int) -> torch.Tensor:
    """Projection weight (d_out, d*u) reading channels (d, u) -> columns in (u, d) order."""
    d_out, du = weight.shape
    return weight.view(d_out, du // uplift, uplift).transpose(1, 2).reshape(d_out, du)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A linear weight (d_out, d_in) in the layout :func:`linear` runs fastest with: oneDNN's blocked
    layout on CPU where available (an opaque tensor of the same shape), else the weight itself."""
    if ONEDNN_LINEAR is None or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (no bias): x (..., d_in), weight (d_out, d_in) plain or :func:`pack`-ed -> (..., d_out)."""
    if weight.is_mkldnn:
        return ONEDNN_LINEAR(x, weight, None, "none", [], "")
    return F.linear(x, weight)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight.T)`` (exact erf GELU), with the GELU inside the GEMM for packed weights."""
    if weight.is_mkldnn:
        return ONEDNN_LINEAR(x, weight, None, "gelu", [], "none")
    return F.gelu(F.linear(x, weight))


def linear_residual(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``residual + x @ weight.T`` as one GEMM. residual (..., d_out), x (..., d_in), weight (d_out, d_in)
    plain or :func:`pack`-ed."""
    if weight.is_mkldnn:
        return ONEDNN_LINEAR.binary(x, residual, weight, None, "add")
    shape = residual.shape
    out = torch.addmm(residual.reshape(-1, shape[-1]), x.reshape(-1, x.shape[-1]), weight.t())
    return out.view(shape)


def normed_heads(x: torch.Tensor, heads: int, eps: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, H*D) (last dim contiguous) -> RMS-normalised (B, H, N, D), memory laid out (B, N, H, D).

    ``weight`` (D,) multiplies the result (q: :func:`qk_weight`; k: None).
    """
    b, n, f = x.shape
    xh = x.view(b, n, heads, f // heads)
    y = torch.mul(xh, rms_scale(xh, eps))
    if weight is not None:
        y.mul_(weight)
    return y.transpose(1, 2)


def normed_qk(qk: torch.Tensor, heads: int, eps: float, q_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys side by side (B, N, 2*H*D) (last dim contiguous) -> RMS-normalised q, k, each
    (B, H, N, D), in one (B, N, 2H, D) buffer: one norm pass and one scaling pass for both, the values
    of two :func:`normed_heads` calls bit for bit (~1 % of the 4 x 128^2 forward); ``q_weight`` (D,)
    multiplies the queries."""
    both = normed_heads(qk, 2 * heads, eps)   # (B, 2H, N, D)
    q, k = both[:, :heads], both[:, heads:]
    q.mul_(q_weight)
    return q, k


def heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D) strided view (no copy)."""
    b, n, f = x.shape
    return x.view(b, n, heads, f // heads).transpose(1, 2)


def merged(out: torch.Tensor) -> torch.Tensor:
    """Attention output (B, H, N, D) -> (B, N, H*D); free when its memory is (B, N, H, D)."""
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA with the softmax scale already folded into q: (B, H, Nq, D) x (B, H, Nk, D) -> (B, H, Nq, D)."""
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)


def normed_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, q_weight: torch.Tensor,
                           eps: tuple[float, float]) -> torch.Tensor:
    """Attention over RMS-normalised heads with torch ops (the reference twin of the compiled kernel):
    q (B, Nq, H*D), k, v (B, Nk, H*D), last dim contiguous -> (B, Nq, H*D).

    Queries normalised with ``eps[0]`` and multiplied by ``q_weight`` (D,) (:func:`qk_weight`: it carries
    the k weight and the softmax scale), keys normalised with ``eps[1]``; softmax without further scale.
    """
    qn = normed_heads(q, heads, eps[0], q_weight)
    kn = normed_heads(k, heads, eps[1])
    return merged(attend(qn, kn, heads_view(v, heads)))


def normed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, q_weight: torch.Tensor,
                     eps: tuple[float, float]) -> torch.Tensor:
    """:func:`normed_attention_torch`'s result, from the compiled CPU kernel where it can run
    (:mod:`ilrm_ros.model.native`: no normalised copies, ~1.2-1.6x faster at the shipped model's
    shapes), else from the twin."""
    if native.available(q, k, v, heads):
        return native.attention_native(q, k, v, heads, q_weight, eps)
    return normed_attention_torch(q, k, v, heads, q_weight, eps)


def self_attention(qkv: torch.Tensor, heads: int, q_weight: torch.Tensor, eps: tuple[float, float]) -> torch.Tensor:
    """:func:`normed_attention` of one (B, N, 3*H*D) projection holding q, k and v side by side -> (B, N, H*D);
    without the compiled kernel, and with equal eps, q and k are normalised in one pass (:func:`normed_qk`)."""
    d = qkv.shape[-1] // 3
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    if native.available(q, k, v, heads) or eps[0] != eps[1]:
        return normed_attention(q, k, v, heads, q_weight, eps)
    qn, kn = normed_qk(qkv[..., :2 * d], heads, eps[0], q_weight)
    return merged(attend(qn, kn, heads_view(v, heads)))


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The module's LayerNorm without module dispatch: the compiled single-thread kernel where it runs
    (:mod:`ilrm_ros.model.native`), else ``F.layer_norm``."""
    if len(norm.normalized_shape) == 1 and native.layer_norm_available(x, norm.normalized_shape[0]):
        return native.layer_norm_op(x, norm.weight, norm.bias, norm.eps)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

