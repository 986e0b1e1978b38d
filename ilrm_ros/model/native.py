"""The model's compiled CPU kernels (``model/csrc/*.c``): build, load, call.

Four kernels for float32 CPU inference, each a torch operator of our own (so the profiler shows
it by name) with a torch twin that runs wherever it cannot:

- ``ilrm_ros::normed_attention`` (``attention_cpu.c``): what the fused path's ``normed_heads``
  (queries and keys), SDPA and ``merged`` compute together (twin:
  :func:`ilrm_ros.model.fused.normed_attention_torch`), reading the heads straight from the
  projections' memory and writing the merged output. On 2 AVX-512 cores ~150-180 GFLOP/s at the
  shipped model's shapes, where torch's CPU flash attention and the separate norm passes give
  ~90-140.
- ``ilrm_ros::ray_tokens`` (``tokens_cpu.c``): the tokenizers' inputs, ray channels (and, for
  the image tokenizer, RGB) of every grid point written in token order in one pass (twins:
  :func:`ilrm_ros.model.fused_tokens.image_token_input` and the viewpoint grid's
  ``patchify(ray_features(camera_rays(...)))``).
- ``ilrm_ros::gaussian_head`` (``head_cpu.c``): the decoder's output to activated Gaussians
  (un-patchify, offsets, rays through the offset pixels, colour cells, activations) in one pass
  (twin: :func:`ilrm_ros.model.fused_head.gaussians_torch`).
- ``ilrm_ros::layer_norm`` (``norm_cpu.c``): LayerNorm on the calling thread (twin:
  ``F.layer_norm``). The model's LayerNorms take 10-25 us on one core; torch's starts a parallel
  region for each, which under ``OMP_WAIT_POLICY=PASSIVE`` (the package's default) first wakes
  the sleeping worker (~1 % of a 4 x 128^2 forward).

``test/model/test_model_native.py`` compares each with its twin.

Threads: OpenMP. Loaded into a torch process, the library's ``libgomp.so.1`` resolves to the
copy torch already loaded, so the kernels run on torch's own thread pool
(``torch.get_num_threads()`` threads) instead of a pool of their own competing with torch's.

Building: ``make setup`` (``ilrm-ros kernels --build``) and colcon (``CMakeLists.txt``). Without
the library (no compiler, no OpenMP) the ``*_available`` checks are False and the twins run;
:func:`status` says why.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from ilrm_ros.core.clib import CLibrary, LoadedLibrary

__all__ = ["SOURCES", "LIBRARY", "ENV_PATH", "MODEL_KERNELS", "build", "load", "status", "reload", "cli_main",
           "set_enabled", "available", "normed_attention_op", "attention_native", "attention_flops", "inputs_ok",
           "rays_available", "ray_tokens_op", "HEAD_FIELDS", "gaussian_head_op", "layer_norm_available",
           "layer_norm_op"]

SOURCES = tuple(sorted((Path(__file__).parent / "csrc").glob("*.c")))
"""Every C file of ``model/csrc`` (CMakeLists.txt globs the same folder): attention, ray tokens, head, norm."""
LIBRARY = Path(__file__).parent / "_native" / "libilrm_model.so"
"""Where builds put the library (git-ignored); ``ILRM_ROS_MODEL_LIB`` overrides it."""
ENV_PATH = "ILRM_ROS_MODEL_LIB"
LANES = 16
"""Head sizes must be a multiple of this (the kernel's vector width, in floats)."""
MAX_PATCH = 64
"""The largest tokenizer patch the ray-token kernel takes."""

_p = ctypes.c_void_p
_enabled = True


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types (AttributeError: the symbol is missing)."""
    lib.ilrm_attention_forward.restype = ctypes.c_int
    lib.ilrm_attention_forward.argtypes = ([_p] * 5 + [ctypes.c_int] * 5
                                           + [_p, ctypes.c_float, ctypes.c_float, ctypes.c_int])
    lib.ilrm_ray_tokens.restype = ctypes.c_int
    lib.ilrm_ray_tokens.argtypes = [_p] * 4 + [ctypes.c_int] * 8
    lib.ilrm_gaussian_head.restype = ctypes.c_int
    lib.ilrm_gaussian_head.argtypes = [_p] * 12 + [ctypes.c_int]
    lib.ilrm_layer_norm.restype = ctypes.c_int
    lib.ilrm_layer_norm.argtypes = [_p] * 4 + [ctypes.c_int64, ctypes.c_int, ctypes.c_float]


MODEL_KERNELS = CLibrary("model's CPU kernels", SOURCES, LIBRARY, ENV_PATH, _declare,
                         flags=("-fopenmp", "-ffp-contract=fast", "-Wno-psabi"), link=("-lm",))
"""The library's description (core/clib.py): OpenMP, FMA contraction allowed (no notes about the vector
ABI where the machine lacks AVX-512: the 64-byte vectors never cross the library's boundary)."""


_LIB = LoadedLibrary(MODEL_KERNELS)
load = _LIB.load
status = _LIB.status
reload = _LIB.reload
cli_main = _LIB.cli
build = _LIB.build   # (dest=LIBRARY, compiler=$CC or cc): -O3, -march=native where taken


def set_enabled(on: bool) -> None:
    """Let the fused path use the kernels (default) or always their torch twins (tests, benchmarks)."""
    global _enabled
    _enabled = bool(on)


def _rows_ok(t: Tensor, width: int) -> bool:
    """(B, N, width) with unit channel stride (every row's heads contiguous) that :func:`inputs_ok` takes."""
    return t.dim() == 3 and t.shape[-1] == width and t.stride(-1) == 1 and inputs_ok(t)


def available(q: Tensor, k: Tensor, v: Tensor, heads: int) -> bool:
    """Whether :func:`attention_native` can run on these projections: enabled and loaded, float32 CPU
    rows with contiguous channels, no autograd (the kernel has no backward), a head size that is a
    multiple of 16, at least one key."""
    if heads <= 0 or q.shape[-1] % heads:
        return False
    width, d = q.shape[-1], q.shape[-1] // heads
    return (d % LANES == 0 and k.shape[:2] == v.shape[:2] and k.shape[0] == q.shape[0] and k.shape[1] > 0
            and q.shape[1] > 0 and all(_rows_ok(t, width) for t in (q, k, v)))


def _normed_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, q_weight: Tensor, eps_q: float,
                      eps_k: float) -> Tensor:
    """The implementation of ``torch.ops.ilrm_ros.normed_attention``. Arguments as :func:`attention_native`."""
    b, nq, width = q.shape
    out = torch.empty(b, nq, width, dtype=q.dtype)
    gq = q_weight.detach().to(torch.float32).contiguous()
    strides = (ctypes.c_int64 * 8)(q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                   out.stride(0), out.stride(1))
    code = load().ilrm_attention_forward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), strides, b, heads,
                                         nq, k.shape[1], width // heads, gq.data_ptr(), eps_q, eps_k,
                                         torch.get_num_threads())
    if code != 0:
        raise RuntimeError(f"ilrm_attention_forward failed ({'unsupported sizes' if code == -1 else 'out of memory'})")
    return out


