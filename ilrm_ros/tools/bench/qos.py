"""`python -m ilrm_ros.tools.bench.qos`: how many camera images survive DDS, by rate, size and QoS.

A publisher *process* (like a camera driver: reliable writer, KEEP_LAST 10) sends
``sensor_msgs/Image`` rgb8 frames at a fixed rate; this process subscribes the way the
mapping node does (``ros.qos.input_qos``, a MultiThreadedExecutor, a mutually exclusive
input group, the node's decode in the callback) and counts what arrived. Each setting is
a reader QoS plus the Fast DDS transport environment of *both* processes
(``FASTDDS_BUILTIN_TRANSPORTS``). Writes JSON and prints delivered/sent per cell::

    python -m ilrm_ros.tools.bench.qos --out outputs/bench/qos.json
    python -m ilrm_ros.tools.bench.qos --rates 30 --sizes 1920x1080 --settings default fixed

Stamps are ``start + seq / rate``, so the receiver also reports what the node's stamp-gap
estimator (``mapping.delivery.DeliveryTracker``) infers without knowing ``sent``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

START_NS = 1_000_000_000_000


@dataclass(frozen=True)
class Setting:
    """One column of the table: reader QoS + Fast DDS builtin transports (both sides)."""

    name: str
    qos: str
    depth: int
    transports: str  # FASTDDS_BUILTIN_TRANSPORTS, "" = Fast DDS default (SHM + UDPv4)
    profile: str = ""  # a Fast DDS XML profile file (FASTDDS_DEFAULT_PROFILES_FILE), relative to the package root


SETTINGS = {
    # the node's defaults before issue 12: best effort, KEEP_LAST 5, Fast DDS's default transports
    "default": Setting("default", "sensor_data", 5, ""),
    # after: input.qos auto resolves to reliable for a reliable camera; KEEP_LAST 10
    "fixed": Setting("fixed", "reliable", 10, ""),
    # after, with the documented transport profile for large images (both processes)
    "fixed_xml": Setting("fixed_xml", "reliable", 10, "", "config/fastdds_large_images.xml"),
    # a best-effort camera (auto keeps best effort) with the transport profile
    "best_effort_xml": Setting("best_effort_xml", "sensor_data", 10, "", "config/fastdds_large_images.xml"),
    # exploration of the causes
    "reliable": Setting("reliable", "reliable", 5, ""),
    "reliable_depth30": Setting("reliable_depth30", "reliable", 30, ""),
    "best_effort_udp": Setting("best_effort_udp", "sensor_data", 5, "UDPv4"),
    "best_effort_shm": Setting("best_effort_shm", "sensor_data", 5, "SHM"),
    "best_effort_large_data": Setting("best_effort_large_data", "sensor_data", 5, "LARGE_DATA"),
    "reliable_large_data": Setting("reliable_large_data", "reliable", 5, "LARGE_DATA"),
}


def _parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def _env(setting: Setting) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if setting.transports:
        env["FASTDDS_BUILTIN_TRANSPORTS"] = setting.transports
    if setting.profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(__file__).resolve().parents[3] / setting.profile)
    return env


# --------------------------------------------------------------------------- publisher process


def _jpeg_frame(width: int, height: int) -> bytes:
    """A camera-like JPEG (smooth gradients and some texture, quality 90)."""
    import io

    import numpy as np
    from PIL import Image as PILImage

    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 24, (height, width), dtype=np.uint8)
    rgb = np.stack([(x * 255 // max(width, 1)), (y * 255 // max(height, 1)), (x + y) % 256], -1).astype(np.uint8)
    rgb[..., 2] = rgb[..., 2] // 2 + noise
    out = io.BytesIO()
    PILImage.fromarray(rgb).save(out, format="JPEG", quality=90)
    return out.getvalue()


def publish(topic: str, rate: float, count: int, width: int, height: int, wait_s: float = 20.0,
            compressed: bool = False) -> dict:
    """Publish ``count`` rgb8 images (or JPEGs) at ``rate`` once a subscriber matched; returns counts and timing."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node("qos_bench_camera")
    msg_type = CompressedImage if compressed else Image
    pub = node.create_publisher(msg_type, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + wait_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # let both sides finish matching (reliable writers need the reader's locators)
    if compressed:
        msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=_jpeg_frame(width, height))
    else:
        data = np.random.default_rng(0).integers(0, 255, size=width * height * 3, dtype=np.uint8).tobytes()
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=data)
    msg.header.frame_id = "camera_optical_frame"
    period = 1.0 / rate
    t0 = time.monotonic()
    sent = 0
    for seq in range(count):
        target = t0 + seq * period
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = START_NS + int(round(seq * period * 1e9))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        pub.publish(msg)
        sent += 1
    elapsed = time.monotonic() - t0
    time.sleep(1.0)  # reliable writers repair lost fragments after the last publish
    node.destroy_node()
    rclpy.shutdown()
    return {"sent": sent, "publish_s": elapsed, "achieved_hz": sent / elapsed if elapsed > 0 else 0.0}


# --------------------------------------------------------------------------- subscriber (this process)


