"""The table and records of `ilrm-ros bench model`: one Case per measured setting."""
from __future__ import annotations

from dataclasses import dataclass, field

#: Figures reported in the paper / NOTES §1 (not measured here).
PAPER_REFERENCE = [
    {"setting": "RE10K, 2 views, 256x256", "config": "re10k", "device": "RTX 4090", "seconds": 0.025},
    {"setting": "DL3DV, 16 views, 540x960", "config": "dl3dv", "device": "H100", "seconds": 0.19},
    {"setting": "DL3DV, 32 views, 540x960", "config": "dl3dv", "device": "H100", "seconds": 0.53},
]


@dataclass
class Case:
    """One measured setting."""

    device: str
    config: str
    views: int
    height: int
    width: int
    gaussians: int
    model_ms: float
    model_ms_all: list[float] = field(default_factory=list)
    model_cpu_ms: float | None = None
    """median process CPU time of the model runs (CPU device), ms."""
    render_ms: float | None = None
    """model + rendering one view, median ms (None when rendering was skipped)."""
    peak_mem_mb: float | None = None
    mem_note: str = ""
    render_peak_mem_mb: float | None = None
    """Peak memory of the forward + render runs over that before them (CUDA allocations; CPU
    resident memory where VmHWM can be reset)."""
    render_backend: str = ""
    """rasterizer used for the render column: "gsplat" or "torch" ("" when skipped)."""
    mmap_threshold_mib: int | None = None
    """CPU: glibc's mmap threshold pinned for the case, as a node configured for this window pins it."""
    gflop: float = 0.0
    """FLOPs of one forward (torch's flop counter), 1e9."""
    gflops: float = 0.0
    """achieved FLOP rate of the forward, median over runs alternating with the reference, GFLOP/s."""
    ref_gflops: float = 0.0
    """FLOP rate of a matmul of the model's dominant shape, timed between the model's runs: the faster
    of the kernels in ``ref_kernels``."""
    ref_kernels: dict = field(default_factory=dict)
    """GFLOP/s of each reference kernel at that shape ("matmul": torch.matmul, "onednn": oneDNN's
    linear; 0.0 where it cannot run)."""
    ratio: float = 0.0
    """median over those pairs of model rate / reference rate (the machine-independent figure)."""
    ref_shape: list[int] = field(default_factory=list)
    """(M, K, N) of that matmul."""
    profile: list[dict] = field(default_factory=list)
    """--profile: the top-5 operators by self CPU time."""


def _mem_text(value: float | None, note: str = "") -> str:
    if value is None:
        return "-"
    return f"<={value:.0f}" if note.startswith("<=") else f"{value:.0f}"


def format_table(cases: list[Case], notes: list[str]) -> str:
    """The printed table: one row per case, then the paper's reference rows and the notes."""
    head = (f"{'device':<7}{'config':<8}{'views':>6}{'HxW':>11}{'gaussians':>11}{'model ms':>10}{'cpu ms':>9}"
            f"{'+render ms':>12}{'rast':>7}{'peak MB':>9}{'+render MB':>11}")
    lines = [head, "-" * len(head)]
    for c in cases:
        r = f"{c.render_ms:.1f}" if c.render_ms is not None else "-"
        cpu = f"{c.model_cpu_ms:.1f}" if c.model_cpu_ms is not None else "-"
        lines.append(
            f"{c.device:<7}{c.config:<8}{c.views:>6}{f'{c.height}x{c.width}':>11}{c.gaussians:>11}"
            f"{c.model_ms:>10.1f}{cpu:>9}{r:>12}{c.render_backend or '-':>7}{_mem_text(c.peak_mem_mb, c.mem_note):>9}"
            f"{_mem_text(c.render_peak_mem_mb):>11}"
        )
    lines.append("efficiency (same process): counted GFLOP, achieved GFLOP/s, reference matmul of the dominant "
                 "shape GFLOP/s (the faster kernel; each kernel's rate), ratio")
    for c in cases:
        kernels = " ".join(f"{k} {v:.0f}" for k, v in c.ref_kernels.items() if v)
        lines.append(f"  {c.device:<5}{c.config:<8}{c.views:>3} x {c.height}x{c.width}: {c.gflop:8.1f} GFLOP "
                     f"{c.gflops:8.1f} GFLOP/s  ref {c.ref_gflops:7.1f} GFLOP/s {tuple(c.ref_shape)} ({kernels})  "
                     f"ratio {100 * c.ratio:5.1f} %")
        for p in c.profile:
            lines.append(f"      {p['op']:<48} {p['ms_per_call']:>9.2f} ms  {100 * p['share']:5.1f} %")
    lines.append("paper reference (not measured here):")
    for p in PAPER_REFERENCE:
        lines.append(f"  {p['setting']:<28} {p['config']:<6} {p['device']:<9} {1e3 * p['seconds']:.0f} ms")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