def attention_native(q: Tensor, k: Tensor, v: Tensor, heads: int, q_weight: Tensor,
                     eps: tuple[float, float]) -> Tensor:
    """Attention over RMS-normalised heads: q (B, Nq, H*D), k and v (B, Nk, H*D) (channels contiguous; rows
    may be strided, e.g. slices of one projection) -> (B, Nq, H*D) contiguous.

    Head h reads channels [h*D, (h+1)*D). Queries are normalised with ``eps[0]`` and multiplied by
    ``q_weight`` (D,) (which carries the softmax scale), keys normalised with ``eps[1]``; the softmax
    has no further scale. Check :func:`available` first.
    """
    return torch.ops.ilrm_ros.normed_attention(q, k, v, heads, q_weight, float(eps[0]), float(eps[1]))


def attention_flops(q_shape: torch.Size, k_shape: torch.Size, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one :func:`normed_attention_op` call (shapes as torch's FLOP counter passes them): the two
    products, 2 B H Nq Nk D each, as torch counts SDPA's."""
    b, nq, width = (int(s) for s in q_shape)
    return 4 * b * nq * int(k_shape[1]) * width


def inputs_ok(t: Tensor) -> bool:
    """Whether the kernels may take ``t``: enabled and loaded, float32 CPU, no autograd."""
    return (_enabled and t.dtype == torch.float32 and t.device.type == "cpu"
            and not (torch.is_grad_enabled() and t.requires_grad) and load() is not None)


def rays_available(t: Tensor, encoding: str, grid: tuple[int, int], patch: int) -> bool:
    """Whether :func:`ray_tokens_op` can build the tokens of a ``grid`` (GH, GW) in patches of ``patch``:
    :func:`inputs_ok` for ``t`` (the images or cameras), a known ray encoding, the grid a multiple of the patch."""
    return (encoding in ("plucker6", "plucker9") and 0 < patch <= MAX_PATCH and grid[0] % patch == 0
            and grid[1] % patch == 0 and inputs_ok(t))


def _ray_tokens(images: Tensor | None, rows: Tensor, origin: Tensor | None, sizes: list[int]) -> Tensor:
    """A tokenizer's input (B*V, (GH/p)(GW/p), p*p*C) for a grid of GH x GW points ``stride`` pixels apart:
    ``sizes`` = [GH, GW, p, stride, direction, rgb_first]. ``rows`` (B, V, 6, 3), ``origin`` (B, V, 3) or None
    and ``direction`` (the direction's first row, 0 or 3) as :func:`~ilrm_ros.model.fused_tokens.ray_rows`
    gives them; ``images`` (B, V, 3, GH, GW) in [0, 1] (mapped to [-1, 1]; stride 1) or None (rays only).
    C = R (+ 3 with images). Check :func:`rays_available`."""
    gh, gw, patch, stride, direction, rgb_first = sizes
    n = rows.shape[0] * rows.shape[1]
    c = (9 if origin is not None else 6) + (3 if images is not None else 0)
    out = torch.empty(n, (gh // patch) * (gw // patch), patch * patch * c, dtype=torch.float32)
    rgb = images.contiguous() if images is not None else None
    rows = rows.to(torch.float32).contiguous()
    o = origin.to(torch.float32).contiguous() if origin is not None else None
    code = load().ilrm_ray_tokens(_ptr(rgb), rows.data_ptr(), _ptr(o), out.data_ptr(), n, gh, gw, patch, stride,
                                  direction, rgb_first, torch.get_num_threads())
    if code != 0:
        raise RuntimeError("ilrm_ray_tokens failed (unsupported sizes)")
    return out


HEAD_FIELDS = (3, 4, 3, 1, 3)
"""Channels of the head's outputs: means, quats, scales, opacities, colours."""


def _gaussian_head(raw: Tensor, rows: Tensor, origin: Tensor, images: Tensor | None, sizes: list[int],
                   params: list[float]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The Gaussian head (``head_cpu.c``): decoder output ``raw`` (B, V*Nt, p*p*C) -> (means (B*V*GH*GW, 3),
    quats (., 4), scales (., 3), opacities (.,), colours (., 3), offsets (., 2), or (0,) when C has none).
    ``rows`` (B, V, 3, 3) = R K^-1, ``origin`` (B, V, 3), ``images`` (B, V, 3, H, W) for the colour residual
    or None; ``sizes`` = [GH, GW, p, stride, C]; ``params`` = [max_depth, scale_bias, scale_max_log,
    opacity_bias]."""
    gh, gw, patch, stride, c = sizes
    n = rows.shape[0] * rows.shape[1]
    count = n * gh * gw
    outs = [torch.empty(count, k, dtype=torch.float32) for k in HEAD_FIELDS]
    offsets = torch.empty(count, 2, dtype=torch.float32) if c == 16 else torch.empty(0, dtype=torch.float32)
    raw = raw.contiguous()
    m, o = rows.to(torch.float32).contiguous(), origin.to(torch.float32).contiguous()
    img = images.contiguous() if images is not None else None
    size_arr = (ctypes.c_int * 6)(n, gh, gw, patch, stride, c)
    param_arr = (ctypes.c_float * 4)(*params)
    code = load().ilrm_gaussian_head(raw.data_ptr(), m.data_ptr(), o.data_ptr(), _ptr(img),
                                     *(t.data_ptr() for t in outs), offsets.data_ptr() if c == 16 else None,
                                     size_arr, param_arr, torch.get_num_threads())
    if code != 0:
        raise RuntimeError("ilrm_gaussian_head failed (unsupported sizes)")
    means, quats, scales, opac, colors = outs
    return means, quats, scales, opac.view(-1), colors, offsets


def layer_norm_available(x: Tensor, width: int) -> bool:
    """Whether :func:`layer_norm_op` can normalise ``x`` (..., width): :func:`inputs_ok`, contiguous, width a
    multiple of 16."""
    return x.shape[-1] == width and width % LANES == 0 and x.is_contiguous() and inputs_ok(x)


def _layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.layer_norm`` over the last dim of a contiguous float32 ``x`` (..., D), on the calling thread (no
    parallel region, so no sleeping worker to wake). Check :func:`layer_norm_available`."""
    out = torch.empty_like(x)
    w = weight.detach().contiguous() if weight is not None else None
    b = bias.detach().contiguous() if bias is not None else None
    code = load().ilrm_layer_norm(x.data_ptr(), out.data_ptr(), _ptr(w), _ptr(b), x.numel() // x.shape[-1],
                                  x.shape[-1], eps)
    if code != 0:
        raise RuntimeError("ilrm_layer_norm failed (unsupported width)")
    return out


# The kernels as torch operators (torch.ops.ilrm_ros.*): the profiler shows them by name and FLOP counters
# can be given formulas. Registered with torch.library.Library, not the custom_op decorator: calling a
# custom_op imports torch._dynamo, which costs ~70 MB of resident memory (measured), and 3 us a call more.
_OPS = torch.library.Library("ilrm_ros", "DEF")
_OPS.define("normed_attention(Tensor q, Tensor k, Tensor v, int heads, Tensor q_weight, float eps_q, float eps_k)"
            " -> Tensor")
_OPS.define("ray_tokens(Tensor? images, Tensor rows, Tensor? origin, int[] sizes) -> Tensor")
_OPS.define("gaussian_head(Tensor raw, Tensor rows, Tensor origin, Tensor? images, int[] sizes, float[] params)"
            " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
_OPS.define("layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps) -> Tensor")
for _name, _impl in (("normed_attention", _normed_attention), ("ray_tokens", _ray_tokens),
                     ("gaussian_head", _gaussian_head), ("layer_norm", _layer_norm)):
    _OPS.impl(_name, _impl, "CPU")


def normed_attention_op(q: Tensor, k: Tensor, v: Tensor, heads: int, q_weight: Tensor, eps_q: float,
                        eps_k: float) -> Tensor:
    """``torch.ops.ilrm_ros.normed_attention`` (see :func:`attention_native`)."""
    return torch.ops.ilrm_ros.normed_attention(q, k, v, heads, q_weight, eps_q, eps_k)


def ray_tokens_op(images: Tensor | None, rows: Tensor, origin: Tensor | None, sizes: list[int]) -> Tensor:
    """``torch.ops.ilrm_ros.ray_tokens`` (see :func:`_ray_tokens`)."""
    return torch.ops.ilrm_ros.ray_tokens(images, rows, origin, sizes)


def gaussian_head_op(raw: Tensor, rows: Tensor, origin: Tensor, images: Tensor | None, sizes: list[int],
                   params: list[float]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``torch.ops.ilrm_ros.gaussian_head`` (see :func:`_gaussian_head`)."""
    return torch.ops.ilrm_ros.gaussian_head(raw, rows, origin, images, sizes, params)


def layer_norm_op(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``torch.ops.ilrm_ros.layer_norm`` (see :func:`_layer_norm`)."""
    return torch.ops.ilrm_ros.layer_norm(x, weight, bias, eps)


def _ptr(t: Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None
