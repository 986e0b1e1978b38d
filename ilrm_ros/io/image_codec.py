"""Raw ``sensor_msgs/Image`` <-> numpy, without ROS or OpenCV (``CompressedImage``:
:mod:`ilrm_ros.io.compressed_image`).

Works on any object with the message's attributes (rclpy messages, ``rosbags`` message
objects, simple namespaces): ``.encoding .height .width .step .is_bigendian .data``.
``.data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array`` (rclpy) or a
numpy array (rosbags).

Semantics follow cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")``:

* ``rgb8 bgr8 rgba8 bgra8`` -> RGB (alpha dropped, not composited);
* ``mono8`` -> grey replicated into 3 channels;
* 16-bit colour/mono (``mono16 rgb16 bgr16 rgba16 bgra16``) -> 8 bit by cv_bridge's
  ``convertTo(CV_8U, 255/65535)``, i.e. ``round(v * 255 / 65535) == (v + 128) // 257``
  (a linear rescale of the full 16-bit range, no auto-contrast);
* ``8UC3`` -> passed through unchanged (cv_bridge treats it as "3 channels, no colour
  order"); other generic types and Bayer are rejected.

Depth images (REP 118) go through :func:`decode_depth`: ``16UC1`` millimetres and
``32FC1`` metres -> float32 metres. Every decode returns a fresh, writable, C-contiguous
array (it never aliases the message buffer) and raises :class:`ImageDecodeError` for
anything it cannot decode, so callers can count and skip.
"""
from __future__ import annotations

import array
import logging
from typing import Any

import numpy as np

from ilrm_ros.io.frames import ns_to_stamp

