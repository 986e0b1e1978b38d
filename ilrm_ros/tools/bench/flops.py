"""How close the model runs to the machine: counted FLOPs, achieved FLOP rate, a reference matmul.

CPU speed on shared machines varies 2-3x from day to day, so ``bench model`` states its
efficiency as a ratio measured in one process: the model's FLOP rate over that of a
plain matmul of the model's dominant shape (the MLP's first projection over the case's
viewpoint tokens), timed right after the model.

The reference is the *faster* of the two GEMM kernels torch offers on CPU at that shape:
``torch.matmul`` (MKL's sgemm) and oneDNN's linear (what the model's fused path runs, see
``ilrm_ros.model.fused``). At 256 x 256 x 1024 on 2 AVX-512 cores MKL reaches ~110-140 GFLOP/s
and oneDNN ~200: measured against MKL alone, a model running oneDNN GEMMs would claim more
than 100 % of "the machine". Both rates are reported.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "matmul_gflops", "paired_rates", "representative_shape", "profile_top"]


def _cpu_sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args,
                    out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (the counter passes shapes): q
    (B, H, Nq, D), k, v (B, H, Nk, D) -> 2 B H Nq Nk (D + Dv), as torch counts its CUDA kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_mapping() -> dict:
    """torch's counter registers the CUDA attention kernels only: without this entry CPU attention
    (up to 40 % of the forward's work at 256x256) would count as zero FLOPs."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_sdpa_flops} if op is not None else {}


def _onednn_linear_flops(x_shape: torch.Size, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``mkldnn._linear_pointwise`` (both overloads: ``(x, w, ...)`` and ``.binary(x, other,
    w, ...)``): x (..., K) -> out (..., N) is 2 * rows * K * N (a fused add is not counted, as
    ``addmm``'s is not)."""
    rows = 1
    for s in out_shape[:-1]:
        rows *= int(s)
    return 2 * rows * int(x_shape[-1]) * int(out_shape[-1])


def _onednn_linear_mapping() -> dict:
    """The fused path's oneDNN linears (unknown to torch's counter, which would count them as zero)."""
    from ilrm_ros.model.fused import ONEDNN_LINEAR

    return {ONEDNN_LINEAR: _onednn_linear_flops} if ONEDNN_LINEAR is not None else {}


def _native_attention_mapping() -> dict:
    """The compiled CPU attention kernel (``model/native.py``), a torch operator of our own."""
    from ilrm_ros.model.native import attention_flops

    return {torch.ops.ilrm_ros.normed_attention: attention_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as torch's flop counter sees them (matmuls, attention on CUDA and
    CPU, oneDNN linears, the compiled attention kernel, convs)."""
    mapping = {**_cpu_attention_mapping(), **_onednn_linear_mapping(), **_native_attention_mapping()}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def representative_shape(views: int, height: int, width: int, dim: int, mlp_ratio: int, patch: int,
                         viewpoint_factor: int) -> tuple[int, int, int]:
    """(M, K, N) of the model's dominant matmul for a case: viewpoint tokens x d times d x (ratio d)."""
    tokens = views * (height // (patch * viewpoint_factor)) * (width // (patch * viewpoint_factor))
    return tokens, dim, mlp_ratio * dim


REFERENCE_KERNELS = ("matmul", "onednn")
"""The GEMM kernels a reference can time: ``torch.matmul`` and (CPU, float32) oneDNN's linear."""


def _product(kernel: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> Callable[[], object] | None:
    """One ``a @ b`` with ``kernel``, or None where this process cannot run it."""
    if kernel == "matmul":
        return lambda: torch.matmul(a, b, out=out)
    from ilrm_ros.model import fused

    if a.device.type != "cpu" or a.dtype != torch.float32 or fused.ONEDNN_LINEAR is None:
        return None
    w = fused.pack(b.t().contiguous())
    return lambda: fused.linear(a, w)


def matmul_gflops(shape: tuple[int, int, int], device: torch.device, runs: int = 10,
                  dtype: torch.dtype = torch.float32, min_seconds: float = 0.5, kernel: str = "matmul") -> float:
    """Median GFLOP/s of ``(M, K) @ (K, N)`` on ``device`` (2 M K N FLOPs per product), over at least
    ``runs`` products and ``min_seconds`` (small shapes take ~1 ms: a few runs would be noise);
    ``kernel`` one of :data:`REFERENCE_KERNELS` (0.0 where it cannot run here)."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    product = _product(kernel, a, b, out)
    if product is None:
        return 0.0
    product()  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < runs or time.perf_counter() < t_end:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        product()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2.0 * m * k * n / statistics.median(times) / 1e9


def paired_rates(fn: Callable[[], object], flops: int, shape: tuple[int, int, int], device: torch.device,
                 pairs: int = 5, dtype: torch.dtype = torch.float32) -> tuple[float, float, float, dict]:
    """Model and reference-matmul FLOP rates measured in alternation, so both see the same machine.

    Each pair times one call of ``fn`` and then each reference kernel for about as long; the
    pair's reference is the faster kernel. Returns the medians of (model GFLOP/s, reference
    GFLOP/s, their ratio per pair) and of each kernel's GFLOP/s ({kernel: rate}; 0.0 where it
    cannot run): on a shared CPU whose speed drifts over seconds the per-pair ratio is the
    stable figure.
    """
    model, ref, ratio = [], [], []
    per_kernel: dict[str, list[float]] = {k: [] for k in REFERENCE_KERNELS}
    for _ in range(pairs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        model.append(flops / dt / 1e9)
        for kernel in REFERENCE_KERNELS:
            per_kernel[kernel].append(matmul_gflops(shape, device, 3, dtype, min(dt, 1.0), kernel))
        ref.append(max(rates[-1] for rates in per_kernel.values()))
        ratio.append(model[-1] / ref[-1])
    kernels = {k: statistics.median(v) for k, v in per_kernel.items()}
    return statistics.median(model), statistics.median(ref), statistics.median(ratio), kernels


def profile_top(fn: Callable[[], object], k: int = 5, runs: int = 2) -> list[dict]:
    """The ``k`` operators with the most self CPU time over ``runs`` calls: name, ms per call, share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "ms_per_call": round(e.self_cpu_time_total / 1e3 / runs, 2),
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:k]]
