"""What the node publishes after a window and after reset / load_map.

``~/chunks`` (the map delta, first: latency ends there), the window renders on
``~/rendered/{,novel/}{image,depth,camera_info}`` (with the novel view's frame on
/tf_static), the latched ``~/map`` (at most every ``map.publish_period_s``) and
``~/map_info``. Publishing runs on the window worker's thread, also for the background map
refinement (``refine.map_enabled``), whose changed chunks go out on ``~/chunks`` like a window's,
each chunk's newest content at most every ``refine.map_publish_period_s`` (``mapping.held_chunks``).
"""
from __future__ import annotations

import collections
import math
import time
from typing import Any

from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ilrm_ros.core.chunk_cdr import chunk_cdr
from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.io.image_codec import encode_image
from ilrm_ros.mapping.chunks import MapUpdate
from ilrm_ros.mapping.held_chunks import HeldChunks
from ilrm_ros.mapping.mapper import RenderedView, WindowResult
from ilrm_ros.msg import GaussianChunk, MapInfo
from ilrm_ros.ros.conversions import array_to_cloud, camera_info_msg, make_map_info
from ilrm_ros.ros.qos import CHUNK_QOS, LATCHED, RELIABLE
from ilrm_ros.ros.tf_source import TF_STATIC_QOS


def novel_view_tf(camera_frame: str, offset: list[float], stamp: Any) -> TFMessage:
    """The novel view's fixed offset from the camera, for /tf_static (frame ``<camera>_ilrm_novel``)."""
    ts = TransformStamped()
    ts.header.frame_id = camera_frame
    ts.header.stamp = stamp
    ts.child_frame_id = f"{camera_frame}_ilrm_novel"
    ox, oy, oz = offset
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = ox, oy, oz
    ts.transform.rotation.w = 1.0
    return TFMessage(transforms=[ts])


