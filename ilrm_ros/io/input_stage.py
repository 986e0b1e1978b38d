"""The input stage, ROS-free: image message -> decoded Frame -> posed Frame, or a named rejection.

    decode (limits checked from the header first) -> intrinsics (validated) -> frame id
    -> [the caller waits for TF] -> place (pose validated)

Each step either returns its value or raises :class:`InputRejected` carrying a
:class:`Rejection`: the drop ``reason`` (the counter diagnostics publish), a short
``cause`` that groups log lines ("encoding 'yuv422'") and the full ``message``. Plausible
but suspicious input (a principal point outside the image, distortion on a raw topic)
passes with :class:`Note` values the caller logs by name. The node and the offline tools
share this module; messages are read by duck typing (rclpy or rosbags objects).

:class:`InputStage` runs the whole path for one camera and counts every drop by reason
through a :class:`~ilrm_ros.io.drop_report.DropReporter`: ``accept`` (decode, intrinsics,
frame id), ``lookup`` (the camera's pose in the map frame from whatever answers TF: the
node's TF source, the bag reader's whole-bag buffer) and ``place`` (validate it). The node
and ``ilrm-ros bag`` call the same methods, so a frame is dropped for the same reasons in
both.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ilrm_ros.io.drop_report import DropReporter, logging_emit
from ilrm_ros.io.frames import CameraInfoError, Frame, PoseError, camera_info_to_K, is_distorted, \
    stamp_to_ns, validate_pose
from ilrm_ros.io.compressed_image import decode_compressed
from ilrm_ros.io.image_codec import SUPPORTED_IMAGE_ENCODINGS, ImageDecodeError, ImageTooLarge, color_bytes_per_pixel, \
    decode_image
from ilrm_ros.io.pose_buffer import clean_frame_id

logger = logging.getLogger(__name__)

FOCAL_RANGE = (1e-3, 1e3)
"""Plausible fx, fy as multiples of the image width."""
MAX_TRANSLATION_M = 1e7
"""Camera positions beyond this (metres from the map origin) are not usable in float32 maps."""

PoseLookup = Callable[[str, str, int], "np.ndarray | None"]
"""``lookup(target_frame, source_frame, stamp_ns)`` -> ``T_target_source`` (4, 4), or None while unknown."""


@dataclass(frozen=True)
class Rejection:
    """Why an input was not used: ``reason`` (counter key), ``cause`` (log grouping), ``message``."""

    reason: str
    cause: str
    message: str


@dataclass(frozen=True)
class Note:
    """A named warning about input that was still used."""

    key: str
    cause: str
    message: str


class InputRejected(Exception):
    """Raised by the input stage; ``rejection`` says why."""

    def __init__(self, reason: str, cause: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(reason, cause, message)


@dataclass(frozen=True)
class InputLimits:
    """Resource limits on one image (0 = no limit)."""

    max_pixels: int = 33_554_432
    max_decoded_bytes: int = 268_435_456

    def check(self, width: int, height: int, bytes_per_pixel: int, what: str) -> None:
        """Raise ``too_large`` when ``width x height`` (decoded at ``bytes_per_pixel``) exceeds a limit."""
        pixels = int(width) * int(height)
        if self.max_pixels and pixels > self.max_pixels:
            raise InputRejected("too_large", f"more than {self.max_pixels} pixels",
                                f"{what} is {width}x{height} = {pixels} pixels, more than input.max_input_pixels "
                                f"= {self.max_pixels}")
        decoded = pixels * max(int(bytes_per_pixel), 3)
        if self.max_decoded_bytes and decoded > self.max_decoded_bytes:
            raise InputRejected("too_large", f"more than {self.max_decoded_bytes} decoded bytes",
                                f"{what} ({width}x{height}) would decode to {decoded} bytes, more than "
                                f"input.max_decoded_bytes = {self.max_decoded_bytes}")


# --------------------------------------------------------------------------- decode


def decode_raw(msg: Any, limits: InputLimits) -> np.ndarray:
    """``sensor_msgs/Image``-like -> (H, W, 3) uint8 RGB; size limits are checked before the pixels."""
    encoding = str(getattr(msg, "encoding", "")).strip()
    bytes_per_pixel = color_bytes_per_pixel(encoding)
    if bytes_per_pixel is None:
        shown = encoding if len(encoding) <= 32 else encoding[:32] + "…"
        raise InputRejected("decode_error", f"encoding {shown!r}", f"unsupported image encoding {shown!r} "
                            f"(supported: {', '.join(SUPPORTED_IMAGE_ENCODINGS)})")
    limits.check(int(msg.width), int(msg.height), bytes_per_pixel, f"{encoding} image")
    try:
        return decode_image(msg)
    except ImageDecodeError as exc:
        raise InputRejected("decode_error", f"malformed {encoding} image", str(exc)) from None


def decode_packed(msg: Any, limits: InputLimits, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage``-like -> (H, W, 3) uint8 RGB; the header's size is checked first.

    ``min_size=(H, W)``: JPEGs are decoded at a reduced scale that stays at least this big (the
    intrinsics follow, since K is rescaled to the decoded size)."""
    fmt = str(getattr(msg, "format", "") or "")[:40]
    try:
        rgb = decode_compressed(msg, max_pixels=limits.max_pixels, min_size=min_size)
    except ImageTooLarge as exc:
        raise InputRejected("too_large", f"compressed image over the size limit (format {fmt!r})", str(exc)) from None
    except ImageDecodeError as exc:
        raise InputRejected("decode_error", f"undecodable compressed image (format {fmt!r})", str(exc)) from None
    limits.check(rgb.shape[1], rgb.shape[0], 3, f"compressed image (format {fmt!r})")
    return rgb


