"""Procedural indoor scenes, camera trajectories through them, and datasets rendered
with the exact ray caster (``ilrm-ros data synth``).

A *sequence* is one random scene (a room, corridor, ring corridor or two rooms joined
by a doorway; furniture-like boxes, cylinders and spheres; procedural textures; point
lights with shadows; :mod:`.rooms`) seen along one trajectory (ground robot,
handheld/drone, or a loop that returns to its start; :mod:`.trajectories`). Everything is
drawn from ``numpy.random.Generator`` seeded by ``(seed, index)``, so a sequence is
byte-identical whatever the number of workers or the order of generation.

On disk (:mod:`.sequence_io`), one folder per sequence (``scene_00000/``) and
``index.json`` at the top (the configuration and one line per sequence).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .rooms import LAYOUTS, random_scene
from .scene import Scene, render
from .scene_geometry import signed_distance
from .sequence_io import FORMAT_CHOICES, write_sequence
from .trajectories import (
    TrajectoryConfig,
    TrajectoryError,
    ground_trajectory,
    handheld_trajectory,
    loop_trajectory,
)
from ilrm_ros.core.progress import track
from ilrm_ros.io.transforms_json import PosedImages

logger = logging.getLogger(__name__)

TRAJECTORY_CHOICES = ("ground", "handheld", "mixed", "loop")
DEFAULT_START_NS = 1_700_000_000 * 10**9


@dataclass
class SynthConfig:
    """What one generated sequence looks like."""

    width: int = 128
    height: int = 128
    num_frames: int = 24
    trajectory: str = "mixed"
    """ground | handheld | mixed (ground or handheld, 50/50) | loop."""
    layouts: tuple[str, ...] = LAYOUTS
    hfov_deg: tuple[float, float] = (60.0, 90.0)
    """Horizontal field of view range, sampled per sequence (square pixels, centred principal point)."""
    shadows: bool = True
    max_tries: int = 20
    """Scenes drawn before giving up when no trajectory fits."""
    start_time_ns: int = DEFAULT_START_NS
    motion: TrajectoryConfig = field(default_factory=TrajectoryConfig)

    def __post_init__(self) -> None:
        if self.trajectory not in TRAJECTORY_CHOICES:
            raise ValueError(f"trajectory must be one of {TRAJECTORY_CHOICES}, got {self.trajectory!r}")
        bad = set(self.layouts) - set(LAYOUTS)
        if bad:
            raise ValueError(f"unknown layouts {sorted(bad)}; expected some of {LAYOUTS}")


# --------------------------------------------------------------------------- sequences
def intrinsics_from_hfov(hfov_deg: float, width: int, height: int) -> np.ndarray:
    """Pixel K ``(3, 3)`` with square pixels and the principal point at the image centre."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def sequence_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sequence ``index`` of a dataset with ``seed`` (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def random_trajectory(rng: np.random.Generator, scene: Scene, kind: str, motion: TrajectoryConfig):
    """``(c2w (N, 4, 4), times (N,) s)`` of a ``kind`` trajectory in ``scene`` (may raise TrajectoryError)."""
    geo = scene.geometry
    bounds = (geo.room_lo, geo.room_hi)

    def walls(p: np.ndarray) -> np.ndarray:
        return signed_distance(geo, p, floor_and_ceiling=False)

    def full(p: np.ndarray) -> np.ndarray:
        return signed_distance(geo, p)

    if kind == "ground":
        return ground_trajectory(rng, walls, bounds, motion)
    if kind == "handheld":
        return handheld_trajectory(rng, full, bounds, motion)
    if kind == "loop":
        return loop_trajectory(rng, walls, bounds, motion, center_hint=scene.info.get("loop_center"))
    raise ValueError(f"unknown trajectory kind {kind!r}")


