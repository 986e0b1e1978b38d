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

import time
from typing import Any, Callable

from sensor_msgs.msg import CompressedImage, Image

from ilrm_ros.ros.qos import input_qos, resolve_input_qos


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