# --------------------------------------------------------------------------- intrinsics


def intrinsics_matrix(info: Any, rectified: bool) -> Any:
    """The message to read K from: for rectified images the projection ``p`` (its left 3x3)."""
    if not rectified:
        return info
    p = np.asarray(list(getattr(info, "p", []) or []), dtype=np.float64)
    if p.shape != (12,) or not np.any(p):
        return info  # no projection matrix: fall back to k

    class _View:
        k = p.reshape(3, 4)[:, :3].reshape(-1).tolist()
        width, height = info.width, info.height
        binning_x, binning_y = getattr(info, "binning_x", 0), getattr(info, "binning_y", 0)
        roi = getattr(info, "roi", None)

    return _View()


def intrinsics(info: Any, image_hw: tuple[int, int], rectified: bool) -> tuple[np.ndarray, list[Note]]:
    """K (3, 3) for an image of ``image_hw`` from a CameraInfo-like message, with named notes.

    Drops (``bad_camera_info``): what :func:`camera_info_to_K` refuses, and fx or fy outside
    ``FOCAL_RANGE`` times the image width. Notes: a principal point outside the image;
    distortion coefficients on images that are not rectified.
    """
    try:
        K = camera_info_to_K(intrinsics_matrix(info, rectified), image_hw)
    except (CameraInfoError, TypeError, ValueError) as exc:
        raise InputRejected("bad_camera_info", "unusable camera_info", str(exc)) from None
    h, w = int(image_hw[0]), int(image_hw[1])
    lo, hi = FOCAL_RANGE
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (lo * w <= fx <= hi * w and lo * w <= fy <= hi * w):
        raise InputRejected("bad_camera_info", "absurd focal length",
                            f"camera_info focal length fx={fx:.4g}, fy={fy:.4g} is outside [{lo:g}, {hi:g}] x "
                            f"width ({w} px)")
    notes = []
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        notes.append(Note("principal_point_outside", "principal point outside the image",
                          f"camera_info principal point ({cx:.1f}, {cy:.1f}) lies outside the {w}x{h} image"))
    if not rectified and is_distorted(info):
        d = [round(float(v), 4) for v in list(info.d)[:5]]
        notes.append(Note("distortion_ignored", "distortion on a raw image topic",
                          f"camera_info has distortion {d} but the images are not rectified (input.rectified): the "
                          "model assumes a pinhole camera; feed image_rect"))
    return K, notes


# --------------------------------------------------------------------------- frame ids, poses


def camera_frame_id(header_frame_id: Any, override: str = "") -> str:
    """The optical frame to look up: ``override`` if set, else the header's (cleaned)."""
    raw = override or header_frame_id
    try:
        return clean_frame_id(raw)
    except ValueError:
        shown = repr(str(raw)[:32])
        raise InputRejected("bad_frame_id", f"frame_id {shown}", f"image header.frame_id {shown} names no frame "
                            "and frames.camera_frame is empty") from None


