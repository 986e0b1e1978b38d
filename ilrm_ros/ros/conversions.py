"""Gaussians and map chunks <-> ROS messages. Pure translation, no state.

The Gaussian point layout (also documented in msg/GaussianChunk.msg) is 14 little-endian
float32 per point: x y z r g b opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3,
activated values (linear scales in metres, opacity in [0, 1], unit quaternion w x y z).
rviz shows such a cloud with the "RGBF32" colour transformer (float r, g, b fields).
"""
from __future__ import annotations

import array
import functools
from typing import Iterable, Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from ilrm_ros.msg import GaussianChunk, MapInfo

GAUSSIAN_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "r", "g", "b", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
POINT_STEP = 4 * len(GAUSSIAN_FIELDS)  # 56 bytes
MAX_MESSAGE_BYTES = 1 << 20
# Everything in a GaussianChunk but the point data (header, ids, bounds, field list,
# keyframe ids) stays far below this; chunk splitting budgets with it.
CHUNK_OVERHEAD_BYTES = 4096


def max_gaussians_per_message(max_bytes: int = MAX_MESSAGE_BYTES, overhead: int = CHUNK_OVERHEAD_BYTES) -> int:
    """How many Gaussians fit in one GaussianChunk of at most ``max_bytes``."""
    return (max_bytes - overhead) // POINT_STEP


@functools.lru_cache(maxsize=1)
def _fields() -> tuple[PointField, ...]:
    """The 14 PointFields, built once and shared by every cloud (messages only read them)."""
    return tuple(PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                 for i, n in enumerate(GAUSSIAN_FIELDS))


def _fill_cloud(msg: PointCloud2, points: np.ndarray, header: Header) -> PointCloud2:
    """Fill ``msg`` with (M, 14) Gaussian rows (height 1, dense, little-endian); one copy."""
    points = np.ascontiguousarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != len(GAUSSIAN_FIELDS):
        raise ValueError(f"expected (M, {len(GAUSSIAN_FIELDS)}) Gaussian rows, got {points.shape}")
    msg.header = header
    msg.height = 1
    msg.width = int(points.shape[0])
    msg.fields = list(_fields())
    msg.is_bigendian = False
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * msg.width
    msg.is_dense = True
    data = array.array("B")
    if points.size:
        data.frombytes(memoryview(points).cast("B"))  # array.array is the fast path of the generated setter
    msg.data = data
    return msg


def array_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """(M, 14) float32 Gaussian rows -> PointCloud2 (height 1, dense, little-endian)."""
    return _fill_cloud(PointCloud2(), points, header)


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


def make_chunk_msg(*, header: Header, map_id: str, chunk_key: Sequence[int], chunk_size: float, action: int,
                   revision: int, points: np.ndarray | None, part: int = 0, num_parts: int = 1,
                   window_id: int = 0, keyframe_ids: Iterable[int] = (),
                   bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> GaussianChunk:
    """One GaussianChunk. ``points`` (M, 14) float32 for UPSERT; None/empty for DELETE and CLEAR.

    bounds: (min xyz, max xyz) of the points' means when the caller has them already;
    computed from ``points`` otherwise.
    """
    msg = GaussianChunk()
    msg.header = header
    msg.map_id = map_id
    msg.chunk_key = np.asarray(chunk_key, dtype=np.int32).reshape(3)
    msg.chunk_size = float(chunk_size)
    msg.action = int(action)
    msg.revision = int(revision)
    msg.part = int(part)
    msg.num_parts = int(num_parts)
    msg.window_id = int(window_id)
    msg.keyframe_ids = [int(k) for k in keyframe_ids]
    pts = np.zeros((0, len(GAUSSIAN_FIELDS)), np.float32) if points is None else points
    if len(pts):
        lo, hi = bounds if bounds is not None else (pts[:, :3].min(axis=0), pts[:, :3].max(axis=0))
        b0, b1 = msg.bounds_min, msg.bounds_max
        b0.x, b0.y, b0.z = float(lo[0]), float(lo[1]), float(lo[2])
        b1.x, b1.y, b1.z = float(hi[0]), float(hi[1]), float(hi[2])
    _fill_cloud(msg.gaussians, pts, header)
    return msg


def make_map_info(*, header: Header, map_id: str, stats: dict, model_id: str, checkpoint_id: str, device: str,
                  last_model_latency_s: float, last_window_latency_s: float, frames_dropped: int) -> MapInfo:
    """MapInfo from the map's stats dict (num_gaussians, num_chunks, num_keyframes, num_windows,
    revision, memory_bytes, max_gaussians)."""
    msg = MapInfo()
    msg.header = header
    msg.map_id = map_id
    for name in ("num_gaussians", "num_chunks", "num_keyframes", "num_windows", "revision", "memory_bytes",
                 "max_gaussians"):
        setattr(msg, name, int(stats.get(name, 0)))
    msg.model_id = model_id
    msg.checkpoint_id = checkpoint_id
    msg.device = device
    msg.last_model_latency_s = float(last_model_latency_s)
    msg.last_window_latency_s = float(last_window_latency_s)
    msg.frames_dropped = int(frames_dropped)
    return msg


def update_to_msg(u, header: Header) -> GaussianChunk:
    """mapping.chunks.ChunkUpdate (one transport part) -> GaussianChunk."""
    return make_chunk_msg(header=header, map_id=u.map_id, chunk_key=u.key, chunk_size=u.chunk_size,
                          action=int(u.action), revision=u.revision, points=u.rows if len(u.rows) else None,
                          part=u.part, num_parts=u.num_parts, window_id=u.window_id, keyframe_ids=u.keyframe_ids,
                          bounds=(u.bounds_min, u.bounds_max) if u.has_bounds() else None)


def msg_to_update(msg: GaussianChunk):
    """GaussianChunk -> mapping.chunks.ChunkUpdate (what a subscriber applies to a MapReplica)."""
    from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction

    rows = cloud_to_array(msg.gaussians)
    b0, b1 = msg.bounds_min, msg.bounds_max
    return ChunkUpdate(UpdateAction(msg.action), msg.map_id, tuple(int(k) for k in msg.chunk_key),
                       float(msg.chunk_size), int(msg.revision), rows=rows, part=int(msg.part),
                       num_parts=int(msg.num_parts), bounds_min=(b0.x, b0.y, b0.z), bounds_max=(b1.x, b1.y, b1.z),
                       window_id=int(msg.window_id), keyframe_ids=tuple(int(k) for k in msg.keyframe_ids))


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
