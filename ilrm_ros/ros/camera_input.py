"""The node's image subscription; with ``input.qos: auto`` it follows the camera's reliability.

A best-effort reader matches every writer but loses large images (a sample is cut into
many fragments and one lost fragment loses the image; see README "Camera QoS and
transport"); a reliable reader repairs them but receives nothing from a best-effort
writer. ``auto`` starts best effort and switches to reliable while every publisher on the
topic is reliable (checked with each diagnostics tick), and back when one is not.
"""
from __future__ import annotations

from typing import Any, Callable

from sensor_msgs.msg import CompressedImage, Image

from ilrm_ros.ros.qos import input_qos, resolve_input_qos


class ImageSubscription:
    """Owns the image (or compressed image) subscription of ``node``; ``qos`` is the current choice."""

    def __init__(self, node: Any, topic: str, callback: Callable, group: Any) -> None:
        self.node, self.topic, self.callback, self.group = node, topic, callback, group
        self.setting = node.cfg.input.qos
        self.sub = None
        self.qos = ""
        self._subscribe(resolve_input_qos(self.setting, []))

    def _subscribe(self, qos_name: str) -> None:
        cfg = self.node.cfg.input
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
        msg_type = CompressedImage if cfg.use_compressed else Image
        self.sub = self.node.create_subscription(msg_type, self.topic, self.callback,
                                                 input_qos(qos_name, cfg.queue_depth), callback_group=self.group)
        self.qos = qos_name

    def adapt(self) -> None:
        """Re-check the publishers (``auto`` only) and re-subscribe when the right QoS changed."""
        if self.setting != "auto":
            return
        infos = self.node.get_publishers_info_by_topic(self.topic)
        wanted = resolve_input_qos("auto", [i.qos_profile.reliability for i in infos])
        if wanted != self.qos:
            self.node.get_logger().info(
                f"camera publishers on '{self.topic}' are {'all reliable' if wanted == 'reliable' else 'not all reliable'}"
                f": image subscription now {wanted} (input.qos auto)")
            self._subscribe(wanted)
