"""Specification of ilrm_ros.io.image_codec and io.compressed_image (sensor_msgs/Image and CompressedImage <-> numpy, no ROS/OpenCV).

Messages are built by hand, byte by byte, from known pixel values; expected outputs are
written out independently of the decoder.
"""
import array
import io
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from ilrm_ros.io.compressed_image import decode_compressed, decode_compressed_depth, encode_compressed
from ilrm_ros.io.image_codec import SUPPORTED_IMAGE_ENCODINGS, ImageDecodeError, color_bytes_per_pixel, decode_depth, \
    decode_image, encode_image, fill_image_msg

# A 2x3 RGB test pattern: every pixel differs, every channel differs.
RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [40, 50, 60], [70, 80, 90]]],
    dtype=np.uint8,
)
PAD_BYTE = 0xAB  # garbage written into row padding


def raw_msg(rows_of_bytes: list[bytes], encoding: str, width: int, pad: int = 0, bigendian: bool = False,
            data_type=bytes):
    """An Image-like namespace from explicit per-row byte strings, with `pad` garbage bytes per row."""
    step = len(rows_of_bytes[0]) + pad
    data = b"".join(r + bytes([PAD_BYTE]) * pad for r in rows_of_bytes)
    if data_type is not bytes:
        data = data_type(data)
    return SimpleNamespace(encoding=encoding, height=len(rows_of_bytes), width=width, step=step,
                           is_bigendian=int(bigendian), data=data)


def rows(arr: np.ndarray, dtype: str = "u1") -> list[bytes]:
    return [np.ascontiguousarray(r).astype(dtype).tobytes() for r in arr]


# --------------------------------------------------------------------------- 8-bit colour


def test_rgb8_decodes_to_the_same_pixels():
    np.testing.assert_array_equal(decode_image(raw_msg(rows(RGB), "rgb8", 3)), RGB)


def test_bgr8_is_reordered_to_rgb():
    bgr = RGB[:, :, ::-1]
    np.testing.assert_array_equal(decode_image(raw_msg(rows(bgr), "bgr8", 3)), RGB)


@pytest.mark.parametrize("encoding, order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_four_channel_encodings_drop_alpha(encoding, order):
    alpha = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)[:, :, None]
    four = np.concatenate([RGB[:, :, order], alpha], axis=2)
    np.testing.assert_array_equal(decode_image(raw_msg(rows(four), encoding, 3)), RGB)


def test_mono8_is_replicated_into_three_equal_channels():
    grey = np.array([[0, 7, 255], [100, 101, 102]], dtype=np.uint8)
    out = decode_image(raw_msg(rows(grey), "mono8", 3))
    assert out.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_row_padding_in_step_is_skipped():
    out = decode_image(raw_msg(rows(RGB), "rgb8", 3, pad=5))
    np.testing.assert_array_equal(out, RGB)
    assert not np.any(out == PAD_BYTE)


@pytest.mark.parametrize("data_type", [bytes, bytearray, lambda b: array.array("B", b),
                                       lambda b: np.frombuffer(b, np.uint8).copy(), list, memoryview])
def test_data_may_be_any_byte_container(data_type):
    np.testing.assert_array_equal(decode_image(raw_msg(rows(RGB), "rgb8", 3, data_type=data_type)), RGB)


def test_decoded_array_is_a_writable_copy_not_a_view_of_the_message():
    msg = raw_msg(rows(RGB), "rgb8", 3, data_type=bytearray)
    out = decode_image(msg)
    assert out.flags.writeable and out.flags.c_contiguous and out.dtype == np.uint8
    msg.data[0] = 1  # changing the message afterwards does not change the image
    assert out[0, 0, 0] == 255
    out[:] = 0  # and the image can be modified without touching the message
    assert msg.data[1] == 0 and msg.data[3] == 0 and msg.data[4] == 255


# --------------------------------------------------------------------------- 16-bit

