"""The hostile-input catalogue: what a hostile robot environment sends a mapping node.

Shared by the ROS-free suite (test/io/test_hostile_input_stage.py) and the DDS suite
(test/ros/test_hostile_node.py). Each case is plain data — message fields as dicts, file
contents as bytes — with the *expected* outcome: the drop reason it must be counted under
(``None`` = it must be accepted, maybe with a named note). Nothing here knows how the
code under test handles it.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

RES = 64
CAMERA_FRAME = "camera_optical_frame"


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    payload: dict[str, Any]
    expect: str | None  # drop reason / rejection reason; None = accepted
    note: str | None = None  # expected note key when accepted with a warning
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- image bytes


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR declares ``width x height`` with a tiny (wrong-sized) IDAT: a decompression bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def encoded(rgb: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(rgb).save(out, format=fmt)
    return out.getvalue()


def jpeg_with_size(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF0 header is patched to declare ``width x height``."""
    data = bytearray(encoded(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def valid_rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (RES, RES, 3), dtype=np.uint8)


def raw(encoding: str, width: int, height: int, step: int, data: bytes, frame_id: str = CAMERA_FRAME) -> dict:
    return {"encoding": encoding, "width": width, "height": height, "step": step, "data": data,
            "frame_id": frame_id, "is_bigendian": 0}


def compressed(fmt: str, data: bytes, frame_id: str = CAMERA_FRAME) -> dict:
    return {"format": fmt, "data": data, "frame_id": frame_id}


# --------------------------------------------------------------------------- categories


def encoding_cases() -> list[Case]:
    names = ["yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_bggr16", "16UC1", "32FC1", "8UC1", "8UC4", "16SC1",
             "64FC1", "", " ", "RGB8", "rgb8 x", "jpeg", "nv21", "x" * 300, "rgb8\x00", "rgb8é", "🙂"]
    return [Case("image encoding", f"encoding {n[:12]!r}", raw(n, 4, 4, 12, bytes(48)), "decode_error")
            for n in names]


def geometry_cases() -> list[Case]:
    cases = []
    for enc, bpp in (("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("mono16", 2), ("rgba8", 4), ("bgra16", 8)):
        w = h = 8
        cases += [
            Case("image layout", f"{enc} step too small", raw(enc, w, h, w * bpp - 1, bytes((w * bpp - 1) * h)),
                 "decode_error"),
            Case("image layout", f"{enc} data too short", raw(enc, w, h, w * bpp, bytes(w * bpp * h - 1)),
                 "decode_error"),
            Case("image layout", f"{enc} data too long", raw(enc, w, h, w * bpp, bytes(w * bpp * h + 7)),
                 "decode_error"),
            Case("image layout", f"{enc} zero width", raw(enc, 0, h, 0, b""), "decode_error"),
            Case("image layout", f"{enc} zero height", raw(enc, w, 0, w * bpp, b""), "decode_error"),
            Case("image layout", f"{enc} no data", raw(enc, w, h, w * bpp, b""), "decode_error"),
        ]
    return cases


def size_cases() -> list[Case]:
    cases = [Case("image size", f"rgb8 {w}x{h} declared", raw("rgb8", w, h, 3 * w, bytes(16)), "too_large")
             for w, h in ((100000, 100000), (65000, 65000), (10000, 10000), (2**31 - 1, 1), (1, 2**31 - 1),
                          (4294967295, 4294967295), (8000, 8000))]
    cases += [Case("image size", f"mono16 {w}x{h} declared", raw("mono16", w, h, 2 * w, bytes(16)), "too_large")
              for w, h in ((30000, 30000), (100000, 1000))]
    cases += [Case("image size", f"png header {w}x{h}", compressed("png", png_with_header(w, h)), "too_large",
                   extra={"compressed": True})
              for w, h in ((100000, 100000), (65000, 65000), (10000, 10000), (2**31 - 1, 2), (7000, 7000))]
    cases += [Case("image size", f"jpeg header {w}x{h}", compressed("jpeg", jpeg_with_size(w, h)), "too_large",
                   extra={"compressed": True})
              for w, h in ((65000, 65000), (60000, 1000), (10000, 10000))]
    return cases


def compressed_cases() -> list[Case]:
    rgb = valid_rgb(1)
    png, jpg = encoded(rgb, "PNG"), encoded(rgb, "JPEG")
    rng = np.random.default_rng(7)
    cases = [Case("compressed garbage", f"random {n} bytes", compressed("jpeg", rng.bytes(n)), "decode_error")
             for n in (1, 7, 64, 1000, 50_000)]
    cases += [Case("compressed garbage", f"png cut at {k}", compressed("png", png[:k]), "decode_error")
              for k in (8, 16, 33, 40, len(png) // 2, len(png) - 40)]
    cases += [Case("compressed garbage", f"jpeg cut at {k}", compressed("jpeg", jpg[:k]), "decode_error")
              for k in (2, 20, 200, len(jpg) // 2)]
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # IHDR CRC
    cases += [
        Case("compressed garbage", "png with a bad IHDR crc", compressed("png", bytes(bad_crc)), "decode_error"),
        Case("compressed garbage", "empty payload", compressed("jpeg", b""), "decode_error"),
        Case("compressed garbage", "compressedDepth payload", compressed("16UC1; compressedDepth png", png),
             "decode_error"),
        Case("compressed garbage", "text payload", compressed("png", b"<html>not an image</html>"), "decode_error"),
        Case("compressed garbage", "gif magic only", compressed("png", b"GIF89a"), "decode_error"),
    ]
    for case in cases:
        case.extra["compressed"] = True
    return cases


def frame_id_cases() -> list[Case]:
    rgb = valid_rgb(2)
    return [Case("frame id", f"frame_id {f!r}", raw("rgb8", RES, RES, 3 * RES, rgb.tobytes(), frame_id=f),
                 "bad_frame_id")
            for f in ("", " ", "/", "//", " / ", "\t", "\n", "   ")]


def camera_info(k: list[float] | None = None, width: int = RES, height: int = RES, d: list[float] | None = None,
                binning: int = 0, roi_width: int = 0) -> dict:
    f = RES * 0.9
    return {"k": list(k) if k is not None else [f, 0, RES / 2 - 0.5, 0, f, RES / 2 - 0.5, 0, 0, 1],
            "width": width, "height": height, "d": list(d or []), "binning": binning, "roi_width": roi_width}


def camera_info_cases() -> list[Case]:
    f, c = RES * 0.9, RES / 2 - 0.5
    bad = {
        "all zero k": camera_info([0.0] * 9),
        "nan in k": camera_info([np.nan, 0, c, 0, f, c, 0, 0, 1]),
        "inf in k": camera_info([f, 0, c, 0, np.inf, c, 0, 0, 1]),
        "focal 1e-30": camera_info([1e-30, 0, c, 0, 1e-30, c, 0, 0, 1]),
        "focal 1e30": camera_info([1e30, 0, c, 0, 1e30, c, 0, 0, 1]),
        "negative fy": camera_info([f, 0, c, 0, -f, c, 0, 0, 1]),
        "fx tiny only": camera_info([1e-9, 0, c, 0, f, c, 0, 0, 1]),
        "bottom row wrong": camera_info([f, 0, c, 0, f, c, 0, 1, 1]),
        "lower skew": camera_info([f, 0, c, 3.0, f, c, 0, 0, 1]),
        "zero width": camera_info(width=0),
        "zero height": camera_info(height=0),
        "binning 2": camera_info(binning=2),
        "roi set": camera_info(roi_width=16),
        "aspect mismatch": camera_info(width=2 * RES, height=RES),
        "k of 8 values": camera_info([f, 0, c, 0, f, c, 0, 0]),
    }
    cases = [Case("camera_info", name, info, "bad_camera_info") for name, info in bad.items()]
    cases += [
        Case("camera_info", "principal point far outside", camera_info([f, 0, 5 * RES, 0, f, c, 0, 0, 1]), None,
             note="principal_point_outside"),
        Case("camera_info", "principal point negative", camera_info([f, 0, c, 0, f, -40.0, 0, 0, 1]), None,
             note="principal_point_outside"),
        Case("camera_info", "distortion on a raw topic", camera_info(d=[0.1, -0.05, 0, 0, 0.01]), None,
             note="distortion_ignored"),
        Case("camera_info", "strong distortion on a raw topic", camera_info(d=[-0.9, 0.5, 0.01, 0.01, -0.2]), None,
             note="distortion_ignored"),
    ]
    return cases


def pose_cases() -> list[Case]:
    nan = np.eye(4)
    nan[1, 3] = np.nan
    reflect = np.diag([1.0, 1.0, -1.0, 1.0])
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    bottom = np.eye(4)
    bottom[3, 0] = 0.5
    far = np.eye(4)
    far[0, 3] = 1e9
    shear = np.eye(4)
    shear[0, 1] = 0.3
    inf = np.eye(4)
    inf[2, 2] = np.inf
    return [Case("poses", name, {"T": T}, "bad_pose") for name, T in
            (("nan translation", nan), ("reflection", reflect), ("scaled rotation", scaled),
             ("bad bottom row", bottom), ("1e9 m away", far), ("sheared rotation", shear), ("inf rotation", inf))]


def tf_cases(now_ns: int) -> list[Case]:
    """Hostile transforms. ``now_ns`` is the clock of the buffer under test (0 = none)."""
    q = [0.0, 0.0, 0.0, 1.0]
    cases = [
        Case("tf", "nan translation", {"parent": "odom", "child": "base_link", "t": [np.nan, 0, 0], "q": q}, "invalid"),
        Case("tf", "inf translation", {"parent": "odom", "child": "base_link", "t": [0, np.inf, 0], "q": q}, "invalid"),
        Case("tf", "zero quaternion", {"parent": "odom", "child": "base_link", "t": [0, 0, 0], "q": [0, 0, 0, 0]},
             "invalid"),
        Case("tf", "quaternion norm 2", {"parent": "odom", "child": "base_link", "t": [0, 0, 0], "q": [0, 0, 0, 2]},
             "invalid"),
        Case("tf", "nan quaternion", {"parent": "odom", "child": "base_link", "t": [0, 0, 0],
                                      "q": [np.nan, 0, 0, 1]}, "invalid"),
        Case("tf", "own parent", {"parent": "base_link", "child": "base_link", "t": [0, 0, 0], "q": q}, "invalid"),
    ]
    cases += [Case("tf", f"child {c!r}", {"parent": "odom", "child": c, "t": [0, 0, 0], "q": q}, "invalid")
              for c in ("", " ", "/", "//")]
    cases += [Case("tf", f"parent {p!r}", {"parent": p, "child": "base_link", "t": [0, 0, 0], "q": q}, "invalid")
              for p in ("", " ", "/")]
    cases += [Case("tf", f"cycle {p} -> {c}", {"parent": p, "child": c, "t": [0, 0, 0], "q": q}, "loop")
              for p, c in (("base_link", "map"), ("base_link", "odom"), ("camera_link", "base_link"),
                           (CAMERA_FRAME, "map"), (CAMERA_FRAME, "camera_link"))]
    if now_ns:
        cases += [Case("tf", f"{s:g} s ahead of the clock", {"parent": "odom", "child": "base_link", "t": [0, 0, 0],
                                                             "q": q, "stamp_ns": now_ns + int(s * 1e9)}, "future")
                  for s in (60, 3600, 1e6, 1e9)]
    cases += [Case("tf", f"re-parent {c} to {p}", {"parent": p, "child": c, "t": [5, 5, 5], "q": q}, None)
              for p, c in (("odom", CAMERA_FRAME), ("map", "base_link"), ("map", CAMERA_FRAME))]
    return cases


def ply_bytes(n: int, values: dict[str, float] | None = None, declared: int | None = None, cut: int = 0) -> bytes:
    """A binary 3DGS PLY of ``n`` valid Gaussians; ``values`` overrides columns in every row."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    table = np.zeros(n, dtype=[(name, "<f4") for name in names])
    rng = np.random.default_rng(3)
    for i, name in enumerate("xyz"):
        table[name] = rng.uniform(-2, 2, n)
    table["opacity"] = 2.0
    for name in ("scale_0", "scale_1", "scale_2"):
        table[name] = np.log(0.05)
    table["rot_0"] = 1.0
    for name, value in (values or {}).items():
        table[name] = value
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {declared or n}",
                        *[f"property float {name}" for name in names], "end_header"]) + "\n"
    data = header.encode() + table.tobytes()
    return data[:len(data) - cut] if cut else data


def map_file_cases() -> list[Case]:
    cases = [
        Case("map files", "all NaN positions", {"bytes": ply_bytes(50, {"x": np.nan, "y": np.nan, "z": np.nan})},
             "rejected"),
        Case("map files", "NaN opacity", {"bytes": ply_bytes(50, {"opacity": np.nan})}, "rejected"),
        Case("map files", "inf scale", {"bytes": ply_bytes(50, {"scale_1": np.inf})}, "rejected"),
        Case("map files", "scale e^30 m", {"bytes": ply_bytes(50, {"scale_0": 30.0})}, "rejected"),
        Case("map files", "zero quaternions", {"bytes": ply_bytes(50, {"rot_0": 0.0})}, "rejected"),
        Case("map files", "positions 1e12 m", {"bytes": ply_bytes(50, {"x": 1e12})}, "rejected"),
        Case("map files", "NaN colour", {"bytes": ply_bytes(50, {"f_dc_2": np.nan})}, "rejected"),
        Case("map files", "count beyond the data", {"bytes": ply_bytes(50, declared=5000)}, "rejected"),
        Case("map files", "10^12 vertices declared", {"bytes": ply_bytes(10, declared=10**12)}, "rejected"),
        Case("map files", "truncated body", {"bytes": ply_bytes(50, cut=30)}, "rejected"),
        Case("map files", "not a PLY", {"bytes": b"hello, I am not a map\n" * 10}, "rejected"),
        Case("map files", "empty file", {"bytes": b""}, "rejected"),
        Case("map files", "header only", {"bytes": b"ply\nformat binary_little_endian 1.0\n"}, "rejected"),
        Case("map files", "all transparent", {"bytes": ply_bytes(50, {"opacity": -30.0})}, "rejected"),
        Case("map files", "missing file", {"path": "does/not/exist.ply"}, "rejected"),
        Case("map files", "a directory", {"path": "."}, "rejected"),
    ]
    return cases


def render_cases() -> list[Case]:
    k = [50.0, 0, 31.5, 0, 50.0, 31.5, 0, 0, 1]
    q = [0.0, 0.0, 0.0, 1.0]
    items = {
        "zero quaternion": (64, 64, k, [0, 0, 0], [0, 0, 0, 0]),
        "nan quaternion": (64, 64, k, [0, 0, 0], [np.nan, 0, 0, 1]),
        "nan position": (64, 64, k, [np.nan, 0, 0], q),
        "1e9 m away": (64, 64, k, [1e9, 0, 0], q),
        "zero size": (0, 0, k, [0, 0, 0], q),
        "100000x100000": (100000, 100000, k, [0, 0, 0], q),
        "65000x65000": (65000, 65000, k, [0, 0, 0], q),
        "all-zero k": (64, 64, [0.0] * 9, [0, 0, 0], q),
        "nan k": (64, 64, [np.nan] * 9, [0, 0, 0], q),
        "negative fx": (64, 64, [-50.0, 0, 31.5, 0, 50.0, 31.5, 0, 0, 1], [0, 0, 0], q),
    }
    return [Case("render requests", name, {"width": w, "height": h, "k": kk, "t": t, "q": qq}, "rejected")
            for name, (w, h, kk, t, qq) in items.items()]


def parameter_cases() -> list[Case]:
    """Parameter sets that must be rejected as a whole (each leaves every value unchanged)."""
    sets = {
        "min_interval above max_interval": {"keyframes.min_interval_s": 5.0},
        "max_interval below min_interval in one set": {"keyframes.min_interval_s": 1.0, "keyframes.max_interval_s": 0.5},
        "rotation 500 deg": {"keyframes.min_rotation_deg": 500.0},
        "negative translation": {"keyframes.min_translation_m": -1.0},
        "background out of range": {"render.background": [2.0, 0.0, 0.0]},
        "background nan": {"render.background": [float("nan"), 0.0, 0.0]},
        "background 2 values": {"render.background": [1.0, 1.0]},
        "novel offset inf": {"render.novel_offset": [0.0, float("inf"), 0.0]},
        "source not a choice": {"render.source": "somewhere"},
        "tf timeout negative": {"frames.tf_timeout_s": -1.0},
        "good and bad together": {"keyframes.min_translation_m": 0.5, "keyframes.min_rotation_deg": 999.0},
        "future horizon negative": {"frames.tf_max_future_s": -5.0},
    }
    return [Case("parameters", name, {"values": values}, "rejected") for name, values in sets.items()]


def core_catalogue(now_ns: int = 10**18) -> list[Case]:
    return (encoding_cases() + geometry_cases() + size_cases() + compressed_cases() + frame_id_cases()
            + camera_info_cases() + pose_cases() + tf_cases(now_ns) + map_file_cases() + render_cases()
            + parameter_cases())
