"""What ``scripts/gpu_check.sh`` reports: per-window latency of the bag runs, a PNG of
their held-out renders, and the summary (step records, issue 11's GPU targets next to the
measurements, pass/fail) in ``bench.json`` / ``summary.json`` and a printed table."""
from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")  # the script's log lines name the check, whichever helper wrote them

#: Issue 11's GPU targets: (key, text, limit in seconds).
TARGETS = (
    ("re10k_forward_render", "re10k 2x256x256 forward + render", 0.010),
    ("dl3dv_32_forward", "dl3dv 32 views 544x960 forward", 0.35),
    ("re10k_window_kf_to_chunks", "re10k window keyframe-in -> chunks-out (median)", 0.050),
)


# --------------------------------------------------------------------------- JSON files
def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
    log.info("wrote %s", path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s)", path, exc)
        return None


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
    report = read_json(run_dir / "report.json")
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
    card = read_json(out_dir / "card.json") or {}
    benches = {k: read_json(work / f"bench_{k}.json") for k in ("re10k", "dl3dv", "re10k_cpu")
               if (work / f"bench_{k}.json").exists()}
    if benches:
        write_json(out_dir / "bench.json", benches)
    bags = (read_json(out_dir / "bag.json") or {}).get("runs", {})
    device = "cpu" if dry_run else "cuda"
    targets = evaluate_targets(benches.get("re10k"), benches.get("dl3dv"), bags.get("re10k"), device)
    cpu_case = _bench_case(benches.get("re10k_cpu"), 2, "cpu")
    summary = {
        "dry_run": dry_run, "card": card, "steps": read_steps(work / "steps.tsv"),
        "gsplat": read_json(work / "gsplat.json") if (work / "gsplat.json").exists() else None,
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
    write_json(out_dir / "summary.json", summary)
    return summary