class MapOutputs:
    """The node's map publishers and what they last sent; ``node`` gives cfg, mapper, counters, clock, logger."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.pub_chunks = node.create_publisher(GaussianChunk, "~/chunks", CHUNK_QOS)
        self.pub_map = node.create_publisher(PointCloud2, "~/map", LATCHED)
        self.pub_info = node.create_publisher(MapInfo, "~/map_info", LATCHED)
        self.pub_render = {
            name: (node.create_publisher(Image, f"~/rendered/{sub}image", RELIABLE),
                   node.create_publisher(Image, f"~/rendered/{sub}depth", RELIABLE),
                   node.create_publisher(CameraInfo, f"~/rendered/{sub}camera_info", RELIABLE))
            for name, sub in (("keyframe", ""), ("novel", "novel/"))}
        self.pub_tf_static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.latency: collections.deque[float] = collections.deque(maxlen=50)
        self.window_timings: collections.deque[dict] = collections.deque(maxlen=1000)
        self.last_result: WindowResult | None = None
        self._last_map_publish = -math.inf
        self.refine_steps_since_window = 0
        self.held = HeldChunks(node.cfg.refine.map_publish_period_s)
        self._map_dirty = False
        self._novel_tf_sent: str | None = None

    def _header(self, stamp: Any = None) -> Header:
        header = Header(frame_id=self.node.map_frame)
        header.stamp = stamp if stamp is not None else self.node.get_clock().now().to_msg()
        return header

    def on_window(self, result: WindowResult) -> None:
        """Publish a processed window: chunks first (latency ends there), then renders, map, info."""
        node, mapper = self.node, self.node.mapper
        header = Header(frame_id=node.map_frame)
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(result.stamp_ns)
        t0 = time.monotonic()
        self.publish_chunks(result.update, header)
        t1 = time.monotonic()
        result.timings["publish_chunks_s"] = t1 - t0
        result.timings["end_to_end_s"] = t1 - result.window.trigger_time
        self.latency.append(result.timings["end_to_end_s"])
        self.last_result = result
        self._map_dirty = True
        if node.cfg.render.publish:
            camera_frame = result.window.keyframes[-1].frame_id
            for view in mapper.window_renders(result):
                self.publish_render(view, header.stamp, camera_frame)
        node.occupancy_out.on_window(result)
        mapper.score_quality(result)  # live map quality, after the chunks went out
        self.maybe_publish_map()
        self.publish_info()
        self.release_refined()
        if result.warning:
            node.get_logger().warning(result.warning)
        result.gaussians = None  # do not keep the window's tensors alive
        self.refine_steps_since_window = 0
        self.window_timings.append(dict(result.timings, window_id=result.window.window_id,
                                        gaussians=result.num_gaussians_window))
        t = result.timings
        refined = f", refine {t['refine_s']:.2f} s ({t['refine_gain_db']:+.2f} dB)" if "refine_s" in t else ""
        node.get_logger().info(
            f"window {result.window.window_id} (keyframes {result.window.keyframe_ids}): "
            f"{result.num_gaussians_window} Gaussians; model {t['model_s']:.2f} s{refined}, "
            f"fuse {t['integrate_s']:.2f} s, "
            f"chunks out {t['end_to_end_s']:.2f} s after the last keyframe (queued {t['queued_s']:.2f} s), "
            f"render {t.get('render_s', 0.0):.2f} s; map {mapper.stats().get('num_gaussians', 0)} Gaussians",
            throttle_duration_sec=2.0)

    def refine_idle(self) -> bool:
        """The window worker's idle work: one background map refinement step, its chunks and ~/map_info
        published; the step yields as soon as a window is queued. Returns False (sleep until the next
        window) when it is off, has no keyframes, or made ``refine.map_rounds`` rounds over the stored
        keyframes since the last window (it stops instead of fitting them forever)."""
        mapper = self.node.mapper
        if self.refine_steps_since_window >= self.node.cfg.refine.map_rounds * len(mapper.keyframes):
            self.release_refined(force=True)
            return False
        update, stats = mapper.refine_map_step(preempt=self.node.worker.window_waiting)
        self.refine_steps_since_window += 1
        if stats.stopped_by in ("off", "no_keyframes"):
            self.release_refined(force=True)
            return False
        if update.updates:
            self.held.hold(update)
            self._map_dirty = True
            self.maybe_publish_map()
            self.publish_info()  # ~/map_info follows the map's revision and size (pruned rows)
            self.node.occupancy_out.publish()  # the grid integrated the refined depth (throttled)
        self.release_refined()
        return True

    def release_refined(self, force: bool = False) -> None:
        """Send the held refinement chunks when ``refine.map_publish_period_s`` has passed (or ``force``)."""
        now = time.monotonic()
        if force or self.held.due(now):
            update = self.held.release(now, self.node.mapper.map.map_id)
            if update is not None:
                self.publish_chunks(update, self._header())

    def publish_chunks(self, update: MapUpdate, header: Header) -> None:
        """Every transport part of ``update`` on ``~/chunks``, stamped with ``header``, as serialized bytes
        (``core.chunk_cdr``: the bytes rclpy would serialize ``update_to_msg(part, header)`` to, without
        building the message; ~4x less time per message)."""
        self.held.sent(update)   # held refinement chunks that this update supersedes are not sent again
        sec, nanosec, frame_id = int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)
        for part in update.transport_parts():
            self.pub_chunks.publish(chunk_cdr(part, sec, nanosec, frame_id))

    def maybe_publish_map(self, force: bool = False) -> None:
        """The latched ``~/map`` when the map changed and ``map.publish_period_s`` has passed (or ``force``)."""
        now = time.monotonic()
        if not force and (not self._map_dirty or now - self._last_map_publish < self.node.cfg.map.publish_period_s):
            return
        rows = self.node.mapper.all_rows()
        self.pub_map.publish(array_to_cloud(rows, self._header()))
        self._last_map_publish = now
        self._map_dirty = False

    def publish_info(self) -> None:
        mapper = self.node.mapper
        self.pub_info.publish(make_map_info(
            self._header(), mapper.map.map_id, mapper.stats(), mapper.model_id, mapper.model_id,
            str(mapper.device), self.last_result, self.node.counters.total("dropped_")))

    def publish_whole_update(self, update: MapUpdate) -> None:
        """After reset/load: the chunk delta, then the latched map, occupancy and info, right away."""
        self.publish_chunks(update, self._header())
        self._map_dirty = True
        self.maybe_publish_map(force=True)
        self.node.occupancy_out.publish(force=True)
        self.publish_info()

    def publish_render(self, view: RenderedView, stamp: Any, camera_frame: str) -> None:
        """Publish one window render (image, depth, camera_info); announce the novel frame once per camera."""
        frame_id = camera_frame if view.name == "keyframe" else f"{camera_frame}_ilrm_novel"
        if view.name == "novel" and self._novel_tf_sent != camera_frame:
            self.pub_tf_static.publish(novel_view_tf(camera_frame, self.node.cfg.render.novel_offset,
                                                     self.node.get_clock().now().to_msg()))
            self._novel_tf_sent = camera_frame
        header = Header(frame_id=frame_id, stamp=stamp)
        pub_img, pub_depth, pub_info = self.pub_render[view.name]
        pub_img.publish(encode_image(view.rgb, "rgb8", header=header, msg=Image()))
        pub_depth.publish(encode_image(view.depth, "32FC1", header=header, msg=Image()))
        pub_info.publish(camera_info_msg(view.K, view.rgb.shape[1], view.rgb.shape[0], header))
