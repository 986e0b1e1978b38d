"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy, without ROS or OpenCV.

Works on any object with the message's attributes (rclpy messages, ``rosbags`` message
objects, simple namespaces): ``.encoding .height .width .step .is_bigendian .data`` for
raw images, ``.format .data`` for compressed ones. ``.data`` may be ``bytes``,
``bytearray``, ``memoryview``, ``array.array`` (rclpy) or a numpy array (rosbags).

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
import io
import logging
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

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


# --------------------------------------------------------------------------- helpers


def _as_bytes(data: Any) -> np.ndarray:
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
    buf = _as_bytes(msg.data)
    if buf.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image {width}x{height} with step {step} needs {step * height} bytes "
            f"of data, got {buf.size}"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    byteorder = ">" if bool(msg.is_bigendian) else "<"
    wire = dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype
    return rows.view(wire).reshape(height, width, channels)


def _to_uint8(values: np.ndarray) -> np.ndarray:
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
    pixels = _to_uint8(pixels)
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
    return _depth_to_metres(raw, metres_per_unit)


def _depth_to_metres(raw: np.ndarray, metres_per_unit: float) -> np.ndarray:
    """(H, W) raw depth (any byte order, may be a view) -> a new float32 array in metres."""
    if raw.dtype.kind == "f":
        return np.array(raw, dtype=np.float32, order="C", copy=True)
    depth = raw.astype(np.float32) * np.float32(metres_per_unit)
    depth[raw == 0] = np.nan
    return depth


# --------------------------------------------------------------------------- compressed


def _pil_to_rgb(img: PILImage.Image) -> np.ndarray:
    """A decoded Pillow image -> (H, W, 3) uint8 RGB (16-bit grey scaled like mono16)."""
    if img.mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if img.mode == "L":
        return np.repeat(np.array(img, dtype=np.uint8)[:, :, None], 3, axis=2)
    if img.mode.startswith("I"):  # "I;16", "I;16B", "I" (16-bit PNGs)
        grey = _to_uint8(np.array(img))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "RGBX", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(img.convert("RGB"), dtype=np.uint8)
    raise ImageDecodeError(f"unsupported decoded pixel mode {img.mode!r}")


