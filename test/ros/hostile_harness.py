"""The robot around the node processes in the hostile-input DDS suite (test_hostile_node.py).

``Harness`` starts two ``ilrm_mapping`` processes (namespaces ``/raw`` with sensor_msgs/Image
and ``/packed`` with CompressedImage, each with its own /diagnostics), and ``World`` plays
the robot: camera, camera_info, /tf, /tf_static, and a user watching diagnostics and /rosout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

import hostile_cases as hc
from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.model.checkpoint import save_checkpoint
from ilrm_ros.model.ilrm import ILRM, load_model_config
from ilrm_ros.ros.conversions import camera_info_msg
from ilrm_ros.ros.player import BASE_TO_CAMERA_LINK, CAMERA_LINK_TO_OPTICAL, base_pose_from_camera, \
    matrix_to_transform
from ilrm_ros.ros.tf_source import TF_QOS, TF_STATIC_QOS

S = 1_000_000_000
NODES = ("raw", "packed")  # namespaces: raw sensor_msgs/Image, and CompressedImage
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _params(ckpt: Path, compressed: bool) -> dict:
    return {"/**": {"ros__parameters": {
        "input": {"use_compressed": compressed, "image_topic": "image", "compressed_topic": "image/compressed",
                  "camera_info_topic": "camera_info", "max_input_pixels": 16_777_216},
        "frames": {"tf_timeout_s": 0.5},
        "keyframes": {"min_translation_m": 0.0, "min_rotation_deg": 0.0},
        "window": {"size": 4, "stride": 2, "max_queue": 8},
        "model": {"checkpoint": str(ckpt), "height": hc.RES, "width": hc.RES, "device": "cpu"},
        "map": {"publish_period_s": 0.0}, "render": {"publish": False},
        "diagnostics": {"period_s": 0.2}}}}


class World(Node):
    """The robot around the nodes: camera, TF, a user watching diagnostics and /rosout."""

    def __init__(self) -> None:
        super().__init__("hostile_world")
        self.pub_image = {ns: self.create_publisher(Image, f"/{ns}/image", RELIABLE) for ns in NODES}
        self.pub_packed = self.create_publisher(CompressedImage, "/packed/image/compressed", RELIABLE)
        self.pub_info = {ns: self.create_publisher(CameraInfo, f"/{ns}/camera_info", RELIABLE) for ns in NODES}
        self.pub_tf = self.create_publisher(TFMessage, "/tf", TF_QOS)
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.lock = threading.Lock()
        self.values: dict[str, dict[str, str]] = {ns: {} for ns in NODES}
        self.diag_time: dict[str, float] = {ns: 0.0 for ns in NODES}
        self.log: list[tuple[float, str, str]] = []
        for ns in NODES:
            self.create_subscription(DiagnosticArray, f"/{ns}/diagnostics",
                                     lambda m, ns=ns: self._on_diag(ns, m), 10)
        rosout_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Log, "/rosout", self._on_log, rosout_qos)
        self.frame_index = 0
        self.rgb = [hc.valid_rgb(i) for i in range(8)]
        f = 0.9 * hc.RES
        self.K = np.array([[f, 0, hc.RES / 2 - 0.5], [0, f, hc.RES / 2 - 0.5], [0, 0, 1]])

    def _on_diag(self, ns: str, msg: DiagnosticArray) -> None:
        with self.lock:
            self.values[ns] = {kv.key: kv.value for st in msg.status for kv in st.values}
            self.diag_time[ns] = time.monotonic()

    def _on_log(self, msg: Log) -> None:
        with self.lock:
            self.log.append((time.monotonic(), msg.name, msg.msg))

    def value(self, ns: str, key: str, default: float = 0.0) -> float:
        with self.lock:
            try:
                return float(self.values[ns].get(key, default))
            except ValueError:
                return default

    def text(self, ns: str, key: str) -> str:
        with self.lock:
            return self.values[ns].get(key, "")

    def lines_since(self, t0: float, ns: str) -> list[str]:
        with self.lock:
            return [m for t, name, m in self.log if t >= t0 and name.startswith(ns)]

    # ---------------------------------------------------------------- valid traffic
    def stamp(self, i: int) -> int:
        return 1000 * S + i * S // 5

    def header(self, stamp_ns: int, frame_id: str = hc.CAMERA_FRAME) -> Header:
        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = ns_to_stamp(stamp_ns)
        return h

    def publish_static(self) -> None:
        self.pub_tf_static.publish(TFMessage(transforms=[
            matrix_to_transform(BASE_TO_CAMERA_LINK, "base_link", "camera_link", 0),
            matrix_to_transform(CAMERA_LINK_TO_OPTICAL, "camera_link", hc.CAMERA_FRAME, 0)]))

    def publish_tf(self, stamp: int, i: int) -> None:
        c2w = np.eye(4)
        c2w[:3, :3] = CAMERA_LINK_TO_OPTICAL[:3, :3]
        c2w[:3, 3] = [0.1 * (i % 40), 0.05 * np.sin(i), 0.3]
        base = base_pose_from_camera(c2w)
        for dt in (-S // 1000, S // 1000):
            self.pub_tf.publish(TFMessage(transforms=[matrix_to_transform(np.eye(4), "map", "odom", stamp + dt),
                                                      matrix_to_transform(base, "odom", "base_link", stamp + dt)]))

    def publish_valid_frame(self, nodes=NODES) -> int:
        """TF, camera_info and an image (raw or PNG) for the next frame; returns its stamp."""
        self.frame_index += 1
        i = self.frame_index
        stamp = self.stamp(i)
        self.publish_tf(stamp, i)
        header = self.header(stamp)
        rgb = self.rgb[i % len(self.rgb)]
        for ns in nodes:
            self.pub_info[ns].publish(camera_info_msg(self.K, hc.RES, hc.RES, header))
            if ns == "raw":
                self.pub_image[ns].publish(Image(header=header, height=hc.RES, width=hc.RES, encoding="rgb8",
                                                 step=3 * hc.RES, data=rgb.tobytes()))
            else:
                self.pub_packed.publish(CompressedImage(header=header, format="png", data=hc.encoded(rgb, "PNG")))
        return stamp


class Harness:
    def __init__(self, tmp: Path) -> None:
        ckpt = tmp / "tiny.pt"
        save_checkpoint(ckpt, ILRM(load_model_config("tiny")), {"note": "untrained, for hostile-input tests"})
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        for ns in NODES:
            params = tmp / f"{ns}.yaml"
            params.write_text(yaml.safe_dump(_params(ckpt, ns == "packed")))
            self.logs[ns] = tmp / f"{ns}.log"
            cmd = [sys.executable, "-m", "ilrm_ros.ros.node", "--params-file", str(params), "--ros-args",
                   "-r", f"__ns:=/{ns}", "-r", f"/diagnostics:=/{ns}/diagnostics"]
            self.procs[ns] = subprocess.Popen(cmd, stdout=open(self.logs[ns], "w"), stderr=subprocess.STDOUT,
                                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
        rclpy.init()
        self.world = World()
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.world)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait(self, pred, timeout: float = 20.0, step: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(step)
        return pred()

    def alive(self, ns: str) -> bool:
        t = time.monotonic()
        return self.procs[ns].poll() is None and self.wait(lambda: self.world.diag_time[ns] > t, 3.0)

    def windows(self, ns: str) -> int:
        return int(self.world.value(ns, "num_windows"))

    def map_state(self, ns: str) -> tuple:
        return tuple(self.world.value(ns, k) for k in ("num_gaussians", "num_windows", "revision"))

    def resume(self, nodes=NODES, frames: int = 4, period_s: float = 0.1) -> dict[str, float]:
        """Publish valid frames; seconds from the first one until each node processed a new window (inf: never)."""
        before = {ns: self.windows(ns) for ns in nodes}
        t0 = time.monotonic()
        for _ in range(frames):
            self.world.publish_valid_frame(nodes)
            time.sleep(period_s)
        out = {}
        for ns in nodes:
            ok = self.wait(lambda: self.windows(ns) > before[ns], 15.0)
            out[ns] = time.monotonic() - t0 if ok else float("inf")
        for ns in nodes:
            self.settle(ns)
        return out

    def idle(self, ns: str) -> bool:
        """No frame waits for TF, no window waits for or runs in the model (as /diagnostics says)."""
        w = self.world
        return (w.text(ns, "pending_frames") == "0" and w.text(ns, "queue_depth") == "0"
                and w.text(ns, "busy") == "False")

    def settle(self, ns: str, quiet_s: float = 0.8, timeout: float = 20.0) -> None:
        """Wait until the node is idle and its map state has not changed for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        last, since = self.map_state(ns), time.monotonic()
        while time.monotonic() < deadline and (time.monotonic() - since < quiet_s or not self.idle(ns)):
            time.sleep(0.1)
            state = self.map_state(ns)
            if state != last:
                last, since = state, time.monotonic()

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.world.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10.0), name
        future = client.call_async(request)
        assert self.wait(future.done, timeout), f"{name} timed out"
        return future.result()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.executor.shutdown()
        self.world.destroy_node()
        rclpy.shutdown()


