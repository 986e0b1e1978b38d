"""The `ilrm_mapping` node: a thin ROS layer over mapping.Mapper.

Inputs: ``image`` (or ``image/compressed``), ``camera_info``, ``/tf``, ``/tf_static``.
Outputs: ``~/chunks`` (GaussianChunk deltas), ``~/map`` (PointCloud2, transient-local),
``~/map_info`` (MapInfo, transient-local), ``~/rendered/{image,depth,camera_info}`` (the
window re-rendered at its newest keyframe), ``~/rendered/novel/{image,depth,camera_info}``
(a pose offset from it, frame ``<camera>_ilrm_novel`` on /tf_static), ``/diagnostics``.
Services: ``~/save_map``, ``~/load_map``, ``~/reset`` (std_srvs/Trigger), ``~/render_view``.

Threads: callbacks only decode and queue (they never wait for TF or the model); a
timer resolves queued frames once TF can answer; the model runs on a WindowWorker
thread, which also publishes its results.
"""
from __future__ import annotations

import argparse
import collections
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from ilrm_ros.config import MappingConfig, apply_flat, config_from_flat, parameter_specs
from ilrm_ros.mapping.frames import CameraInfoError, Frame, PoseError, camera_info_to_K, ns_to_stamp, \
    stamp_to_ns, validate_pose
from ilrm_ros.mapping.image_codec import ImageDecodeError, decode_compressed, decode_image
from ilrm_ros.model.loading import CheckpointError
from ilrm_ros.mapping.mapper import Mapper, RenderedView, WindowResult
from ilrm_ros.mapping.pose_buffer import PendingQueue
from ilrm_ros.mapping.scheduler import WindowWorker
from ilrm_ros.msg import GaussianChunk, MapInfo
from ilrm_ros.ros.conversions import array_to_cloud, camera_info_msg, make_map_info, update_to_msg
from ilrm_ros.mapping.pose_buffer import make_transform
from ilrm_ros.ros.tf_source import TF_STATIC_QOS, make_tf_source
from ilrm_ros.srv import LoadMap, RenderView, SaveMap

# Parameters that may change while the node runs; everything else is fixed at start-up.
RUNTIME_PARAMETERS = ("keyframes.", "window.min_period_s", "map.publish_period_s", "map.save_path",
                      "map.save_on_shutdown", "render.", "diagnostics.stale_after_s", "frames.tf_timeout_s")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A window can change a hundred chunks or more at once; a subscriber rebuilding the map must
# not lose any, so the chunk stream keeps a deep reliable history (subscribers should match
# it). The writer holds up to `depth` messages (typically ~50 kB each, at most 1 MiB), so the
# depth bounds that memory too.
CHUNK_QOS = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)