MONO16 = np.array([[0, 128, 129, 385], [386, 1000, 65406, 65535]], dtype=np.uint16)
# cv_bridge scales 16 -> 8 bit by round(v * 255 / 65535): 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1,
# 385/257 = 1.498 -> 1, 386/257 = 1.502 -> 2, 1000/257 = 3.89 -> 4, 65406/257 = 254.498 -> 254.
MONO16_AS_8 = np.array([[0, 0, 1, 1], [2, 4, 254, 255]], dtype=np.uint8)


def test_mono16_little_endian_is_scaled_like_cv_bridge():
    out = decode_image(raw_msg(rows(MONO16, "<u2"), "mono16", 4))
    np.testing.assert_array_equal(out[:, :, 0], MONO16_AS_8)
    np.testing.assert_array_equal(out[:, :, 2], MONO16_AS_8)


def test_mono16_big_endian_is_honoured():
    msg = raw_msg(rows(MONO16, ">u2"), "mono16", 4, pad=3, bigendian=True)
    np.testing.assert_array_equal(decode_image(msg)[:, :, 1], MONO16_AS_8)
    msg.is_bigendian = 0  # the same bytes read as little-endian give other values
    assert not np.array_equal(decode_image(msg)[:, :, 1], MONO16_AS_8)


def test_rgb16_and_bgr16_scale_each_channel():
    rgb16 = RGB.astype(np.uint16) * 257  # exact 8 -> 16 bit expansion
    np.testing.assert_array_equal(decode_image(raw_msg(rows(rgb16, "<u2"), "rgb16", 3)), RGB)
    bgr16 = rgb16[:, :, ::-1]
    np.testing.assert_array_equal(decode_image(raw_msg(rows(bgr16, ">u2"), "bgr16", 3, bigendian=True)), RGB)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: setattr(m, "data", m.data[:-1]), "needs 18 bytes of data, got 17"),
        (lambda m: setattr(m, "data", m.data + b"\x00"), "got 19"),
        (lambda m: setattr(m, "step", 8), "step 8 is smaller"),
        (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported image encoding 'bayer_rggb8'"),
        (lambda m: setattr(m, "encoding", "yuv422"), "supported: rgb8"),
        (lambda m: setattr(m, "encoding", "16UC1"), "use decode_depth"),
        (lambda m: setattr(m, "height", 0), "empty"),
    ],
)
def test_bad_messages_raise_image_decode_error(mutate, match):
    msg = raw_msg(rows(RGB), "rgb8", 3)
    mutate(msg)
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(msg)


def test_image_decode_error_is_a_value_error_so_callers_can_catch_broadly():
    assert issubclass(ImageDecodeError, ValueError)


# --------------------------------------------------------------------------- depth


def test_16uc1_depth_is_millimetres_with_zero_as_nan():
    mm = np.array([[0, 1, 1500], [65535, 250, 0]], dtype=np.uint16)
    depth = decode_depth(raw_msg(rows(mm, "<u2"), "16UC1", 3, pad=2))
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    np.testing.assert_allclose(depth[~np.isnan(depth)], [0.001, 1.5, 65.535, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(depth), [[True, False, False], [False, False, True]])


@pytest.mark.parametrize("bigendian", [False, True])
def test_32fc1_depth_is_metres_in_either_byte_order(bigendian):
    m = np.array([[0.5, np.nan, np.inf], [2.25, 10.0, 0.0]], dtype=np.float32)
    msg = raw_msg(rows(m, ">f4" if bigendian else "<f4"), "32FC1", 3, pad=4, bigendian=bigendian)
    np.testing.assert_array_equal(decode_depth(msg), m)


def test_decode_depth_rejects_colour_encodings():
    with pytest.raises(ImageDecodeError, match="unsupported depth encoding 'rgb8'"):
        decode_depth(raw_msg(rows(RGB), "rgb8", 3))


# --------------------------------------------------------------------------- compressed


def smooth_image(h=48, w=64) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), (xs + ys) * 255 // (w + h - 2)], axis=2).astype(np.uint8)


