"""rosbag2 bags of posed camera streams, written and read with ``rosbags`` (pure Python).

A bag written by :func:`write_bag` holds what a robot records:

* ``sensor_msgs/Image`` (``rgb8``) on ``image_topic`` — or ``sensor_msgs/CompressedImage``
  (png or jpeg) on ``image_topic + "/compressed"``;
* ``sensor_msgs/CameraInfo`` on ``info_topic`` with every image (K, size, plumb_bob, zero
  distortion);
* ``/tf_static`` (transient-local): ``base_link -> camera_link`` (the mount) and
  ``camera_link -> camera_color_optical_frame`` (the standard optical rotation:
  z forward, x right, y down);
* ``/tf`` with a REP 105 chain: ``map -> odom`` drifting slowly and linearly (a
  localiser's correction, published at a low rate and *not* at image stamps, so every
  lookup interpolates it) and ``odom -> base_link`` at twice the image rate (at each
  image stamp and halfway between), padded before the first and after the last image.

Composing ``map -> odom -> base_link -> camera_link -> optical`` at an image stamp gives
exactly the camera's OpenCV camera-to-world pose.

:func:`read_bag` reads any bag with images, camera info and TF (also other tools' bags):
poses are ``T_target_camera`` from a :class:`~ilrm_ros.io.pose_buffer.PoseBuffer`
(the node's TF buffer) fed with all of ``/tf`` and ``/tf_static`` and holding the whole
bag (linear/slerp interpolation between samples, no extrapolation). Images are decoded
by :mod:`ilrm_ros.io.image_codec`.
"""
from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ilrm_ros.io.frames import stamp_to_ns
from ilrm_ros.io.drop_report import DropReporter, logging_emit
from ilrm_ros.io.input_stage import InputStage
from ilrm_ros.core.rotations import R_BODY_OPTICAL, matrix_to_quat_xyzw, rot_z, slerp
from ilrm_ros.io.pose_buffer import PoseBuffer
from ilrm_ros.io.rigid import invert_transform, make_transform, rigid_transform

from ilrm_ros.io.transforms_json import PosedImages

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"

# read_bag keeps every TF sample of a bag: a history window longer than any span of
# builtin_interfaces/Time stamps (int32 seconds, ~136 years) and no per-link sample cap.
_WHOLE_BAG_CACHE_S = 1e10
_WHOLE_BAG_MAX_SAMPLES = sys.maxsize


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@dataclass
class TfChain:
    """Frame names and the synthetic parts of the TF tree written by :func:`write_bag`."""

    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    camera_link_frame: str = "camera_link"
    optical_frame: str = "camera_color_optical_frame"
    base_to_camera_link: np.ndarray = field(
        default_factory=lambda: rigid_transform(np.eye(3), np.array([0.1, 0.0, 0.2]))
    )
    """T_base_cameralink (4, 4): where the camera is mounted on the robot."""
    map_odom_offset: tuple[float, float, float, float] = (0.5, -0.3, 0.0, 0.1)
    """x, y, z (m) and yaw (rad) of odom in map at the first image."""
    map_odom_drift: tuple[float, float, float, float] = (0.01, -0.005, 0.0, 0.002)
    """Rates of the same, per second (linear in time, so interpolation is exact)."""
    map_odom_period_ns: int = 500_000_000
    """map -> odom publishing period (2 Hz)."""


def _map_odom(chain: TfChain, dt_s: float) -> np.ndarray:
    x, y, z, yaw = (o + r * dt_s for o, r in zip(chain.map_odom_offset, chain.map_odom_drift))
    return rigid_transform(rot_z(yaw), np.array([x, y, z]))


