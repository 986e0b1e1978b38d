"""`ilrm-ros bag BAG --out DIR`: the mapping core over a rosbag2 bag, without DDS.

Reads images + camera_info + /tf + /tf_static from the bag (mcap or sqlite3), feeds
every frame but the held-out ones to the same Mapper the node uses (synchronously),
and writes:

    DIR/map.ply (+ map.ply.json)   the global map, standard 3DGS PLY
    DIR/rendered/*.png             held-out frames rendered from the map, next to the truth;
                                   heldout_grid.png: truth | map render | nearest mapped frame
    DIR/report.json                per-window latency and Gaussians, held-out PSNR of the map,
                                   of the last window alone and of the nearest mapped frame, the
                                   frames the input stage dropped, by reason (as the node counts them),
                                   the live map quality the node publishes (quality.*: PSNR / SSIM of
                                   the map at keyframes it was not fitted to) and the window
                                   refinement's context PSNR gain (refine.*), per window and overall;
                                   --refine-budget-s: map refinement after mapping, held-out PSNR before/after
    DIR/map_growth.png             map size over windows vs the sum of window outputs
    DIR/occupancy.png              the 2-D occupancy grid next to the true floor plan (generated
                                   sequences: scene.json next to the bag or --scene), scores in report.json
    DIR/outputs_bag/               an mcap bag of the node's outputs (chunks, map, renders, occupancy grid)
                                   that rviz / Foxglove can replay
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ilrm_ros.core.progress import track
from ilrm_ros.mapping.config import MappingConfig, load_mapping_config
from ilrm_ros.mapping.occupancy_score import find_scene_truth
from ilrm_ros.model.loading import CheckpointError
from ilrm_ros.tools.output_bag import OutputBag

log = logging.getLogger(__name__)

def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0 ** 2
    return float("inf") if mse == 0 else float(-10.0 * np.log10(mse))


def nearest_camera(c2w: np.ndarray, candidates: np.ndarray, pose: np.ndarray) -> int:
    """Index into ``c2w`` (one of ``candidates``) of the camera nearest to ``pose``
    (camera-centre distance, ties broken by viewing direction)."""
    d = np.linalg.norm(c2w[candidates, :3, 3] - pose[:3, 3], axis=1)
    cos = c2w[candidates, :3, 2] @ pose[:3, 2]
    return int(candidates[np.lexsort((-cos, np.round(d, 3)))[0]])


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN: nothing scored yet; inf) replaced by None, recursively."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def quality_summary(stats: dict, windows: list[dict]) -> dict:
    """The live map quality (``quality_*`` of the mapper's stats, as in MapInfo) and the window
    refinement over ``windows`` (their ``refine_*`` timings): what the node publishes, for a report."""
    refined = [w for w in windows if "refine_s" in w]
    return {"quality": {k.removeprefix("quality_"): v for k, v in stats.items() if k.startswith("quality_")},
            "refine": {"windows": len(refined),
                       "gain_mean_db": float(np.mean([w["refine_gain_db"] for w in refined])) if refined else None,
                       "seconds_mean": float(np.mean([w["refine_s"] for w in refined])) if refined else None,
                       "iterations_mean": float(np.mean([w["refine_iters"] for w in refined])) if refined else None}}


def write_growth_plot(path: Path, windows: list[dict], title: str) -> None:
    """PNG: Gaussians in the map and in each window, over windows."""
    from PIL import Image, ImageDraw

    from ilrm_ros.render.panels import draw_panel

    xs = [float(w["window_id"]) for w in windows]
    img = Image.new("RGB", (960, 380), (255, 255, 255))
    draw_panel(ImageDraw.Draw(img), (0, 0, 960, 370),
               [("map Gaussians", xs, [float(w["map_gaussians"]) for w in windows], (31, 119, 180)),
                ("sum of window Gaussians", xs, np.cumsum([w["gaussians_window"] for w in windows]).tolist(),
                 (255, 127, 14))],
               f"Map size over windows: {title}", "window")
    img.save(path)


def _occupancy_report(mapper, out: Path, scene_json: Path | None, title: str) -> dict:
    """occupancy.png and the grid's scores against the true geometry, with the update timings."""
    from ilrm_ros.mapping.occupancy_score import occupancy_report

    kfs = mapper.keyframes.snapshot()
    cams = np.stack([k.c2w[:3, 3] for k in kfs])
    with mapper.map_lock:
        report = occupancy_report(mapper.occupancy, out, scene_json, cams, title)
    if scene_json is not None:  # the same integration from exact depth: the grid without the model's errors
        from ilrm_ros.data.sequence_io import load_scene_description
        from ilrm_ros.mapping.occupancy_score import exact_depth_grid

        exact = exact_depth_grid(mapper.cfg.occupancy, load_scene_description(scene_json.parent).geometry, kfs)
        report["exact_depth"] = occupancy_report(exact, out / "exact_depth", scene_json, cams, f"{title}, exact depth")
    s = report.get("scores_3d")
    if s:
        log.info("occupancy: observed-voxel accuracy %.4f, false-free rate within 3 m %.4f (%d observed voxels)",
                 s["accuracy"] or 0.0, s["false_free_rate_3m"] or 0.0, s["observed_voxels"])
    return report


def _score_heldout(mapper, posed, held: np.ndarray, fed: np.ndarray, last_window, png_dir: Path | None) -> list[dict]:
    """Held-out frames rendered from the map (and from the last window alone) vs the truth; PSNR rows.
    With png_dir, the renders are written there next to the truth."""
    from PIL import Image as PILImage

    from ilrm_ros.mapping.mapper import render_view
    from ilrm_ros.render.panels import image_grid

    rows, grid = [], []
    c2w = np.asarray(posed.c2w, np.float64)
    H, W = posed.images.shape[1:3]
    for i in held:
        K = np.asarray(posed.K[i], np.float64)
        view = mapper.render(c2w[i], K, W, H, name=f"heldout_{i}")
        last = render_view(last_window, c2w[i], K, W, H, mapper.background)
        j = nearest_camera(c2w, fed, c2w[i])
        rows.append({"frame": int(i), "psnr_map": psnr_u8(view.rgb, posed.images[i]),
                     "psnr_last_window": psnr_u8(last.rgb, posed.images[i]),
                     "psnr_nearest_frame": psnr_u8(posed.images[j], posed.images[i]), "nearest_frame": j})
        if png_dir is not None:
            PILImage.fromarray(np.concatenate([view.rgb, posed.images[i]], axis=1)).save(
                png_dir / f"heldout_{i:04d}_render_vs_truth.png")
            grid.append((f"frame {i}", [posed.images[i], view.rgb, posed.images[j]]))
    if grid:  # truth | map render | nearest mapped frame, one row per held-out frame
        PILImage.fromarray(image_grid([imgs for _, imgs in grid], ("truth", "map render", "nearest frame"),
                                      row_labels=[label for label, _ in grid])).save(png_dir / "heldout_grid.png")
    return rows


def _refine_map(mapper, budget_s: float, outbag: "OutputBag | None", stamp_ns: int) -> dict:
    """Map refinement steps (refine.map_*) for ``budget_s`` seconds, updates to the output bag; totals."""
    t0 = time.monotonic()
    steps = iters = chunks = pruned = 0
    step_budget = mapper.cfg.refine.map_step_budget_s
    while (left := budget_s - (time.monotonic() - t0)) > 0.05 * step_budget:
        update, st = mapper.refine_map_step(min(step_budget, left))
        if st.stopped_by in ("no_keyframes", "off"):
            break
        steps, iters = steps + 1, iters + st.iterations
        chunks, pruned = chunks + len(update.updates), pruned + st.pruned
        if outbag and update.updates:
            outbag.write_update(update, stamp_ns)
    seconds = time.monotonic() - t0
    log.info("map refinement: %d steps, %d optimisation steps, %d chunk updates, %d pruned in %.1f s",
             steps, iters, chunks, pruned, seconds)
    return {"budget_s": budget_s, "seconds": seconds, "steps": steps, "iterations": iters,
            "chunk_updates": chunks, "pruned": pruned}


@dataclass(frozen=True)
class BagOptions:
    """What ``ilrm-ros bag`` does besides mapping with the node's configuration."""

    holdout: int = 5
    """Every holdout-th frame is not mapped but rendered from the map and scored (0 = none)."""
    image_topic: str | None = None
    """Image topic to read (None: the only image topic in the bag)."""
    max_frames: int | None = None
    write_bag: bool = True
    """Write outputs_bag/ (the node's outputs as an mcap bag)."""
    scene: Path | None = None
    """scene.json of a generated sequence (occupancy ground truth); None: found next to the bag."""
    refine_budget_s: float = 0.0
    """Seconds of map refinement after mapping (held-out PSNR before and after in the report)."""


def run_bag(bag: Path, out: Path, cfg: MappingConfig, options: BagOptions = BagOptions()) -> dict:
    """Map a bag; then, with ``options.refine_budget_s`` > 0, refine the map for that long; returns the
    report (also written to out/report.json)."""
    holdout, image_topic, max_frames = options.holdout, options.image_topic, options.max_frames
    write_bag, scene, refine_budget_s = options.write_bag, options.scene, options.refine_budget_s
    from ilrm_ros.io.bags import read_bag
    from ilrm_ros.io.drop_report import DropReporter, logging_emit
    from ilrm_ros.io.frames import Frame
    from ilrm_ros.mapping.mapper import Mapper

    out.mkdir(parents=True, exist_ok=True)
    (out / "rendered").mkdir(exist_ok=True)
    t0 = time.monotonic()
    reporter = DropReporter(logging_emit(log))  # the node's input stage: drops counted by reason
    posed = read_bag(bag, image_topic=image_topic, target_frame=cfg.frames.map_frame, max_frames=max_frames,
                     reporter=reporter)
    n = len(posed.images)
    stamps = np.asarray(posed.timestamps if posed.timestamps is not None else np.arange(n) * 10**8, np.int64)
    c2w = np.asarray(posed.c2w, np.float64)
    held = np.array([i for i in range(n) if holdout > 0 and i % holdout == holdout - 1], dtype=np.int64)
    fed = np.array([i for i in range(n) if i not in set(held.tolist())], dtype=np.int64)
    log.info("%s: %d frames (%d mapped, %d held out)", bag, n, len(fed), len(held))

    if refine_budget_s > 0:
        cfg = replace(cfg, refine=replace(cfg.refine, map_enabled=True))
    mapper = Mapper(cfg)
    camera_frame = cfg.frames.camera_frame or "camera"
    outbag = OutputBag(out / "outputs_bag", cfg.frames.map_frame) if write_bag else None
    windows = []
    for i in track(fed, "bag", unit="frame", logger=log):
        frame = Frame(rgb=posed.images[i], K=posed.K[i], stamp_ns=int(stamps[i]), frame_id=camera_frame, c2w=c2w[i])
        window = mapper.add_frame(frame)
        if window is None:
            continue
        res = mapper.process_window(window)
        mapper.score_quality(res)
        mapper.update_occupancy(res)
        if outbag:
            outbag.write_update(res.update, res.stamp_ns)
            for view in mapper.window_renders(res):
                topic = "/ilrm_mapping/rendered/image" if view.name == "keyframe" else \
                    "/ilrm_mapping/rendered/novel/image"
                outbag.write_image(topic, view.rgb, res.stamp_ns, camera_frame)
        last_window = res.gaussians
        res.gaussians = None
        windows.append({"window_id": window.window_id, "keyframe_ids": window.keyframe_ids,
                        "gaussians_window": res.num_gaussians_window,
                        "map_gaussians": mapper.stats()["num_gaussians"],
                        "chunks_changed": len(res.update.updates), **{k: round(v, 4) for k, v in res.timings.items()}})
    if not windows:
        raise RuntimeError(f"no window was formed from {len(fed)} frames: need at least {cfg.window.size} keyframes")

    refine_map = None
    if refine_budget_s > 0:
        before = _score_heldout(mapper, posed, held, fed, last_window, None)
        refine_map = _refine_map(mapper, refine_budget_s, outbag, int(stamps[-1]))
        refine_map["psnr_map_before"] = float(np.mean([r["psnr_map"] for r in before])) if before else None
    rows = _score_heldout(mapper, posed, held, fed, last_window, out / "rendered")
    if refine_map is not None:
        refine_map["psnr_map_after"] = float(np.mean([r["psnr_map"] for r in rows])) if rows else None
    write_growth_plot(out / "map_growth.png", windows, str(bag))
    occupancy = _occupancy_report(mapper, out, scene or find_scene_truth(bag), str(bag)) if cfg.occupancy.enabled \
        else None
    mapper.save(out / "map.ply")
    if outbag:
        outbag.write_map(mapper.all_rows(), int(stamps[-1]))
        if cfg.occupancy.enabled:
            outbag.write_grid(mapper.occupancy.products().grid2d, cfg.occupancy.floor_z_m, int(stamps[-1]))
        outbag.close()
    stats = mapper.stats()
    lat = [w["process_s"] for w in windows]
    report = {
        "bag": str(bag), "frames": n, "frames_mapped": int(len(fed)), "held_out": rows,
        "drops": {k: v for k, v in reporter.counters.snapshot().items() if k.startswith("dropped_")},
        "keyframes": int(stats["num_keyframes_total"]), "windows": windows,
        "map": {k: v for k, v in stats.items() if isinstance(v, (int, float, str))},
        "mean_window_latency_s": float(np.mean(lat)), "max_window_latency_s": float(np.max(lat)),
        "mean_psnr_map": float(np.mean([r["psnr_map"] for r in rows])) if rows else None,
        "mean_psnr_last_window": float(np.mean([r["psnr_last_window"] for r in rows])) if rows else None,
        "mean_psnr_nearest_frame": float(np.mean([r["psnr_nearest_frame"] for r in rows])) if rows else None,
        "model_id": mapper.model_id, "device": str(mapper.device), "wall_time_s": time.monotonic() - t0,
        "occupancy": occupancy, "refine_map": refine_map, **quality_summary(stats, windows),
    }
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ilrm-ros bag", description=__doc__.split("\n")[0])
    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--params-file", default=None, help="node parameter YAML (default config/mapping.yaml)")
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped one)")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--image-topic", default=None, help="image topic (default: the only one in the bag)")
    parser.add_argument("--holdout", type=int, default=5, help="hold out every N-th frame for evaluation (0 = none)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--refine-budget-s", type=float, default=0.0,
                        help="after mapping, refine the map for this many seconds (refine.map_*; 0 = off); "
                             "the report gives held-out PSNR before and after")
    parser.add_argument("--no-output-bag", action="store_true", help="skip writing outputs_bag/")
    parser.add_argument("--scene", default=None, help="scene.json with the true geometry (default: next to the bag)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a node parameter, e.g. --set map.fusion=false (YAML value syntax)")
    args = parser.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        overrides[name.strip()] = yaml.safe_load(value)
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if args.device:
        overrides["model.device"] = args.device
    cfg = load_mapping_config(args.params_file, overrides)
    try:
        options = BagOptions(holdout=args.holdout, image_topic=args.image_topic, max_frames=args.max_frames,
                             write_bag=not args.no_output_bag, scene=Path(args.scene) if args.scene else None,
                             refine_budget_s=args.refine_budget_s)
        report = run_bag(Path(args.bag), Path(args.out), cfg, options)
    except CheckpointError as exc:  # one clear line naming the file and what was found
        print(f"ilrm-ros bag: cannot load the model: {exc}", file=sys.stderr)
        return 2
    print(f"frames {report['frames']} ({report['frames_mapped']} mapped), keyframes {report['keyframes']}, "
          f"windows {len(report['windows'])}, map {report['map']['num_gaussians']} Gaussians "
          f"({report['map']['memory_bytes'] / 1e6:.1f} MB)")
    print(f"window latency mean {report['mean_window_latency_s']:.2f} s, max {report['max_window_latency_s']:.2f} s")
    if report["held_out"]:
        print(f"held-out PSNR: map {report['mean_psnr_map']:.2f} dB, last window alone "
              f"{report['mean_psnr_last_window']:.2f} dB, nearest frame {report['mean_psnr_nearest_frame']:.2f} dB "
              f"({len(report['held_out'])} frames)")
    q, r = report["quality"], report["refine"]
    if q["count"]:
        print(f"live map quality ({q['mode']}, {q['count']} keyframes before their window): PSNR mean "
              f"{q['psnr_mean_db']:.2f} dB (latest {q['psnr_latest_db']:.2f}), SSIM mean {q['ssim_mean']:.3f}")
    if r["windows"]:
        print(f"window refinement: context PSNR {r['gain_mean_db']:+.2f} dB mean over {r['windows']} windows, "
              f"{r['seconds_mean']:.2f} s and {r['iterations_mean']:.1f} steps each")
    rm = report.get("refine_map")
    if rm:
        fmt = lambda v: "n/a" if v is None else f"{v:.2f} dB"  # noqa: E731
        print(f"map refinement: {rm['steps']} steps ({rm['iterations']} optimisation steps, {rm['chunk_updates']} "
              f"chunk updates, {rm['pruned']} pruned) in {rm['seconds']:.1f} s; held-out PSNR of the map "
              f"{fmt(rm['psnr_map_before'])} -> {fmt(rm['psnr_map_after'])}")
    occ = report.get("occupancy") or {}
    if occ.get("scores_3d"):
        s3 = occ["scores_3d"]
        print(f"occupancy: observed-voxel accuracy {s3['accuracy'] or 0.0:.4f}, false-free rate within 3 m "
              f"{s3['false_free_rate_3m'] or 0.0:.4f} ({s3['observed_voxels']} observed voxels); {occ['png']}")
    print(f"wrote {args.out}/map.ply, rendered/, report.json" + ("" if args.no_output_bag else ", outputs_bag/"))
    return 0