def pil_bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, format=fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8", ""])
def test_png_compressed_images_decode_exactly_whatever_the_format_string(fmt):
    img = smooth_image()
    msg = SimpleNamespace(format=fmt, data=pil_bytes(img, "PNG"))
    np.testing.assert_array_equal(decode_compressed(msg), img)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_jpeg_compressed_images_decode_approximately(fmt):
    img = smooth_image()
    msg = SimpleNamespace(format=fmt, data=np.frombuffer(pil_bytes(img, "JPEG", quality=95), np.uint8))
    out = decode_compressed(msg)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 2.0
    # channel order is right: the red ramp grows with x, the green one with y
    assert out[24, 60, 0] > 200 and out[24, 2, 0] < 30 and out[45, 30, 1] > 200


def test_compressed_grey_rgba_and_16_bit_pngs_become_rgb():
    grey = np.array([[0, 50], [200, 255]], dtype=np.uint8)
    out = decode_compressed(SimpleNamespace(format="mono8; png compressed mono8", data=pil_bytes(grey, "PNG")))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))

    rgba = np.concatenate([RGB, np.full((2, 3, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_compressed(SimpleNamespace(format="png", data=pil_bytes(rgba, "PNG"))), RGB)

    out16 = decode_compressed(SimpleNamespace(format="mono16; png compressed mono16", data=pil_bytes(MONO16, "PNG")))
    np.testing.assert_array_equal(out16[:, :, 0], MONO16_AS_8)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"", "empty"),
        (b"not an image at all", "cannot decode"),
        (None, "cannot decode"),  # a truncated JPEG, filled in below
    ],
)
def test_corrupt_compressed_data_raises_image_decode_error(payload, match):
    if payload is None:
        payload = pil_bytes(smooth_image(), "JPEG")[:200]
    with pytest.raises(ImageDecodeError, match=match):
        decode_compressed(SimpleNamespace(format="jpeg", data=payload))


def test_compressed_depth_is_refused_by_the_colour_decoder():
    with pytest.raises(ImageDecodeError, match="decode_compressed_depth"):
        decode_compressed(SimpleNamespace(format="16UC1; compressedDepth png", data=b"\x00" * 20))


def test_compressed_depth_16uc1_with_config_header():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    payload = struct.pack("<iff", 0, 0.0, 0.0) + pil_bytes(mm, "PNG")
    depth = decode_compressed_depth(SimpleNamespace(format="16UC1; compressedDepth png", data=payload))
    np.testing.assert_allclose(depth, [[np.nan, 1.0], [2.5, 65.535]], rtol=1e-6)


def test_compressed_depth_32fc1_undoes_the_inverse_depth_quantisation():
    # compressed_depth_image_transport: q = A / depth + B, A = Q (Q + 1), B = 1 - A / depth_max
    depth_quantization, depth_max = 100.0, 10.0
    quant_a = depth_quantization * (depth_quantization + 1.0)
    quant_b = 1.0 - quant_a / depth_max
    metres = np.array([[0.5, 1.0], [3.0, 9.0]])
    q = np.round(quant_a / metres + quant_b).astype(np.uint16)
    q[0, 0] = 0  # invalid pixel
    payload = struct.pack("<iff", 0, quant_a, quant_b) + pil_bytes(q, "PNG")
    depth = decode_compressed_depth(SimpleNamespace(format="32FC1; compressedDepth png", data=payload))
    assert np.isnan(depth[0, 0])
    np.testing.assert_allclose(depth.reshape(-1)[1:], metres.reshape(-1)[1:], rtol=0.01)


# --------------------------------------------------------------------------- encoders


def test_encode_image_fields_and_stamp_split():
    fields = encode_image(RGB, "rgb8", frame_id="cam", stamp_ns=3_000_000_007)
    assert fields["header"] == {"stamp": {"sec": 3, "nanosec": 7}, "frame_id": "cam"}
    assert (fields["height"], fields["width"], fields["step"], fields["is_bigendian"]) == (2, 3, 9, 0)
    assert fields["data"] == bytes(RGB.reshape(-1).tolist())