def _interp_pose(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Rigid transforms (4, 4) ``a`` -> ``b`` at ``alpha``: lerp translation, slerp rotation."""
    q = slerp(matrix_to_quat_xyzw(a[:3, :3]), matrix_to_quat_xyzw(b[:3, :3]), alpha)
    return make_transform((1 - alpha) * a[:3, 3] + alpha * b[:3, 3], q)


def _stamps(posed: PosedImages, rate_hz: float, start_ns: int) -> np.ndarray:
    if posed.timestamps is not None:
        stamps = np.asarray(posed.timestamps, dtype=np.int64)
    else:
        stamps = start_ns + np.rint(np.arange(len(posed)) * 1e9 / rate_hz).astype(np.int64)
    if len(stamps) > 1 and np.any(np.diff(stamps) <= 0):
        raise ValueError("image timestamps must be strictly increasing")
    return stamps


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class BagFormat:
    """How :func:`write_bag` records a sequence.

    storage:            "mcap" or "sqlite3".
    image_topic:        raw images go here; compressed ones to ``image_topic + "/compressed"``.
    info_topic:         CameraInfo with every image.
    compressed:         CompressedImage (``compression_format``: "png", lossless, or "jpeg" at
                        ``jpeg_quality``) instead of rgb8 Image.
    rate_hz, start_ns:  image stamps ``start_ns + i / rate_hz`` when ``posed.timestamps`` is None.
    """

    storage: str = "mcap"
    image_topic: str = "/camera/color/image_raw"
    info_topic: str = "/camera/color/camera_info"
    compressed: bool = False
    compression_format: str = "png"
    jpeg_quality: int = 95
    rate_hz: float = 10.0
    start_ns: int = 1_700_000_000 * 10**9


def write_bag(path: str | Path, posed: PosedImages, fmt: BagFormat | None = None,
              chain: TfChain | None = None) -> Path:
    """Write ``posed`` as a rosbag2 bag folder at ``path`` (must not exist) in ``fmt`` (default
    :class:`BagFormat`) with the TF tree ``chain`` (default :class:`TfChain`); see the module doc."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer

    fmt = fmt or BagFormat()
    storage, image_topic, info_topic, compressed = fmt.storage, fmt.image_topic, fmt.info_topic, fmt.compressed
    compression_format, rate_hz = fmt.compression_format, fmt.rate_hz
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if compression_format not in ("png", "jpeg"):
        raise ValueError(f"compression_format must be 'png' or 'jpeg', got {compression_format!r}")
    chain = chain or TfChain()
    ts = _typestore()
    T = ts.types
    stamps = _stamps(posed, rate_hz, fmt.start_ns)
    n = len(posed)
    period = int(np.median(np.diff(stamps))) if n > 1 else int(1e9 / rate_hz)

    def header(stamp_ns: int, frame: str):
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)),
            frame_id=frame,
        )

    def tf_msg(stamp_ns: int, parent: str, child: str, m: np.ndarray):
        q = matrix_to_quat_xyzw(m[:3, :3])
        return T["geometry_msgs/msg/TransformStamped"](
            header=header(stamp_ns, parent),
            child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
                rotation=T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
            ),
        )

    t_link_optical = rigid_transform(R_BODY_OPTICAL, np.zeros(3))
    t_base_optical = np.asarray(chain.base_to_camera_link, dtype=np.float64) @ t_link_optical
    c2w = posed.c2w.astype(np.float64)
    map_base = [c2w[i] @ invert_transform(t_base_optical) for i in range(n)]
    t0 = int(stamps[0])

    def odom_base(stamp_ns: int, pose_map_base: np.ndarray) -> np.ndarray:
        return invert_transform(_map_odom(chain, (stamp_ns - t0) * 1e-9)) @ pose_map_base

    messages: list[tuple[int, int, str, object]] = []  # (stamp, order, topic, msg)
    # odom -> base_link at every image stamp and halfway between; one sample of padding each side
    half = period // 2
    samples = [(int(stamps[0]) - half, map_base[0])]
    for i in range(n):
        samples.append((int(stamps[i]), map_base[i]))
        if i + 1 < n:
            mid = int(stamps[i] + (stamps[i + 1] - stamps[i]) // 2)
            alpha = (mid - stamps[i]) / (stamps[i + 1] - stamps[i])
            samples.append((mid, _interp_pose(map_base[i], map_base[i + 1], alpha)))
    samples.append((int(stamps[-1]) + half, map_base[-1]))
    for k, (s, pose) in enumerate(samples):
        messages.append((s, 1, "/tf", T[TF_TYPE](transforms=[
            tf_msg(s, chain.odom_frame, chain.base_frame, odom_base(s, pose))])))
    # map -> odom at a low rate, offset from the image stamps, covering the whole span
    first = int(stamps[0]) - half - chain.map_odom_period_ns // 3
    last = int(stamps[-1]) + half + chain.map_odom_period_ns
    for s in range(first, last + 1, chain.map_odom_period_ns):
        messages.append((s, 1, "/tf", T[TF_TYPE](transforms=[
            tf_msg(s, chain.map_frame, chain.odom_frame, _map_odom(chain, (s - t0) * 1e-9))])))
    static = T[TF_TYPE](transforms=[
        tf_msg(first, chain.base_frame, chain.camera_link_frame, np.asarray(chain.base_to_camera_link, float)),
        tf_msg(first, chain.camera_link_frame, chain.optical_frame, t_link_optical),
    ])
    messages.append((first, 0, "/tf_static", static))

    topic = image_topic + "/compressed" if compressed else image_topic
    h, w = posed.height, posed.width
    for i in range(n):
        s = int(stamps[i])
        k = posed.K[i].astype(np.float64)
        hdr = header(s, chain.optical_frame)
        if compressed:
            buf = io.BytesIO()
            if compression_format == "png":
                Image.fromarray(posed.images[i]).save(buf, format="PNG")
            else:
                Image.fromarray(posed.images[i]).save(buf, format="JPEG", quality=fmt.jpeg_quality)
            img = T[COMPRESSED_TYPE](header=hdr, format=f"rgb8; {compression_format} compressed bgr8",
                                     data=np.frombuffer(buf.getvalue(), dtype=np.uint8))
        else:
            img = T[IMAGE_TYPE](header=hdr, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                                data=posed.images[i].reshape(-1).copy())
        p = np.zeros((3, 4))
        p[:, :3] = k
        info = T[INFO_TYPE](
            header=header(s, chain.optical_frame), height=h, width=w, distortion_model="plumb_bob",
            d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )
        messages.append((s, 2, topic, img))
        messages.append((s, 3, info_topic, info))
    messages.sort(key=lambda m: (m[0], m[1]))

    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
    path = Path(path)
    writer = Writer(path, version=9, storage_plugin=plugins[storage])
    with writer:
        conns = {
            "/tf": writer.add_connection("/tf", TF_TYPE, typestore=ts),
            "/tf_static": writer.add_connection("/tf_static", TF_TYPE, typestore=ts, offered_qos_profiles=[latched]),
            topic: writer.add_connection(topic, COMPRESSED_TYPE if compressed else IMAGE_TYPE, typestore=ts),
            info_topic: writer.add_connection(info_topic, INFO_TYPE, typestore=ts),
        }
        for stamp, _, top, msg in messages:
            writer.write(conns[top], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


# --------------------------------------------------------------------------- reading
def _camera_pose(buffer: PoseBuffer, target: str, source: str, stamp_ns: int) -> np.ndarray:
    """``T_target_source`` (4, 4) at exactly ``stamp_ns``; raises ``LookupError`` when TF can't.

    Equal frames give the identity even if TF never mentions them. PoseBuffer reads stamp 0
    as "latest common time"; an image stamped 0 is posed only when that time is 0 (e.g. an
    all-static chain), never with a later pose.
    """
    if target.lstrip("/") == source.lstrip("/"):
        return np.eye(4)
    pose, used_ns = buffer.lookup_stamped(target, source, stamp_ns)
    if used_ns != stamp_ns:
        raise LookupError(f"no transform {target!r} <- {source!r} at stamp {stamp_ns} (latest is {used_ns})")
    return pose


class _WholeBagPoses:
    """The input stage's pose lookup over a whole bag's TF: exact stamps, no extrapolation.

    Returns None where TF cannot pose an image and keeps the first reason (``first_error``).
    """

    def __init__(self, buffer: PoseBuffer) -> None:
        self.buffer = buffer
        self.first_error: str | None = None

    def __call__(self, target: str, source: str, stamp_ns: int) -> np.ndarray | None:
        try:
            return _camera_pose(self.buffer, target, source, stamp_ns)
        except LookupError as err:
            if self.first_error is None:
                self.first_error = f"stamp {stamp_ns}: {err}"
            return None


def _pick_topic(topics: dict[str, str], types: tuple[str, ...], wanted: str | None, what: str) -> str:
    if wanted is not None:
        if wanted not in topics:
            raise ValueError(f"{what} topic {wanted!r} not in bag (topics: {sorted(topics)})")
        return wanted
    cands = sorted(t for t, ty in topics.items() if ty in types)
    if len(cands) != 1:
        raise ValueError(f"need exactly one {what} topic, found {cands}; pass it explicitly")
    return cands[0]


def read_bag(
    path: str | Path,
    image_topic: str | None = None,
    info_topic: str | None = None,
    *,
    target_frame: str = "map",
    camera_frame: str | None = None,
    max_frames: int | None = None,
    reporter: DropReporter | None = None,
) -> PosedImages:
    """Read posed RGB frames from a rosbag2 bag folder (mcap or sqlite3).

    Each image's pose is ``T_target_frame <- camera_frame`` (the header's ``frame_id`` by
    default, normally an optical frame, i.e. OpenCV axes) at the image stamp, composed
    from ``/tf`` and ``/tf_static`` with interpolation and without extrapolation. Images
    whose pose cannot be resolved (no TF around that time) are skipped with one warning;
    malformed transforms (e.g. non-unit quaternions) are skipped with a warning each.
    Images go through the node's input stage (:class:`ilrm_ros.io.input_stage.InputStage`:
    size limits from the header, decoding, validated intrinsics, the pose looked up and
    validated): an image it rejects is skipped, counted by reason in ``reporter`` (default:
    one of this module's logger) and named in the log, as the node does. K comes from the
    latest camera info at or before the image (else the first one). The image topic is
    found automatically when the bag has exactly one; the camera-info topic likewise, or
    next to the image topic (``.../camera_info``).
    """
    from rosbags.rosbag2 import Reader

    ts = _typestore()
    with Reader(Path(path)) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        img_topic = _pick_topic(topics, (IMAGE_TYPE, COMPRESSED_TYPE), image_topic, "image")
        if info_topic is None:
            infos = sorted(t for t, ty in topics.items() if ty == INFO_TYPE)
            base = img_topic[: -len("/compressed")] if img_topic.endswith("/compressed") else img_topic
            sibling = base.rsplit("/", 1)[0] + "/camera_info"
            info_topic = sibling if sibling in infos else _pick_topic(topics, (INFO_TYPE,), None, "camera info")
        elif info_topic not in topics:
            raise ValueError(f"camera info topic {info_topic!r} not in bag (topics: {sorted(topics)})")
        buffer = PoseBuffer(cache_time_s=_WHOLE_BAG_CACHE_S, max_samples_per_link=_WHOLE_BAG_MAX_SAMPLES)
        infos_k: list[tuple[int, object]] = []
        frames: list[tuple[int, object, str]] = []
        wanted = [c for c in reader.connections if c.topic in (img_topic, info_topic, "/tf", "/tf_static")]
        for conn, _, raw in reader.messages(connections=wanted):
            if conn.topic in ("/tf", "/tf_static"):
                buffer.set_tf_message(ts.deserialize_cdr(raw, conn.msgtype), static=conn.topic == "/tf_static")
            elif conn.topic == info_topic:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                infos_k.append((stamp_to_ns(msg.header.stamp), msg))
            else:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                frames.append((stamp_to_ns(msg.header.stamp), msg, conn.msgtype))
    if not frames:
        raise ValueError(f"no images on {img_topic!r}")
    if not infos_k:
        raise ValueError(f"no camera info on {info_topic!r}")
    infos_k.sort(key=lambda x: x[0])
    info_stamps = [x[0] for x in infos_k]
    frames.sort(key=lambda f: f[0])

    reporter = reporter or DropReporter(logging_emit(logger))
    stage = InputStage(camera_frame=camera_frame or "", rectified="rect" in img_topic, map_frame=target_frame,
                       camera_info_topic=info_topic, reporter=reporter)
    poses = _WholeBagPoses(buffer)
    posed_frames, skipped = [], 0
    for stamp, msg, msgtype in frames:
        if max_frames is not None and len(posed_frames) >= max_frames:
            break
        stage.set_camera_info(infos_k[max(int(np.searchsorted(info_stamps, stamp, side="right")) - 1, 0)][1])
        frame = stage.accept(msg, msgtype == COMPRESSED_TYPE)
        if frame is None:
            continue
        T = stage.lookup(frame, poses)
        if T is None:
            skipped += 1
            continue
        if stage.place(frame, T) is not None:
            posed_frames.append(frame)
    if poses.first_error is not None:
        logger.warning("skipping images without a pose (first: %s)", poses.first_error)
    reporter.flush()
    dropped = reporter.counters.total("dropped_")
    if dropped:
        logger.warning("%d of %d images dropped by the input stage: %s", dropped, len(frames),
                       {k: v for k, v in reporter.counters.snapshot().items() if k.startswith("dropped_")})
    if skipped:
        logger.warning("%d of %d images skipped: no transform %s <- camera", skipped, len(frames), target_frame)
    if not posed_frames:
        raise ValueError(f"no image of {img_topic!r} could be posed in frame {target_frame!r}")
    return PosedImages(
        images=np.stack([f.rgb for f in posed_frames]),
        c2w=np.stack([f.c2w for f in posed_frames]),
        K=np.stack([f.K for f in posed_frames]),
        names=[f"frame_{i:05d}" for i in range(len(posed_frames))],
        timestamps=np.asarray([f.stamp_ns for f in posed_frames], dtype=np.int64),
        meta={"bag": str(path), "image_topic": img_topic, "info_topic": info_topic, "target_frame": target_frame},
    )
