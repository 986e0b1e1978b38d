"""The `ilrm_mapping` node: a thin ROS layer over mapping.Mapper.

Inputs: ``image`` (or ``image/compressed``), ``camera_info``, ``/tf``, ``/tf_static``.
Outputs: ``~/chunks`` (GaussianChunk deltas), ``~/map`` (PointCloud2, transient-local),
``~/map_info`` (MapInfo, transient-local), ``~/rendered/{image,depth,camera_info}`` (the
window re-rendered at its newest keyframe), ``~/rendered/novel/{image,depth,camera_info}``
(a pose offset from it, frame ``<camera>_ilrm_novel`` on /tf_static), ``/diagnostics``,
``~/occupancy/{grid,voxels,esdf}`` and ``~/query_occupancy`` (``ros/occupancy_outputs.py``).
Services: ``~/save_map``, ``~/load_map``, ``~/reset`` (std_srvs/Trigger), ``~/render_view``.

Threads: callbacks only decode and queue (they never wait for TF or the model); a
timer resolves queued frames once TF can answer; the model runs on a WindowWorker
thread, which also publishes its results.

Input goes through the ROS-free input stage (``mapping.input_stage``); every drop is
counted by reason and named once per cause and throttle window (``mapping.drop_report``);
every callback runs under a last-resort guard (``ros.guard``) so no exception reaches the
executor; parameter sets are validated as a whole and applied atomically (``ros.parameters``).
"""
from __future__ import annotations

import argparse
import collections
import logging
import math
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from ilrm_ros.mapping.config import MappingConfig, config_from_flat, parameter_specs
from ilrm_ros.mapping.delivery import DeliveryTracker
from ilrm_ros.io.drop_report import Counters, DropReporter  # noqa: F401 - Counters re-exported
from ilrm_ros.io.frames import ns_to_stamp, stamp_to_ns
from ilrm_ros.io.input_stage import InputLimits, InputRejected, InputStage, Rejection, place
from ilrm_ros.model.loading import CheckpointError
from ilrm_ros.mapping.mapper import Mapper, WindowResult
from ilrm_ros.io.pending_queue import PendingQueue
from ilrm_ros.mapping.mapper import policy_kwargs
from ilrm_ros.mapping.keyframes import KeyframePolicyConfig
from ilrm_ros.mapping.scheduler import WindowWorker
from ilrm_ros.msg import GaussianChunk, MapInfo
from ilrm_ros.ros import diagnostics
from ilrm_ros.ros.conversions import array_to_cloud, make_map_info, update_to_msg
from ilrm_ros.ros.guard import CallbackGuard, failed_response
from ilrm_ros.ros.log_bridge import bridge_python_logging, ros_log
from ilrm_ros.ros.parameters import RUNTIME_PARAMETERS, ParameterGate, descriptor, parameter_values  # noqa: F401
from ilrm_ros.ros.camera_input import ImageSubscription
from ilrm_ros.ros.qos import CHUNK_QOS, LATCHED, RELIABLE, camera_info_qos  # noqa: F401 - re-exported
from ilrm_ros.ros.memory import pin_malloc_thresholds
from ilrm_ros.ros.outputs import publish_render
from ilrm_ros.ros.services import MapServices
from ilrm_ros.ros.occupancy_outputs import OccupancyOutputs
from ilrm_ros.ros.tf_source import TF_STATIC_QOS, make_tf_source
from ilrm_ros.srv import LoadMap, RenderView, SaveMap