def usable_pose(T_map_camera: np.ndarray) -> np.ndarray:
    """The cleaned c2w (4, 4) of a camera posed at ``T_map_camera``, or ``bad_pose``.

    Refused: anything :func:`~ilrm_ros.io.frames.validate_pose` refuses, and a camera more
    than :data:`MAX_TRANSLATION_M` from the map origin along any axis.
    """
    try:
        c2w = validate_pose(T_map_camera)
    except PoseError as exc:
        raise InputRejected("bad_pose", "unusable pose", str(exc)) from None
    if float(np.max(np.abs(c2w[:3, 3]))) > MAX_TRANSLATION_M:
        raise InputRejected("bad_pose", "camera too far from the map origin",
                            f"camera position {c2w[:3, 3].tolist()} is more than {MAX_TRANSLATION_M:g} m from "
                            "the map origin")
    return c2w


def place(frame: Frame, T_map_camera: np.ndarray) -> Frame:
    """Set ``frame.c2w`` to :func:`usable_pose` of ``T_map_camera`` (``bad_pose`` otherwise); returns the frame."""
    frame.c2w = usable_pose(T_map_camera)
    return frame


# --------------------------------------------------------------------------- the stage


class InputStage:
    """image -> decode -> intrinsics -> frame id -> pose -> validated pose, for one camera.

    Keeps the latest CameraInfo. ``frame`` raises :class:`InputRejected`; ``accept``,
    ``place`` and ``drop`` count each drop as ``dropped_<reason>`` in ``reporter`` instead.

    limits:            :class:`InputLimits`.
    camera_frame:      optical frame override ("" = each image's header.frame_id).
    rectified:         whether images are rectified (K from ``p``, distortion expected).
    decode_size:       (H, W) the frames are used at (the model's input): JPEGs decode at a
                       reduced scale no smaller than this (None: full size).
    map_frame:         the frame poses are looked up in.
    camera_info_topic: named in ``no_camera_info`` drops ("" = not named).
    reporter:          where drops are counted and named (default: this module's logger).
    """

    def __init__(self, limits: InputLimits | None = None, camera_frame: str = "", rectified: bool = False,
                 decode_size: tuple[int, int] | None = None, *, map_frame: str = "map",
                 camera_info_topic: str = "", reporter: DropReporter | None = None) -> None:
        self.limits = limits or InputLimits()
        self.camera_frame = camera_frame
        self.rectified = rectified
        self.decode_size = decode_size
        self.map_frame = map_frame
        self.camera_info_topic = camera_info_topic
        self.reporter = reporter or DropReporter(logging_emit(logger))
        self.camera_info: Any = None

    def set_camera_info(self, info: Any) -> None:
        self.camera_info = info

    def frame(self, msg: Any, compressed: bool) -> tuple[Frame, list[Note]]:
        """An unposed :class:`Frame` from an image message, and notes; raises :class:`InputRejected`."""
        frame_id = camera_frame_id(getattr(msg.header, "frame_id", ""), self.camera_frame)
        rgb = decode_packed(msg, self.limits, self.decode_size) if compressed else decode_raw(msg, self.limits)
        info = self.camera_info
        if info is None:
            where = f" on '{self.camera_info_topic}'" if self.camera_info_topic else ""
            raise InputRejected("no_camera_info", "no camera_info yet", f"no camera_info received yet{where}")
        K, notes = intrinsics(info, rgb.shape[:2], self.rectified)
        return Frame(rgb=rgb, K=K, stamp_ns=stamp_to_ns(msg.header.stamp), frame_id=frame_id), notes

    def accept(self, msg: Any, compressed: bool) -> Frame | None:
        """:meth:`frame` with its notes named and a rejection counted (then None)."""
        try:
            frame, notes = self.frame(msg, compressed)
        except InputRejected as exc:
            self.drop(exc.rejection)
            return None
        for note in notes:
            self.reporter.warn(note.key, note.cause, note.message)
        return frame

    def lookup(self, frame: Frame, poses: PoseLookup) -> np.ndarray | None:
        """``T_map_camera`` (4, 4) of ``frame`` at its stamp from ``poses``, or None while unknown."""
        return poses(self.map_frame, frame.frame_id, frame.stamp_ns)

    def place(self, frame: Frame, T_map_camera: np.ndarray) -> Frame | None:
        """Set ``frame.c2w`` from its validated pose (:func:`place`); a bad pose is counted (then None)."""
        try:
            return place(frame, T_map_camera)
        except InputRejected as exc:
            self.drop(exc.rejection)
            return None

    def drop(self, rejection: Rejection, n: int = 1) -> None:
        """Count ``n`` frames dropped for ``rejection.reason`` and name its cause."""
        self.reporter.drop(rejection.reason, rejection.cause, rejection.message, n)
