"""`ilrm-ros bench model`: iLRM forward latency and peak memory vs views and resolution.

For each device (CPU, and CUDA when present — bf16 autocast there), resolution and
number of views it times the model alone and the model followed by rendering one view
at the input resolution (``ilrm_ros.render.render.render_gaussians``, if importable),
as the median of ``--runs`` timed runs after ``--warmup`` runs. Memory:

- CUDA: ``torch.cuda.max_memory_allocated`` during the forward minus what was allocated
  before it (activations and workspace; weights reported separately).
- CPU: growth of the process's peak RSS (``resource.getrusage().ru_maxrss``) over its
  value after the model was built. Peak RSS never decreases, so cases run in ascending
  size order; a case that needs less than an earlier one would read 0 (marked "<=").

Writes JSON (``--out``) and prints a table that ends with the paper's reference rows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ilrm_ros.model.ilrm import ILRM, count_parameters, load_model_config

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


def parse_resolution(text: str) -> tuple[int, int]:
    """"128" -> (128, 128); "128x160" -> (H=128, W=160)."""
    if "x" in text.lower():
        h, w = text.lower().split("x")
        return int(h), int(w)
    return int(text), int(text)


def make_inputs(views: int, height: int, width: int, device: torch.device, seed: int = 0):
    """Random images and a sideways-moving camera rig: ((1,V,3,H,W), (1,V,4,4), (1,V,3,3))."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(1, views, 3, height, width, generator=gen)
    c2w = torch.eye(4).repeat(1, views, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(-1.0, 1.0, views) if views > 1 else 0.0
    f = 0.9 * max(height, width)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).repeat(1, views, 1, 1)
    return images.to(device), c2w.to(device), K.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def _renderer():
    try:
        from ilrm_ros.render.render import render_gaussians
    except ImportError as exc:  # another module; may not exist yet
        return None, f"render column skipped: {exc}"
    return render_gaussians, ""


def time_runs(fn, device: torch.device, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of ``runs`` calls of ``fn`` after ``warmup`` calls.

    CPU time (all threads of this process) is the load-robust figure on a shared machine:
    wall time there includes waiting for cores other processes hold.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def bench_device(
    model: ILRM, cfg_name: str, device: torch.device, views: list[int], resolutions: list[tuple[int, int]],
    runs: int, warmup: int, render: bool,
) -> tuple[list[Case], list[str]]:
    """Measure every (resolution, views) case on one device, smallest first."""
    notes: list[str] = []
    render_fn, why = _renderer() if render else (None, "render column skipped (--no-render)")
    if why:
        notes.append(why)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    cases: list[Case] = []
    order = sorted(((v, h, w) for v in views for (h, w) in resolutions), key=lambda t: (t[0] * t[1] * t[2], t))
    rss0 = _rss_mb()
    for v, h, w in order:
        images, c2w, K = make_inputs(v, h, w, device)

        def forward():
            with torch.inference_mode(), autocast:
                return model(images, c2w, K)

        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        times, cpu_times = time_runs(forward, device, runs, warmup)
        if device.type == "cuda":
            peak, note = (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda max_allocated - before"
        else:
            grow = _rss_mb() - rss0
            peak, note = grow, "peak RSS growth" if grow > 0 else "<= earlier case"
        case = Case(
            device=device.type, config=cfg_name, views=v, height=h, width=w,
            gaussians=v * model.cfg.gaussians_per_view(h, w),
            model_ms=1e3 * statistics.median(times), model_ms_all=[round(1e3 * t, 3) for t in times],
            model_cpu_ms=1e3 * statistics.median(cpu_times) if device.type == "cpu" else None,
            peak_mem_mb=round(peak, 1), mem_note=note,
        )
        if render_fn is not None:
            def forward_render():
                g = forward().map(lambda t: t.float()).flatten()  # scene 0, all views
                with torch.inference_mode():
                    return render_fn(g, c2w[0, :1], K[0, :1], w, h)  # the first input view

            try:
                case.render_ms = 1e3 * statistics.median(time_runs(forward_render, device, runs, warmup)[0])
            except Exception as exc:  # report, do not abort the whole benchmark
                msg = f"render failed on {device.type} ({type(exc).__name__}: {exc}); column skipped"
                notes.append(msg)
                render_fn = None
        cases.append(case)
    return cases, notes


def format_table(cases: list[Case], notes: list[str]) -> str:
    head = (f"{'device':<7}{'config':<8}{'views':>6}{'HxW':>11}{'gaussians':>11}{'model ms':>10}{'cpu ms':>9}"
            f"{'+render ms':>12}{'peak MB':>9}")
    lines = [head, "-" * len(head)]
    for c in cases:
        r = f"{c.render_ms:.1f}" if c.render_ms is not None else "-"
        m = "-" if c.peak_mem_mb is None else (f"<={c.peak_mem_mb:.0f}" if c.mem_note.startswith("<=") else f"{c.peak_mem_mb:.0f}")
        cpu = f"{c.model_cpu_ms:.1f}" if c.model_cpu_ms is not None else "-"
        lines.append(
            f"{c.device:<7}{c.config:<8}{c.views:>6}{f'{c.height}x{c.width}':>11}{c.gaussians:>11}"
            f"{c.model_ms:>10.1f}{cpu:>9}{r:>12}{m:>9}"
        )
    lines.append("paper reference (not measured here):")
    for p in PAPER_REFERENCE:
        lines.append(f"  {p['setting']:<28} {p['config']:<6} {p['device']:<9} {1e3 * p['seconds']:.0f} ms")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ilrm-ros bench model", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", help="model config name or YAML path (default: small)")
    ap.add_argument("--checkpoint", default=None, help="our checkpoint to load instead of random weights")
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--res", nargs="+", default=["128"], help="resolutions: 128 or HxW, e.g. 256 128x160")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda", "all"), default="auto",
                    help="auto = cpu, plus cuda when present")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-render", action="store_true", help="skip the model+render column")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    return ap


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = [parse_resolution(r) for r in args.res]
    devices = [torch.device("cpu")]
    if args.device == "cuda":
        devices = [torch.device("cuda")]
    if args.device in ("auto", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2

    if args.checkpoint:
        from ilrm_ros.model.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint)
        cfg_name = model.cfg.name
    else:
        cfg = load_model_config(args.config)
        model, cfg_name = ILRM(cfg), cfg.name
    model.eval()

    all_cases: list[Case] = []
    notes: list[str] = []
    for dev in devices:
        model.to(dev)
        cases, dev_notes = bench_device(
            model, cfg_name, dev, sorted(set(args.views)), resolutions, args.runs, args.warmup, not args.no_render
        )
        all_cases += cases
        notes += [f"{dev.type}: {n}" for n in dev_notes]
    notes.append("CPU memory = growth of peak RSS over the post-load baseline (cases run smallest first)")
    notes.append("model ms = median wall time; cpu ms = median process CPU time (all threads)")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        notes.append(f"machine busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): wall times are inflated")

    print(format_table(all_cases, notes))
    if args.out:
        env = {
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
        payload = {
            "config": cfg_name, "parameters": count_parameters(model), "runs": args.runs, "warmup": args.warmup,
            "env": env, "cases": [asdict(c) for c in all_cases], "paper_reference": PAPER_REFERENCE, "notes": notes,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
