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

This module only wires the parts: parameters (``ros.parameters``: declared from the
configuration tree, sets validated as a whole and applied atomically), the input side
(``ros.camera_input``: subscriptions -> ``io.input_stage`` -> TF, every drop counted by
reason and named once per cause and throttle window, ``io.drop_report``), the outputs
(``ros.outputs``, ``ros.occupancy_outputs``), services (``ros.services``) and
``/diagnostics`` (``ros.diagnostics``); every callback runs under a last-resort guard
(``ros.guard``) so no exception reaches the executor.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.config import MappingConfig, parameter_specs
from ilrm_ros.mapping.mapper import Mapper
from ilrm_ros.mapping.scheduler import WindowWorker
from ilrm_ros.model.loading import CheckpointError
from ilrm_ros.ros.camera_input import CameraInput
from ilrm_ros.ros.diagnostics import NodeDiagnostics
from ilrm_ros.ros.guard import CallbackGuard, failed_response
from ilrm_ros.ros.log_bridge import bridge_python_logging, ros_log
from ilrm_ros.ros.memory import fit_to_model, freeze_startup_objects, pin_malloc_thresholds
from ilrm_ros.ros.occupancy_outputs import OccupancyOutputs
from ilrm_ros.ros.outputs import MapOutputs
from ilrm_ros.ros.parameters import ParameterGate, declare_parameters
from ilrm_ros.ros.services import MapServices
from ilrm_ros.ros.tf_source import make_tf_source
from ilrm_ros.srv import LoadMap, RenderView, SaveMap


class MappingNode(Node):
    def __init__(self, mapper: Mapper | None = None, **node_kwargs) -> None:
        super().__init__("ilrm_mapping", **node_kwargs)
        self.cfg: MappingConfig = declare_parameters(self, parameter_specs())
        self.add_on_set_parameters_callback(ParameterGate(self.cfg, self._prepare_parameters).on_set)
        log = self.get_logger()
        bridge_python_logging(log)  # the core's `logging` lines reach /rosout with their severity

        self.reporter = DropReporter(self._emit, window_s=5.0)
        self.counters = self.reporter.counters
        self.guard = guard = CallbackGuard(self.reporter, log.error)
        self.mapper = mapper or Mapper(self.cfg)
        log.info(f"iLRM model {self.mapper.model_id} on {self.mapper.device}; "
                 f"window {self.cfg.window.size} keyframes at {self.cfg.model.width}x{self.cfg.model.height}")
        self.activation_bytes = 0  # the largest tensor of a window's forward (CPU), once the worker warmed up
        self.map_frame = self.cfg.frames.map_frame
        # images, camera_info and /tf in one mutually exclusive group: an image callback may then read the
        # /tf samples that arrived with it (CameraInput, OwnTfSource.take_pending)
        input_group = MutuallyExclusiveCallbackGroup()
        self.tf = make_tf_source(self, reporter=self.reporter, max_future_s=self.cfg.frames.tf_max_future_s,
                                 callback_group=input_group)
        log.info(f"poses from {self.tf.name}")
        self.input = CameraInput(self, self.tf, self._on_frame, input_group)
        self.outputs = MapOutputs(self)
        self.diagnostics = NodeDiagnostics(self)

        services, service_group = MapServices(self), MutuallyExclusiveCallbackGroup()
        self.occupancy_out = OccupancyOutputs(self)  # ~/occupancy/{grid,voxels,esdf}, ~/query_occupancy
        for srv_type, name, handler in ((SaveMap, "save_map", services.save), (LoadMap, "load_map", services.load),
                                        (Trigger, "reset", services.reset),
                                        (RenderView, "render_view", services.render)):
            self.create_service(srv_type, f"~/{name}", guard(f"the {name} service", failed_response)(handler),
                                callback_group=service_group)

        self.worker = WindowWorker(self.mapper.process_window, guard("publishing a window")(self.outputs.on_window),
                                   self.cfg.window.max_queue,
                                   idle=self.outputs.refine_idle if self.cfg.refine.map_enabled else None,
                                   on_start=guard("the model's warm-up")(self._warm_up))
        self.create_timer(self.tf.poll_period_s, guard("the TF resolver")(self.input.resolve),
                          callback_group=MutuallyExclusiveCallbackGroup())
        # diagnostics wait for the map lock while a window is fused: keep them off the TF resolver's group
        self.create_timer(self.cfg.diagnostics.period_s, guard("diagnostics")(self._tick),
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.outputs.publish_info()
        log.info(f"ready: waiting for images on '{self.input.image_topic}' "
                 f"({'rectified' if self.input.rectified else 'raw'}, QoS {self.cfg.input.qos} depth "
                 f"{self.cfg.input.queue_depth}) and camera_info on "
                 f"'{self.resolve_topic_name(self.cfg.input.camera_info_topic)}' (map frame '{self.map_frame}')")

    def _warm_up(self) -> None:
        """On the worker thread, before the first window: one forward at the window's size, so the first
        window pays no first-call costs and the forward's memory is in the arena the windows use; then,
        where main() pinned glibc's thresholds, they fit the model's largest tensor and the start-up
        objects are frozen for the garbage collector (ros/memory.py)."""
        t0 = time.monotonic()
        self.activation_bytes = self.mapper.warm_up_model()
        threshold = fit_to_model(self.activation_bytes)
        frozen = freeze_startup_objects()
        self.get_logger().info(
            f"model warmed up in {time.monotonic() - t0:.2f} s; largest tensor of a window's forward "
            f"{self.activation_bytes / 2**20:.1f} MiB" + (f", malloc mmap threshold {threshold >> 20} MiB"
                                                          if threshold else "")
            + (f"; {frozen:,} start-up objects frozen for the garbage collector" if frozen else ""))

    def _emit(self, level: int, message: str) -> None:
        """The DropReporter's sink: the ROS logger at the given severity."""
        ros_log(self.get_logger(), level, message)

    def _prepare_parameters(self, candidate: MappingConfig):
        """Build what new runtime values need (raises ValueError to reject); returns the commit."""
        import torch

        candidate.keyframes.validate()  # the policy must accept the thresholds
        background = torch.tensor(candidate.render.background, dtype=torch.float32)

        def commit() -> None:
            self.mapper.update_keyframe_policy()
            self.mapper.background = background
            self.tf.set_max_future(self.cfg.frames.tf_max_future_s)
        return commit

    def _on_frame(self, frame: Frame, arrival: float) -> None:
        """A posed frame from the input side: offer it to the mapper, queue a window when one is due."""
        window = self.mapper.add_frame(frame, arrival_time=arrival)
        if window is not None and not self.worker.submit(window):
            self.reporter.event("windows_coalesced", "model is behind", "model is behind: coalesced a waiting "
                                "window into the newest one", noun="windows coalesced", level=logging.INFO)

    def _tick(self) -> None:
        """The diagnostics timer: re-check the camera's QoS, publish a due map, then /diagnostics."""
        self.input.images.adapt()
        self.outputs.maybe_publish_map()
        self.diagnostics.publish()

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
    pin_malloc_thresholds()  # before the first big buffer: maps and clouds go back to the OS when freed
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
