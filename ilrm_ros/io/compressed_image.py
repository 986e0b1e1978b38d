"""``sensor_msgs/CompressedImage`` <-> numpy with Pillow: JPEG/PNG colour and ``compressedDepth``.

Works on any object with ``.format`` and ``.data`` (rclpy, ``rosbags``, simple
namespaces). Decoders return fresh arrays and raise
:class:`~ilrm_ros.io.image_codec.ImageDecodeError` (or its :class:`ImageTooLarge`) for
anything they cannot decode, like the raw decoders of :mod:`ilrm_ros.io.image_codec`,
whose 16-bit scaling and REP 118 depth conventions they share.
"""
from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from ilrm_ros.io.image_codec import ImageDecodeError, ImageTooLarge, as_bytes, depth_to_metres, to_uint8


def _pil_to_rgb(img: PILImage.Image) -> np.ndarray:
    """A decoded Pillow image -> (H, W, 3) uint8 RGB (16-bit grey scaled like mono16)."""
    if img.mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if img.mode == "L":
        return np.repeat(np.array(img, dtype=np.uint8)[:, :, None], 3, axis=2)
    if img.mode.startswith("I"):  # "I;16", "I;16B", "I" (16-bit PNGs)
        grey = to_uint8(np.array(img))
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
    payload = as_bytes(msg.data).tobytes()
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
    payload = as_bytes(msg.data).tobytes()
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
    return depth_to_metres(raw.astype(np.uint16), 1e-3)


# --------------------------------------------------------------------------- encoder


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
