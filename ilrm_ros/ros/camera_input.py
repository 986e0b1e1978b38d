"""The node's image subscription; with ``input.qos: auto`` it follows the camera's reliability.

A best-effort reader matches every writer but loses large images (a sample is cut into
many fragments and one lost fragment loses the image; see README "Camera QoS and
transport"); a reliable reader repairs them but receives nothing from a best-effort
writer. ``auto`` starts best effort and switches to reliable while every publisher on the
topic is reliable (checked with each diagnostics tick), and back when one is not. The new
subscription is created before the old one goes, and the old one is kept until the new
one has matched the camera (at most ``handover_s``), so the switch loses no frames; a frame
received by both during the handover is ignored by the keyframe policy (same stamp).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ilrm_ros.io.frames import Frame, stamp_to_ns
from ilrm_ros.io.input_stage import InputLimits, InputStage, Rejection
from ilrm_ros.io.pending_queue import PendingQueue
from ilrm_ros.mapping.delivery import DeliveryTracker
from ilrm_ros.ros.qos import camera_info_qos, input_qos, resolve_input_qos


class ImageSubscription:
    """Owns the image (or compressed image) subscription of ``node``; ``qos`` is the current choice."""

    def __init__(self, node: Any, topic: str, callback: Callable, group: Any, handover_s: float = 2.0) -> None:
        self.node, self.topic, self.callback, self.group = node, topic, callback, group
        self.setting = node.cfg.input.qos
        self.handover_s = handover_s
        self.sub = None
        self.qos = ""
        self._retiring: tuple[Any, float] | None = None  # (old subscription, when it goes at the latest)
        self._subscribe(resolve_input_qos(self.setting, []))

    def _subscribe(self, qos_name: str) -> None:
        cfg = self.node.cfg.input
        if self.sub is not None:
            self._retire()
            self._retiring = (self.sub, time.monotonic() + self.handover_s)
        msg_type = CompressedImage if cfg.use_compressed else Image
        self.sub = self.node.create_subscription(msg_type, self.topic, self.callback,
                                                 input_qos(qos_name, cfg.queue_depth), callback_group=self.group)
        self.qos = qos_name

    def _retire(self, force: bool = True) -> None:
        """Destroy the previous subscription once the new one has matched a publisher (or at its deadline)."""
        if self._retiring is None:
            return
        old, deadline = self._retiring
        if force or self.sub.get_publisher_count() > 0 or time.monotonic() > deadline:
            self.node.destroy_subscription(old)
            self._retiring = None

    def adapt(self) -> None:
        """Re-check the publishers (``auto`` only) and re-subscribe when the right QoS changed."""
        self._retire(force=False)
        if self.setting != "auto":
            return
        infos = self.node.get_publishers_info_by_topic(self.topic)
        wanted = resolve_input_qos("auto", [i.qos_profile.reliability for i in infos])
        if wanted != self.qos:
            self.node.get_logger().info(
                f"camera publishers on '{self.topic}' are {'all reliable' if wanted == 'reliable' else 'not all reliable'}"
                f": image subscription now {wanted} (input.qos auto)")
            self._subscribe(wanted)


class CameraInput:
    """The node's input side: image and camera_info callbacks -> the input stage -> TF -> ``on_frame``.

    Callbacks only decode and queue (they never wait for TF or the model); frames wait in a
    bounded queue until ``tf`` can place them (checked right after each image, after each TF
    message where the source reports them, and on the node's resolver timer), then go
    through the input stage's pose lookup and validation, and each posed frame is handed
    to ``on_frame(frame, arrival_time)``. Every drop is counted by reason in ``reporter``.
    When ``group`` is mutually exclusive and also holds the ``tf`` source's /tf subscription, an
    image first reads the /tf messages that arrived before it (``tf.take_pending``).
    """

    def __init__(self, node: Any, tf: Any, on_frame: Callable[[Frame, float], None], group: Any) -> None:
        cfg = node.cfg
        self.node, self.tf, self.on_frame = node, tf, on_frame
        self.image_topic = node.resolve_topic_name(cfg.input.compressed_topic if cfg.input.use_compressed
                                                   else cfg.input.image_topic)
        self.rectified = {"always": True, "never": False}.get(cfg.input.rectified, "rect" in self.image_topic)
        m = cfg.model
        self.stage = InputStage(InputLimits(cfg.input.max_input_pixels, cfg.input.max_decoded_bytes),
                                camera_frame=cfg.frames.camera_frame, rectified=self.rectified,
                                decode_size=(m.height, m.width) if m.height and m.width else None,
                                map_frame=cfg.frames.map_frame,
                                camera_info_topic=node.resolve_topic_name(cfg.input.camera_info_topic),
                                reporter=node.reporter)
        self.delivery = DeliveryTracker()
        self.last: dict[str, float | None] = {"image": None, "camera_info": None, "tf_ok": None}
        self.pending = PendingQueue(capacity=cfg.input.max_pending, timeout_s=cfg.frames.tf_timeout_s)
        self._resolve_lock = threading.Lock()  # one resolver at a time: the mapper's input side is single-threaded
        self._resolve_again = False
        tf.on_update = self._on_tf_update  # place waiting frames as soon as their TF arrives
        guard = node.guard
        callback = guard("the compressed image callback")(self._on_compressed) if cfg.input.use_compressed \
            else guard("the image callback")(self._on_image)
        # reading /tf from the image callback is safe only where the executor cannot take /tf meanwhile
        self._take_tf = tf.callback_group is group and isinstance(group, MutuallyExclusiveCallbackGroup)
        self.images = ImageSubscription(node, self.image_topic, callback, group)
        node.create_subscription(CameraInfo, cfg.input.camera_info_topic,
                                 guard("the camera_info callback")(self._on_camera_info),
                                 camera_info_qos(cfg.input.qos), callback_group=group)

    def waiting(self) -> int:
        """Frames waiting for TF."""
        return len(self.pending)

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since the last image, camera_info and placed frame ("images", "camera_info", "TF"; inf = never)."""
        return {what: float("inf") if self.last[key] is None else now - self.last[key]
                for key, what in (("image", "images"), ("camera_info", "camera_info"), ("tf_ok", "TF"))}

    # ------------------------------------------------------------------ callbacks (never block)
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.stage.set_camera_info(msg)
        self.last["camera_info"] = time.monotonic()

    def _on_image(self, msg: Image, info: dict) -> None:
        self._accept(msg, False, info)

    def _on_compressed(self, msg: CompressedImage, info: dict) -> None:
        self._accept(msg, True, info)

    def _accept(self, msg: Any, compressed: bool, msg_info: dict | None) -> None:
        """Decode, check and queue one image for TF (never blocks; every drop is counted by reason)."""
        now = time.monotonic()
        self.last["image"] = now
        self.node.counters.add("images_received")
        self.delivery.observe(stamp_to_ns(msg.header.stamp),
                              int((msg_info or {}).get("publication_sequence_number", 0) or 0))
        frame = self.stage.accept(msg, compressed)
        if frame is None:
            return
        if self.pending.push((frame, now), frame.stamp_ns, self._now_ns()) is not None:
            max_pending = self.node.cfg.input.max_pending
            self.stage.drop(Rejection("queue_full", "TF wait queue full", f"{max_pending} frames wait for "
                                      "TF (input.max_pending): dropped the oldest"))
        if self._take_tf:
            self.tf.take_pending()  # /tf samples sent before the image but not handled yet by the executor
        self.resolve()  # usually TF is already there: no need to wait for the timer

    def _now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    # ------------------------------------------------------------------ TF resolution
    def _on_tf_update(self) -> None:
        """A TF message arrived: place the frames that waited for it (cheap when none wait)."""
        if len(self.pending):
            self.resolve()

    def resolve(self) -> None:
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
                self._resolve_locked()
            finally:
                self._resolve_lock.release()

    def _resolve_locked(self) -> None:
        frames_cfg = self.node.cfg.frames
        self.pending.timeout_ns = int(frames_cfg.tf_timeout_s * 1e9)
        ready, expired = self.pending.pop_ready(lambda item, _: self.stage.lookup(item[0], self.tf.lookup),
                                                self._now_ns())
        by_frame: dict[str, list[Frame]] = collections.defaultdict(list)
        for frame, _ in expired:
            by_frame[frame.frame_id].append(frame)
        map_frame = self.stage.map_frame
        for frame_id, frames in by_frame.items():
            self.stage.drop(Rejection("tf_timeout", f"no TF {map_frame} <- {frame_id}",
                                      f"no TF {map_frame} <- {frame_id} at t={frames[-1].stamp_ns / 1e9:.3f} within "
                                      f"frames.tf_timeout_s = {frames_cfg.tf_timeout_s:g} s"), len(frames))
        for (frame, arrival), T in ready:
            self.last["tf_ok"] = time.monotonic()
            if self.stage.place(frame, T) is not None:
                self.on_frame(frame, arrival)
