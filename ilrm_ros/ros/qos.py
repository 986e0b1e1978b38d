"""QoS profiles of the mapping node's topics, in one place.

The camera subscriptions take their reliability and depth from the ``input.*``
parameters. ``sensor_data`` (best effort) matches every camera driver: a best-effort
reader accepts best-effort and reliable writers alike, whereas a reliable reader gets
nothing from a best-effort writer. ``reliable`` lets DDS repair lost fragments of large
samples (see README "Camera QoS and transport"), but only works with reliable writers.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A window can change a hundred chunks or more at once; a subscriber rebuilding the map must
# not lose any, so the chunk stream keeps a deep reliable history (subscribers should match
# it). The writer holds up to `depth` messages (typically ~50 kB each, at most 1 MiB), so the
# depth bounds that memory too.
CHUNK_QOS = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)

INPUT_RELIABILITY = {"sensor_data": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def resolve_input_qos(setting: str, publisher_reliabilities: list[ReliabilityPolicy]) -> str:
    """``input.qos`` -> the concrete choice: ``auto`` is ``reliable`` when there are publishers and all
    of them are reliable, else ``sensor_data`` (which matches any writer)."""
    if setting != "auto":
        return setting
    reliable = [r == ReliabilityPolicy.RELIABLE for r in publisher_reliabilities]
    return "reliable" if reliable and all(reliable) else "sensor_data"


def input_qos(qos: str, depth: int) -> QoSProfile:
    """QoS of the image subscription: ``qos`` is ``"sensor_data"`` or ``"reliable"``; KEEP_LAST ``depth``."""
    if qos not in INPUT_RELIABILITY:
        raise ValueError(f"input QoS must be one of {sorted(INPUT_RELIABILITY)}, got {qos!r}")
    return QoSProfile(depth=int(depth), reliability=INPUT_RELIABILITY[qos], history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.VOLATILE)


def camera_info_qos(qos: str) -> QoSProfile:
    """QoS of the camera_info subscription: small messages, best effort unless ``reliable`` is forced."""
    return input_qos("reliable" if qos == "reliable" else "sensor_data", 5)
