"""Building blocks of the iLRM update layers: patchify, attention, read/self blocks.

Module and parameter names follow the authors' checkpoints (``read_cross.q``,
``read_ff.fc1``, ``attn.qkv``, ``mlp.fc2`` ...), so their state dicts load by name.
Every block is pre-norm (LayerNorm without bias) with a residual, attention uses
per-head RMSNorm on queries and keys, and no linear layer has a bias.

Each block has two computations of its residual step: the plain one (``x + forward(x)``,
the reference, and the only one with autograd, autocast or half precision) and, for float32
inference, the fused one of :mod:`ilrm_ros.model.fused` (same result to float32 rounding;
``Processor.set_fused(False)`` switches it off; tests compare the two).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ilrm_ros.model import fused as fz

__all__ = [
    "Patchify",
    "patchify",
    "unpatchify",
    "reference_attention",
    "attention",
    "MLP",
    "ReadCrossAttention",
    "SelfAttention",
    "ReadBlock",
    "SelfBlock",
    "Processor",
]

ATTENTION_BACKENDS = ("sdpa", "reference")
#: eps of the per-head q/k RMSNorm in the authors' models (their RMSNorm default).
QK_NORM_EPS = 1e-5


# --------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` -> tokens ``(N, (H/p)(W/p), p*p*C)``.

    Token order is row-major over patches (hh ww); features inside a token are ordered
    (ph pw c), channels fastest — the ``(hh ph) (ww pw) c -> (hh ww) (ph pw c)`` layout.
    """
    n, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {patch}")
    hh, ww = h // patch, w // patch
    x = x.reshape(n, c, hh, patch, ww, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, hh * ww, patch * patch * c)


def unpatchify(tokens: torch.Tensor, hh: int, ww: int, patch: int) -> torch.Tensor:
    """Inverse layout of :func:`patchify`, channels last: ``(N, hh*ww, p*p*C)`` -> ``(N, hh*p, ww*p, C)``."""
    n, _, f = tokens.shape
    c = f // (patch * patch)
    x = tokens.reshape(n, hh, ww, patch, patch, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, hh * patch, ww * patch, c)


class Patchify(nn.Module):
    """Parameter-free module form of :func:`patchify` (slot 0 of the wide tokenizers)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch)

    def extra_repr(self) -> str:
        return f"patch={self.patch}"


# --------------------------------------------------------------------------- attention
def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention. q: (..., Nq, D), k, v: (..., Nk, D) -> (..., Nq, D).

    Computed in float32 (or float64 if given) for use as a numerical reference.
    """
    dtype = q.dtype
    if dtype not in (torch.float32, torch.float64):
        q, k, v = q.float(), k.float(), v.float()
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(logits, dim=-1)
    return (weights @ v).to(dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Multi-head attention core. q: (B, heads, Nq, D), k, v: (B, heads, Nk, D) -> (B, heads, Nq, D)."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend == "reference":
        return reference_attention(q, k, v)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {ATTENTION_BACKENDS}")


def _split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D)."""
    b, n, f = x.shape
    return x.view(b, n, f // head_dim, head_dim).transpose(1, 2)


def _qk_norm(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """Per-head RMSNorm as the authors compute it: normalised in float32 (also under autocast),
    cast back to the activations' dtype, then scaled by the weight in that dtype."""
    y = F.rms_norm(x.float(), norm.normalized_shape, None, norm.eps).to(x.dtype)
    return y * norm.weight.to(x.dtype)


def _eps(norm: nn.RMSNorm, x: torch.Tensor) -> float:
    """The norm's eps (torch's default for None: the dtype's machine epsilon)."""
    return norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# --------------------------------------------------------------------------- blocks
