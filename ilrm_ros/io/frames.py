"""Frames and keyframes of the mapping core, and the geometry that feeds them to the model.

ROS-free: message arguments are read by duck typing (``.k``, ``.width``, ``.sec`` …) so
rclpy messages and ``rosbags`` message objects both work.

Conventions (the package's, see docs/CONTRACTS.md):

* Cameras are OpenCV (x right, y down, z forward); poses are camera-to-world ``c2w``.
* Intrinsics ``K`` are in pixels. **Pixel-centre convention**: pixel ``(i, j)`` (column,
  row) covers the square ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``, i.e. integer
  coordinates are pixel centres and the image spans ``[-0.5, W - 0.5]``. Under this
  convention cropping at the (possibly fractional) pixel-edge offset ``x0`` and scaling
  by ``s`` maps a coordinate as ``x' = (x + 0.5 - x0) * s - 0.5``, which is what
  :func:`fit_intrinsics` applies to ``K`` (``fx' = s fx``, ``cx' = (cx + 0.5 - x0) s - 0.5``)
  and what Pillow's resampler does to the pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image as PILImage

logger = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000

FitMode = Literal["crop", "pad", "stretch"]


# --------------------------------------------------------------------------- time


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time``-like object (``.sec``, ``.nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (floor division)."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return sec, nanosec


# --------------------------------------------------------------------------- frames


@dataclass(eq=False)
class Frame:
    """One camera image with its calibration and (once TF answers) its pose.

    rgb:      (H, W, 3) uint8 RGB.
    K:        (3, 3) float64 pinhole intrinsics in pixels (for *this* rgb's size).
    stamp_ns: acquisition time, integer nanoseconds (the image header stamp).
    frame_id: the optical frame the image was taken in (header.frame_id).
    c2w:      (4, 4) float64 OpenCV camera-to-world pose, or None while unknown.
    """

    rgb: np.ndarray
    K: np.ndarray
    stamp_ns: int
    frame_id: str
    c2w: np.ndarray | None = None

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"Frame.rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"Frame.K must be (3, 3), got {K.shape}")
        self.rgb = rgb
        self.K = K
        self.stamp_ns = int(self.stamp_ns)
        if self.c2w is not None:
            c2w = np.asarray(self.c2w, dtype=np.float64)
            if c2w.shape != (4, 4):
                raise ValueError(f"Frame.c2w must be (4, 4), got {c2w.shape}")
            self.c2w = c2w

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns / NS_PER_S


@dataclass(frozen=True, eq=False)
class Keyframe:
    """A :class:`Frame` admitted to the map, with a buffer-assigned id (monotonic, unique).

    The frame's fields are forwarded (``kf.rgb``, ``kf.K``, ``kf.c2w`` …) for convenience.
    """

    id: int
    frame: Frame

    @property
    def rgb(self) -> np.ndarray:
        return self.frame.rgb

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the conventional name)
        return self.frame.K

    @property
    def c2w(self) -> np.ndarray | None:
        return self.frame.c2w

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def frame_id(self) -> str:
        return self.frame.frame_id


# --------------------------------------------------------------------------- resize / crop


@dataclass(frozen=True)
class _FitPlan:
    """How an (in_h, in_w) image becomes (out_h, out_w).

    box:     (x0, y0, x1, y1) source region in pixel-edge coordinates (may be fractional).
    size:    (w, h) the region is resampled to.
    offset:  (ox, oy) integer position of the resampled region in the output (pad mode).
    """

    box: tuple[float, float, float, float]
    size: tuple[int, int]
    offset: tuple[int, int]

    def pixel_affine(self) -> np.ndarray:
        """(3, 3) matrix A mapping source pixel coords to output pixel coords: K' = A @ K."""
        x0, y0, x1, y1 = self.box
        sx = self.size[0] / (x1 - x0)
        sy = self.size[1] / (y1 - y0)
        ox, oy = self.offset
        return np.array(
            [
                [sx, 0.0, (0.5 - x0) * sx - 0.5 + ox],
                [0.0, sy, (0.5 - y0) * sy - 0.5 + oy],
                [0.0, 0.0, 1.0],
            ]
        )


def _plan_fit(in_h: int, in_w: int, out_h: int, out_w: int, mode: str) -> _FitPlan:
    if min(in_h, in_w, out_h, out_w) <= 0:
        raise ValueError(f"sizes must be positive: in {in_h}x{in_w}, out {out_h}x{out_w}")
    if mode == "stretch":
        return _FitPlan((0.0, 0.0, float(in_w), float(in_h)), (out_w, out_h), (0, 0))
    if mode == "crop":
        # Largest centred region with exactly the target aspect (fractional edges allowed,
        # so the horizontal and vertical scales are identical: square pixels stay square).
        target = out_w / out_h
        if in_w / in_h > target:
            crop_w, crop_h = in_h * target, float(in_h)
        else:
            crop_w, crop_h = float(in_w), in_w / target
        x0, y0 = (in_w - crop_w) / 2.0, (in_h - crop_h) / 2.0
        return _FitPlan((x0, y0, x0 + crop_w, y0 + crop_h), (out_w, out_h), (0, 0))
    if mode == "pad":
        # Whole image scaled to fit inside, centred; integer size and offset (the scales
        # may differ by < 1 px between axes; K accounts for both exactly).
        s = min(out_w / in_w, out_h / in_h)
        new_w = min(out_w, max(1, round(in_w * s)))
        new_h = min(out_h, max(1, round(in_h * s)))
        offset = ((out_w - new_w) // 2, (out_h - new_h) // 2)
        return _FitPlan((0.0, 0.0, float(in_w), float(in_h)), (new_w, new_h), offset)
    raise ValueError(f"unknown fit mode {mode!r} (expected 'crop', 'pad' or 'stretch')")


def fit_intrinsics(
    K: np.ndarray, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: FitMode = "crop"
) -> np.ndarray:
    """Intrinsics after :func:`fit_to_model` with the same sizes and mode.

    K: (3, 3) pixels for an image of size ``in_hw = (H, W)``; returns (3, 3) float64 for
    ``out_hw`` (skew, if any, is scaled with x).
    """
    plan = _plan_fit(int(in_hw[0]), int(in_hw[1]), int(out_hw[0]), int(out_hw[1]), mode)
    return plan.pixel_affine() @ np.asarray(K, dtype=np.float64)


def fit_to_model(
    rgb: np.ndarray,
    K: np.ndarray,
    out_h: int,
    out_w: int,
    mode: FitMode = "crop",
    pad_value: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring an image to the model's input size, adjusting the intrinsics exactly.

    rgb: (H, W, 3) uint8; K: (3, 3) pixels. Returns ``(rgb_out (out_h, out_w, 3) uint8,
    K_new (3, 3) float64)``.

    Modes:
      * ``"crop"``    centre-crop to the target aspect ratio, then resize (no distortion,
                      loses the borders of the longer side);
      * ``"pad"``     resize to fit inside, pad the rest with ``pad_value`` (keeps everything);
      * ``"stretch"`` resize to the target size (changes the aspect: fx/fy scale differently).

    Resampling is Pillow's bilinear filter, which widens its triangle kernel by the
    shrink factor, so it also anti-aliases (area-like) when downscaling. It follows the
    pixel-centre convention of this module, so a 3-D point lands at ``K_new``'s projection
    in the output image (see the module docstring). Pillow's BOX filter is not used: it
    was measured to shift content by ~0.1 px at non-integer ratios.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    in_h, in_w = rgb.shape[:2]
    out_h, out_w = int(out_h), int(out_w)
    plan = _plan_fit(in_h, in_w, out_h, out_w, mode)
    K_new = plan.pixel_affine() @ np.asarray(K, dtype=np.float64)

    if plan.size == (in_w, in_h) and plan.box == (0.0, 0.0, float(in_w), float(in_h)):
        resized = rgb  # nothing to resample
    else:
        img = PILImage.fromarray(np.ascontiguousarray(rgb))
        resized = np.asarray(img.resize(plan.size, PILImage.Resampling.BILINEAR, box=plan.box))

    if plan.size == (out_w, out_h):
        return np.array(resized, dtype=np.uint8, copy=True), K_new
    out = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
    ox, oy = plan.offset
    out[oy : oy + plan.size[1], ox : ox + plan.size[0]] = resized
    return out, K_new


# --------------------------------------------------------------------------- camera info


class CameraInfoError(ValueError):
    """A CameraInfo message cannot give usable pinhole intrinsics."""


def camera_info_to_K(msg: Any, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/CameraInfo``-like message -> (3, 3) float64 K in pixels.

    Reads ``.k`` (9 row-major floats), ``.width``, ``.height`` and, when present,
    ``.binning_x/.binning_y/.roi``. Raises :class:`CameraInfoError` when K is not a finite
    pinhole matrix with fx, fy > 0 and bottom row (0, 0, 1) — an all-zero K is how ROS
    marks an uncalibrated camera — when the size is not positive, or when binning/ROI are
    set (not supported: use the full-resolution, un-binned stream).

    ``image_hw=(H, W)`` of the image actually received: if it differs from the
    calibration size with the same aspect (within 1 %), K is rescaled to it (pixel-centre
    convention); a different aspect raises. Distortion (``.d``) is ignored: feed rectified
    images (see :func:`is_distorted`).
    """
    k = np.asarray(list(msg.k), dtype=np.float64)
    if k.shape != (9,):
        raise CameraInfoError(f"CameraInfo.k must hold 9 values, got {k.shape[0]}")
    K = k.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise CameraInfoError(f"CameraInfo.k has non-finite values: {k.tolist()}")
    if not np.any(K):
        raise CameraInfoError("CameraInfo.k is all zeros: the camera is not calibrated")
    fx, fy = K[0, 0], K[1, 1]
    if fx <= 0 or fy <= 0:
        raise CameraInfoError(f"CameraInfo.k needs fx, fy > 0, got fx={fx}, fy={fy}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise CameraInfoError(f"CameraInfo.k is not a pinhole matrix: {k.tolist()}")
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"CameraInfo size must be positive, got {width}x{height}")
    binning = (int(getattr(msg, "binning_x", 0) or 0), int(getattr(msg, "binning_y", 0) or 0))
    roi = getattr(msg, "roi", None)
    roi_set = roi is not None and any(
        int(getattr(roi, name, 0) or 0) for name in ("x_offset", "y_offset", "width", "height")
    )
    if max(binning) > 1 or roi_set:
        raise CameraInfoError(
            f"CameraInfo binning {binning} / ROI are not supported; use the full-resolution stream"
        )
    if image_hw is None or tuple(int(v) for v in image_hw) == (height, width):
        return K.copy()
    img_h, img_w = int(image_hw[0]), int(image_hw[1])
    if abs((img_w / img_h) / (width / height) - 1.0) > 0.01:
        raise CameraInfoError(
            f"image size {img_w}x{img_h} does not match the calibration size {width}x{height}"
        )
    logger.debug("rescaling K from %dx%d to the image size %dx%d", width, height, img_w, img_h)
    return fit_intrinsics(K, (height, width), (img_h, img_w), mode="stretch")


def is_distorted(msg: Any, tol: float = 1e-9) -> bool:
    """True when a CameraInfo-like message carries non-zero distortion coefficients ``.d``."""
    d = np.asarray(list(getattr(msg, "d", None) if getattr(msg, "d", None) is not None else []), dtype=np.float64)
    return bool(d.size and np.any(np.abs(d) > tol))


# --------------------------------------------------------------------------- poses


class PoseError(ValueError):
    """A 4x4 matrix is not a usable rigid pose."""


def validate_pose(T: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Check a rigid 4x4 pose and return a cleaned float64 copy.

    Rejects (:class:`PoseError`) a wrong shape, NaN/inf, a bottom row other than
    (0, 0, 0, 1), a rotation block with ``max|RᵀR - I| > tol`` or ``det(R) <= 0``
    (reflections). Returns the pose with R re-orthonormalised (nearest rotation, via SVD)
    and an exact bottom row.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise PoseError(f"pose must be (4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise PoseError("pose has NaN/inf entries")
    if np.max(np.abs(T[3] - [0.0, 0.0, 0.0, 1.0])) > tol:
        raise PoseError(f"pose bottom row must be (0, 0, 0, 1), got {T[3].tolist()}")
    R = T[:3, :3]
    err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if err > tol:
        raise PoseError(f"rotation is not orthonormal (max |RᵀR - I| = {err:.3g} > {tol})")
    if np.linalg.det(R) <= 0:
        raise PoseError("rotation has det <= 0 (a reflection)")
    u, _, vt = np.linalg.svd(R)
    out = np.eye(4)
    out[:3, :3] = u @ vt
    out[:3, 3] = T[:3, 3]
    return out