class MappingNode(Node):
    def __init__(self, mapper: Mapper | None = None, **node_kwargs) -> None:
        super().__init__("ilrm_mapping", **node_kwargs)
        pin_malloc_thresholds()
        self.specs = {s.name: s for s in parameter_specs()}
        for spec in self.specs.values():
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.cfg: MappingConfig = config_from_flat(parameter_values(self.get_parameter(n) for n in self.specs))
        self._gate = ParameterGate(self.cfg, self._prepare_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        log = self.get_logger()
        bridge_python_logging(log)  # the core's `logging` lines reach /rosout with their severity

        self.reporter = DropReporter(self._emit, window_s=5.0)
        self.counters = self.reporter.counters
        self.guard = CallbackGuard(self.reporter, log.error)
        self.delivery = DeliveryTracker()
        self.mapper = mapper or Mapper(self.cfg)
        log.info(f"iLRM model {self.mapper.model_id} on {self.mapper.device}; "
                 f"window {self.cfg.window.size} keyframes at {self.cfg.model.width}x{self.cfg.model.height}")
        self.map_frame = self.cfg.frames.map_frame
        image_topic = self.resolve_topic_name(self.cfg.input.compressed_topic if self.cfg.input.use_compressed
                                              else self.cfg.input.image_topic)
        rectified = {"always": True, "never": False}.get(self.cfg.input.rectified, "rect" in image_topic)
        self.stage = InputStage(InputLimits(self.cfg.input.max_input_pixels, self.cfg.input.max_decoded_bytes),
                                camera_frame=self.cfg.frames.camera_frame, rectified=rectified,
                                decode_size=(m.height, m.width) if (m := self.cfg.model).height and m.width else None)
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
        self.tf = make_tf_source(self, reporter=self.reporter, max_future_s=self.cfg.frames.tf_max_future_s)
        self.tf.on_update = self._on_tf_update  # place waiting frames as soon as their TF arrives
        log.info(f"poses from {self.tf.name}")

        guard = self.guard
        callback = guard("the compressed image callback")(self._on_compressed) if self.cfg.input.use_compressed \
            else guard("the image callback")(self._on_image)
        self.images = ImageSubscription(self, image_topic, callback, input_group)
        self.create_subscription(CameraInfo, self.cfg.input.camera_info_topic,
                                 guard("the camera_info callback")(self._on_camera_info),
                                 camera_info_qos(self.cfg.input.qos), callback_group=input_group)

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

        services = MapServices(self)
        self.occupancy_out = OccupancyOutputs(self)  # ~/occupancy/{grid,voxels,esdf}, ~/query_occupancy
        for srv_type, name, handler in ((SaveMap, "save_map", services.save), (LoadMap, "load_map", services.load),
                                        (Trigger, "reset", services.reset),
                                        (RenderView, "render_view", services.render)):
            self.create_service(srv_type, f"~/{name}", guard(f"the {name} service", failed_response)(handler),
                                callback_group=service_group)

        self.worker = WindowWorker(self.mapper.process_window, guard("publishing a window")(self._on_window_result),
                                   self.cfg.window.max_queue)
        self.create_timer(self.tf.poll_period_s, guard("the TF resolver")(self._resolve_pending),
                          callback_group=timer_group)
        # diagnostics wait for the map lock while a window is fused: keep them off the TF resolver's group
        self.create_timer(self.cfg.diagnostics.period_s, guard("diagnostics")(self._publish_diagnostics),
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_info()
        log.info(f"ready: waiting for images on '{image_topic}' ({'rectified' if rectified else 'raw'}, QoS "
                 f"{self.cfg.input.qos} depth {self.cfg.input.queue_depth}) and camera_info on "
                 f"'{self.resolve_topic_name(self.cfg.input.camera_info_topic)}' (map frame '{self.map_frame}')")

    def _emit(self, level: int, message: str) -> None:
        """The DropReporter's sink: the ROS logger at the given severity."""
        ros_log(self.get_logger(), level, message)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate the whole resulting configuration; apply it atomically or not at all."""
        reason = self._gate.check(parameter_values(params))
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _prepare_parameters(self, candidate: MappingConfig):
        """Build what new runtime values need (raises ValueError to reject); returns the commit."""
        import torch

        KeyframePolicyConfig(**policy_kwargs(candidate))  # the policy must accept the thresholds
        background = torch.tensor(candidate.render.background, dtype=torch.float32)

        def commit() -> None:
            self.mapper.update_keyframe_policy()
            self.mapper.background = background
            self.tf.set_max_future(self.cfg.frames.tf_max_future_s)
        return commit

    # ------------------------------------------------------------------ input callbacks (never block)
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.stage.set_camera_info(msg)
        self._last["camera_info"] = time.monotonic()

    def _on_image(self, msg: Image, info: dict) -> None:
        self._accept(msg, False, info)

    def _on_compressed(self, msg: CompressedImage, info: dict) -> None:
        self._accept(msg, True, info)

    def _drop(self, rejection: Rejection, n: int = 1) -> None:
        message = rejection.message
        if rejection.reason == "no_camera_info":
            message += f" on '{self.resolve_topic_name(self.cfg.input.camera_info_topic)}'"
        self.reporter.drop(rejection.reason, rejection.cause, message, n)

    def _accept(self, msg, compressed: bool, msg_info) -> None:
        """Decode, check and queue one image for TF (never blocks; every drop is counted by reason)."""
        now = time.monotonic()
        self._last["image"] = now
        self.counters.add("images_received")
        self.delivery.observe(stamp_to_ns(msg.header.stamp),
                              int((msg_info or {}).get("publication_sequence_number", 0) or 0))
        try:
            frame, notes = self.stage.frame(msg, compressed)
        except InputRejected as exc:
            self._drop(exc.rejection)
            return
        for note in notes:
            self.reporter.warn(note.key, note.cause, note.message)
        if self._pending.push((frame, now), frame.stamp_ns, self._now_ns()) is not None:
            self._drop(Rejection("queue_full", "TF wait queue full", f"{self.cfg.input.max_pending} frames wait for "
                                 "TF (input.max_pending): dropped the oldest"))
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
        by_frame: dict[str, list] = collections.defaultdict(list)
        for frame, _ in expired:
            by_frame[frame.frame_id].append(frame)
        for frame_id, frames in by_frame.items():
            self._drop(Rejection("tf_timeout", f"no TF {self.map_frame} <- {frame_id}",
                                 f"no TF {self.map_frame} <- {frame_id} at t={frames[-1].stamp_ns / 1e9:.3f} within "
                                 f"frames.tf_timeout_s = {self.cfg.frames.tf_timeout_s:g} s"), len(frames))
        for (frame, arrival), T in ready:
            self._last["tf_ok"] = time.monotonic()
            try:
                place(frame, T)
            except InputRejected as exc:
                self._drop(exc.rejection)
                continue
            window = self.mapper.add_frame(frame, arrival_time=arrival)
            if window is not None and not self.worker.submit(window):
                self.reporter.event("windows_coalesced", "model is behind", "model is behind: coalesced a waiting "
                                    "window into the newest one", noun="windows coalesced", level=logging.INFO)

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
            camera_frame = result.window.keyframes[-1].frame_id
            for view in self.mapper.window_renders(result):
                self._novel_tf_sent = publish_render(self, view, header.stamp, camera_frame, self._novel_tf_sent)
        self.occupancy_out.on_window(result)
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
        self.pub_info.publish(make_map_info(
            header, self.mapper.map.map_id, self.mapper.stats(), self.mapper.model_id, self.mapper.model_id,
            str(self.mapper.device), self._last_result, self.counters.total("dropped_")))

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        self.images.adapt()
        self._maybe_publish_map()
        self.reporter.flush()  # summaries of throttle windows that ended
        now = time.monotonic()
        ages = {what: math.inf if self._last[key] is None else now - self._last[key]
                for key, what in (("image", "images"), ("camera_info", "camera_info"), ("tf_ok", "TF"))}
        problems = diagnostics.input_problems(ages, self.cfg.diagnostics.stale_after_s)
        c = self.counters.snapshot()
        if problems and c.get("images_received", 0) > 0:
            self.get_logger().warning("; ".join(problems), throttle_duration_sec=self.cfg.diagnostics.stale_after_s)
        statuses = [
            diagnostics.input_status(problems, c, self.delivery.snapshot(), {
                "tf_source": self.tf.name, "pending_frames": len(self._pending), "input_qos": self.images.qos,
                "seconds_since_image": ages["images"], "seconds_since_camera_info": ages["camera_info"],
                "seconds_since_tf": ages["TF"]}),
            diagnostics.model_status(self.worker.stats, str(self.mapper.device), self.mapper.model_id,
                                     list(self._latency)),
            diagnostics.status("ilrm_mapping: map", DiagnosticStatus.OK, "ok", self.mapper.stats())]
        self.pub_diag.publish(diagnostics.diagnostic_array(statuses, self.get_clock().now().to_msg()))

    def publish_whole_update(self, update) -> None:
        """After reset/load: the chunk delta, then the latched map and info, right away."""
        header = Header(frame_id=self.map_frame)
        header.stamp = self.get_clock().now().to_msg()
        for part in update.transport_parts():
            self.pub_chunks.publish(update_to_msg(part, header))
        self._map_dirty = True
        self._maybe_publish_map(force=True)
        self.occupancy_out.publish(force=True)
        self._publish_info()

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
        from ilrm_ros.mapping.config import default_params_file

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