class Counters:
    """Thread-safe named counters (drops by reason, received messages)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: collections.Counter[str] = collections.Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)


def _descriptor(spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.special:
        desc.additional_constraints = f"{spec.range[0]}..{spec.range[1]} or special value(s) {list(spec.special)}"
    lo, hi = spec.declared_range()
    if lo is not None and hi is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    desc.read_only = not any(spec.name.startswith(p) for p in RUNTIME_PARAMETERS)
    return desc


class MappingNode(Node):
    def __init__(self, mapper: Mapper | None = None, **node_kwargs) -> None:
        super().__init__("ilrm_mapping", **node_kwargs)
        pin_malloc_thresholds()
        self.specs = {s.name: s for s in parameter_specs()}
        for spec in self.specs.values():
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.cfg: MappingConfig = config_from_flat({n: self.get_parameter(n).value for n in self.specs})
        self.add_on_set_parameters_callback(self._on_set_parameters)
        log = self.get_logger()

        self.counters = Counters()
        self.mapper = mapper or Mapper(self.cfg)
        log.info(f"iLRM model {self.mapper.model_id} on {self.mapper.device}; "
                 f"window {self.cfg.window.size} keyframes at {self.cfg.model.width}x{self.cfg.model.height}")
        self.map_frame = self.cfg.frames.map_frame
        self._camera_info: CameraInfo | None = None
        self._last = {"image": None, "camera_info": None, "tf_ok": None}
        self._pending = PendingQueue(capacity=self.cfg.input.max_pending, timeout_s=self.cfg.frames.tf_timeout_s)
        self._resolve_lock = threading.Lock()  # one resolver at a time: the mapper's input side is single-threaded
        self._resolve_again = False
        self._latency = collections.deque(maxlen=50)
        self.window_timings: collections.deque[dict] = collections.deque(maxlen=1000)
        self._last_result: WindowResult | None = None
        self._last_map_publish = -math.inf
        self._map_dirty = False
        self._novel_tf_sent: str | None = None

        input_group = MutuallyExclusiveCallbackGroup()
        service_group = MutuallyExclusiveCallbackGroup()
        timer_group = MutuallyExclusiveCallbackGroup()
        self.tf = make_tf_source(self)
        self.tf.on_update = self._on_tf_update  # place waiting frames as soon as their TF arrives
        log.info(f"poses from {self.tf.name}")

        qos = qos_profile_sensor_data if self.cfg.input.qos == "sensor_data" else RELIABLE
        qos = QoSProfile(depth=self.cfg.input.queue_depth, reliability=qos.reliability, history=qos.history)
        if self.cfg.input.use_compressed:
            self.create_subscription(CompressedImage, self.cfg.input.compressed_topic, self._on_compressed, qos,
                                     callback_group=input_group)
        else:
            self.create_subscription(Image, self.cfg.input.image_topic, self._on_image, qos,
                                     callback_group=input_group)
        info_qos = QoSProfile(depth=5, reliability=qos.reliability)
        self.create_subscription(CameraInfo, self.cfg.input.camera_info_topic, self._on_camera_info, info_qos,
                                 callback_group=input_group)

        self.pub_chunks = self.create_publisher(GaussianChunk, "~/chunks", CHUNK_QOS)
        self.pub_map = self.create_publisher(PointCloud2, "~/map", LATCHED)
        self.pub_info = self.create_publisher(MapInfo, "~/map_info", LATCHED)
        self.pub_render = {
            name: (self.create_publisher(Image, f"~/rendered/{sub}image", RELIABLE),
                   self.create_publisher(Image, f"~/rendered/{sub}depth", RELIABLE),
                   self.create_publisher(CameraInfo, f"~/rendered/{sub}camera_info", RELIABLE))
            for name, sub in (("keyframe", ""), ("novel", "novel/"))}
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)

        self.create_service(SaveMap, "~/save_map", self._srv_save, callback_group=service_group)
        self.create_service(LoadMap, "~/load_map", self._srv_load, callback_group=service_group)
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=service_group)
        self.create_service(RenderView, "~/render_view", self._srv_render, callback_group=service_group)

        self.worker = WindowWorker(self.mapper.process_window, self._on_window_result, self.cfg.window.max_queue)
        self.create_timer(self.tf.poll_period_s, self._resolve_pending, callback_group=timer_group)
        # diagnostics wait for the map lock while a window is fused: keep them off the TF resolver's group
        self.create_timer(self.cfg.diagnostics.period_s, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_info()
        log.info("ready: waiting for images on '%s' and camera_info on '%s' (map frame '%s')" % (
            self.resolve_topic_name(self.cfg.input.compressed_topic if self.cfg.input.use_compressed
                                    else self.cfg.input.image_topic),
            self.resolve_topic_name(self.cfg.input.camera_info_topic), self.map_frame))

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate changes against the parameter table; apply runtime-tunable ones live."""
        values = {p.name: p.value for p in params if p.name != "use_sim_time"}
        try:
            if hasattr(self, "cfg"):
                apply_flat(self.cfg, values)
                self.mapper.update_keyframe_policy()
            else:
                config_from_flat(values)
        except (KeyError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ input callbacks (never block)
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg
        self._last["camera_info"] = time.monotonic()

    def _on_image(self, msg: Image) -> None:
        self._accept(msg.header, lambda: decode_image(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._accept(msg.header, lambda: decode_compressed(msg))

    def _accept(self, header: Header, decode) -> None:
        now = time.monotonic()
        self._last["image"] = now
        self.counters.add("images_received")
        log = self.get_logger()
        try:
            rgb = decode()
        except ImageDecodeError as exc:
            self.counters.add("dropped_decode_error")
            log.warning(f"skipping image: {exc}", throttle_duration_sec=5.0)
            return
        info = self._camera_info
        if info is None:
            self.counters.add("dropped_no_camera_info")
            log.warning("skipping image: no camera_info received yet on "
                        f"'{self.resolve_topic_name(self.cfg.input.camera_info_topic)}'", throttle_duration_sec=5.0)
            return
        try:
            K = camera_info_to_K(info, rgb.shape[:2])
        except CameraInfoError as exc:
            self.counters.add("dropped_bad_camera_info")
            log.warning(f"skipping image: {exc}", throttle_duration_sec=5.0)
            return
        frame_id = self.cfg.frames.camera_frame or header.frame_id
        if not frame_id:
            self.counters.add("dropped_no_frame_id")
            log.warning("skipping image: empty header.frame_id and no frames.camera_frame set",
                        throttle_duration_sec=5.0)
            return
        frame = Frame(rgb=rgb, K=K, stamp_ns=stamp_to_ns(header.stamp), frame_id=frame_id)
        if self._pending.push((frame, now), frame.stamp_ns, self._now_ns()) is not None:
            self.counters.add("dropped_queue_full")
            log.warning("TF wait queue full: dropped the oldest frame(s)", throttle_duration_sec=5.0)
        self._resolve_pending()  # usually TF is already there: no need to wait for the timer

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ------------------------------------------------------------------ TF resolution
    def _on_tf_update(self) -> None:
        """A TF message arrived: place the frames that waited for it (cheap when none wait)."""
        if len(self._pending):
            self._resolve_pending()

    def _resolve_pending(self) -> None:
        """Place queued frames whose TF is available (timer, and right after a frame arrives).

        Never waits: when another thread is resolving, this call returns and that thread
        makes one more pass (``_resolve_again``), so a TF message that arrives meanwhile is
        not left to the next timer tick.
        """
        self._resolve_again = True
        while self._resolve_again:
            if not self._resolve_lock.acquire(blocking=False):
                return
            try:
                self._resolve_again = False
                self._resolve_pending_locked()
            finally:
                self._resolve_lock.release()

    def _resolve_pending_locked(self) -> None:
        self._pending.timeout_ns = int(self.cfg.frames.tf_timeout_s * 1e9)
        ready, expired = self._pending.pop_ready(
            lambda item, stamp: self.tf.lookup(self.map_frame, item[0].frame_id, stamp), self._now_ns())
        log = self.get_logger()
        if expired:
            self.counters.add("dropped_tf_timeout", len(expired))
            f = expired[-1][0]
            log.warning(f"no TF {self.map_frame} <- {f.frame_id} at t={f.stamp_ns / 1e9:.3f} within "
                        f"{self.cfg.frames.tf_timeout_s:.1f} s: dropped {len(expired)} frame(s)",
                        throttle_duration_sec=5.0)
        for (frame, arrival), T in ready:
            self._last["tf_ok"] = time.monotonic()
            try:
                frame.c2w = validate_pose(T)
            except PoseError as exc:
                self.counters.add("dropped_bad_pose")
                log.warning(f"skipping frame with unusable pose: {exc}", throttle_duration_sec=5.0)
                continue
            window = self.mapper.add_frame(frame, arrival_time=arrival)
            if window is not None and not self.worker.submit(window):
                log.warning("model is behind: coalesced a waiting window into the newest one",
                            throttle_duration_sec=10.0)

    # ------------------------------------------------------------------ results (worker thread)
    def _on_window_result(self, result: WindowResult) -> None:
        """Publish a processed window: chunks first (latency ends there), then renders, map, info."""
        header = Header(frame_id=self.map_frame)
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(result.stamp_ns)
        t0 = time.monotonic()
        for part in result.update.transport_parts():
            self.pub_chunks.publish(update_to_msg(part, header))
        t1 = time.monotonic()
        result.timings["publish_chunks_s"] = t1 - t0
        result.timings["end_to_end_s"] = t1 - result.window.trigger_time
        self._latency.append(result.timings["end_to_end_s"])
        self._last_result = result
        self._map_dirty = True
        if self.cfg.render.publish:
            for view in self.mapper.window_renders(result):
                self._publish_render(view, header.stamp)
        self._maybe_publish_map()
        self._publish_info()
        if result.warning:
            self.get_logger().warning(result.warning)
        result.gaussians = None  # do not keep the window's tensors alive
        self.window_timings.append(dict(result.timings, window_id=result.window.window_id,
                                        gaussians=result.num_gaussians_window))
        t = result.timings
        self.get_logger().info(
            f"window {result.window.window_id} (keyframes {result.window.keyframe_ids}): "
            f"{result.num_gaussians_window} Gaussians; model {t['model_s']:.2f} s, fuse {t['integrate_s']:.2f} s, "
            f"chunks out {t['end_to_end_s']:.2f} s after the last keyframe (queued {t['queued_s']:.2f} s), "
            f"render {t.get('render_s', 0.0):.2f} s; map {self.mapper.stats().get('num_gaussians', 0)} Gaussians",
            throttle_duration_sec=2.0)

    def _publish_render(self, view: RenderedView, stamp) -> None:
        from ilrm_ros.mapping.image_codec import encode_image

        camera_frame = self._last_result.window.keyframes[-1].frame_id if self._last_result else "camera"
        frame_id = camera_frame if view.name == "keyframe" else f"{camera_frame}_ilrm_novel"
        if view.name == "novel":
            self._send_novel_tf(camera_frame)
        header = Header(frame_id=frame_id, stamp=stamp)
        pub_img, pub_depth, pub_info = self.pub_render[view.name]
        pub_img.publish(encode_image(view.rgb, "rgb8", header=header, msg=Image()))
        pub_depth.publish(encode_image(view.depth, "32FC1", header=header, msg=Image()))
        pub_info.publish(camera_info_msg(view.K, view.rgb.shape[1], view.rgb.shape[0], header))

    def _send_novel_tf(self, camera_frame: str) -> None:
        """The novel view is a fixed offset of the camera: announce it once on /tf_static."""
        if self._novel_tf_sent == camera_frame:
            return
        ts = TransformStamped()
        ts.header.frame_id = camera_frame
        ts.header.stamp = self.get_clock().now().to_msg()
        ts.child_frame_id = f"{camera_frame}_ilrm_novel"
        ox, oy, oz = self.cfg.render.novel_offset
        ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = ox, oy, oz
        ts.transform.rotation.w = 1.0
        self.pub_tf_static.publish(TFMessage(transforms=[ts]))
        self._novel_tf_sent = camera_frame

    def _maybe_publish_map(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._map_dirty or now - self._last_map_publish < self.cfg.map.publish_period_s):
            return
        rows = self.mapper.all_rows()
        header = Header(frame_id=self.map_frame)
        header.stamp = self.get_clock().now().to_msg()
        self.pub_map.publish(array_to_cloud(rows, header))
        self._last_map_publish = now
        self._map_dirty = False

    def _publish_info(self) -> None:
        header = Header(frame_id=self.map_frame)
        header.stamp = self.get_clock().now().to_msg()
        res = self._last_result
        drops = sum(v for k, v in self.counters.snapshot().items() if k.startswith("dropped_"))
        self.pub_info.publish(make_map_info(
            header=header, map_id=self.mapper.map.map_id, stats=self.mapper.stats(), model_id=self.mapper.model_id,
            checkpoint_id=self.mapper.model_id, device=str(self.mapper.device),
            last_model_latency_s=res.timings["model_s"] if res else 0.0,
            last_window_latency_s=res.timings.get("end_to_end_s", 0.0) if res else 0.0, frames_dropped=drops))

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        self._maybe_publish_map()
        now = time.monotonic()
        stale = self.cfg.diagnostics.stale_after_s
        c = self.counters.snapshot()
        w = self.worker.stats
        statuses = []

        def age(key):
            t = self._last[key]
            return math.inf if t is None else now - t

        problems = [f"no {what} for {age(key):.0f} s" if age(key) != math.inf else f"no {what} received yet"
                    for key, what in (("image", "images"), ("camera_info", "camera_info"), ("tf_ok", "TF"))
                    if age(key) > stale]
        if problems and c.get("images_received", 0) > 0:
            self.get_logger().warning("; ".join(problems), throttle_duration_sec=stale)
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        statuses.append(_status("ilrm_mapping: input", level, "; ".join(problems) or "receiving", {
            **{k: v for k, v in c.items()}, "tf_source": self.tf.name,
            "pending_frames": len(self._pending), "seconds_since_image": age("image"),
            "seconds_since_camera_info": age("camera_info"), "seconds_since_tf": age("tf_ok")}))
        lat = list(self._latency)
        level = DiagnosticStatus.ERROR if w.failed and w.last_error and not w.processed else \
            DiagnosticStatus.WARN if w.failed or w.coalesced else DiagnosticStatus.OK
        statuses.append(_status("ilrm_mapping: model", level, w.last_error or "ok", {
            "device": str(self.mapper.device), "model_id": self.mapper.model_id, "windows_processed": w.processed,
            "windows_coalesced": w.coalesced, "windows_failed": w.failed, "out_of_memory": w.out_of_memory,
            "queue_depth": w.queue_depth, "busy": w.busy,
            "window_latency_mean_s": float(np.mean(lat)) if lat else 0.0,
            "window_latency_max_s": float(np.max(lat)) if lat else 0.0}))
        statuses.append(_status("ilrm_mapping: map", DiagnosticStatus.OK, "ok", self.mapper.stats()))
        arr = DiagnosticArray(status=statuses)
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    # ------------------------------------------------------------------ services
    def _srv_save(self, req, resp):
        path = req.path or self.cfg.map.save_path
        if not path:
            resp.success, resp.message = False, "no path given and map.save_path is empty"
            return resp
        try:
            written = self.mapper.save(path)
        except Exception as exc:  # noqa: BLE001 - report to the caller, keep running
            resp.success, resp.message = False, f"save failed: {exc}"
            return resp
        resp.success, resp.path = True, str(Path(written).resolve())
        resp.num_gaussians = int(self.mapper.stats().get("num_gaussians", 0))
        resp.message = f"saved {resp.num_gaussians} Gaussians"
        return resp

    def _srv_load(self, req, resp):
        try:
            update = self.mapper.load(req.path)
        except Exception as exc:  # noqa: BLE001
            resp.success, resp.message = False, f"load failed (map unchanged): {exc}"
            return resp
        self._publish_whole_update(update)
        resp.success = True
        resp.num_gaussians = int(self.mapper.stats().get("num_gaussians", 0))
        resp.message = f"loaded {resp.num_gaussians} Gaussians from {req.path}"
        return resp

    def _publish_whole_update(self, update) -> None:
        """After reset/load: the chunk delta, then the latched map and info, right away."""
        header = Header(frame_id=self.map_frame)
        header.stamp = self.get_clock().now().to_msg()
        for part in update.transport_parts():
            self.pub_chunks.publish(update_to_msg(part, header))
        self._map_dirty = True
        self._maybe_publish_map(force=True)
        self._publish_info()

    def _srv_reset(self, req, resp):
        self.worker.wait_idle(30.0)
        self._publish_whole_update(self.mapper.reset())
        resp.success, resp.message = True, "map and keyframes cleared"
        return resp

    def _srv_render(self, req, resp):
        info = req.camera_info
        try:
            K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
            if not (info.width > 0 and info.height > 0 and K[0, 0] > 0 and K[1, 1] > 0):
                raise ValueError("camera_info needs width, height and k with fx, fy > 0")
            p, q = req.pose.position, req.pose.orientation
            c2w = make_transform((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
            frame = req.header.frame_id or self.map_frame
            if frame != self.map_frame:
                T = self.tf.lookup(self.map_frame, frame, 0)
                if T is None:
                    raise ValueError(f"no TF {self.map_frame} <- {frame}")
                c2w = T @ c2w
            c2w = validate_pose(c2w)
            view = self.mapper.render(c2w, K, int(info.width), int(info.height))
        except Exception as exc:  # noqa: BLE001
            resp.success, resp.message = False, f"render failed: {exc}"
            return resp
        from ilrm_ros.mapping.image_codec import encode_image

        header = Header(frame_id=req.header.frame_id or self.map_frame, stamp=req.header.stamp)
        resp.image = encode_image(view.rgb, "rgb8", header=header, msg=Image())
        resp.depth = encode_image(view.depth, "32FC1", header=header, msg=Image())
        resp.success, resp.message = True, "ok"
        return resp

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Finish the running window, then save the map when configured. Never loses the map."""
        self.worker.stop(timeout=60.0)
        path = self.cfg.map.save_path
        if path and self.cfg.map.save_on_shutdown and self.mapper.stats().get("num_gaussians", 0) > 0:
            try:
                self.mapper.save(path)
                self.get_logger().info(f"map saved to {path}")
            except Exception as exc:  # noqa: BLE001
                self.get_logger().error(f"saving the map on shutdown failed: {exc}")


def pin_malloc_thresholds(mmap_threshold: int = 4 << 20) -> bool:
    """Keep glibc from growing the heap with big, short-lived buffers (maps, clouds).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which
    multi-megabyte message buffers come from the heap and fragment it: the node's RSS then
    crept up with every ~/map publish even with a flat map. Pinning the threshold (which
    also disables the dynamic adjustment) makes those buffers go back to the OS when freed.
    Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and \
            bool(libc.mallopt(m_trim_threshold, int(2 * mmap_threshold)))
    except (OSError, AttributeError):
        return False


def _status(name: str, level, message: str, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id="ilrm_mapping",
                            values=[KeyValue(key=str(k), value=f"{v:.4g}" if isinstance(v, float) else str(v))
                                    for k, v in values.items()])


def main(argv: list[str] | None = None) -> int:
    """Console entry point. On the pip route: ``ilrm_mapping --params-file config/mapping.yaml``
    (the same as ``--ros-args --params-file ...``); any ``--ros-args`` are passed through."""
    argv = list(sys.argv if argv is None else argv)
    ros_args = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    parser = argparse.ArgumentParser(prog="ilrm_mapping", description=__doc__.split("\n")[0])
    parser.add_argument("--params-file", help="ROS 2 parameter YAML (default: the package's config/mapping.yaml)")
    parser.add_argument("--no-default-params", action="store_true", help="do not load config/mapping.yaml")
    args, unknown = parser.parse_known_args(argv[1:])
    if not ros_args and not args.no_default_params:
        from ilrm_ros.config import default_params_file

        params = args.params_file or str(default_params_file())
        ros_args = ["--ros-args", "--params-file", params]
    elif args.params_file:
        ros_args = ["--ros-args", "--params-file", args.params_file] + ros_args[1:]
    rclpy.init(args=[argv[0], *unknown, *ros_args])
    node = None
    try:
        try:
            node = MappingNode()
        except CheckpointError as exc:  # one clear line naming the file and what was found, no traceback
            rclpy.logging.get_logger("ilrm_mapping").fatal(f"cannot load the model: {exc}")
            return 2
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