class MLP(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear(d, r*d) -> GELU -> Linear(r*d, d), no biases.

    Returns the residual *update* (the caller adds it).
    """

    def __init__(self, dim: int, ratio: int = 4, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, bias=False)
        self.fc1 = nn.Linear(dim, ratio * dim, bias=False)
        self.fc2 = nn.Linear(ratio * dim, dim, bias=False)
        self._fused = fz.WeightCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))

    def residual(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """``x + forward(x)``, x (B, N, d); ``fused``: the GELU inside the first GEMM (oneDNN) and the
        residual add inside the second."""
        if not fused:
            return x + self.forward(x)
        w1, w2 = self._fused.get((self.fc1.weight, self.fc2.weight), lambda a, b: (fz.pack(a), fz.pack(b)))
        h = fz.linear_gelu(fz.layer_norm(self.norm, x), w1)
        return fz.linear_residual(x, h, w2)


class ReadCrossAttention(nn.Module):
    """Viewpoint tokens (queries, pre-normed) read image tokens (keys/values) of the same view.

    With ``uplift = k > 1`` the query projection maps d -> k*d: each viewpoint token becomes
    k sub-queries that attend separately; their outputs are merged back to k*d and
    projected to d. Returns the residual update.

    Token-uplifting layout (the authors' convention, pinned by tests): the k*d query
    channels are ordered (heads, head_dim, sub), sub fastest — sub-query ``s`` is made
    of channels ``s, s + k, s + 2k, ...`` (rows ``q.weight[s::k]``) — and the merged
    attention output is laid out the same way before ``proj`` (columns
    ``proj.weight[:, s::k]`` read sub-query ``s``).
    """

    def __init__(
        self, dim: int, head_dim: int = 64, uplift: int = 1, eps: float = 1e-5, qk_eps: float = QK_NORM_EPS,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.head_dim = head_dim
        self.uplift = uplift
        self.backend = backend
        # Registration order follows the authors' state dicts.
        self.norm = nn.LayerNorm(dim, eps=eps, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=qk_eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=qk_eps)
        self.q = nn.Linear(dim, uplift * dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(uplift * dim, dim, bias=False)
        self._fused = fz.WeightCache()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (N, Nq, d) viewpoint tokens; context: (N, Nk, d) image tokens -> (N, Nq, d)."""
        n, nq, d = x.shape
        u = self.uplift
        q = self.q(self.norm(x))  # (N, Nq, d*u), channels (d, u) with the sub-query fastest
        if u > 1:
            q = q.view(n, nq, d, u).transpose(-1, -2)  # (N, Nq, u, d)
        q = _qk_norm(self.q_norm, _split_heads(q.reshape(n, nq * u, d), self.head_dim))
        k = _qk_norm(self.k_norm, _split_heads(self.k(context), self.head_dim))
        v = _split_heads(self.v(context), self.head_dim)
        out = _merge_heads(attention(q, k, v, self.backend))  # (N, Nq*u, d), sub-queries of a token adjacent
        if u > 1:
            out = out.view(n, nq, u, d).transpose(-1, -2)  # (N, Nq, d, u): back to (d, u) channel order
        return self.proj(out.reshape(n, nq, d * u))

    def _fused_weights(self, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wp: torch.Tensor,
                       gq: torch.Tensor, gk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(q rows in (u, d) order, [k; v] (2d, d), proj columns in (u, d) order, q factor (D,)); the
        three projections :func:`~ilrm_ros.model.fused.pack`-ed."""
        u = self.uplift
        return (fz.pack(fz.uplift_rows(wq, u)), fz.pack(torch.cat((wk, wv))), fz.pack(fz.uplift_cols(wp, u)),
                fz.qk_weight(gq, gk)[0])

    def residual(self, x: torch.Tensor, context: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """``x + forward(x, context)``; ``fused``: the kernels of :mod:`ilrm_ros.model.fused`."""
        if not fused:
            return x + self.forward(x, context)
        n, nq, d = x.shape
        u, heads = self.uplift, d // self.head_dim
        wq, wkv, wp, gq = self._fused.get((self.q.weight, self.k.weight, self.v.weight, self.proj.weight,
                                            self.q_norm.weight, self.k_norm.weight), self._fused_weights)
        q = fz.linear(fz.layer_norm(self.norm, x), wq).view(n, nq * u, d)  # sub-queries of a token adjacent
        kv = fz.linear(context, wkv)                                        # (N, Nk, 2d)
        eps = (_eps(self.q_norm, x), _eps(self.k_norm, x))
        out = fz.normed_attention(q, kv[..., :d], kv[..., d:], heads, gq, eps)  # (N, Nq*u, d)
        return fz.linear_residual(x, out.view(n, nq, u * d), wp)


class SelfAttention(nn.Module):
    """Pre-norm global self-attention (fused qkv, per-head RMSNorm on q, k). Returns the update."""

    def __init__(
        self, dim: int, head_dim: int = 64, eps: float = 1e-5, qk_eps: float = QK_NORM_EPS, backend: str = "sdpa"
    ) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.head_dim = head_dim
        self.backend = backend
        self.norm = nn.LayerNorm(dim, eps=eps, bias=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=qk_eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=qk_eps)
        self._fused = fz.WeightCache()

    def residual(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """``x + forward(x)``; ``fused``: the kernels of :mod:`ilrm_ros.model.fused`."""
        if not fused:
            return x + self.forward(x)
        heads = x.shape[-1] // self.head_dim
        wqkv, wp, gq = self._fused.get((self.qkv.weight, self.proj.weight, self.q_norm.weight, self.k_norm.weight),
                                       lambda a, b, gq, gk: (fz.pack(a), fz.pack(b), fz.qk_weight(gq, gk)[0]))
        qkv = fz.linear(fz.layer_norm(self.norm, x), wqkv)                 # (B, N, 3d)
        out = fz.self_attention(qkv, heads, gq, (_eps(self.q_norm, x), _eps(self.k_norm, x)))
        return fz.linear_residual(x, out, wp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, d) -> (B, N, d)."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, 3, d // self.head_dim, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)
        out = attention(_qk_norm(self.q_norm, q), _qk_norm(self.k_norm, k), v, self.backend)
        return self.proj(_merge_heads(out))


class ReadBlock(nn.Module):
    """Per-view read: ``x += read_cross(x, image tokens)``; ``x += read_ff(x)``."""

    def __init__(
        self, dim: int, head_dim: int, mlp_ratio: int, uplift: int, backend: str = "sdpa", qk_eps: float = QK_NORM_EPS
    ) -> None:
        super().__init__()
        self.read_cross = ReadCrossAttention(dim, head_dim, uplift, qk_eps=qk_eps, backend=backend)
        self.read_ff = MLP(dim, mlp_ratio)
        self.fused = True

    def forward(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """x: (B, V*Nv, d) viewpoint tokens; images: (B*V, Ni, d) -> (B, V*Nv, d).

        Views are folded into the batch so each view's tokens only see its own image.
        """
        b, n, d = x.shape
        bv = images.shape[0]
        xv = x.reshape(bv, n * b // bv, d)
        fused = self.fused and self.read_cross.backend == "sdpa" and fz.fused_ok(x)
        xv = self.read_cross.residual(xv, images, fused)
        xv = self.read_ff.residual(xv, fused)
        return xv.reshape(b, n, d)


class SelfBlock(nn.Module):
    """Global self-attention over all viewpoint tokens of all views, then MLP."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: int, backend: str = "sdpa", qk_eps: float = QK_NORM_EPS) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, head_dim, qk_eps=qk_eps, backend=backend)
        self.mlp = MLP(dim, mlp_ratio)
        self.fused = True

    def forward(self, x: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, V*Nv, d) -> (B, V*Nv, d); ``images`` is ignored (uniform block signature)."""
        fused = self.fused and self.attn.backend == "sdpa" and fz.fused_ok(x)
        return self.mlp.residual(self.attn.residual(x, fused), fused)


class Processor(nn.Module):
    """The update layers: ``2 * iterations`` blocks alternating read (even) and self (odd).

    The same image tokens are re-read by every read block (high-resolution injection).
    """

    def __init__(
        self, dim: int, iterations: int, head_dim: int = 64, mlp_ratio: int = 4, uplift: int = 1,
        backend: str = "sdpa", qk_eps: float = QK_NORM_EPS,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for _ in range(iterations):
            blocks.append(ReadBlock(dim, head_dim, mlp_ratio, uplift, backend, qk_eps))
            blocks.append(SelfBlock(dim, head_dim, mlp_ratio, backend, qk_eps))
        self.blocks = nn.ModuleList(blocks)
        self.gradient_checkpointing = False

    def set_backend(self, backend: str) -> None:
        """Switch every attention layer to ``"sdpa"`` or ``"reference"``."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}")
        for m in self.modules():
            if isinstance(m, (ReadCrossAttention, SelfAttention)):
                m.backend = backend

    def fused_enabled(self) -> bool:
        """Whether every block takes the fused float32 inference kernels (where they apply)."""
        return all(m.fused for m in self.blocks)

    def set_fused(self, on: bool) -> None:
        """Use the fused float32 inference kernels (default) or always the plain reference code."""
        for m in self.blocks:
            m.fused = bool(on)

    def forward(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """x: (B, V*Nv, d) viewpoint tokens; images: (B*V, Ni, d) -> updated (B, V*Nv, d)."""
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_ckpt:
                x = checkpoint(block, x, images, use_reentrant=False)
            else:
                x = block(x, images)
        return x
