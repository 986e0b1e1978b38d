"""`ilrm-ros demo`: the mapping node on an embedded generated sequence, over real DDS.

1. generates a deterministic indoor sequence (a robot driving a loop; seed fixed);
2. starts `ilrm_mapping` in its own process with config/mapping.yaml, with background map
   refinement on (``refine.map_enabled``; ``--no-map-refine`` leaves the file's default, off);
3. plays the sequence into it as a robot would (images, camera_info, /tf, /tf_static),
   holding every ``--holdout``-th frame back;
4. listens to ~/chunks (rebuilding the map as a subscriber would), ~/map, ~/rendered/*;
5. renders each held-out pose with ~/render_view and scores it against the true image,
   next to the nearest published keyframe as a baseline;
6. saves the map with ~/save_map, stops the node, writes report.json and prints a summary,
   with the live map quality and window refinement gain the node published on ~/map_info.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEMO_SEED = 20261125


def demo_sequence(frames: int, res: int, seed: int = DEMO_SEED):
    """The embedded default: one generated loop sequence (PosedImages)."""
    from ilrm_ros.data.synth import SynthConfig, synth_sequence

    # one frame more than needed: a closed loop ends on its first pose, which would make the
    # held-out last frame a copy of frame 0
    _, posed = synth_sequence(seed, 0, SynthConfig(width=res, height=res, num_frames=frames + 1, trajectory="loop"))
    return posed


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(rgb).save(path)


def _wait(pred, timeout: float, spin) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        spin(0.05)
    return pred()


def live_quality(info) -> dict:
    """The node's live map quality and window refinement from a MapInfo (NaN: nothing yet)."""
    return {"quality": {"mode": info.quality_mode, "count": int(info.quality_count),
                        "psnr_latest_db": float(info.quality_psnr_latest_db),
                        "psnr_mean_db": float(info.quality_psnr_mean_db),
                        "ssim_latest": float(info.quality_ssim_latest), "ssim_mean": float(info.quality_ssim_mean)},
            "refine_gain_mean_db": float(info.refine_gain_mean_db)}


@dataclass
class DemoConfig:
    """What the demo plays and how (the command line's options)."""

    frames: int = 40
    res: int = 128
    holdout: int = 5
    """Hold back every N-th frame for evaluation."""
    rate_hz: float = 4.0
    checkpoint: str = ""
    """Checkpoint (empty: the shipped one)."""
    timeout_s: float = 600.0
    map_refine: bool = True
    """Run the node with background map refinement (``refine.map_enabled``: between windows and
    after the last one)."""
    refine_rounds: int = 2
    """With map_refine: the node's ``refine.map_rounds``. The held-out views are rendered once the
    node is idle, its refinement rounds included, so the map no longer changes."""
    params: list[str] = field(default_factory=list)
    """Extra node parameters as ``name:=value`` (e.g. ``refine.window_iters:=50``), applied last."""


