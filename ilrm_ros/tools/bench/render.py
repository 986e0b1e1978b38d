"""`ilrm-ros bench render`: rasterizer latency and peak memory vs Gaussians and resolution.

Cases: N Gaussians × square resolution × mode (forward without autograd, or forward with
autograd + backward of a random projection of rgb and depth) × device and backend (CPU →
``native``: the rasterizer with its compiled kernels, and ``torch``: the same rasterizer on its
plain-torch twins, with the speed-up of one over the other; CUDA → gsplat, plus the torch
rasterizer on CUDA with ``--cuda-torch``).

Scene (stated in the output): one pinhole camera with a 60° field of view; means uniform in
its frustum between 2 and 6 m, so every Gaussian is on screen; per-axis scales uniform in
``--scale-cm`` (default 1–5 cm); random rotations; opacities uniform in ``--opacity``
(default 0.05–1); random colours.

Each case runs in a fresh subprocess (unless ``--in-process``), timed as the median (and
minimum) wall time of ``--repeats`` runs after one warm-up run; ``cpu s`` is the median
process CPU time of a run (all threads) and ``load`` the machine's 1-minute load average,
since on a shared machine wall times depend on what else runs. With other processes busy,
torch's OpenMP threads wait for each other at every operation and 2 threads can be several
times slower than 1: compare ``--threads 1``, or run with ``OMP_WAIT_POLICY=PASSIVE``. Memory:

- CPU: the kernel's peak-RSS mark (VmHWM) is reset after the scene is built
  (``/proc/self/clear_refs``), so ``peak_mb`` is the process's highest resident memory during
  the rendering runs and ``extra_mb`` that minus the resident memory before them. Where the
  reset is unavailable, ``ru_maxrss`` is used (an upper bound, flagged in ``mem_note``).
- CUDA: ``torch.cuda.max_memory_allocated`` during the runs, and that minus what was
  allocated before them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.geometry.cameras import PinholeCameras
from ilrm_ros.render import native

SCENE_TEXT = ("means uniform in a 60° FOV frustum at 2–6 m (all on screen), per-axis scales U({s0}, {s1}) cm, "
              "random rotations, opacities U({o0}, {o1}), random colours; one camera")


@dataclass
class Case:
    """One measured setting and its results."""

    device: str
    backend: str
    gaussians: int
    resolution: int
    mode: str  # "forward" or "forward+backward"
    seconds: float | None = None
    """median wall time of one run."""
    seconds_min: float | None = None
    seconds_all: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None
    """median process CPU time of one run (all threads): the work, less sensitive to other load."""
    peak_mb: float | None = None
    """highest process RSS (CPU) / allocated CUDA memory during the runs, MiB."""
    extra_mb: float | None = None
    """peak_mb minus what was resident/allocated before the runs, MiB."""
    mem_note: str = ""
    alpha_mean: float | None = None
    threads: int | None = None
    load_avg: float | None = None
    """1-minute load average of the machine when the case finished."""
    error: str = ""


def make_scene(n: int, resolution: int, device: torch.device, opacity=(0.05, 1.0), scale_cm=(1.0, 5.0),
               seed: int = 0) -> tuple[Gaussians, PinholeCameras]:
    """The benchmark scene (module docstring): N Gaussians and one camera (viewmats (1, 4, 4), Ks (1, 3, 3))."""
    gen = torch.Generator().manual_seed(seed)
    tan_half = math.tan(math.radians(30.0))
    z = torch.rand(n, generator=gen) * 4.0 + 2.0
    xy = (torch.rand(n, 2, generator=gen) * 2.0 - 1.0) * z[:, None] * tan_half
    g = Gaussians(
        means=torch.cat([xy, z[:, None]], dim=1),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        scales=(torch.rand(n, 3, generator=gen) * (scale_cm[1] - scale_cm[0]) + scale_cm[0]) / 100.0,
        opacities=torch.rand(n, generator=gen) * (opacity[1] - opacity[0]) + opacity[0],
        colors=torch.rand(n, 3, generator=gen),
    )
    focal = resolution / (2.0 * tan_half)
    Ks = torch.tensor([[[focal, 0.0, resolution / 2], [0.0, focal, resolution / 2], [0.0, 0.0, 1.0]]])
    return g.to(device), PinholeCameras(torch.eye(4)[None].to(device), Ks.to(device), resolution, resolution)


def _proc_status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, repeats: int, opacity, scale_cm, threads: int | None = None) -> Case:
    """Measure one case in this process (fills the result fields of ``case``)."""
    from ilrm_ros.render import RasterConfig
    from ilrm_ros.render.render import render

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(case.device)
    g, cameras = make_scene(case.gaussians, case.resolution, device, opacity, scale_cm)
    backward = case.mode == "forward+backward"
    probe = torch.randn(1, case.resolution, case.resolution, 3, generator=torch.Generator().manual_seed(1)).to(device)
    if backward:
        g = g.map(lambda t: t.requires_grad_(True))

    backend = "torch" if case.backend == "native" else case.backend
    raster = RasterConfig(native=case.backend == "native")

    def once() -> float:
        with torch.set_grad_enabled(backward):
            out = render(g, cameras, background=torch.ones(3, device=device), backend=backend, raster_config=raster)
            if backward:
                ((out.rgb * probe).sum() + out.depth.mean()).backward()
                for t in vars(g).values():
                    t.grad = None
        return float(out.alpha.detach().mean())

    case.threads = torch.get_num_threads()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        exact = _reset_peak_rss()
        base_kb = _proc_status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    case.alpha_mean = once()  # warm-up (counts towards the peak, not the time)
    times, cpu_times = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        once()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    case.seconds_all = times
    case.seconds, case.seconds_min = statistics.median(times), min(times)
    case.cpu_seconds = statistics.median(cpu_times)
    case.load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        case.peak_mb, case.extra_mb = peak / 2**20, (peak - base) / 2**20
        case.mem_note = "torch.cuda.max_memory_allocated"
    elif exact:
        peak_kb = _proc_status_kb("VmHWM")
        case.peak_mb, case.extra_mb = peak_kb / 1024, (peak_kb - base_kb) / 1024
        case.mem_note = "VmHWM after reset"
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        case.peak_mb, case.extra_mb = peak_kb / 1024, (peak_kb - base_kb) / 1024
        case.mem_note = "ru_maxrss growth (upper bound of the process peak incl. imports)"
    return case


def run_case_subprocess(case: Case, repeats: int, opacity, scale_cm, timeout: float,
                        threads: int | None = None) -> Case:
    """Run one case in a fresh interpreter, so its memory peak is its own."""
    spec = json.dumps({"case": asdict(case), "repeats": repeats, "opacity": list(opacity),
                       "scale_cm": list(scale_cm), "threads": threads})
    cmd = [sys.executable, "-m", "ilrm_ros.tools.bench.render", "--case", spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        case.error = f"timed out after {timeout:.0f} s"
        return case
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        case.error = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return case
    return Case(**json.loads(lines[-1]))


def format_table(cases: list[Case]) -> str:
    header = (f"{'device':<6} {'backend':<7} {'N':>7} {'res':>5} {'mode':<16} {'median s':>9} {'min s':>8} "
              f"{'cpu s':>7} {'peak MiB':>9} {'extra MiB':>9} {'alpha':>6} {'load':>5}")
    rows = [header, "-" * len(header)]
    for c in cases:
        if c.error:
            rows.append(f"{c.device:<6} {c.backend:<7} {c.gaussians:>7} {c.resolution:>5} {c.mode:<16} "
                        f"error: {c.error}")
            continue
        rows.append(f"{c.device:<6} {c.backend:<7} {c.gaussians:>7} {c.resolution:>5} {c.mode:<16} "
                    f"{c.seconds:>9.3f} {c.seconds_min:>8.3f} {c.cpu_seconds:>7.3f} {c.peak_mb:>9.0f} "
                    f"{c.extra_mb:>9.0f} {c.alpha_mean:>6.2f} {c.load_avg if c.load_avg is not None else -1:>5.1f}")
    return "\n".join(rows)


def speedup_rows(cases: list[Case]) -> list[str]:
    """One line per CPU case timed with both backends: torch seconds / native seconds."""
    by_key = {(c.gaussians, c.resolution, c.mode, c.backend): c for c in cases if c.device == "cpu" and not c.error}
    rows = []
    for (n, res, mode, backend), fast in by_key.items():
        slow = by_key.get((n, res, mode, "torch"))
        if backend == "native" and slow is not None and fast.seconds:
            rows.append(f"  N {n:>7} res {res:>4} {mode:<16} {slow.seconds / fast.seconds:6.1f}x "
                        f"({slow.seconds:.3f} s / {fast.seconds:.3f} s)")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ilrm-ros bench render", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000], help="numbers of Gaussians")
    p.add_argument("--res", type=int, nargs="+", default=[128, 256], help="square image sizes (pixels)")
    p.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                   help="devices to measure (default: cpu, plus cuda when available)")
    p.add_argument("--cuda-torch", action="store_true", help="also time the torch rasterizer on CUDA")
    p.add_argument("--no-backward", action="store_true", help="skip the forward+backward cases")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (after one warm-up)")
    p.add_argument("--opacity", type=float, nargs=2, default=[0.05, 1.0], metavar=("LO", "HI"))
    p.add_argument("--scale-cm", type=float, nargs=2, default=[1.0, 5.0], metavar=("LO", "HI"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per case")
    p.add_argument("--in-process", action="store_true", help="run cases here (peaks then accumulate)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, JSON in/out
    return p


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.case is not None:
        spec = json.loads(args.case)
        case = run_case(Case(**spec["case"]), spec["repeats"], spec["opacity"], spec["scale_cm"], spec["threads"])
        print(json.dumps(asdict(case)))
        return 0

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    combos = []
    for device in devices:
        if device == "cpu":
            backends = ["native", "torch"] if native.load() is not None else ["torch"]
        else:
            backends = ["gsplat", "torch"] if args.cuda_torch else ["gsplat"]
        for backend in backends:
            for res in args.res:
                for n in args.n:
                    for mode in ["forward"] + ([] if args.no_backward else ["forward+backward"]):
                        combos.append(Case(device=device, backend=backend, gaussians=n, resolution=res, mode=mode))
    results = []
    for case in combos:
        if args.in_process:
            result = run_case(case, args.repeats, args.opacity, args.scale_cm, args.threads)
        else:
            result = run_case_subprocess(case, args.repeats, args.opacity, args.scale_cm, args.timeout, args.threads)
        results.append(result)
        print(format_table([result]).splitlines()[-1], flush=True)

    speedups = speedup_rows(results)
    if speedups:
        print("\nCPU: torch twins' median time / compiled kernels' (same case, separate processes)")
        print("\n".join(speedups))
    elif "cpu" in devices:
        print(f"\nCPU: compiled kernels not loaded ({native.status()}); only the torch twins were timed")
    scene = SCENE_TEXT.format(s0=args.scale_cm[0], s1=args.scale_cm[1], o0=args.opacity[0], o1=args.opacity[1])
    print()
    print(format_table(results))
    print(f"\nscene: {scene}")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"scene": scene, "repeats": args.repeats, "torch": torch.__version__, "cpus": os.cpu_count(),
                  "native_kernels": native.status() or "loaded",
                  "cuda_device": torch.cuda.get_device_name() if "cuda" in devices else None,
                  "cases": [asdict(c) for c in results]}
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 1 if any(c.error for c in results) else 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
