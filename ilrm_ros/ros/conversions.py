"""Gaussians, map chunks and map info <-> rclpy messages. Pure translation, no state.

The Gaussian wire format (fields, point step, budgets) and the one chunk/cloud builder
live in ``core/wire.py``; this module binds them to rclpy's generated classes
(:data:`RCLPY_TYPES`). rviz shows a Gaussian cloud with the "RGBF32" colour transformer
(float r, g, b fields).
"""
from __future__ import annotations

import array
import math
from typing import TYPE_CHECKING

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from ilrm_ros.core.wire import GAUSSIAN_FIELDS, MessageTypes, chunk_message, cloud_message
from ilrm_ros.msg import GaussianChunk, MapInfo

if TYPE_CHECKING:  # torch and the model stay out of light users (the player, the tests' peers)
    from ilrm_ros.mapping.chunks import ChunkUpdate
    from ilrm_ros.mapping.mapper import WindowResult


def _byte_array(packed: np.ndarray) -> array.array:
    """Packed rows -> ``array('B')``, the fast path of rclpy's ``uint8[]`` setter; one copy."""
    data = array.array("B")
    if packed.size:
        data.frombytes(memoryview(packed).cast("B"))
    return data


RCLPY_TYPES = MessageTypes(chunk=GaussianChunk, cloud=PointCloud2, field=PointField, point=Point,
                           byte_array=_byte_array, uint64_array=lambda ids: array.array("Q", ids))
"""rclpy's classes for :func:`ilrm_ros.core.wire.chunk_message` / ``cloud_message``."""


def array_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """(M, 14) float32 Gaussian rows -> PointCloud2 (height 1, dense, little-endian)."""
    return cloud_message(RCLPY_TYPES, points, header)


def cloud_to_array(cloud: PointCloud2) -> np.ndarray:
    """PointCloud2 with the Gaussian fields (any order/padding, either endianness) -> (M, 14) float32."""
    by_name = {f.name: f for f in cloud.fields}
    missing = [n for n in GAUSSIAN_FIELDS if n not in by_name]
    if missing:
        raise ValueError(f"PointCloud2 lacks Gaussian fields {missing}")
    if any(by_name[n].datatype != PointField.FLOAT32 for n in GAUSSIAN_FIELDS):
        raise ValueError("Gaussian fields must be FLOAT32")
    n = cloud.width * cloud.height
    order = ">" if cloud.is_bigendian else "<"
    dtype = np.dtype({"names": list(GAUSSIAN_FIELDS),
                      "formats": [order + "f4"] * len(GAUSSIAN_FIELDS),
                      "offsets": [by_name[n_].offset for n_ in GAUSSIAN_FIELDS],
                      "itemsize": cloud.point_step})
    raw = np.frombuffer(bytes(cloud.data), dtype=dtype, count=n)
    return np.stack([raw[f].astype(np.float32) for f in GAUSSIAN_FIELDS], axis=1) if n else \
        np.zeros((0, len(GAUSSIAN_FIELDS)), np.float32)


def update_to_msg(u: ChunkUpdate, header: Header) -> GaussianChunk:
    """One transport part (``MapUpdate.transport_parts()``) -> GaussianChunk."""
    return chunk_message(RCLPY_TYPES, u, header)


def msg_to_update(msg: GaussianChunk) -> ChunkUpdate:
    """GaussianChunk -> mapping.chunks.ChunkUpdate (what a subscriber applies to a MapReplica)."""
    from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction

    rows = cloud_to_array(msg.gaussians)
    b0, b1 = msg.bounds_min, msg.bounds_max
    return ChunkUpdate(UpdateAction(msg.action), msg.map_id, tuple(int(k) for k in msg.chunk_key),
                       float(msg.chunk_size), int(msg.revision), rows=rows, part=int(msg.part),
                       num_parts=int(msg.num_parts), bounds_min=(b0.x, b0.y, b0.z), bounds_max=(b1.x, b1.y, b1.z),
                       window_id=int(msg.window_id), keyframe_ids=tuple(int(k) for k in msg.keyframe_ids))


def make_map_info(header: Header, map_id: str, stats: dict, model_id: str, checkpoint_id: str, device: str,
                  last: WindowResult | None, frames_dropped: int) -> MapInfo:
    """MapInfo from the mapper's stats dict (num_gaussians, num_chunks, num_keyframes, num_windows,
    revision, memory_bytes, max_gaussians, refine_gain_mean_db, quality_*) and the latencies and
    refinement of the last window (0 / NaN before any)."""
    msg = MapInfo()
    msg.header = header
    msg.map_id = map_id
    for name in ("num_gaussians", "num_chunks", "num_keyframes", "num_windows", "revision", "memory_bytes",
                 "max_gaussians"):
        setattr(msg, name, int(stats.get(name, 0)))
    msg.model_id = model_id
    msg.checkpoint_id = checkpoint_id
    msg.device = device
    msg.last_model_latency_s = float(last.timings["model_s"]) if last else 0.0
    msg.last_window_latency_s = float(last.timings.get("end_to_end_s", 0.0)) if last else 0.0
    msg.frames_dropped = int(frames_dropped)
    t = last.timings if last else {}
    msg.last_refine_gain_db = float(t.get("refine_gain_db", math.nan))
    msg.last_refine_s = float(t.get("refine_s", 0.0))
    msg.last_refine_iterations = int(t.get("refine_iters", 0))
    msg.refine_gain_mean_db = float(stats.get("refine_gain_mean_db", math.nan))
    msg.quality_mode = str(stats.get("quality_mode", "none"))
    msg.quality_count = int(stats.get("quality_count", 0))
    for name in ("quality_psnr_latest_db", "quality_psnr_mean_db", "quality_ssim_latest", "quality_ssim_mean"):
        setattr(msg, name, float(stats.get(name, math.nan)))
    return msg


def camera_info_msg(K: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """Pinhole CameraInfo (no distortion, P = [K | 0]) for a rendered or generated image."""
    info = CameraInfo(header=header, width=int(width), height=int(height), distortion_model="plumb_bob")
    info.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    info.p = [float(v) for v in P.reshape(-1)]
    return info