def _receiver_script(setting: Setting, topic: str, rate: float, count: int, width: int, height: int,
                     timeout_s: float, compressed: bool = False) -> dict:
    """One cell, in a subprocess of its own (the transport environment is per process)."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image

    from ilrm_ros.mapping.delivery import DeliveryTracker
    from ilrm_ros.io.frames import stamp_to_ns
    from ilrm_ros.io.compressed_image import decode_compressed
    from ilrm_ros.io.image_codec import decode_image
    from ilrm_ros.ros.qos import input_qos

    rclpy.init()
    node = rclpy.create_node("qos_bench_mapper")
    seqs: set[int] = set()
    tracker = DeliveryTracker()
    lock = threading.Lock()
    period_ns = 1e9 / rate

    def on_image(msg, info) -> None:
        if compressed:  # the node's per-image cost in the callback (JPEG decoded for a 128-px model)
            decode_compressed(msg, min_size=(128, 128))
        else:
            decode_image(msg)
        stamp = stamp_to_ns(msg.header.stamp)
        with lock:
            seqs.add(int(round((stamp - START_NS) / period_ns)))
            tracker.observe(stamp, int(info.get("publication_sequence_number", 0) or 0))

    node.create_subscription(CompressedImage if compressed else Image, topic, on_image,
                             input_qos(setting.qos, setting.depth),
                             callback_group=MutuallyExclusiveCallbackGroup())
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    cmd = [sys.executable, "-m", "ilrm_ros.tools.bench.qos", "--publisher", "--topic", topic, "--rates", str(rate),
           "--count", str(count), "--sizes", f"{width}x{height}"] + (["--compressed"] if compressed else [])
    proc = subprocess.run(cmd, env=_env(setting), capture_output=True, text=True, timeout=timeout_s)
    pub = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"sent": 0}
    time.sleep(0.5)
    with lock:
        received = len(seqs)
        est = tracker.snapshot()
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    sent = int(pub.get("sent", 0))
    return {"setting": asdict(setting), "rate_hz": rate, "width": width, "height": height, "compressed": compressed,
            "bytes_per_image": width * height * 3, "sent": sent, "received": received,
            "delivered": received / sent if sent else 0.0, "publisher": pub,
            "estimated_delivery": est.get("delivery_ratio"), "publisher_error": proc.stderr[-400:]
            if proc.returncode else ""}


def run_cell(setting: Setting, rate: float, size: tuple[int, int], seconds: float, domain: int,
             compressed: bool = False) -> dict:
    """Run one (setting, rate, size) cell in a fresh receiver process; returns its result."""
    count = max(15, int(round(rate * seconds)))
    env = _env(setting)
    env["ROS_DOMAIN_ID"] = str(domain)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cmd = [sys.executable, "-m", "ilrm_ros.tools.bench.qos", "--receiver", "--settings", setting.name,
           "--rates", str(rate), "--sizes", f"{size[0]}x{size[1]}", "--count", str(count)] + \
        (["--compressed"] if compressed else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"setting": asdict(setting), "rate_hz": rate, "width": size[0], "height": size[1], "sent": 0,
                "received": 0, "delivered": 0.0, "error": proc.stderr[-600:]}


def format_table(results: list[dict]) -> str:
    """delivered/sent per (size, rate) row and setting column."""
    settings = list(dict.fromkeys(r["setting"]["name"] for r in results))
    rows = list(dict.fromkeys((r["width"], r["height"], r["rate_hz"]) for r in results))
    cell = {(r["width"], r["height"], r["rate_hz"], r["setting"]["name"]): r for r in results}
    lines = [f"{'image':>10} {'rate':>6} | " + " | ".join(f"{s:>24}" for s in settings)]
    lines.append("-" * len(lines[0]))
    for w, h, rate in rows:
        parts = []
        for s in settings:
            r = cell.get((w, h, rate, s))
            parts.append(f"{r['received']:>5}/{r['sent']:<5} {100 * r['delivered']:5.1f}%".rjust(24) if r else "")
        lines.append(f"{w}x{h:<5} {rate:>4.0f}Hz | " + " | ".join(parts))
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ilrm_ros.tools.bench.qos", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 30.0, 200.0])
    parser.add_argument("--sizes", nargs="+", default=["128x128", "640x480", "1920x1080"])
    parser.add_argument("--settings", nargs="+", default=["default", "fixed", "fixed_xml", "best_effort_xml"],
                        choices=sorted(SETTINGS))
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per cell")
    parser.add_argument("--out", default=None, help="JSON output path")
    parser.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw rgb8")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="/qos_bench/image", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publisher:
        print(json.dumps(publish(args.topic, args.rates[0], args.count, *_parse_size(args.sizes[0]),
                                 compressed=args.compressed)))
        return 0
    if args.receiver:
        print(json.dumps(_receiver_script(SETTINGS[args.settings[0]], args.topic, args.rates[0], args.count,
                                          *_parse_size(args.sizes[0]), timeout_s=170, compressed=args.compressed)))
        return 0
    domain = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0) or 42
    results = []
    for size in args.sizes:
        for rate in args.rates:
            for name in args.settings:
                r = run_cell(SETTINGS[name], rate, _parse_size(size), args.seconds, domain, args.compressed)
                results.append(r)
                print(f"{size} {rate:.0f} Hz {name}: {r['received']}/{r['sent']}", flush=True)
    print(format_table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                                              "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
