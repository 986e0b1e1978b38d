"""Helpers of ``scripts/gpu_check.sh`` (the prepared GPU check, issue 11 item 4).

Subcommands (``python -m ilrm_ros.tools.bench.gpu_check SUB ...``); each writes JSON and logs
with severities, and none needs ROS:

    card OUT.json                       the card (nvidia-smi), torch/CUDA, nvcc, Python, CPUs
    wheels DIR [--force NAME ...]       print the wheels in DIR whose distribution is not
                                        installed (one path a line; --force lists NAME anyway)
    warm-gsplat OUT.json                compile gsplat's CUDA kernels (first use) and time it,
                                        then time a first and a second small rasterization
    cli [--no-ros] ARGS...              ``ilrm-ros ARGS...`` with the ROS Python modules made
                                        unimportable (proves the tool is ROS-free)
    bag-report OUT.json PNG NAME=DIR... per window of each bag run: keyframe-in -> chunks-out;
                                        one PNG of held-out renders (render | truth) of all runs
    summary OUTDIR WORKDIR              bench JSONs merged into OUTDIR/bench.json; the issue's GPU
                                        targets next to the measurements, pass/fail; summary.json

Targets (issue 11, H100/H200 class): re10k 2x256² forward + render <= 10 ms; dl3dv 32 views
forward <= 0.35 s; a window's keyframe-in -> chunks-out <= 50 ms with re10k.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")

#: Top-level modules of a ROS install (and our generated interfaces) that the bag tool and
#: the benchmarks must not need.
ROS_MODULES = (
    "rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rosidl_generator_py", "ament_index_python",
    "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
    "diagnostic_msgs", "tf2_msgs", "tf2_ros", "rosgraph_msgs", "ilrm_ros.msg", "ilrm_ros.srv",
)

#: Issue 11's GPU targets: (key, text, limit in seconds).
TARGETS = (
    ("re10k_forward_render", "re10k 2x256x256 forward + render", 0.010),
    ("dl3dv_32_forward", "dl3dv 32 views 544x960 forward", 0.35),
    ("re10k_window_kf_to_chunks", "re10k window keyframe-in -> chunks-out (median)", 0.050),
)


# --------------------------------------------------------------------------- small utilities
def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
    log.info("wrote %s", path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s)", path, exc)
        return None


def _run(cmd: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run a command; (return code, stdout+stderr). 127 when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return 127, f"{cmd[0]}: not found"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: timed out after {timeout} s"
    return p.returncode, (p.stdout + p.stderr).strip()


# --------------------------------------------------------------------------- card
def card_info() -> dict:
    """The card and the software that drives it (every field best effort)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "python_executable": sys.executable,
                            "machine": platform.machine(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    rc, text = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"])
    info["nvidia_smi_rc"] = rc
    info["nvidia_smi"] = text.splitlines()
    if rc == 0 and len(text.splitlines()) > 1:
        name, mem, driver = (s.strip() for s in text.splitlines()[1].split(",")[:3])
        info.update(gpu_name=name, gpu_memory=mem, driver=driver)
    rc, text = _run(["nvcc", "--version"])
    info["nvcc"] = text.splitlines()[-1] if rc == 0 and text else f"unavailable (rc {rc})"
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(torch_device=props.name, capability=f"{props.major}.{props.minor}",
                        multiprocessors=props.multi_processor_count, torch_memory_gib=round(props.total_memory / 2**30, 1),
                        bf16_supported=torch.cuda.is_bf16_supported(),
                        flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled())
    except Exception as exc:  # noqa: BLE001 - a broken torch is itself the finding
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    for dist in ("gsplat", "numpy", "packaging", "jaxtyping", "rich", "ninja", "rosbags", "plyfile", "pytest"):
        try:
            info.setdefault("packages", {})[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info.setdefault("packages", {})[dist] = None
    return info


# --------------------------------------------------------------------------- wheels
def wheel_distribution(path: Path) -> str:
    """Normalised distribution name of a wheel file: "ruamel.yaml-0.19.1-py3-none-any.whl" -> "ruamel-yaml"."""
    return re.sub(r"[-_.]+", "-", path.name.split("-")[0]).lower()


def is_installed(dist: str) -> bool:
    """Whether the running Python has ``dist`` (any version)."""
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def wheels_to_install(folder: Path, force: tuple[str, ...] = ()) -> list[Path]:
    """Wheels in ``folder`` whose distribution this Python lacks (plus the ``force``d ones).

    One version per distribution is expected; with several, the newest file name wins and a
    warning is logged (two versions would stop ``pip install``).
    """
    chosen: dict[str, Path] = {}
    for whl in sorted(folder.glob("*.whl")):
        dist = wheel_distribution(whl)
        if dist in chosen:
            log.warning("two wheels of %s: %s and %s; using the latter", dist, chosen[dist].name, whl.name)
        chosen[dist] = whl
    forced = {re.sub(r"[-_.]+", "-", f).lower() for f in force}
    return [p for d, p in sorted(chosen.items()) if d in forced or not is_installed(d)]


# --------------------------------------------------------------------------- gsplat
def warm_gsplat() -> dict:
    """Import gsplat, compile its CUDA kernels (timed) and rasterize a small scene twice."""
    result: dict[str, Any] = {"ok": False, "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR"),
                              "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
                              "max_jobs": os.environ.get("MAX_JOBS")}
    t0 = time.perf_counter()
    try:
        import gsplat
        import torch

        result["version"], result["path"] = gsplat.__version__, str(Path(gsplat.__file__).parent)
        result["import_s"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        from gsplat.cuda._backend import _C  # first use: JIT compile (minutes) or load the cached build

        result["compile_s"] = round(time.perf_counter() - t1, 2)
        if _C is None:
            result["error"] = "gsplat's CUDA extension did not build (no CUDA toolkit found?)"
            return result
        from ilrm_ros.core.gaussians import Gaussians
        from ilrm_ros.geometry.cameras import PinholeCameras
        from ilrm_ros.render import render

        n = 2000
        gen = torch.Generator().manual_seed(0)
        z = torch.rand(n, generator=gen) * 4 + 2
        scene = dict(means=torch.cat([(torch.rand(n, 2, generator=gen) - 0.5) * z[:, None], z[:, None]], 1),
                     quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                     scales=torch.full((n, 3), 0.05), opacities=torch.full((n,), 0.5), colors=torch.rand(n, 3, generator=gen))
        scene = {k: v.cuda() for k, v in scene.items()}
        Ks = torch.tensor([[[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]]], device="cuda")
        for key in ("first_render_s", "second_render_s"):
            t2 = time.perf_counter()
            out = render(Gaussians(**scene), PinholeCameras(torch.eye(4, device="cuda")[None], Ks, 256, 256),
                         backend="gsplat")
            torch.cuda.synchronize()
            result[key] = round(time.perf_counter() - t2, 4)
        result["mean_alpha"] = round(float(out.alpha.mean()), 4)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported, and the script carries on without gsplat
        result["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    result["total_s"] = round(time.perf_counter() - t0, 2)
    return result


# --------------------------------------------------------------------------- ROS-free CLI
class _BlockModules(importlib.abc.MetaPathFinder):
    """Make the named top-level modules (and their submodules) fail to import."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"{fullname} is blocked by gpu_check --no-ros (the tool must not need ROS)",
                                      name=fullname)
        return None


def block_ros() -> None:
    """Install the blocker for :data:`ROS_MODULES` (before anything imports them)."""
    loaded = [m for m in ROS_MODULES if m in sys.modules]
    if loaded:
        log.warning("already imported before blocking: %s", loaded)
    sys.meta_path.insert(0, _BlockModules(ROS_MODULES))


def run_cli(args: list[str], no_ros: bool) -> int:
    """``ilrm-ros ARGS`` in this process, optionally without ROS."""
    if no_ros:
        block_ros()
    from ilrm_ros.tools.cli import main

    return main(args)


# --------------------------------------------------------------------------- bag runs
@dataclass
class WindowLatency:
    """Keyframe-in -> chunks-out statistics of one bag run, seconds."""

    windows: int
    first_s: float
    steady_median_s: float | None
    steady_p90_s: float | None
    steady_max_s: float | None
    model_median_s: float | None
    integrate_median_s: float | None


def kf_to_chunks_s(window: dict) -> float:
    """A window's keyframe-in -> chunks-out: waiting for the worker + model + map fusion (the
    bag tool's ``queued_s + process_s``; chunk serialization is not included)."""
    return float(window.get("queued_s", 0.0)) + float(window["process_s"])


def window_latency(windows: list[dict]) -> WindowLatency:
    """Statistics over a run's windows; "steady" leaves out the first window (CUDA warm-up)."""
    lat = [kf_to_chunks_s(w) for w in windows]
    steady = windows[1:] if len(windows) > 1 else windows
    s_lat = lat[1:] if len(lat) > 1 else lat

    def med(key: str) -> float | None:
        vals = [float(w[key]) for w in steady if key in w]
        return round(statistics.median(vals), 5) if vals else None

    p90 = sorted(s_lat)[min(len(s_lat) - 1, int(round(0.9 * (len(s_lat) - 1))))] if s_lat else None
    return WindowLatency(windows=len(lat), first_s=round(lat[0], 5) if lat else float("nan"),
                         steady_median_s=round(statistics.median(s_lat), 5) if s_lat else None,
                         steady_p90_s=round(p90, 5) if p90 is not None else None,
                         steady_max_s=round(max(s_lat), 5) if s_lat else None,
                         model_median_s=med("model_s"), integrate_median_s=med("integrate_s"))


def bag_summary(name: str, run_dir: Path) -> dict:
    """What one ``ilrm-ros bag`` run reported (report.json), with per-window latency."""
    report = _read_json(run_dir / "report.json")
    if not report:
        return {"name": name, "ok": False, "error": f"no report.json in {run_dir}"}
    windows = report.get("windows", [])
    return {
        "name": name, "ok": True, "model_id": report.get("model_id"), "device": report.get("device"),
        "frames": report.get("frames"), "frames_mapped": report.get("frames_mapped"),
        "keyframes": report.get("keyframes"), "map_gaussians": report.get("map", {}).get("num_gaussians"),
        "mean_psnr_map": report.get("mean_psnr_map"), "wall_time_s": report.get("wall_time_s"),
        "kf_to_chunks": asdict(window_latency(windows)) if windows else None,
        "windows": [{"window_id": w.get("window_id"), "views": len(w.get("keyframe_ids", [])),
                     "gaussians": w.get("gaussians_window"), "chunks_changed": w.get("chunks_changed"),
                     "kf_to_chunks_s": round(kf_to_chunks_s(w), 5),
                     **{k: w.get(k) for k in ("queued_s", "model_s", "integrate_s", "process_s", "render_s")}}
                    for w in windows],
    }


def renders_png(runs: list[tuple[str, Path]], out: Path, width: int = 960) -> bool:
    """Stack the first held-out render|truth image of each run, labelled, into one PNG."""
    from PIL import Image, ImageDraw

    rows = []
    for name, run_dir in runs:
        pngs = sorted((run_dir / "rendered").glob("*.png"))
        if not pngs:
            log.warning("%s: no rendered/*.png", run_dir)
            continue
        img = Image.open(pngs[0]).convert("RGB")
        img = img.resize((width, max(1, round(img.height * width / img.width))))
        label = Image.new("RGB", (width, 22), (255, 255, 255))
        ImageDraw.Draw(label).text((6, 5), f"{name}: {pngs[0].name} (left: map render, right: truth)", fill=(0, 0, 0))
        rows += [label, img]
    if not rows:
        return False
    canvas = Image.new("RGB", (width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    log.info("wrote %s (%dx%d)", out, canvas.width, canvas.height)
    return True


# --------------------------------------------------------------------------- summary
@dataclass
class TargetResult:
    """One issue target next to what was measured."""

    key: str
    target: str
    limit_s: float
    measured_s: float | None
    setting: str
    verdict: str
    """"pass", "fail" or "missing"."""
    note: str = ""


def _bench_case(bench: dict | None, views: int, device: str = "cuda") -> dict | None:
    if not bench:
        return None
    cases = [c for c in bench.get("cases", []) if c["views"] == views and c["device"] == device]
    return max(cases, key=lambda c: c["height"] * c["width"]) if cases else None


def _verdict(value: float | None, limit: float) -> str:
    return "missing" if value is None else ("pass" if value <= limit else "fail")


def evaluate_targets(bench_re10k: dict | None, bench_dl3dv: dict | None, bag_re10k: dict | None,
                     device: str) -> list[TargetResult]:
    """The issue's three GPU targets against the measurements (``device``: where they ran)."""
    out = []
    c = _bench_case(bench_re10k, 2, device)
    v = c["render_ms"] / 1e3 if c and c.get("render_ms") is not None else None
    out.append(TargetResult(*TARGETS[0], v, f"{device} 2x{c['height']}x{c['width']}" if c else "-", _verdict(v, TARGETS[0][2]),
                            f"model {c['model_ms']:.2f} ms, rasterizer {c.get('render_backend') or '?'}" if c else ""))
    views = 32 if _bench_case(bench_dl3dv, 32, device) else max(
        [cc["views"] for cc in (bench_dl3dv or {}).get("cases", []) if cc["device"] == device] or [0])
    c = _bench_case(bench_dl3dv, views, device)
    v = c["model_ms"] / 1e3 if c else None
    out.append(TargetResult(*TARGETS[1], v, f"{device} {views}x{c['height']}x{c['width']}" if c else "-",
                            _verdict(v, TARGETS[1][2]),
                            (f"+render {c['render_ms']:.1f} ms ({c.get('render_backend') or '?'}), "
                             f"peak {c.get('peak_mem_mb')} MB" if c and c.get("render_ms") is not None else "")))
    lat = (bag_re10k or {}).get("kf_to_chunks") or {}
    v = lat.get("steady_median_s")
    out.append(TargetResult(*TARGETS[2], v, f"{(bag_re10k or {}).get('device', '-')} bag, {lat.get('windows', 0)} windows",
                            _verdict(v, TARGETS[2][2]),
                            (f"first {lat.get('first_s')} s, p90 {lat.get('steady_p90_s')} s, max {lat.get('steady_max_s')} s;"
                             f" model {lat.get('model_median_s')} s, fusion {lat.get('integrate_median_s')} s") if lat else ""))
    return out


def read_steps(path: Path) -> list[dict]:
    """The script's step records: name, rc ("skip" or an exit code), seconds, timeout, note (TSV)."""
    steps = []
    if not path.exists():
        return steps
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            steps.append({"step": parts[0], "rc": parts[1], "seconds": float(parts[2]), "timeout_s": int(parts[3]),
                          "note": parts[4] if len(parts) > 4 else ""})
    return steps


def pytest_outcome(log_path: Path) -> str:
    """pytest's final summary line (e.g. "4 passed in 20.1s"), or what happened instead."""
    try:
        lines = [ln.strip("= ") for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    hits = [ln for ln in lines if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", ln)
            and " in " in ln]
    return hits[-1] if hits else (lines[-1] if lines else "empty log")


def format_summary(summary: dict) -> str:
    """The printed table: steps with rc and time, then targets next to measurements."""
    lines = [f"GPU check ({'DRY RUN on CPU at tiny sizes: verdicts only check the plumbing' if summary['dry_run'] else 'GPU'})"
             f" - {summary['card'].get('gpu_name') or summary['card'].get('torch_device') or 'no GPU'},"
             f" torch {summary['card'].get('torch')} (CUDA {summary['card'].get('torch_cuda')})"]
    lines.append(f"{'step':<18}{'rc':>6}{'seconds':>9}{'timeout':>9}  note")
    for s in summary["steps"]:
        lines.append(f"{s['step']:<18}{s['rc']:>6}{s['seconds']:>9.1f}{s['timeout_s']:>9}  {s['note']}")
    g = summary.get("gsplat") or {}
    lines.append(f"gsplat: {'ok' if g.get('ok') else 'NOT USED'} version {g.get('version')}, compile {g.get('compile_s')} s, "
                 f"first render {g.get('first_render_s')} s" + (f" - {g['error'][:200]}" if g.get("error") else ""))
    lines.append(f"gpu tests: {summary.get('gpu_tests')}")
    head = f"{'target':<50}{'limit':>9}{'measured':>11}  {'verdict':<8}{'setting':<24}note"
    lines += [head, "-" * len(head)]
    for t in summary["targets"]:
        m = "-" if t["measured_s"] is None else f"{1e3 * t['measured_s']:.1f} ms"
        lines.append(f"{t['target']:<50}{1e3 * t['limit_s']:>6.0f} ms{m:>11}  {t['verdict']:<8}{t['setting']:<24}{t['note']}")
    for name, b in (summary.get("bags") or {}).items():
        lat = (b or {}).get("kf_to_chunks") or {}
        lines.append(f"bag {name}: {b.get('windows') and len(b['windows'])} windows, map {b.get('map_gaussians')} Gaussians, "
                     f"kf->chunks median {lat.get('steady_median_s')} s (first {lat.get('first_s')} s)"
                     if b and b.get("ok") else f"bag {name}: {(b or {}).get('error', 'missing')}")
    cpu = summary.get("re10k_cpu")
    if cpu:
        lines.append(f"re10k on CPU ({cpu['setting']}): forward {cpu['model_ms']:.0f} ms"
                     + (f", +render {cpu['render_ms']:.0f} ms" if cpu.get("render_ms") is not None else ""))
    return "\n".join(lines)


def build_summary(out_dir: Path, work: Path, dry_run: bool) -> dict:
    """Gather the step records and outputs in ``work`` into ``out_dir`` (bench.json, summary.json)."""
    card = _read_json(out_dir / "card.json") or {}
    benches = {k: _read_json(work / f"bench_{k}.json") for k in ("re10k", "dl3dv", "re10k_cpu")
               if (work / f"bench_{k}.json").exists()}
    if benches:
        _write_json(out_dir / "bench.json", benches)
    bags = (_read_json(out_dir / "bag.json") or {}).get("runs", {})
    device = "cpu" if dry_run else "cuda"
    targets = evaluate_targets(benches.get("re10k"), benches.get("dl3dv"), bags.get("re10k"), device)
    cpu_case = _bench_case(benches.get("re10k_cpu"), 2, "cpu")
    summary = {
        "dry_run": dry_run, "card": card, "steps": read_steps(work / "steps.tsv"),
        "gsplat": _read_json(work / "gsplat.json") if (work / "gsplat.json").exists() else None,
        "gpu_tests": pytest_outcome(work / "logs" / "gpu_tests.log"),
        "targets": [asdict(t) for t in targets], "bags": bags,
        "re10k_cpu": ({"setting": f"2x{cpu_case['height']}x{cpu_case['width']}", "model_ms": cpu_case["model_ms"],
                       "model_cpu_ms": cpu_case.get("model_cpu_ms"), "render_ms": cpu_case.get("render_ms"),
                       "cpu_count": benches["re10k_cpu"]["env"]["cpu_count"]} if cpu_case else None),
        "notes": ["keyframe-in -> chunks-out = the bag tool's queued_s + process_s per window (model + map fusion; "
                  "chunk serialization excluded; DDS delivery is measured by `ilrm-ros bench node`); median over "
                  "windows after the first (CUDA warm-up)",
                  "dl3dv target: forward alone (the paper's 0.53 s for 32 views on an H100 is the forward)",
                  "random weights place Gaussians near the model's max_depth, mostly beyond "
                  "map.max_integration_distance_m, so few reach the map (see map_gaussians): the fusion share of "
                  "keyframe-in -> chunks-out is smaller than with trained weights (`ilrm-ros bench map-soak` "
                  "measures fusion)"],
    }
    _write_json(out_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["cli"]:  # everything after the flag goes to ilrm-ros untouched
        rest = argv[1:]
        no_ros = bool(rest[:1] == ["--no-ros"])
        return run_cli(rest[1:] if no_ros else rest, no_ros)
    ap = argparse.ArgumentParser(prog="python -m ilrm_ros.tools.bench.gpu_check", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("card")
    p.add_argument("out", type=Path)
    p = sub.add_parser("wheels")
    p.add_argument("folder", type=Path)
    p.add_argument("--force", nargs="*", default=[])
    p = sub.add_parser("warm-gsplat")
    p.add_argument("out", type=Path)
    p = sub.add_parser("bag-report")
    p.add_argument("out", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("runs", nargs="+", help="NAME=DIR of each `ilrm-ros bag` output")
    p = sub.add_parser("summary")
    p.add_argument("out_dir", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)

    if args.cmd == "card":
        info = card_info()
        _write_json(args.out, info)
        print(json.dumps(info, indent=1, default=str))
        return 0
    if args.cmd == "wheels":
        for path in wheels_to_install(args.folder, tuple(args.force)):
            print(path)
        return 0
    if args.cmd == "warm-gsplat":
        result = warm_gsplat()
        _write_json(args.out, result)
        (log.info if result["ok"] else log.error)("gsplat: %s", json.dumps(result))
        return 0 if result["ok"] else 1
    if args.cmd == "bag-report":
        runs = [(r.partition("=")[0], Path(r.partition("=")[2])) for r in args.runs]
        summaries = {name: bag_summary(name, d) for name, d in runs}
        png_ok = renders_png([(f"{n} (map {summaries[n]['map_gaussians']} Gaussians)", d) for n, d in runs
                              if summaries[n]["ok"]], args.png)
        _write_json(args.out, {"runs": summaries, "png": str(args.png) if png_ok else None})
        return 0 if png_ok and all(s["ok"] for s in summaries.values()) else 1
    summary = build_summary(args.out_dir, args.work, args.dry_run)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