logger = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image message cannot be decoded (unsupported encoding, bad size, corrupt data)."""


class ImageTooLarge(ImageDecodeError):
    """An image whose declared size exceeds a limit; raised before any pixel is decoded."""


# encoding -> (dtype, channels, indices of R, G, B in the source channels)
_COLOR_ENCODINGS: dict[str, tuple[np.dtype, int, tuple[int, int, int]]] = {
    "rgb8": (np.dtype(np.uint8), 3, (0, 1, 2)),
    "bgr8": (np.dtype(np.uint8), 3, (2, 1, 0)),
    "rgba8": (np.dtype(np.uint8), 4, (0, 1, 2)),
    "bgra8": (np.dtype(np.uint8), 4, (2, 1, 0)),
    "mono8": (np.dtype(np.uint8), 1, (0, 0, 0)),
    "8UC3": (np.dtype(np.uint8), 3, (0, 1, 2)),
    "rgb16": (np.dtype(np.uint16), 3, (0, 1, 2)),
    "bgr16": (np.dtype(np.uint16), 3, (2, 1, 0)),
    "rgba16": (np.dtype(np.uint16), 4, (0, 1, 2)),
    "bgra16": (np.dtype(np.uint16), 4, (2, 1, 0)),
    "mono16": (np.dtype(np.uint16), 1, (0, 0, 0)),
}

# depth encoding -> (dtype, metres per unit)
_DEPTH_ENCODINGS: dict[str, tuple[np.dtype, float]] = {
    "16UC1": (np.dtype(np.uint16), 1e-3),
    "32FC1": (np.dtype(np.float32), 1.0),
}

# encoding -> (dtype, channels) accepted by the encoders
_ENCODABLE: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

SUPPORTED_IMAGE_ENCODINGS = tuple(_COLOR_ENCODINGS)
SUPPORTED_DEPTH_ENCODINGS = tuple(_DEPTH_ENCODINGS)


def color_bytes_per_pixel(encoding: str) -> int | None:
    """Bytes a pixel takes in the colour ``encoding`` (e.g. 3 for rgb8, 8 for rgba16); None
    when :func:`decode_image` does not decode it."""
    spec = _COLOR_ENCODINGS.get(encoding)
    if spec is None:
        return None
    dtype, channels, _ = spec
    return dtype.itemsize * channels


# --------------------------------------------------------------------------- helpers


def as_bytes(data: Any) -> np.ndarray:
    """Message ``data`` (bytes-like, array.array, numpy, list of ints) -> 1-D uint8 view."""
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
        if flat.dtype.itemsize != 1:
            raise ImageDecodeError(f"image data must be bytes, got a {flat.dtype} array")
        return flat.view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(list(data), dtype=np.uint8)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(f"image data of type {type(data).__name__} is not bytes") from exc


def _raw_pixels(msg: Any, dtype: np.dtype, channels: int) -> np.ndarray:
    """A ``(H, W, channels)`` *view* of a raw image message's pixels (no copy).

    Honours ``step`` (row stride, may include padding) and ``is_bigendian`` (the view has
    the wire byte order); callers make the one copy they return.
    """
    try:
        height, width, step = int(msg.height), int(msg.width), int(msg.step)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageDecodeError(f"not an image message: {exc}") from exc
    encoding = str(msg.encoding)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty {encoding} image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image step {step} is smaller than width*bytes_per_pixel = {row_bytes}"
        )
    buf = as_bytes(msg.data)
    if buf.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image {width}x{height} with step {step} needs {step * height} bytes "
            f"of data, got {buf.size}"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    byteorder = ">" if bool(msg.is_bigendian) else "<"
    wire = dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype
    return rows.view(wire).reshape(height, width, channels)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """uint8 passes (a view); 16-bit -> round(v * 255 / 65535) (cv_bridge's MONO16 -> MONO8)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind in "iu":
        wide = np.clip(values.astype(np.int64), 0, 65535)
        return ((wide + 128) // 257).astype(np.uint8)
    raise ImageDecodeError(f"cannot scale {values.dtype} pixels to 8 bit")


def _select_rgb(pixels: np.ndarray, order: tuple[int, int, int]) -> np.ndarray:
    """(H, W, C) view -> a new (H, W, 3) uint8 C-contiguous RGB array, by channel indices.

    Writes into one freshly allocated output (per-channel copies; numpy fancy indexing
    on the channel axis, or an intermediate copy, is several times slower here).
    """
    pixels = to_uint8(pixels)
    out = np.empty(pixels.shape[:2] + (3,), dtype=np.uint8)
    if pixels.shape[2] >= 3 and order == (0, 1, 2):
        out[...] = pixels[:, :, :3]
        return out
    for dst, src in enumerate(order):
        out[:, :, dst] = pixels[:, :, src]
    return out


# --------------------------------------------------------------------------- raw images


def decode_image(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image``-like -> (H, W, 3) uint8 RGB (see the module doc for encodings).

    Raises :class:`ImageDecodeError` for depth encodings (use :func:`decode_depth`),
    unsupported encodings, inconsistent ``step`` or data length.
    """
    encoding = str(getattr(msg, "encoding", "")).strip()
    if encoding in _DEPTH_ENCODINGS:
        raise ImageDecodeError(f"{encoding!r} is a depth encoding: use decode_depth()")
    spec = _COLOR_ENCODINGS.get(encoding)
    if spec is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r} "
            f"(supported: {', '.join(SUPPORTED_IMAGE_ENCODINGS)})"
        )
    dtype, channels, order = spec
    return _select_rgb(_raw_pixels(msg, dtype, channels), order)


def decode_depth(msg: Any) -> np.ndarray:
    """Depth ``sensor_msgs/Image``-like -> (H, W) float32 metres.

    ``16UC1`` is millimetres (REP 118); its 0 ("no return") becomes NaN. ``32FC1`` is
    metres and passes unchanged (NaN/±inf keep their REP 118 meaning).
    """
    encoding = str(getattr(msg, "encoding", "")).strip()
    spec = _DEPTH_ENCODINGS.get(encoding)
    if spec is None:
        raise ImageDecodeError(
            f"unsupported depth encoding {encoding!r} "
            f"(supported: {', '.join(SUPPORTED_DEPTH_ENCODINGS)})"
        )
    dtype, metres_per_unit = spec
    raw = _raw_pixels(msg, dtype, 1)[:, :, 0]
    return depth_to_metres(raw, metres_per_unit)


def depth_to_metres(raw: np.ndarray, metres_per_unit: float) -> np.ndarray:
    """(H, W) raw depth (any byte order, may be a view) -> a new float32 array in metres."""
    if raw.dtype.kind == "f":
        return np.array(raw, dtype=np.float32, order="C", copy=True)
    depth = raw.astype(np.float32) * np.float32(metres_per_unit)
    depth[raw == 0] = np.nan
    return depth


# --------------------------------------------------------------------------- encoders


def _encode_fields(image: np.ndarray, encoding: str) -> dict[str, Any]:
    """Pixel fields (height, width, encoding, is_bigendian, step, data) of an Image."""
    spec = _ENCODABLE.get(encoding)
    if spec is None:
        raise ValueError(f"cannot encode {encoding!r} (supported: {', '.join(_ENCODABLE)})")
    dtype, channels = spec
    arr = np.asarray(image)
    expected_ndim = 3 if channels > 1 else 2
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "(H, W, 3)" if channels > 1 else "(H, W)"
        raise ValueError(f"{encoding} needs a {want} array, got shape {arr.shape}")
    if dtype.kind == "f" and arr.dtype.kind == "f":
        arr = arr.astype(dtype, copy=False)  # float64 depth is fine, sent as float32
    if arr.dtype != dtype:
        raise ValueError(f"{encoding} needs {dtype} pixels, got {arr.dtype}")
    height, width = int(arr.shape[0]), int(arr.shape[1])
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels * dtype.itemsize,
        "data": np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).tobytes(),
    }


def _like(existing: Any, data: bytes) -> Any:
    """Give ``data`` the container type the message already uses for its byte field."""
    if isinstance(existing, array.array):
        return array.array("B", data)
    if isinstance(existing, np.ndarray):
        return np.frombuffer(data, dtype=np.uint8).copy()
    return data


def encode_image(
    image: np.ndarray,
    encoding: str = "rgb8",
    frame_id: str = "",
    stamp_ns: int = 0,
    *,
    header: Any = None,
    msg: Any = None,
) -> Any:
    """numpy image -> a ``sensor_msgs/Image`` (filled into ``msg``) or its fields as a dict.

    image: (H, W, 3) uint8 RGB for ``rgb8``; (H, W) uint8 ``mono8``; (H, W) uint16
    ``mono16``/``16UC1``; (H, W) float ``32FC1`` (metres for depth; float64 is cast to
    float32). Data is packed little-endian without row padding (``step = W * bpp``).

    The header is ``header`` (any object with ``.frame_id`` and ``.stamp.sec/.nanosec``)
    when given, else built from ``frame_id`` and ``stamp_ns``.

    With ``msg`` (an Image-like object, e.g. rclpy's ``Image()`` or a rosbags one) the
    fields are written into it and ``msg`` is returned; ``msg.data`` keeps its container
    type (``array.array`` for rclpy, numpy for rosbags). Without ``msg`` returns
    ``{"header": {"stamp": {"sec", "nanosec"}, "frame_id"}, "height", "width",
    "encoding", "is_bigendian", "step", "data": bytes}``.
    """
    fields = _encode_fields(image, encoding)
    if header is not None:
        frame_id = str(header.frame_id)
        sec, nanosec = int(header.stamp.sec), int(header.stamp.nanosec)
    else:
        sec, nanosec = ns_to_stamp(stamp_ns)
    if msg is None:
        head = {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": str(frame_id)}
        return {"header": head, **fields}
    if header is not None:
        msg.header = header
    else:
        msg.header.frame_id = str(frame_id)
        msg.header.stamp.sec = sec
        msg.header.stamp.nanosec = nanosec
    for name in ("height", "width", "encoding", "is_bigendian", "step"):
        setattr(msg, name, fields[name])
    msg.data = _like(getattr(msg, "data", None), fields["data"])
    return msg


def fill_image_msg(
    msg: Any, image: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp_ns: int = 0
) -> Any:
    """Write an image into an Image-like message object; returns it (see :func:`encode_image`)."""
    return encode_image(image, encoding, frame_id, stamp_ns, msg=msg)