def synth_sequence(seed: int, index: int, cfg: SynthConfig) -> tuple[Scene, PosedImages]:
    """Scene + rendered posed frames for sequence ``index`` (deterministic in ``seed, index``).

    ``PosedImages.meta`` records layout, trajectory kind, seed, index and the number of
    scenes drawn before a trajectory fitted.
    """
    rng = sequence_rng(seed, index)
    motion = replace(cfg.motion, num_frames=cfg.num_frames)
    layouts = cfg.layouts
    if cfg.trajectory == "loop":  # loops need room to drive around; single corridors rarely allow it
        layouts = tuple(x for x in layouts if x != "corridor") or layouts
    for attempt in range(cfg.max_tries):
        kind = cfg.trajectory
        if kind == "mixed":
            kind = "ground" if rng.uniform() < 0.5 else "handheld"
        scene = random_scene(rng, layouts)
        try:
            c2w, times = random_trajectory(rng, scene, kind, motion)
        except TrajectoryError as err:
            logger.debug("sequence %d attempt %d (%s, %s): %s", index, attempt, scene.info["layout"], kind, err)
            continue
        break
    else:
        raise RuntimeError(f"sequence {index}: no valid trajectory after {cfg.max_tries} scenes")
    hfov = rng.uniform(*cfg.hfov_deg)
    # render exactly the (float32) poses and intrinsics that are stored
    c2w = c2w.astype(np.float32).astype(np.float64)
    k = intrinsics_from_hfov(hfov, cfg.width, cfg.height).astype(np.float32).astype(np.float64)
    images = np.empty((cfg.num_frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    depths = np.empty((cfg.num_frames, cfg.height, cfg.width), dtype=np.float32)
    for i in range(cfg.num_frames):
        images[i], depths[i] = render(scene, c2w[i], k, cfg.width, cfg.height, shadows=cfg.shadows)
    posed = PosedImages(
        images=images,
        c2w=c2w.astype(np.float32),
        K=np.repeat(k[None].astype(np.float32), cfg.num_frames, axis=0),
        names=[f"frame_{i:05d}" for i in range(cfg.num_frames)],
        depths=depths,
        timestamps=cfg.start_time_ns + np.rint(times * 1e9).astype(np.int64),
        meta={"layout": scene.info["layout"], "trajectory": kind, "seed": int(seed), "index": int(index),
              "scenes_drawn": attempt + 1, "hfov_deg": float(hfov)},
    )
    return scene, posed


# --------------------------------------------------------------------------- CLI
def _job(args: tuple) -> dict:
    out_root, index, seed, cfg, fmt, bag_storage, bag_compressed = args
    t0 = time.perf_counter()
    scene, posed = synth_sequence(seed, index, cfg)
    t1 = time.perf_counter()
    write_sequence(Path(out_root) / f"scene_{index:05d}", scene, posed, fmt, bag_storage, bag_compressed)
    return {**posed.meta, "folder": f"scene_{index:05d}", "render_s": round(t1 - t0, 4),
            "total_s": round(time.perf_counter() - t0, 4)}


def _parse_res(text: str) -> tuple[int, int]:
    if "x" in text:
        w, h = text.lower().split("x")
        return int(w), int(h)
    return int(text), int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ilrm-ros data synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scene)")
    p.add_argument("--scenes", type=int, default=10, help="number of sequences")
    p.add_argument("--frames", type=int, default=24, help="frames per sequence")
    p.add_argument("--res", default="128", help="resolution: N (square) or WxH")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-index", type=int, default=0, help="first sequence index (to extend a dataset)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="transforms",
                   help="npz (compact, fastest to load), transforms (transforms.json + PNGs), bag, "
                        "both (transforms + bag), all")
    p.add_argument("--trajectory", choices=TRAJECTORY_CHOICES, default="mixed")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {LAYOUTS}")
    p.add_argument("--frame-dt", type=float, default=TrajectoryConfig.frame_dt, help="seconds between frames")
    p.add_argument("--no-shadows", action="store_true")
    p.add_argument("--bag-storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--bag-compressed", action="store_true", help="CompressedImage (png) instead of Image")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """``ilrm-ros data synth ...``: generate a dataset; prints a one-line speed summary."""
    argv = list(argv or [])
    if argv[:1] == ["synth"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    w, h = _parse_res(args.res)
    cfg = SynthConfig(
        width=w, height=h, num_frames=args.frames, trajectory=args.trajectory,
        layouts=tuple(x.strip() for x in args.layouts.split(",") if x.strip()), shadows=not args.no_shadows,
        motion=TrajectoryConfig(frame_dt=args.frame_dt),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    indices = range(args.start_index, args.start_index + args.scenes)
    jobs = [(str(args.out), i, args.seed, cfg, args.format, args.bag_storage, args.bag_compressed) for i in indices]
    t0 = time.perf_counter()
    if args.workers <= 1:
        rows = list(track(map(_job, jobs), "synth", total=len(jobs), unit="scene", logger=logger))
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            done = pool.map(_job, jobs, chunksize=max(1, len(jobs) // (8 * args.workers)))
            rows = list(track(done, "synth", total=len(jobs), unit="scene", logger=logger))
    elapsed = time.perf_counter() - t0
    index_path = args.out / "index.json"
    index = {"config": asdict(cfg), "seed": args.seed, "format": args.format, "sequences": []}
    if index_path.exists():  # extending a dataset: keep the other entries
        old = json.loads(index_path.read_text())
        keep = {r["folder"] for r in rows}
        index["sequences"] = [r for r in old.get("sequences", []) if r["folder"] not in keep]
    index["sequences"] = sorted(index["sequences"] + rows, key=lambda r: r["folder"])
    index_path.write_text(json.dumps(index, indent=1))
    frames = args.scenes * args.frames
    print(f"{'scenes':>8} {'frames':>8} {'res':>9} {'workers':>7} {'seconds':>8} {'frames/s':>9} {'scenes/min':>10}")
    print(f"{args.scenes:>8} {frames:>8} {f'{w}x{h}':>9} {args.workers:>7} {elapsed:>8.1f} "
          f"{frames / elapsed:>9.1f} {60 * args.scenes / elapsed:>10.1f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main(__import__("sys").argv[1:]))
