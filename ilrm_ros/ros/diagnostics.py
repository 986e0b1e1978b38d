"""The node's /diagnostics: input health, drops by reason, delivery, model, map and map quality status.

Pure functions from plain values to ``diagnostic_msgs`` messages, so the node only
gathers numbers. Drops appear under their counter names (``dropped_<reason>``,
``tf_rejected_<reason>``, ``warned_<cause>``); ``image_delivery_ratio`` is what the camera
sent that arrived, where it can be known (see ``mapping.delivery``).
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ilrm_ros.ros.qos import RELIABLE


def status(name: str, level: bytes | int, message: str, values: dict[str, Any]) -> DiagnosticStatus:
    """One DiagnosticStatus; floats with 4 significant digits."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id="ilrm_mapping",
                            values=[KeyValue(key=str(k), value=f"{v:.4g}" if isinstance(v, float) else str(v))
                                    for k, v in values.items()])


def input_problems(ages: dict[str, float], stale_after_s: float) -> list[str]:
    """"no images for 7 s" … for each input older than ``stale_after_s`` (inf = never received)."""
    return [f"no {what} received yet" if age == math.inf else f"no {what} for {age:.0f} s"
            for what, age in ages.items() if age > stale_after_s]


def input_status(problems: list[str], counters: dict[str, int], delivery: dict[str, Any],
                 extra: dict[str, Any]) -> DiagnosticStatus:
    """Status of the inputs: WARN on stale inputs or on drops of any reason."""
    values = dict(counters)
    values["frames_dropped_total"] = sum(v for k, v in counters.items() if k.startswith("dropped_"))
    values["images_lost_before_node"] = delivery.get("lost", 0)
    ratio = delivery.get("delivery_ratio")
    values["image_delivery_ratio"] = float(ratio) if ratio is not None else "unknown"
    values["image_delivery_source"] = delivery.get("source", "unknown")
    values.update(extra)
    level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    return status("ilrm_mapping: input", level, "; ".join(problems) or "receiving", values)


def model_status(worker_stats: Any, device: str, model_id: str, latencies: list[float]) -> DiagnosticStatus:
    """Status of the model worker: ERROR when every window failed, WARN on failures or coalescing."""
    w = worker_stats
    level = DiagnosticStatus.ERROR if w.failed and w.last_error and not w.processed else \
        DiagnosticStatus.WARN if w.failed or w.coalesced else DiagnosticStatus.OK
    return status("ilrm_mapping: model", level, w.last_error or "ok", {
        "device": device, "model_id": model_id, "windows_processed": w.processed,
        "windows_coalesced": w.coalesced, "windows_failed": w.failed, "out_of_memory": w.out_of_memory,
        "queue_depth": w.queue_depth, "busy": w.busy, "idle_work": w.idle_work,
        "window_latency_mean_s": float(np.mean(latencies)) if latencies else 0.0,
        "window_latency_max_s": float(np.max(latencies)) if latencies else 0.0})


QUALITY_PREFIXES = ("quality_", "refine_")
"""Keys of the mapper's stats that go to the quality status rather than the map status."""


def map_statuses(stats: dict[str, Any]) -> list[DiagnosticStatus]:
    """The map status (sizes, revision, occupancy) and the quality status: live map quality
    (``quality_*``: PSNR / SSIM of the map at keyframes it was not fitted to, latest, mean, count)
    and window refinement (``refine_*``: context PSNR gain, last and mean)."""
    quality = {k: v for k, v in stats.items() if k.startswith(QUALITY_PREFIXES)}
    rest = {k: v for k, v in stats.items() if not k.startswith(QUALITY_PREFIXES)}
    n = int(quality.get("quality_count", 0))
    message = (f"map PSNR {quality['quality_psnr_mean_db']:.2f} dB, SSIM {quality['quality_ssim_mean']:.3f} "
               f"(mean of {n} views)") if n else f"no views scored yet (mode {quality.get('quality_mode', 'none')})"
    return [status("ilrm_mapping: map", DiagnosticStatus.OK, "ok", rest),
            status("ilrm_mapping: map quality", DiagnosticStatus.OK, message, quality)]


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: Any) -> DiagnosticArray:
    arr = DiagnosticArray(status=statuses)
    arr.header.stamp = stamp
    return arr


class NodeDiagnostics:
    """Publishes the node's four statuses (input, model, map, map quality) on /diagnostics.

    Reads the node's parts: ``input`` (CameraInput), ``worker``, ``mapper``, ``outputs``
    (window latencies), ``reporter`` / ``counters`` (drops), ``tf`` and ``cfg``.
    """

    def __init__(self, node: Any) -> None:
        self.node = node
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)

    def publish(self) -> None:
        """Name the drop summaries that are due, warn about stale inputs, publish the statuses."""
        node = self.node
        node.reporter.flush()  # summaries of throttle windows that ended
        stale_after_s = node.cfg.diagnostics.stale_after_s
        ages = node.input.ages(time.monotonic())
        problems = input_problems(ages, stale_after_s)
        counters = node.counters.snapshot()
        if problems and counters.get("images_received", 0) > 0:
            node.get_logger().warning("; ".join(problems), throttle_duration_sec=stale_after_s)
        statuses = [
            input_status(problems, counters, node.input.delivery.snapshot(), {
                "tf_source": node.tf.name, "pending_frames": node.input.waiting(), "input_qos": node.input.images.qos,
                "seconds_since_image": ages["images"], "seconds_since_camera_info": ages["camera_info"],
                "seconds_since_tf": ages["TF"]}),
            model_status(node.worker.stats, str(node.mapper.device), node.mapper.model_id, list(node.outputs.latency)),
            *map_statuses(node.mapper.stats())]
        self.pub.publish(diagnostic_array(statuses, node.get_clock().now().to_msg()))
