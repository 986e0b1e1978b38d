"""`ilrm-ros bench model`: iLRM forward latency and peak memory vs views and resolution.

For each device (CPU, and CUDA when present — bf16 autocast there), resolution and
number of views it times the model alone and the model followed by rendering one view
at the input resolution (``ilrm_ros.render.render.render_gaussians``, if importable),
as the median of ``--runs`` timed runs after ``--warmup`` runs.

Which model: ``--checkpoint`` (any layout ``model.checkpoint`` accepts, through
:func:`ilrm_ros.model.loading.load_model_file`), else ``--arch re10k|dl3dv|<config>``
with random N(0, init_std) weights, else ``--config`` (random weights). With ``--arch``
or ``--checkpoint`` the views and resolution default to the architecture's own
(re10k 2 x 256x256, dl3dv 16 x 544x960). Memory:

- CUDA: ``torch.cuda.max_memory_allocated`` during the forward minus what was allocated
  before it (activations and workspace; weights reported separately); the same for the
  forward + render runs (``render_peak_mem_mb``).
- CPU: on Linux the kernel's peak-RSS mark (VmHWM) is reset before each case
  (``/proc/self/clear_refs``), so a case reads its own peak resident memory minus the
  resident memory before it ("VmHWM after reset"). Elsewhere: growth of the process's
  peak RSS (``ru_maxrss``) over its value after the model was built; that never decreases,
  so cases run in ascending size order and one that needs less than an earlier one reads
  0 (marked "<=").

Each CPU case first warms the model up at its size and pins glibc's malloc thresholds as a node
configured for that window does (``ros.memory``), so its forward's tensors come from the heap; each
ratio is the median of :data:`MIN_PAIRS` model/reference pairs (or ``--runs``).

Writes JSON (``--out``) and prints a table that ends with the paper's reference rows.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ilrm_ros.tools.bench.flops import count_flops, paired_rates, profile_top, representative_shape
from ilrm_ros.tools.bench.model_report import PAPER_REFERENCE, Case, format_table
from ilrm_ros.mapping.inference import camera_rig, warm_up_model
from ilrm_ros.model.ilrm import ILRM, count_parameters

log = logging.getLogger(__name__)

MIN_PAIRS = 11
"""Model/reference pairs behind each ratio (at least; ``--runs`` if more). On this kind of shared VM one
pair's ratio moves by several points; with 11 and the thresholds pinned, eight runs' 4 x 128^2 ratios
lay within 79.3-82.1 % (2026-12-05)."""

#: Default cases when neither --arch nor --checkpoint names an architecture.
DEFAULT_VIEWS = [2, 4, 8, 16]
DEFAULT_RES = ["128"]



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
    c2w, K = camera_rig(views, height, width)
    return images.to(device), c2w.to(device), K.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status ("VmRSS", "VmHWM") in MiB; None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS mark to the current RSS; that RSS in MiB (None: unsupported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_status_mb("VmRSS") if _proc_status_mb("VmHWM") is not None else None


def _rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def _renderer():
    try:
        from ilrm_ros.render.render import render_gaussians
    except ImportError as exc:  # another module; may not exist yet
        return None, f"render column skipped: {exc}"
    return render_gaussians, ""


def _render_backend(device: torch.device) -> str:
    """The rasterizer ``render(backend="auto")`` picks for float32 tensors on ``device``."""
    try:
        from ilrm_ros.render.render import resolve_backend
    except ImportError:
        return "unknown"
    return resolve_backend("auto", device, torch.float32)


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


@dataclass
class RunOptions:
    """How each case is measured."""

    runs: int = 5
    warmup: int = 2
    render: bool = True
    profile: bool = False


def _efficiency(case: Case, forward, model: ILRM, device: torch.device, runs: int, profile: bool) -> None:
    """Counted FLOPs; model and dominant-shape matmul rates measured in alternation (same process,
    same moments), their per-pair ratio; optionally the top-5 profile."""
    c = model.cfg
    flops = count_flops(forward)
    shape = representative_shape(case.views, case.height, case.width, c.dim, c.mlp_ratio, c.patch_size,
                                 c.viewpoint_factor)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    case.gflop, case.ref_shape = flops / 1e9, list(shape)
    case.gflops, case.ref_gflops, case.ratio, kernels = paired_rates(forward, flops, shape, device,
                                                                      max(runs, MIN_PAIRS), dtype)
    case.ref_kernels = {k: round(v, 1) for k, v in kernels.items()}
    if profile:
        case.profile = profile_top(forward)


def _pin_as_node(model: ILRM, views: int, height: int, width: int, device: torch.device) -> int | None:
    """CPU: pin glibc's malloc thresholds as the node's ``main()`` does, warm the model up at the case's size
    and fit them to its largest tensor as the node's worker does (``ros.memory``: the forward's tensors stay
    on the heap instead of being fresh page-faulting mmaps every forward); returns the threshold in MiB
    (None on a GPU or without glibc)."""
    largest = warm_up_model(model, views, height, width, device)
    if device.type != "cpu":
        return None
    from ilrm_ros.ros.memory import fit_to_model, pin_malloc_thresholds   # no ROS in it

    pin_malloc_thresholds()
    threshold = fit_to_model(largest)
    return threshold >> 20 if threshold else None


def bench_device(
    model: ILRM, cfg_name: str, device: torch.device, views: list[int], resolutions: list[tuple[int, int]],
    opts: RunOptions,
) -> tuple[list[Case], list[str]]:
    """Measure every (resolution, views) case on one device, smallest first."""
    notes: list[str] = []
    runs, warmup = opts.runs, opts.warmup
    render_fn, why = _renderer() if opts.render else (None, "render column skipped (--no-render)")
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
        threshold = _pin_as_node(model, v, h, w, device)

        def forward():
            with torch.inference_mode(), autocast:
                return model(images, c2w, K)

        rss_before = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            rss_before = _reset_peak_rss()
        times, cpu_times = time_runs(forward, device, runs, warmup)
        if device.type == "cuda":
            peak, note = (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda max_allocated - before"
        elif rss_before is not None:
            peak, note = max(0.0, (_proc_status_mb("VmHWM") or 0.0) - rss_before), "VmHWM after reset"
        else:
            grow = _rss_mb() - rss0
            peak, note = grow, "peak RSS growth" if grow > 0 else "<= earlier case"
        case = Case(
            device=device.type, config=cfg_name, views=v, height=h, width=w,
            gaussians=v * model.cfg.gaussians_per_view(h, w),
            model_ms=1e3 * statistics.median(times), model_ms_all=[round(1e3 * t, 3) for t in times],
            model_cpu_ms=1e3 * statistics.median(cpu_times) if device.type == "cpu" else None,
            peak_mem_mb=round(peak, 1), mem_note=note, mmap_threshold_mib=threshold,
        )
        _efficiency(case, forward, model, device, runs, opts.profile)
        if render_fn is not None:
            def forward_render():
                g = forward().map(lambda t: t.float()).flatten()  # scene 0, all views
                with torch.inference_mode():
                    return render_fn(g, c2w[0, :1], K[0, :1], w, h)  # the first input view

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            else:
                rss_before = _reset_peak_rss()
            try:
                case.render_ms = 1e3 * statistics.median(time_runs(forward_render, device, runs, warmup)[0])
                case.render_backend = _render_backend(device)
                if device.type == "cuda":
                    case.render_peak_mem_mb = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
                elif rss_before is not None:
                    case.render_peak_mem_mb = round(max(0.0, (_proc_status_mb("VmHWM") or 0.0) - rss_before), 1)
            except Exception as exc:  # report, do not abort the whole benchmark
                msg = f"render failed on {device.type} ({type(exc).__name__}: {exc}); column skipped"
                log.warning(msg)
                notes.append(msg)
                render_fn = None
        log.info("%s %s %d x %dx%d: model %.1f ms, +render %s ms", device.type, cfg_name, v, h, w, case.model_ms,
                 "-" if case.render_ms is None else f"{case.render_ms:.1f}")
        cases.append(case)
    return cases, notes


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ilrm-ros bench model", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", help="model config name or YAML path, random weights (default: small)")
    ap.add_argument("--arch", default=None,
                    help="re10k, dl3dv or a config name: random weights, views/resolution default to its own")
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint in any layout model.checkpoint accepts (ours, the authors' .ckpt/.pt, "
                         "state dict, .safetensors); views/resolution default to its architecture's own")
    ap.add_argument("--architecture", default="auto",
                    help="with --checkpoint: auto (detected), re10k, dl3dv or a config name / YAML")
    ap.add_argument("--trust-pickle", action="store_true", help="allow Python objects in --checkpoint")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (--arch / --config)")
    ap.add_argument("--views", type=int, nargs="+", default=None,
                    help=f"views per case (default: the architecture's window, else {DEFAULT_VIEWS})")
    ap.add_argument("--res", nargs="+", default=None,
                    help="resolutions: 128 or HxW, e.g. 256 544x960 (default: the architecture's input size, "
                         f"else {DEFAULT_RES[0]})")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda", "all"), default="auto",
                    help="auto/all = cpu, plus cuda when present")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-render", action="store_true", help="skip the model+render column")
    ap.add_argument("--profile", action="store_true", help="also record the top-5 operators by self CPU time")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    return ap


def build_bench_model(args: argparse.Namespace) -> tuple[ILRM, str, dict, bool]:
    """The model to time -> (model in eval mode on CPU, config name, where it came from, arch defaults?).

    ``--checkpoint`` (any layout) wins over ``--arch`` (random weights), which wins over
    ``--config``. The last flag says whether views/resolution default to the model's own.
    Raises ``CheckpointError`` for an unusable checkpoint.
    """
    if args.checkpoint:
        from ilrm_ros.model.loading import load_model_file

        model, source = load_model_file(args.checkpoint, args.architecture, "cpu", args.trust_pickle)
        info = {"checkpoint": str(args.checkpoint), "layout": source.layout, "architecture": source.architecture,
                "how": source.how, "model_id": source.model_id, "stored_dtype": source.stored_dtype}
        return model.eval(), model.cfg.name, info, True
    from ilrm_ros.model.loading import random_model

    name = args.arch or args.config
    model = random_model(name, args.seed)
    return model.eval(), model.cfg.name, {"random_weights": True, "seed": args.seed, "config": name}, bool(args.arch)


def resolve_cases(args: argparse.Namespace, model: ILRM, own_defaults: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Views and (H, W) resolutions to measure: given ones, else the architecture's own, else the defaults."""
    cfg = model.cfg
    if args.views:
        views = sorted(set(args.views))
    else:
        views = [cfg.window_views] if own_defaults else DEFAULT_VIEWS
    if args.res:
        resolutions = [parse_resolution(r) for r in args.res]
    else:
        resolutions = [(cfg.input_height, cfg.input_width)] if own_defaults else [parse_resolution(DEFAULT_RES[0])]
    step = cfg.patch_size * cfg.viewpoint_factor
    for h, w in resolutions:
        if h % step or w % step:
            raise ValueError(f"resolution {h}x{w} is not a multiple of {step} ({cfg.name}: patch {cfg.patch_size}"
                             f" x viewpoint factor {cfg.viewpoint_factor}); e.g. {h - h % step}x{w - w % step}")
    return views, resolutions


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if args.device == "cuda":
        devices = [torch.device("cuda")]
    if args.device in ("auto", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2

    from ilrm_ros.model.loading import CheckpointError

    try:
        model, cfg_name, source, own_defaults = build_bench_model(args)
        views, resolutions = resolve_cases(args, model, own_defaults)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"ilrm-ros bench model: {exc}", file=sys.stderr)
        return 2
    log.info("bench %s (%s parameters): views %s at %s on %s", cfg_name, f"{count_parameters(model):,}", views,
             ", ".join(f"{h}x{w}" for h, w in resolutions), ", ".join(d.type for d in devices))

    all_cases: list[Case] = []
    notes: list[str] = []
    for dev in devices:
        model.to(dev)
        opts = RunOptions(args.runs, args.warmup, not args.no_render, args.profile)
        cases, dev_notes = bench_device(model, cfg_name, dev, views, resolutions, opts)
        all_cases += cases
        notes += [f"{dev.type}: {n}" for n in dev_notes]
    notes.append("CPU memory = peak resident memory of the case's runs minus that before them (VmHWM reset; "
                 "elsewhere growth of peak RSS over the post-load baseline, cases smallest first)")
    notes.append("model ms = median wall time; cpu ms = median process CPU time (all threads); "
                 "CUDA runs under bf16 autocast")
    pinned = sorted({c.mmap_threshold_mib for c in all_cases if c.mmap_threshold_mib})
    if pinned:
        notes.append(f"CPU: glibc's mmap threshold pinned per case as the node pins it ({', '.join(map(str, pinned))} "
                     "MiB; ros/memory.py): the forward's tensors come from the heap, not fresh mmaps")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        notes.append(f"machine busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): wall times are inflated")

    print(format_table(all_cases, notes))
    if args.out:
        env = {
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_cuda": torch.version.cuda,
        }
        payload = {
            "config": cfg_name, "parameters": count_parameters(model), "runs": args.runs, "warmup": args.warmup,
            "model": source, "env": env, "cases": [asdict(c) for c in all_cases], "paper_reference": PAPER_REFERENCE,
            "notes": notes,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(cli_main())
