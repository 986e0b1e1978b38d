"""Soak benchmark of the global Gaussian map: a simulated robot mapping a room for an hour.

``ilrm-ros bench map-soak [--duration-s 3600 --period-s 2 ...]``

A robot drives a looping trajectory in a furnished room; every ``period_s`` seconds a
window of V keyframes is turned into Gaussians and integrated into two maps, one with
fusion and one without (plain append), both under the same caps. The benchmark reports
Gaussian count, map memory, integration latency and chunk-message traffic over time
(JSON + a PNG line chart + a table), plus how far the Gaussians lie from the true
surfaces at the end (a smear measure).

MODEL STUB: the Gaussians do NOT come from iLRM. A fast stand-in ray-casts the room
(one Gaussian per viewpoint-grid pixel at the hit, with depth noise and a per-window
registration jitter, footprint-sized scales, a procedural texture). It exists only in
this file, only to feed the map at a rate a CPU can sustain for thousands of windows.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ilrm_ros.mapping.fusion import MapConfig, WindowCameras
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.progress import Progress
from ilrm_ros.render.panels import draw_panel

logger = logging.getLogger(__name__)

STUB_LABEL = "MODEL STUB (ray-cast room, not iLRM)"


# ---------------------------------------------------------------------------------------
# The room and the trajectory (map frame: x, y on the floor, z up; metres)
# ---------------------------------------------------------------------------------------


@dataclass
class Room:
    """An axis-aligned room with box-shaped furniture standing on the floor."""

    lo: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hi: tuple[float, float, float] = (8.0, 6.0, 2.8)
    furniture: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
        ((0.2, 0.2, 0.0), (1.2, 2.0, 0.9)),      # cabinet
        ((6.5, 4.5, 0.0), (7.8, 5.8, 0.75)),     # table
        ((3.7, 2.7, 0.0), (4.3, 3.3, 1.2)),      # pillar in the middle
    )

    def surface_area(self) -> float:
        size = np.subtract(self.hi, self.lo)
        area = 2 * (size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
        for lo, hi in self.furniture:
            s = np.subtract(hi, lo)
            area += s[0] * s[1] + 2 * (s[0] * s[2] + s[1] * s[2])   # the bottom face is on the floor
        return float(area)


def _slabs(o: torch.Tensor, d: torch.Tensor, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray (o (3,), d (N, 3)) vs box: (t_enter (N,), t_exit (N,))."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0 = (torch.tensor(lo) - o) * inv
    t1 = (torch.tensor(hi) - o) * inv
    return torch.minimum(t0, t1).max(dim=1).values, torch.maximum(t0, t1).min(dim=1).values


def cast(room: Room, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Distance along unit rays d (N, 3) from o (3,) inside the room to the first surface."""
    _, t = _slabs(o, d, room.lo, room.hi)                 # leave the room through a wall
    for lo, hi in room.furniture:
        t_in, t_out = _slabs(o, d, lo, hi)
        hit = (t_in <= t_out) & (t_in > 1e-4) & (t_in < t)
        t = torch.where(hit, t_in, t)
    return t


def surface_distance(room: Room, p: torch.Tensor) -> torch.Tensor:
    """Distance of points (N, 3) to the nearest room or furniture surface."""
    lo, hi = torch.tensor(room.lo), torch.tensor(room.hi)
    dist = torch.minimum(p - lo, hi - p).abs().min(dim=1).values
    for blo, bhi in room.furniture:
        blo, bhi = torch.tensor(blo), torch.tensor(bhi)
        c, half = (blo + bhi) / 2, (bhi - blo) / 2
        q = (p - c).abs() - half
        sdf = q.clamp_min(0).norm(dim=1) + q.max(dim=1).values.clamp_max(0)
        dist = torch.minimum(dist, sdf.abs())
    return dist


