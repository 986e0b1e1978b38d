"""The Gaussian wire format, stated once: rows, PointCloud2 layout, message budgets, chunk messages.

A Gaussian is one row of 14 little-endian float32 (documented in ``msg/GaussianChunk.msg``)::

    x y z  r g b  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

activated values: RGB and opacity in [0, 1], linear scales in metres, unit quaternion
w x y z. The same rows are the mapping core's in-memory layout (``COL_*`` slices), the
points of ``GaussianChunk.gaussians`` and of ``~/map`` (a PointCloud2 of height 1,
dense, 56 bytes per point) and of the offline bag tool's output bag.

ROS-free: the message classes come in as :class:`MessageTypes` (rclpy's generated
classes in ``ros/conversions.py``, a rosbags typestore's in ``tools/output_bag.py``), so a
chunk message is built by :func:`chunk_message` in exactly one way for both. The node and
the output bag send a chunk as the bytes that message serializes to, written directly by
``core/chunk_cdr.py`` (tested against the serializers).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

GAUSSIAN_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "r", "g", "b", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
"""PointField names, in row order (field ``i`` at byte offset ``4 * i``)."""
ROW_FLOATS = len(GAUSSIAN_FIELDS)  # 14
BYTES_PER_GAUSSIAN = 4 * ROW_FLOATS  # 56: the PointCloud2 point_step
FLOAT32 = 7
"""``sensor_msgs/PointField.FLOAT32``: the datatype of every field."""
ROW_DTYPE = np.dtype("<f4")

# Column slices of a row.
COL_MEANS = slice(0, 3)
COL_COLORS = slice(3, 6)
COL_OPACITY = 6
COL_SCALES = slice(7, 10)
COL_QUATS = slice(10, 14)

MAX_MESSAGE_BYTES = 1 << 20
"""Largest serialized GaussianChunk: bigger chunks are split into parts."""
MESSAGE_OVERHEAD_BYTES = 4096
"""Budget for everything in a chunk message but the point rows (header, ids, bounds,
PointField list); keyframe ids are added on top, 8 bytes each."""


def max_gaussians_per_message(max_bytes: int = MAX_MESSAGE_BYTES, overhead: int = MESSAGE_OVERHEAD_BYTES) -> int:
    """How many Gaussians fit in one GaussianChunk of at most ``max_bytes``."""
    return (max_bytes - overhead) // BYTES_PER_GAUSSIAN


def pack_rows(rows: np.ndarray) -> np.ndarray:
    """(M, 14) Gaussian rows -> the same, C-contiguous little-endian float32 (a copy only when needed).

    Raises ValueError for any other shape.
    """
    packed = np.ascontiguousarray(rows, dtype=ROW_DTYPE)
    if packed.ndim != 2 or packed.shape[1] != ROW_FLOATS:
        raise ValueError(f"expected (M, {ROW_FLOATS}) Gaussian rows, got {packed.shape}")
    return packed


def row_bounds(rows: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(min xyz, max xyz) of the means of non-empty (M, 14) rows."""
    cols = rows[:, COL_MEANS].T.copy()   # (3, M): reducing the strided (M, 3) view along axis 0 is ~20x slower
    return tuple(float(v) for v in cols.min(axis=1)), tuple(float(v) for v in cols.max(axis=1))


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class MessageTypes:
    """The message classes of one ROS binding, and how it takes array fields.

    chunk, cloud, field, point: constructors of ``ilrm_ros/GaussianChunk``,
                  ``sensor_msgs/PointCloud2``, ``sensor_msgs/PointField`` and
                  ``geometry_msgs/Point`` taking the fields as keyword arguments.
    byte_array:   packed rows (M, 14) ``<f4`` -> the binding's ``uint8[]`` value.
    uint64_array: a sequence of ints -> the binding's ``uint64[]`` value.
    """

    chunk: Callable[..., Any]
    cloud: Callable[..., Any]
    field: Callable[..., Any]
    point: Callable[..., Any]
    byte_array: Callable[[np.ndarray], Any]
    uint64_array: Callable[[Sequence[int]], Any]


@functools.lru_cache(maxsize=8)
def point_fields(types: MessageTypes) -> tuple[Any, ...]:
    """The 14 PointFields in ``types``' class, built once per binding (messages only read them)."""
    return tuple(types.field(name=n, offset=4 * i, datatype=FLOAT32, count=1) for i, n in enumerate(GAUSSIAN_FIELDS))


def cloud_message(types: MessageTypes, rows: np.ndarray, header: Any) -> Any:
    """(M, 14) Gaussian rows -> PointCloud2 (height 1, dense, little-endian, 56-byte points)."""
    packed = pack_rows(rows)
    width = int(packed.shape[0])
    return types.cloud(header=header, height=1, width=width, fields=list(point_fields(types)), is_bigendian=False,
                       point_step=BYTES_PER_GAUSSIAN, row_step=BYTES_PER_GAUSSIAN * width,
                       data=types.byte_array(packed), is_dense=True)


def chunk_message(types: MessageTypes, update: Any, header: Any) -> Any:
    """One transport part (a ``mapping.chunks.ChunkUpdate``) -> GaussianChunk in ``types``' classes.

    Bounds are the update's own when set (``has_bounds()``), else computed from its rows;
    an empty part (DELETE, CLEAR) carries zero bounds and no points.
    """
    rows = pack_rows(update.rows if len(update.rows) else np.zeros((0, ROW_FLOATS), ROW_DTYPE))
    lo, hi = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    if len(rows):
        lo, hi = (update.bounds_min, update.bounds_max) if update.has_bounds() else row_bounds(rows)
    return types.chunk(header=header, map_id=update.map_id, chunk_key=np.asarray(update.key, np.int32).reshape(3),
                       chunk_size=float(update.chunk_size), action=int(update.action), revision=int(update.revision),
                       part=int(update.part), num_parts=int(update.num_parts), window_id=int(update.window_id),
                       keyframe_ids=types.uint64_array([int(k) for k in update.keyframe_ids]),
                       bounds_min=types.point(x=float(lo[0]), y=float(lo[1]), z=float(lo[2])),
                       bounds_max=types.point(x=float(hi[0]), y=float(hi[1]), z=float(hi[2])),
                       gaussians=cloud_message(types, rows, header))