def _open_pil(payload: bytes, what: str, max_pixels: int = 0,
              draft_wh: tuple[int, int] | None = None) -> PILImage.Image:
    """Open and decode a JPEG/PNG; the size in its header is checked against ``max_pixels``
    (0 = no limit of ours; Pillow's decompression-bomb limit always applies) before decoding.
    ``draft_wh``: a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least this big."""
    try:
        with warnings.catch_warnings():  # sizes are checked below, by our limit, with a named error
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(payload))
    except PILImage.DecompressionBombError as exc:
        raise ImageTooLarge(f"{what}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        head = payload[:8].hex(" ")
        raise ImageDecodeError(f"cannot decode {what}: {len(payload)} bytes starting {head} are not an image "
                               "Pillow can read (JPEG/PNG expected)") from None
    width, height = img.size
    if max_pixels and width * height > max_pixels:
        img.close()
        raise ImageTooLarge(f"{what} declares {width}x{height} = {width * height} pixels, more than "
                            f"the limit of {max_pixels}")
    try:
        if draft_wh is not None and img.format == "JPEG":
            img.draft("RGB", draft_wh)
        img.load()
    except (OSError, ValueError, SyntaxError, struct.error, PILImage.DecompressionBombError) as exc:
        img.close()
        raise ImageDecodeError(f"cannot decode {what} ({width}x{height}, {len(payload)} bytes): {exc}") from None
    return img


def decode_compressed(msg: Any, max_pixels: int = 0, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage``-like -> (H, W, 3) uint8 RGB.

    ``max_pixels`` (0 = no limit): an image whose header declares more pixels raises
    :class:`ImageTooLarge` before its pixels are decoded. ``min_size=(H, W)``: a JPEG is
    decoded directly at a reduced scale (1/2 … 1/8, DCT scaling) as long as it stays at
    least that big — a 1080p frame for a 128-px model decodes ~4x faster.

    ``.format`` may be a bare codec (``"jpeg"``, ``"png"``) or image_transport's
    ``"rgb8; jpeg compressed bgr8"``; the payload itself is decoded by Pillow from its
    magic bytes (a JPEG/PNG stores its colours unambiguously, so the "bgr8" in the format
    string needs no channel swap). 16-bit PNGs are scaled like ``mono16``.
    ``compressedDepth`` payloads raise: use :func:`decode_compressed_depth`.
    """
    fmt = str(getattr(msg, "format", "") or "")
    if "compresseddepth" in fmt.replace(" ", "").lower():
        raise ImageDecodeError(f"format {fmt!r} is compressed depth: use decode_compressed_depth()")
    payload = _as_bytes(msg.data).tobytes()
    if not payload:
        raise ImageDecodeError(f"empty compressed image (format {fmt!r})")
    draft = None if min_size is None else (int(min_size[1]), int(min_size[0]))
    with _open_pil(payload, f"compressed image (format {fmt!r})", max_pixels, draft) as img:
        return _pil_to_rgb(img)


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DEPTH_HEADER = struct.Struct("<iff")  # compressed_depth_image_transport's ConfigHeader


def decode_compressed_depth(msg: Any) -> np.ndarray:
    """``compressedDepth`` CompressedImage-like -> (H, W) float32 metres (0/invalid -> NaN).

    Formats of compressed_depth_image_transport with the PNG codec:
    ``"16UC1; compressedDepth png"`` (a 12-byte config header, then a 16-bit PNG in
    millimetres) and ``"32FC1; compressedDepth png"`` (header ``(format, A, B)``, then a
    16-bit PNG of quantised inverse depth ``q``; depth = A / (q - B), q == 0 invalid).
    A PNG without the header is read as 16UC1 millimetres. RVL payloads are unsupported.
    """
    fmt = str(getattr(msg, "format", "") or "")
    payload = _as_bytes(msg.data).tobytes()
    if "rvl" in fmt.lower():
        raise ImageDecodeError(f"compressedDepth RVL is not supported (format {fmt!r})")
    quant: tuple[float, float] | None = None
    if payload.startswith(_PNG_MAGIC):
        png = payload
    elif len(payload) > _DEPTH_HEADER.size and payload[_DEPTH_HEADER.size :].startswith(_PNG_MAGIC):
        _, quant_a, quant_b = _DEPTH_HEADER.unpack_from(payload)
        png = payload[_DEPTH_HEADER.size :]
        quant = (quant_a, quant_b)
    else:
        raise ImageDecodeError(f"compressed depth (format {fmt!r}) holds no PNG payload")
    with _open_pil(png, f"compressed depth (format {fmt!r})") as img:
        if not img.mode.startswith("I"):
            raise ImageDecodeError(f"compressed depth PNG must be 16-bit grey, got mode {img.mode}")
        raw = np.array(img).astype(np.int64)
    if fmt.strip().startswith("32FC1"):
        if quant is None:
            raise ImageDecodeError("32FC1 compressed depth needs its quantisation header")
        depth = np.full(raw.shape, np.nan, dtype=np.float32)
        valid = raw != 0
        depth[valid] = (quant[0] / (raw[valid].astype(np.float64) - quant[1])).astype(np.float32)
        return depth
    return _depth_to_metres(raw.astype(np.uint16), 1e-3)


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


def encode_compressed(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> dict[str, Any]:
    """(H, W, 3) uint8 RGB -> ``{"format", "data": bytes}`` of a ``sensor_msgs/CompressedImage``.

    ``codec`` is ``"jpeg"`` or ``"png"``; the format string follows image_transport
    (``"rgb8; jpeg compressed bgr8"``) so standard subscribers decode it.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    out = io.BytesIO()
    img = PILImage.fromarray(np.ascontiguousarray(arr))
    if codec == "jpeg":
        img.save(out, format="JPEG", quality=int(quality))
    elif codec == "png":
        img.save(out, format="PNG")
    else:
        raise ValueError(f"unknown codec {codec!r} (expected 'jpeg' or 'png')")
    return {"format": f"rgb8; {codec} compressed bgr8", "data": out.getvalue()}