@pytest.mark.parametrize(
    "encoding, image",
    [
        ("rgb8", RGB),
        ("mono8", np.array([[1, 2, 3], [4, 5, 6]], np.uint8)),
        ("32FC1", np.array([[0.5, np.nan, 2.0], [3.0, 4.0, 1e-3]], np.float32)),
        ("16UC1", np.array([[1, 1000, 2000], [3, 4, 65535]], np.uint16)),
    ],
)
def test_encode_then_decode_round_trips(encoding, image):
    msg = SimpleNamespace(**{k: v for k, v in encode_image(image, encoding).items() if k != "header"})
    if encoding in ("32FC1", "16UC1"):
        expected = image.astype(np.float32) * (1e-3 if encoding == "16UC1" else 1.0)
        np.testing.assert_allclose(decode_depth(msg), expected, rtol=1e-6)
    else:
        expected = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(decode_image(msg), expected)


def test_encode_image_rejects_wrong_shapes_and_dtypes():
    with pytest.raises(ValueError, match="uint8"):
        encode_image(RGB.astype(np.float32), "rgb8")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        encode_image(RGB, "32FC1")
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(RGB, "bgr8")


def test_encode_image_fills_a_rosbags_message_that_survives_cdr_serialisation():
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    t = ts.types
    msg = t["sensor_msgs/msg/Image"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
        height=0, width=0, encoding="", is_bigendian=0, step=0, data=np.zeros(0, np.uint8),
    )
    assert fill_image_msg(msg, RGB, "rgb8", frame_id="cam", stamp_ns=5_000_000_001) is msg
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    assert back.header.frame_id == "cam" and (back.header.stamp.sec, back.header.stamp.nanosec) == (5, 1)
    np.testing.assert_array_equal(decode_image(back), RGB)


def test_encode_image_fills_an_rclpy_message_with_a_given_header():
    msg_mod = pytest.importorskip("sensor_msgs.msg", reason="ROS message wheels not installed")
    std_msgs = pytest.importorskip("std_msgs.msg")
    header = std_msgs.Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    depth = np.array([[1.0, 2.0], [np.nan, 4.0]])  # float64 is accepted for 32FC1
    msg = encode_image(depth, "32FC1", header=header, msg=msg_mod.Image())
    assert isinstance(msg, msg_mod.Image) and isinstance(msg.data, array.array)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 34 and msg.step == 8
    np.testing.assert_array_equal(decode_depth(msg), depth.astype(np.float32))


def test_encode_compressed_round_trips_png_exactly_and_jpeg_closely():
    img = smooth_image()
    png = encode_compressed(img, "png")
    assert png["format"] == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed(SimpleNamespace(**png)), img)
    jpg = encode_compressed(img, "jpeg", quality=95)
    assert np.abs(decode_compressed(SimpleNamespace(**jpg)).astype(int) - img).mean() < 2.0


# --------------------------------------------------------------------------- cv_bridge parity


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_matches_cv_bridge_where_it_is_installed(encoding):
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge needs a ROS install")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    rng = np.random.default_rng(3)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    pixels = rng.integers(0, np.iinfo(dtype).max, (5, 7, channels), dtype=dtype)
    ns = raw_msg(rows(pixels, "<u2" if dtype == np.uint16 else "u1"), encoding, 7, pad=4)
    msg = sensor_msgs.Image(height=ns.height, width=ns.width, encoding=encoding, is_bigendian=0, step=ns.step,
                            data=ns.data)
    expected = cv_bridge.CvBridge().imgmsg_to_cv2(msg, "rgb8")
    np.testing.assert_array_equal(decode_image(msg), expected)


@pytest.mark.parametrize(("encoding", "size"), [("rgb8", 3), ("bgra8", 4), ("mono8", 1), ("mono16", 2), ("rgba16", 8)])
def test_the_bytes_per_pixel_of_a_colour_encoding_are_known_before_decoding(encoding, size):
    assert color_bytes_per_pixel(encoding) == size


def test_only_decodable_colour_encodings_have_a_pixel_size():
    assert all(color_bytes_per_pixel(e) for e in SUPPORTED_IMAGE_ENCODINGS)
    assert color_bytes_per_pixel("32FC1") is None  # depth: decode_depth, not decode_image
    assert color_bytes_per_pixel("yuv422") is None