def camera_pose(t: float, period_s: float = 90.0) -> torch.Tensor:
    """OpenCV c2w (4, 4) of the robot camera at time t: an ellipse whose size breathes
    slowly (so surfaces are seen from varying distances), looking around as it drives."""
    phase = 2 * math.pi * t / period_s
    breathe = 0.75 + 0.25 * math.sin(2 * math.pi * t / 600.0)
    x = 4.0 + 2.7 * breathe * math.cos(phase)
    y = 3.0 + 2.0 * breathe * math.sin(phase)
    z = 1.0 + 0.15 * math.sin(2 * math.pi * t / 13.0)
    yaw = phase + math.pi / 2 + 0.7 * math.sin(2 * math.pi * t / 9.0)
    pitch = -0.15 + 0.1 * math.sin(2 * math.pi * t / 17.0)
    fwd = torch.tensor([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    down = torch.tensor([0.0, 0.0, -1.0])
    right = torch.linalg.cross(down, fwd)
    right = right / right.norm()
    cam_down = torch.linalg.cross(fwd, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_down, fwd, torch.tensor([x, y, z])
    return c2w


@dataclass
class StubConfig:
    """The model stub's output: one Gaussian per viewpoint-grid pixel."""

    grid: int = 64
    """Viewpoint grid per view (grid x grid Gaussians); images are 2*grid pixels."""
    fov_deg: float = 70.0
    depth_noise: float = 0.01
    """Relative depth noise per Gaussian (1 sigma)."""
    jitter_m: float = 0.01
    """Per-window registration error: a random offset of the whole window (1 sigma, metres)."""
    low_opacity_fraction: float = 0.05
    """Fraction of Gaussians with opacity below the pruning threshold."""


def stub_window(room: Room, c2w: torch.Tensor, K: torch.Tensor, image: int, cfg: StubConfig,
                gen: torch.Generator) -> Gaussians:
    """MODEL STUB (not iLRM): Gaussians on the visible room surfaces for V cameras.

    c2w (V, 4, 4), K (V, 3, 3) for square images of ``image`` pixels. Returns
    (V * grid^2, ...) Gaussians, view-major like iLRM.
    """
    stride = image / cfg.grid
    px = (torch.arange(cfg.grid, dtype=torch.float32) + 0.5) * stride
    vv, uu = torch.meshgrid(px, px, indexing="ij")
    offset = torch.randn(3, generator=gen) * cfg.jitter_m
    parts = []
    for pose, k in zip(c2w, K):
        d = torch.stack([(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], torch.ones_like(uu)], -1).reshape(-1, 3)
        z_per_t = 1.0 / d.norm(dim=1)
        d = (d * z_per_t[:, None]) @ pose[:3, :3].T
        t = cast(room, pose[:3, 3], d)
        t = t * (1 + cfg.depth_noise * torch.randn(t.shape, generator=gen))
        means = pose[:3, 3] + t[:, None] * d + offset
        n = means.shape[0]
        depth = t * z_per_t
        footprint = (depth * stride / k[0, 0] * 0.6).reshape(-1, 1).expand(n, 3).clone()
        checker = ((torch.floor(means[:, 0] * 2) + torch.floor(means[:, 1] * 2) + torch.floor(means[:, 2] * 2)) % 2)
        colors = torch.stack([0.3 + 0.4 * checker, 0.5 + 0.3 * torch.sin(means[:, 2]), 0.6 - 0.3 * checker], -1)
        opac = 0.85 + 0.1 * torch.rand(n, generator=gen)
        opac[torch.rand(n, generator=gen) < cfg.low_opacity_fraction] = 0.001
        parts.append(Gaussians(means=means, quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
                               scales=footprint, opacities=opac, colors=colors.clamp(0, 1)))
    return Gaussians.cat(parts)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class SoakConfig:
    duration_s: float = 3600.0
    period_s: float = 2.0
    """One window every period_s of simulated time."""
    views: int = 4
    keyframe_spacing_s: float = 0.5
    chunk_size: float = 2.0
    max_gaussians: int = 1_000_000
    max_gaussians_per_chunk: int = 200_000
    eviction: str = "global"
    replace_distance_ratio: float = 1.1
    dedup_voxel: float = 0.0
    sample_every: int = 1
    """Record a sample every this many windows."""
    seed: int = 0


def run_mode(fusion: bool, soak: SoakConfig, stub: StubConfig, room: Room,
             progress: Progress | None = None) -> dict:
    """Stream every window into one map; returns the time series and a summary.

    ``progress`` counts the windows; every 100 windows its status shows the map's size.
    """
    cfg = MapConfig(chunk_size_m=soak.chunk_size, fusion=fusion, max_gaussians=soak.max_gaussians,
                    max_gaussians_per_chunk=soak.max_gaussians_per_chunk, eviction=soak.eviction,
                    max_integration_distance_m=0.0, replace_distance_ratio=soak.replace_distance_ratio,
                    dedup_voxel=soak.dedup_voxel)
    gmap = GaussianMap(cfg, model_id="map-soak-stub")
    gen = torch.Generator().manual_seed(soak.seed)
    image = 2 * stub.grid
    focal = 0.5 * image / math.tan(math.radians(stub.fov_deg) / 2)
    K = torch.tensor([[focal, 0, image / 2], [0, focal, image / 2], [0, 0, 1]]).expand(soak.views, 3, 3)
    n_windows = int(soak.duration_s // soak.period_s)
    series = {k: [] for k in ("t_s", "num_gaussians", "memory_bytes", "num_chunks", "integrate_ms",
                              "messages", "message_bytes", "evicted")}
    first_eviction_s = None
    latencies, evicting = [], []
    total_msgs = total_bytes = 0
    start = time.perf_counter()
    for w in range(n_windows):
        t = (w + 1) * soak.period_s
        times = [t - (soak.views - 1 - v) * soak.keyframe_spacing_s for v in range(soak.views)]
        c2w = torch.stack([camera_pose(tv) for tv in times])
        g = stub_window(room, c2w, K, image, stub, gen)
        cams = WindowCameras(c2w=c2w, K=K, height=image, width=image)
        t0 = time.perf_counter()
        update = gmap.integrate(g, cams, window_id=w, keyframe_ids=[w * soak.views + v for v in range(soak.views)])
        latencies.append((time.perf_counter() - t0) * 1e3)
        evicting.append(update.num_evicted > 0)
        if update.num_evicted and first_eviction_s is None:
            first_eviction_s = t
        parts = update.transport_parts()
        total_msgs += len(parts)
        total_bytes += sum(p.nbytes() for p in parts)
        if progress is not None:
            if (w + 1) % 100 == 0:
                st = gmap.stats()
                progress.set_status(f"{st['num_gaussians']:,} Gaussians, {st['memory_bytes'] / 2**20:.1f} MiB")
            progress.update()
        if w % soak.sample_every == 0 or w == n_windows - 1:
            st = gmap.stats()
            series["t_s"].append(t)
            series["num_gaussians"].append(st["num_gaussians"])
            series["memory_bytes"].append(st["memory_bytes"])
            series["num_chunks"].append(st["num_chunks"])
            series["integrate_ms"].append(round(latencies[-1], 2))
            series["messages"].append(len(parts))
            series["message_bytes"].append(sum(p.nbytes() for p in parts))
            series["evicted"].append(update.num_evicted)
    wall = time.perf_counter() - start
    sample = gmap.all_gaussians().means
    if len(sample) > 50_000:
        sample = sample[torch.randperm(len(sample), generator=torch.Generator().manual_seed(1))[:50_000]]
    err = surface_distance(room, sample) if len(sample) else torch.zeros(1)
    counts = np.array(series["num_gaussians"])
    mem = np.array(series["memory_bytes"])
    t_arr = np.array(series["t_s"])
    cap_idx = np.flatnonzero(t_arr >= first_eviction_s) if first_eviction_s is not None else np.array([], int)
    half = len(counts) // 2
    lat, ev = np.array(latencies), np.array(evicting, dtype=bool)
    summary = {
        "fusion": fusion,
        "windows": n_windows,
        "window_gaussians": soak.views * stub.grid ** 2,
        "final_gaussians": int(counts[-1]),
        "max_gaussians_seen": int(counts.max()),
        "final_memory_mb": round(float(mem[-1]) / 2**20, 2),
        "max_memory_mb": round(float(mem.max()) / 2**20, 2),
        "final_chunks": series["num_chunks"][-1],
        "growth_second_half": round(float(counts[-1] - counts[half]) / max(float(counts[half]), 1.0), 4),
        "reached_cap_at_s": first_eviction_s,
        "memory_range_after_cap_mb": (round(float(mem[cap_idx[0]:].max() - mem[cap_idx[0]:].min()) / 2**20, 3)
                                      if len(cap_idx) else None),
        "gaussians_per_m2": round(float(counts[-1]) / room.surface_area(), 1),
        "surface_error_p50_mm": round(float(err.median()) * 1e3, 2),
        "surface_error_p95_mm": round(float(torch.quantile(err, 0.95)) * 1e3, 2),
        "integrate_ms_mean": round(float(lat.mean()), 2),
        "integrate_ms_p95": round(float(np.percentile(lat, 95)), 2),
        "integrate_ms_max": round(float(lat.max()), 2),
        # windows that evicted (over the cap) rewrite the chunks they evict from: their own figures
        "integrate_ms_evicting_mean": round(float(lat[ev].mean()), 2) if ev.any() else None,
        "integrate_ms_evicting_max": round(float(lat[ev].max()), 2) if ev.any() else None,
        "integrate_ms_other_mean": round(float(lat[~ev].mean()), 2) if (~ev).any() else None,
        "messages_total": total_msgs,
        "message_mb_total": round(total_bytes / 2**20, 1),
        "message_mb_per_window": round(total_bytes / 2**20 / max(n_windows, 1), 3),
        "wall_s": round(wall, 1),
    }
    return {"summary": summary, "fusion_config": asdict(cfg), "series": series}


# ---------------------------------------------------------------------------------------
# Output: a PNG line chart drawn with Pillow, a table
# ---------------------------------------------------------------------------------------


def write_plot(path: Path, results: dict, soak: SoakConfig) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (960, 1140), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    colors = {"fusion": (31, 119, 180), "append": (255, 127, 14)}
    count_series, mem_series, ms_series = [], [], []
    for name, res in results.items():
        t_min = [t / 60 for t in res["series"]["t_s"]]
        count_series.append((f"{name}: Gaussians", t_min, res["series"]["num_gaussians"], colors[name]))
        mem_series.append((f"{name}: memory MiB", t_min, [b / 2**20 for b in res["series"]["memory_bytes"]],
                           colors[name]))
        ms_series.append((f"{name}: ms per window", t_min, res["series"]["integrate_ms"], colors[name]))
    cap = ("cap", float(soak.max_gaussians)) if soak.max_gaussians > 0 else None
    draw_panel(draw, (0, 0, 960, 360), count_series, f"Map Gaussians over time  [{STUB_LABEL}]",
               "simulated time (min)", hline=cap)
    draw_panel(draw, (0, 380, 960, 740), mem_series, "Map memory (Gaussians + bookkeeping)", "simulated time (min)")
    draw_panel(draw, (0, 760, 960, 1120), ms_series, "Fusion time per window (GaussianMap.integrate, ms)",
               "simulated time (min)")
    img.save(path)


def table(results: dict, rows: int = 13) -> str:
    names = list(results)
    t = results[names[0]]["series"]["t_s"]
    idx = sorted({int(round(i)) for i in np.linspace(0, len(t) - 1, rows)})
    head = f"{'time':>8} | " + " | ".join(f"{n + ' N':>12} {n + ' MiB':>12} {'ms':>6}" for n in names)
    lines = [head, "-" * len(head)]
    for i in idx:
        cells = []
        for n in names:
            s = results[n]["series"]
            cells.append(f"{s['num_gaussians'][i]:>12,} {s['memory_bytes'][i] / 2**20:>12.1f} {s['integrate_ms'][i]:>6.1f}")
        lines.append(f"{t[i] / 60:>6.1f}mn | " + " | ".join(cells))
    return "\n".join(lines)


def cli_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ilrm-ros bench map-soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=3600.0, help="simulated time (s)")
    p.add_argument("--period-s", type=float, default=2.0, help="one window every this many simulated seconds")
    p.add_argument("--views", type=int, default=4, help="keyframes per window")
    p.add_argument("--grid", type=int, default=64, help="stub viewpoint grid per view (grid^2 Gaussians per view)")
    p.add_argument("--chunk-size", type=float, default=2.0)
    p.add_argument("--max-gaussians", type=int, default=1_000_000, help="total cap of both maps (0 = none)")
    p.add_argument("--max-per-chunk", type=int, default=200_000)
    p.add_argument("--eviction", choices=("global", "local"), default="global")
    p.add_argument("--replace-ratio", type=float, default=1.1,
                   help="MapConfig.replace_distance_ratio (< 1: keep old Gaussians unless clearly closer)")
    p.add_argument("--dedup-voxel", type=float, default=0.0, help="MapConfig.dedup_voxel (0 = off)")
    p.add_argument("--modes", default="fusion,append", help="comma list of fusion,append")
    p.add_argument("--sample-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("map_soak_out"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small ops on a shared machine)")
    args = p.parse_args(argv)
    from ilrm_ros.ros.memory import pin_malloc_thresholds   # no ROS in it: the process setting only

    pinned = pin_malloc_thresholds()   # as the node's main() does: its allocations behave the same
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run_cli(args, p, pinned)
    finally:
        torch.set_num_threads(threads_before)


def _run_cli(args: argparse.Namespace, p: argparse.ArgumentParser, malloc_pinned: bool) -> int:
    soak = SoakConfig(duration_s=args.duration_s, period_s=args.period_s, views=args.views,
                      chunk_size=args.chunk_size, max_gaussians=args.max_gaussians,
                      max_gaussians_per_chunk=args.max_per_chunk, eviction=args.eviction,
                      replace_distance_ratio=args.replace_ratio, dedup_voxel=args.dedup_voxel,
                      sample_every=args.sample_every, seed=args.seed)
    stub = StubConfig(grid=args.grid)
    room = Room()
    print(f"map soak: {STUB_LABEL}; {int(soak.duration_s // soak.period_s)} windows of {soak.views} views x "
          f"{stub.grid}^2 Gaussians, one every {soak.period_s:g} s of simulated time ({soak.duration_s:g} s)")
    results = {}
    for name in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if name not in ("fusion", "append"):
            p.error(f"unknown mode {name}")
        with Progress(int(soak.duration_s // soak.period_s), f"map-soak {name}", "window", logger) as bar:
            results[name] = run_mode(name == "fusion", soak, stub, room, bar)
        print(f"  {name}: {json.dumps(results[name]['summary'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"note": f"Gaussians from a {STUB_LABEL}; only the map is under test.",
           "soak": asdict(soak), "stub": asdict(stub), "room_surface_m2": round(room.surface_area(), 2),
           "malloc_pinned_as_in_the_node": malloc_pinned, "results": results}
    (args.out / "map_soak.json").write_text(json.dumps(doc, indent=1))
    write_plot(args.out / "map_soak.png", results, soak)
    print(table(results))
    print(f"wrote {args.out / 'map_soak.json'} and {args.out / 'map_soak.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
