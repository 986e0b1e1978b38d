"""How close the model runs to the machine: counted FLOPs, achieved FLOP rate, a reference matmul.

CPU speed on shared machines varies 2-3x from day to day, so ``bench model`` states its
efficiency as a ratio measured in one process: the model's FLOP rate over that of a
plain matmul of the model's dominant shape (the MLP's first projection over the case's
viewpoint tokens), timed right after the model.
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


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as torch's flop counter sees them (matmuls, attention on CUDA and
    CPU, convs)."""
    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def representative_shape(views: int, height: int, width: int, dim: int, mlp_ratio: int, patch: int,
                         viewpoint_factor: int) -> tuple[int, int, int]:
    """(M, K, N) of the model's dominant matmul for a case: viewpoint tokens x d times d x (ratio d)."""
    tokens = views * (height // (patch * viewpoint_factor)) * (width // (patch * viewpoint_factor))
    return tokens, dim, mlp_ratio * dim


def matmul_gflops(shape: tuple[int, int, int], device: torch.device, runs: int = 10,
                  dtype: torch.dtype = torch.float32, min_seconds: float = 0.5) -> float:
    """Median GFLOP/s of ``(M, K) @ (K, N)`` on ``device`` (2 M K N FLOPs per product), over at least
    ``runs`` products and ``min_seconds`` (small shapes take ~1 ms: a few runs would be noise)."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < runs or time.perf_counter() < t_end:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2.0 * m * k * n / statistics.median(times) / 1e9


def paired_rates(fn: Callable[[], object], flops: int, shape: tuple[int, int, int], device: torch.device,
                 pairs: int = 5, dtype: torch.dtype = torch.float32) -> tuple[float, float, float]:
    """Model and reference-matmul FLOP rates measured in alternation, so both see the same machine.

    Each pair times one call of ``fn`` and then the matmul for about as long. Returns the
    medians of (model GFLOP/s, matmul GFLOP/s, their ratio per pair): on a shared CPU whose
    speed drifts over seconds the per-pair ratio is the stable figure.
    """
    model, ref, ratio = [], [], []
    for _ in range(pairs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        model.append(flops / dt / 1e9)
        ref.append(matmul_gflops(shape, device, runs=3, dtype=dtype, min_seconds=min(dt, 1.0)))
        ratio.append(model[-1] / ref[-1])
    return statistics.median(model), statistics.median(ref), statistics.median(ratio)


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
