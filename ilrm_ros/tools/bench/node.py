"""`ilrm-ros bench node`: where a window's time goes inside the running node, and its memory.

Runs the real `ilrm_mapping` node (in this process, real DDS) and a player node that
publishes a generated sequence (images, camera_info, /tf). By default every frame is a
keyframe and the player waits until the node is idle before the next frame, so each
window is measured without queueing (``--pace realtime`` plays at ``--rate`` instead and
reports coalescing). For each window:

  end_to_end_s   arrival of the window's last keyframe -> its last chunk published
  model_s        iLRM forward
  integrate_s    fusion into the global map
  rest_s         end_to_end_s - model_s: decode, TF wait, keyframe policy, resize,
                 scheduling, fusion, serialisation, publishing
  queued_s       arrival of the last keyframe -> the worker starts the window
                 (handoff_s: from the worker queue to the start)
  prepare_s      process_s - model_s - integrate_s: the worker's other steps before the chunks
                 (opacity selection, map-frame transform, live-quality views; summary only)
  render_s       the two window renders (after the chunks went out; not in end_to_end_s)
  occupancy_*    the occupancy grid's stage, after the renders (see ilrm_ros.tools.bench.occupancy:
                 the grid is first filled to a 20 m x 20 m x 3 m observed area)

Resident memory (VmRSS) is sampled after every frame (``--pace idle``) and compared with
the map's own size; ``--repeat N`` replays the sequence so later passes revisit mapped
places (with fusion the map stays flat there, so any growth would be the node's own). Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilrm_ros.tools.bench import occupancy as bench_occupancy


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class NodeBenchConfig:
    """One ``ilrm-ros bench node`` run."""

    frames: int = 24
    res: int = 128
    """Square image side (pixels), also the model's input size."""
    checkpoint: str = ""
    """Empty: the shipped checkpoint."""
    pace: str = "idle"
    """idle (next frame once the node is idle) or realtime (``rate`` frames/s)."""
    rate: float = 4.0
    seed: int = 20261125
    threads: int | None = None
    """torch threads (None: torch's default)."""
    repeat: int = 1
    """Play the sequence this many times."""
    extra_params: tuple[str, ...] = ()
    """Node parameter overrides ``NAME=VALUE`` (YAML value syntax)."""