def run_demo(out: Path, cfg: DemoConfig = DemoConfig()) -> dict:
    """Run the demo with ``cfg``; returns the report (also written to ``out/report.json``)."""
    frames, res, holdout, rate_hz, timeout_s = cfg.frames, cfg.res, cfg.holdout, cfg.rate_hz, cfg.timeout_s
    import rclpy
    from rclpy.node import Node
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from ilrm_ros.mapping.config import default_params_file
    from ilrm_ros.mapping.chunks import MapReplica
    from ilrm_ros.io.image_codec import decode_image
    from ilrm_ros.render.panels import image_grid
    from ilrm_ros.tools.bag import json_safe, nearest_camera, psnr_u8
    from ilrm_ros.msg import GaussianChunk, MapInfo
    from ilrm_ros.ros.conversions import cloud_to_array, msg_to_update
    from ilrm_ros.ros.conversions import camera_info_msg
    from ilrm_ros.ros.qos import CHUNK_QOS
    from ilrm_ros.ros.player import SequencePlayer, matrix_to_transform
    from ilrm_ros.srv import RenderView, SaveMap

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    print(f"[demo] generating the embedded sequence: {frames} frames at {res}x{res}, seed {DEMO_SEED}")
    seq = demo_sequence(frames, res)
    seq.images, seq.c2w, seq.K = seq.images[:frames], seq.c2w[:frames], seq.K[:frames]
    published = np.array([i for i in range(frames) if (i % holdout) != holdout - 1])
    held_out = np.array([i for i in range(frames) if (i % holdout) == holdout - 1])

    node_params = [f"map.save_path:={out / 'map_on_shutdown.ply'}", f"model.height:={res}", f"model.width:={res}"]
    if cfg.checkpoint:
        node_params.append(f"model.checkpoint:={cfg.checkpoint}")
    if cfg.map_refine:
        node_params += ["refine.map_enabled:=true", f"refine.map_rounds:={cfg.refine_rounds}"]
    node_params += list(cfg.params)
    cmd = [sys.executable, "-m", "ilrm_ros.ros.node", "--params-file", str(default_params_file()), "--ros-args"]
    for p in node_params:
        cmd += ["-p", p]
    cmd += ["-r", "image:=/demo/image", "-r", "camera_info:=/demo/camera_info"]
    log_path = out / "node.log"
    print(f"[demo] starting ilrm_mapping (log: {log_path})")
    node_log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    rclpy.init()
    node = Node("ilrm_demo_player")
    spin = lambda t: rclpy.spin_once(node, timeout_sec=t)  # noqa: E731
    replica = MapReplica()
    got: dict = {"chunks": 0, "map": None, "info": None, "rendered": None}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def on_chunk(msg):
        got["chunks"] += 1
        replica.apply(msg_to_update(msg))

    node.create_subscription(GaussianChunk, "/ilrm_mapping/chunks", on_chunk, CHUNK_QOS)
    node.create_subscription(PointCloud2, "/ilrm_mapping/map", lambda m: got.__setitem__("map", m), latched)
    node.create_subscription(MapInfo, "/ilrm_mapping/map_info", lambda m: got.__setitem__("info", m), latched)
    # window count -> (end-to-end s, model s, refine s, refine gain dB), one per window
    per_window: dict[int, tuple[float, float, float, float]] = {}

    def on_info(msg):
        if msg.num_windows > 0:
            per_window.setdefault(int(msg.num_windows), (float(msg.last_window_latency_s),
                                                        float(msg.last_model_latency_s), float(msg.last_refine_s),
                                                        float(msg.last_refine_gain_db)))

    node.create_subscription(MapInfo, "/ilrm_mapping/map_info", on_info,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(Image, "/ilrm_mapping/rendered/image", lambda m: got.__setitem__("rendered", m), 5)
    render_cli = node.create_client(RenderView, "/ilrm_mapping/render_view")
    save_cli = node.create_client(SaveMap, "/ilrm_mapping/save_map")
    player = SequencePlayer(node, "/demo/image", "/demo/camera_info")
    report: dict = {"sequence": {"seed": DEMO_SEED, "frames": frames, "resolution": [res, res],
                                 "published": published.tolist(), "held_out": held_out.tolist(),
                                 **{k: v for k, v in seq.meta.items() if isinstance(v, (int, float, str))}}}
    try:
        if not player.wait_for_subscribers(timeout_s=120.0, give_up=lambda: proc.poll() is not None) \
                or proc.poll() is not None:
            node_log.flush()
            tail = log_path.read_text().strip().splitlines()[-3:]
            exited = f"exited with code {proc.returncode}" if proc.poll() is not None else "did not subscribe in 120 s"
            raise RuntimeError(f"the node {exited}; see {log_path}" + "".join(f"\n  {line}" for line in tail))
        player.publish_static()
        for _ in range(3):  # like a camera driver: camera_info keeps coming, the first may race discovery
            player.publish_camera_info(seq.K[0], res, res)
            spin(0.2)
        print(f"[demo] playing {len(published)} frames at {rate_hz:g} Hz (holding out {len(held_out)})")
        period = 0.5  # seconds of sequence time between frames
        for i in published:
            player.publish_frame(seq.images, seq.c2w, seq.K, int(i), period_s=period)
            t_next = time.monotonic() + 1.0 / rate_hz
            while time.monotonic() < t_next:
                spin(0.01)
        # let the last windows (and background refinement) finish: wait until the node's diagnostics
        # say it is idle (no frame waiting for TF, no window queued or running, no idle work left)
        idle_reports = []

        def on_diag(msg):
            values = {kv.key: kv.value for st in msg.status for kv in st.values}
            idle_reports.append(values.get("busy") == "False" and values.get("queue_depth") == "0"
                                and values.get("pending_frames") == "0" and values.get("idle_work") == "False")

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        idle = lambda: len(idle_reports) >= 2 and all(idle_reports[-2:]) and got["info"] is not None  # noqa: E731
        if not _wait(idle, timeout_s, spin) or got["info"].num_windows == 0:
            raise RuntimeError("the node did not finish its windows in time; see the node log")
        spin(0.5)
        info = got["info"]
        print(f"[demo] node processed {info.num_windows} windows -> {info.num_gaussians} Gaussians in "
              f"{info.num_chunks} chunks ({info.memory_bytes / 1e6:.1f} MB); "
              f"last window {info.last_window_latency_s:.2f} s end-to-end")

        # held-out views rendered from the map vs the nearest published keyframe
        assert render_cli.wait_for_service(timeout_sec=10.0)
        rows, grid_rows = [], []
        for i in held_out:
            req = RenderView.Request()
            req.header.frame_id = "map"
            T = seq.c2w[i].astype(np.float64)
            req.pose.position.x, req.pose.position.y, req.pose.position.z = (float(v) for v in T[:3, 3])
            q = matrix_to_transform(T, "map", "x", 0).transform.rotation
            req.pose.orientation = q
            req.camera_info = camera_info_msg(seq.K[i], res, res, req.header)
            fut = render_cli.call_async(req)
            _wait(fut.done, 120.0, spin)
            resp = fut.result()
            if resp is None or not resp.success:
                raise RuntimeError(f"render_view failed: {getattr(resp, 'message', 'timeout')}")
            pred = decode_image(resp.image)
            j = nearest_camera(seq.c2w.astype(np.float64), published, T)
            rows.append({"frame": int(i), "psnr_map": psnr_u8(pred, seq.images[i]),
                         "psnr_nearest_keyframe": psnr_u8(seq.images[j], seq.images[i]), "nearest": j})
            _save_png(out / "rendered" / f"heldout_{i:03d}_render.png", pred)
            _save_png(out / "rendered" / f"heldout_{i:03d}_truth.png", seq.images[i])
            grid_rows.append((f"frame {i}", [seq.images[i], pred, seq.images[j]]))
        if grid_rows:  # truth | map render | nearest keyframe, one row per held-out view
            _save_png(out / "rendered" / "heldout_grid.png",
                      image_grid([imgs for _, imgs in grid_rows], ("truth", "map render", "nearest keyframe"),
                                 row_labels=[label for label, _ in grid_rows]))
        if got["rendered"] is not None:
            _save_png(out / "rendered" / "last_window_keyframe.png", decode_image(got["rendered"]))

        fut = save_cli.call_async(SaveMap.Request(path=str(out / "map.ply")))
        _wait(fut.done, 120.0, spin)
        saved = fut.result()
        if saved is None or not saved.success:
            raise RuntimeError(f"save_map failed: {getattr(saved, 'message', 'timeout')}")
        # MapInfo, the chunk stream and the latched ~/map arrive on separate topics: read all three once
        # they describe the same map (a window or refinement step may land between the idle check and here)
        def rebuilt_count() -> int:
            return sum(len(a) for a in replica.chunk_arrays().values())

        def agreed() -> bool:
            if got["map"] is None or got["info"] is None:
                return False
            return rebuilt_count() == got["info"].num_gaussians == len(cloud_to_array(got["map"]))

        _wait(agreed, 15.0, spin)
        info = got["info"]
        rebuilt = rebuilt_count()
        report.update({
            "windows": int(info.num_windows), "keyframes": int(info.num_keyframes),
            "gaussians": int(info.num_gaussians), "chunks": int(info.num_chunks),
            "map_memory_bytes": int(info.memory_bytes), "frames_dropped": int(info.frames_dropped),
            "last_window_latency_s": float(info.last_window_latency_s),
            "last_model_latency_s": float(info.last_model_latency_s),
            "window_latency_s": [per_window[k][0] for k in sorted(per_window)],
            "window_model_s": [per_window[k][1] for k in sorted(per_window)],
            "window_refine_s": [per_window[k][2] for k in sorted(per_window)],
            "window_refine_gain_db": [per_window[k][3] for k in sorted(per_window)],
            **live_quality(info), "node_params": list(cfg.params), "map_refine": cfg.map_refine,
            "refine_rounds": cfg.refine_rounds,
            "model_id": info.model_id,
            "device": info.device, "chunk_messages": got["chunks"], "gaussians_rebuilt_from_chunks": rebuilt,
            "latched_map_points": int(len(cloud_to_array(got["map"]))) if got["map"] is not None else 0,
            "held_out": rows,
            "mean_psnr_map": float(np.mean([r["psnr_map"] for r in rows])),
            "mean_psnr_nearest_keyframe": float(np.mean([r["psnr_nearest_keyframe"] for r in rows])),
            "map_ply": saved.path,
        })
    finally:
        node.destroy_node()
        rclpy.shutdown()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        node_log.close()
    report["node_exit_code"] = proc.returncode
    report["saved_on_shutdown"] = (out / "map_on_shutdown.ply").exists()
    report["wall_time_s"] = time.monotonic() - t_start
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ilrm-ros demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--holdout", type=int, default=5, help="hold back every N-th frame for evaluation")
    parser.add_argument("--rate", type=float, default=4.0, help="frames per second played")
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped one)")
    parser.add_argument("--no-map-refine", action="store_true",
                        help="run the node without background map refinement (refine.map_enabled false)")
    parser.add_argument("--refine-rounds", type=int, default=DemoConfig.refine_rounds,
                        help="rounds of background refinement over the keyframes after the last window "
                             "(refine.map_rounds)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter, e.g. -p refine.window_iters:=50 (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        report = run_demo(out, DemoConfig(args.frames, args.res, args.holdout, args.rate, args.checkpoint,
                                          map_refine=not args.no_map_refine, refine_rounds=args.refine_rounds,
                                          params=args.param))
    except RuntimeError as exc:  # the node failed: one clear message (its log is named), no traceback
        print(f"[demo] failed: {exc}", file=sys.stderr)
        return 1
    print("\n[demo] results")
    print(f"  windows {report['windows']}, keyframes {report['keyframes']}, Gaussians {report['gaussians']} "
          f"in {report['chunks']} chunks, {report['map_memory_bytes'] / 1e6:.1f} MB, device {report['device']}")
    print(f"  chunk messages received {report['chunk_messages']} -> rebuilt {report['gaussians_rebuilt_from_chunks']}"
          f" Gaussians; latched ~/map had {report['latched_map_points']}")
    lat, mod = report["window_latency_s"] or [report["last_window_latency_s"]], \
        report["window_model_s"] or [report["last_model_latency_s"]]
    print(f"  per window ({len(lat)} reported): last keyframe in -> chunks out median {np.median(lat):.2f} s "
          f"(max {max(lat):.2f} s), model median {np.median(mod):.2f} s; frames dropped {report['frames_dropped']}")
    print(f"  held-out PSNR: map {report['mean_psnr_map']:.2f} dB vs nearest keyframe "
          f"{report['mean_psnr_nearest_keyframe']:.2f} dB over {len(report['held_out'])} views")
    q = report["quality"]
    if q["count"]:
        print(f"  live map quality published by the node ({q['mode']}, {q['count']} keyframes scored before their "
              f"window): PSNR mean {q['psnr_mean_db']:.2f} dB, SSIM mean {q['ssim_mean']:.3f}")
    if report["refine_gain_mean_db"] is not None:
        print(f"  window refinement: context PSNR {report['refine_gain_mean_db']:+.2f} dB mean, "
              f"{np.mean(report['window_refine_s']):.2f} s per window")
    refine = "on" if report["map_refine"] else "off"
    print(f"  background map refinement: {refine}; wall time {report['wall_time_s']:.1f} s")
    print(f"  outputs in {out}: map.ply, rendered/*.png, report.json, node.log "
          f"(map saved on shutdown: {report['saved_on_shutdown']})")
    return 0 if report["node_exit_code"] == 0 else 1