def run(cfg: NodeBenchConfig) -> dict:
    """Play the sequence into a real node and measure every window (see the module doc)."""
    import rclpy
    import torch
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from ilrm_ros.data.synth import SynthConfig, synth_sequence
    from ilrm_ros.ros.memory import pin_malloc_thresholds
    from ilrm_ros.ros.node import MappingNode
    from ilrm_ros.ros.player import SequencePlayer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    scene, seq = synth_sequence(cfg.seed, 0, SynthConfig(width=cfg.res, height=cfg.res, num_frames=cfg.frames,
                                                         trajectory="loop"))
    overrides = [Parameter("model.height", value=cfg.res), Parameter("model.width", value=cfg.res),
                 Parameter("input.image_topic", value="/bench/image"),
                 Parameter("input.camera_info_topic", value="/bench/camera_info"),
                 Parameter("input.qos", value="reliable"), Parameter("keyframes.min_translation_m", value=0.0),
                 Parameter("keyframes.min_rotation_deg", value=0.0),
                 Parameter("occupancy.enabled", value=True)]  # its own stage here; --set occupancy.enabled=false
    if cfg.checkpoint:
        overrides.append(Parameter("model.checkpoint", value=cfg.checkpoint))
    for item in cfg.extra_params:
        import yaml

        name, _, value = item.partition("=")
        overrides.append(Parameter(name.strip(), value=yaml.safe_load(value)))
    rclpy.init()
    pin_malloc_thresholds()  # as the node's main() does: the RSS samples measure the same process
    node = MappingNode(parameter_overrides=overrides)
    user = Node("bench_player")
    player = SequencePlayer(user, "/bench/image", "/bench/camera_info")
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    executor.add_node(user)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    occupancy = bench_occupancy.prefill(node.mapper.occupancy.grid, 0.5 * (scene.geometry.room_lo[:2] +
                                                                          scene.geometry.room_hi[:2]))
    spinner.start()
    rss0 = rss_bytes()
    samples = []
    try:
        deadline = time.monotonic() + 30
        while player.pub_image.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        player.publish_static()
        player.publish_camera_info(seq.K[0], cfg.res, cfg.res)
        time.sleep(0.3)
        t_play = time.monotonic()
        for k in range(cfg.frames * cfg.repeat):
            i = k % cfg.frames
            player.publish_frame(seq.images, seq.c2w, seq.K, i, period_s=0.25, stamp_index=k)
            if cfg.pace == "idle":
                time.sleep(0.06)  # let the TF resolver pick the frame up
                while not (node.input.waiting() == 0 and node.worker.idle()):
                    time.sleep(0.005)
                samples.append({"frame": k, "rss": rss_bytes(), "map_bytes": node.mapper.stats()["memory_bytes"]})
            else:
                time.sleep(max(0.0, t_play + (k + 1) / cfg.rate - time.monotonic()))
        deadline = time.monotonic() + 600
        while not (node.input.waiting() == 0 and node.worker.idle()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        windows = list(node.outputs.window_timings)
        stats = node.mapper.stats()
        worker = node.worker.stats
        result = {
            "frames": cfg.frames, "repeat": cfg.repeat, "resolution": cfg.res, "pace": cfg.pace,
            "rate_hz": cfg.rate if cfg.pace == "realtime" else None,
            "device": str(node.mapper.device), "model_id": node.mapper.model_id,
            "torch_threads": torch.get_num_threads(), "machine": f"{platform.processor() or platform.machine()}, "
                                                                  f"{__import__('os').cpu_count()} cores",
            "windows": windows, "windows_coalesced": worker.coalesced, "windows_failed": worker.failed,
            "drops": {k: v for k, v in node.counters.snapshot().items() if k.startswith("dropped_")},
            "map_gaussians": stats["num_gaussians"], "map_memory_bytes": stats["memory_bytes"],
            "rss_start_bytes": rss0, "rss_samples": samples, "rss_end_bytes": rss_bytes(),
            "occupancy": dict(occupancy, blocks_end=node.mapper.occupancy.grid.num_blocks,
                              memory_bytes_end=node.mapper.occupancy.grid.memory_bytes()),
        }
    finally:
        node.shutdown()
        executor.shutdown()
        spinner.join(timeout=5.0)   # not left inside rclpy's wait when the interpreter exits
        node.destroy_node()
        user.destroy_node()
        rclpy.shutdown()
    return result


def summarise(result: dict) -> dict:
    w = result["windows"]
    steady = w[1:] if len(w) > 1 else w  # the first window includes one-off warm-up
    def col(k):
        return np.array([x.get(k, 0.0) for x in steady], dtype=np.float64)

    e2e, model = col("end_to_end_s"), col("model_s")
    rest = e2e - model
    s = {"windows": len(w), "end_to_end_s_median": float(np.median(e2e)), "end_to_end_s_max": float(e2e.max()),
         "model_s_median": float(np.median(model)), "integrate_s_median": float(np.median(col("integrate_s"))),
         "publish_chunks_s_median": float(np.median(col("publish_chunks_s"))),
         "queued_s_median": float(np.median(col("queued_s"))), "handoff_s_median": float(np.median(col("handoff_s"))),
         "render_s_median": float(np.median(col("render_s"))),
         "rest_s_median": float(np.median(rest)), "rest_fraction_median": float(np.median(rest / e2e)),
         "rest_without_fusion_fraction_median": float(np.median((rest - col("integrate_s")) / e2e)),
         "prepare_s_median": float(np.median(col("process_s") - model - col("integrate_s"))),
         **bench_occupancy.summarise(steady)}
    if result["rss_samples"]:
        non_map = np.array([x["rss"] - x["map_bytes"] for x in result["rss_samples"]], dtype=np.float64)
        half = len(non_map) // 2
        s.update(rss_max_mb=max(x["rss"] for x in result["rss_samples"]) / 1e6,
                 rss_minus_map_first_half_mb=float(non_map[:half].mean() / 1e6) if half else None,
                 rss_minus_map_second_half_mb=float(non_map[half:].mean() / 1e6))
    return s


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ilrm-ros bench node", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--checkpoint", default="", help="default: the shipped checkpoint")
    parser.add_argument("--pace", choices=("idle", "realtime"), default="idle")
    parser.add_argument("--rate", type=float, default=4.0, help="frames/s with --pace realtime")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--repeat", type=int, default=1,
                        help="play the sequence N times (later passes revisit mapped places: the map stays flat)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a node parameter (YAML value syntax)")
    parser.add_argument("--out", default="outputs/bench/node.json")
    args = parser.parse_args(argv)
    result = run(NodeBenchConfig(args.frames, args.res, args.checkpoint, args.pace, args.rate, args.seed, args.threads,
                                 args.repeat, tuple(args.set)))
    result["summary"] = summarise(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(f"node benchmark: {result['frames']} frames at {args.res}x{args.res}, {result['device']}, "
          f"{result['machine']}, torch threads {result['torch_threads']}, model {result['model_id']}")
    print(f"{'windows':>8} {'e2e s':>7} {'model s':>8} {'fuse s':>7} {'publish s':>9} {'rest s':>7} "
          f"{'rest %':>7} {'render s':>9}")
    print(f"{s['windows']:>8} {s['end_to_end_s_median']:>7.3f} {s['model_s_median']:>8.3f} "
          f"{s['integrate_s_median']:>7.3f} {s['publish_chunks_s_median']:>9.4f} {s['rest_s_median']:>7.3f} "
          f"{100 * s['rest_fraction_median']:>6.1f}% {s['render_s_median']:>9.3f}")
    print(f"(medians over windows after the first; e2e = last keyframe in -> chunks out; max e2e "
          f"{s['end_to_end_s_max']:.3f} s; rest without fusion {100 * s['rest_without_fusion_fraction_median']:.1f}%;"
          f" keyframe in -> worker start {1e3 * s['queued_s_median']:.1f} ms, of which hand-off to the worker "
          f"{1e3 * s['handoff_s_median']:.1f} ms; on the worker besides model and fusion (window selection, map "
          f"frame, live-quality views) {1e3 * s['prepare_s_median']:.1f} ms)")
    print(bench_occupancy.table(s, result["occupancy"]))
    if "rss_max_mb" in s:
        print(f"RSS max {s['rss_max_mb']:.0f} MB; RSS minus map: first half {s['rss_minus_map_first_half_mb']:.0f} MB,"
              f" second half {s['rss_minus_map_second_half_mb']:.0f} MB; map {result['map_memory_bytes'] / 1e6:.1f} MB"
              f" ({result['map_gaussians']} Gaussians); coalesced {result['windows_coalesced']}")
    print(f"wrote {out}")
    return 0
