"""Posed image sets: the :class:`PosedImages` container and the nerfstudio ``transforms.json`` layout.

``transforms.json`` (nerfstudio / instant-ngp / Blender layout) as read here:

* intrinsics ``fl_x fl_y cx cy w h`` at the top level and/or per frame (per-frame
  values override the top level). Blender-style ``camera_angle_x`` (and optional
  ``camera_angle_y``) give the focal length from the image width/height instead.
  Missing ``fl_y`` -> ``fl_x``; missing ``cx``/``cy`` -> image centre; missing ``w``/``h``
  -> the image size. Distortion keys (``k1 k2 p1 p2 ...``) are ignored with a warning
  when non-zero: images are taken as pinhole.
* ``frames[].file_path``: relative to the json's folder, with or without extension
  (``.png .jpg .jpeg`` are tried). RGBA images are composited over white.
* ``frames[].transform_matrix``: camera-to-world in the OpenGL/Blender convention
  (x right, y up, z backward); converted to OpenCV (x right, y down, z forward) with
  :func:`opengl_to_opencv_c2w`.
* optional ``frames[].depth_file_path``: either a 16-bit PNG holding millimetres
  (multiplied by the top-level ``depth_unit_scale_factor``, default ``1e-3``, as in
  nerfstudio) or a ``.npy`` float array in metres. Depth is z-depth along the optical
  axis; 0 means "no measurement".
* optional ``frames[].timestamp_ns`` (our extension, integer nanoseconds).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Flips y and z of the camera axes: OpenGL (x right, y up, z back) <-> OpenCV (x right, y down, z fwd).
_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


@dataclass
class PosedImages:
    """N posed RGB frames of one sequence (OpenCV cameras).

    images:     (N, H, W, 3) uint8 RGB.
    c2w:        (N, 4, 4) float32 camera-to-world, OpenCV convention (x right, y down, z forward).
    K:          (N, 3, 3) float32 pixel intrinsics.
    names:      N frame names (file stems, unique).
    depths:     optional (N, H, W) float32 z-depth in metres along the optical axis, 0 = invalid.
    timestamps: optional (N,) int64 nanoseconds (ROS time), non-decreasing for sequences.
    """

    images: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    names: list[str]
    depths: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.c2w = np.ascontiguousarray(self.c2w, dtype=np.float32)
        self.K = np.ascontiguousarray(self.K, dtype=np.float32)
        self.names = [str(n) for n in self.names]
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {self.images.shape}")
        if self.c2w.shape != (n, 4, 4) or self.K.shape != (n, 3, 3) or len(self.names) != n:
            raise ValueError(
                f"inconsistent sizes: images {self.images.shape}, c2w {self.c2w.shape}, "
                f"K {self.K.shape}, names {len(self.names)}"
            )
        if self.depths is not None:
            self.depths = np.ascontiguousarray(self.depths, dtype=np.float32)
            if self.depths.shape != self.images.shape[:3]:
                raise ValueError(f"depths must be (N, H, W), got {self.depths.shape}")
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64).reshape(n)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def subset(self, indices) -> "PosedImages":
        """Frames at ``indices`` (sequence of ints, slice or boolean mask), as a new container."""
        idx = np.arange(len(self))[indices]
        idx = np.atleast_1d(idx)
        return PosedImages(
            images=self.images[idx],
            c2w=self.c2w[idx],
            K=self.K[idx],
            names=[self.names[i] for i in idx],
            depths=None if self.depths is None else self.depths[idx],
            timestamps=None if self.timestamps is None else self.timestamps[idx],
            meta=dict(self.meta),
        )


# --------------------------------------------------------------------------- conventions
def opengl_to_opencv_c2w(c2w_gl: np.ndarray) -> np.ndarray:
    """Camera-to-world ``(..., 4, 4)`` from OpenGL camera axes (x right, y up, z back) to OpenCV
    (x right, y down, z forward): negate the camera's y and z axes (columns 1 and 2).

    The camera centre is unchanged. The map is its own inverse; see :func:`opencv_to_opengl_c2w`.
    """
    c2w = np.asarray(c2w_gl)
    dtype = c2w.dtype if c2w.dtype.kind == "f" else np.float64
    return (c2w.astype(np.float64) @ _GL_CV_FLIP).astype(dtype)


def opencv_to_opengl_c2w(c2w_cv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opengl_to_opencv_c2w` (``(..., 4, 4)``, OpenCV -> OpenGL camera axes)."""
    return opengl_to_opencv_c2w(c2w_cv)


# --------------------------------------------------------------------------- reading
def _resolve_image_path(root: Path, rel: str) -> Path:
    p = (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if p.suffix and p.is_file():
        return p
    for ext in _IMAGE_EXTS:
        cand = p.with_name(p.name + ext)
        if cand.is_file():
            return cand
    if p.is_file():
        return p
    raise FileNotFoundError(f"image {rel!r} not found under {root} (tried extensions {_IMAGE_EXTS})")


def _relative_name(file_path: str) -> str:
    """``"./train/r_0.png"`` -> ``"train/r_0"`` (a name unique across sub-folders)."""
    p = Path(file_path)
    if p.suffix in _IMAGE_EXTS:
        p = p.with_suffix("")
    return re.sub(r"^(\./)+", "", p.as_posix())


def _read_rgb(path: Path) -> np.ndarray:
    """Image file -> ``(H, W, 3)`` uint8 RGB (alpha composited over white, grey expanded)."""
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
            a = rgba[..., 3:4] / 255.0
            rgb = rgba[..., :3] * a + 255.0 * (1.0 - a)
            return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_depth(path: Path, png_scale: float = 1e-3) -> np.ndarray:
    """Depth file -> ``(H, W)`` float32 metres: ``.npy`` already in metres, PNG integer units
    times ``png_scale`` (16-bit millimetres with the default)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return np.load(path).astype(np.float32)
    with Image.open(path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2:
        raise ValueError(f"depth image {path} must be single-channel, got shape {raw.shape}")
    return (raw.astype(np.float64) * png_scale).astype(np.float32)


def _intrinsics(src: dict, fallback: dict, img_w: int, img_h: int) -> tuple[np.ndarray, int, int]:
    """Pixel K ``(3, 3)`` and the (w, h) it refers to, from frame keys over top-level keys."""

    def get(key):
        return src.get(key, fallback.get(key))

    w = int(get("w") or img_w)
    h = int(get("h") or img_h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise ValueError("no focal length: need fl_x or camera_angle_x")
        fx = 0.5 * w / math.tan(0.5 * float(angle_x))
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = 0.5 * h / math.tan(0.5 * float(angle_y)) if angle_y is not None else fx
    cx = get("cx")
    cy = get("cy")
    cx = 0.5 * w if cx is None else float(cx)
    cy = 0.5 * h if cy is None else float(cy)
    if any(float(get(k) or 0.0) != 0.0 for k in _DISTORTION_KEYS):
        logger.warning("transforms.json has non-zero distortion coefficients; ignored (pinhole assumed)")
    k = np.array([[float(fx), 0.0, cx], [0.0, float(fy), cy], [0.0, 0.0, 1.0]], dtype=np.float64)
    return k, w, h


def load_transforms_json(path_or_dir: str | Path) -> PosedImages:
    """Read a ``transforms.json`` (or the folder holding one) into :class:`PosedImages`.

    If the json states a size ``w, h`` different from the image files, K is rescaled to
    the actual image size. All frames must share one image size. Depths are returned
    only when every frame has a ``depth_file_path``.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / "transforms.json"
    root = path.parent
    meta = json.loads(path.read_text())
    frames = meta.get("frames") or []
    if not frames:
        raise ValueError(f"{path}: no frames")
    png_scale = float(meta.get("depth_unit_scale_factor", 1e-3))

    images, c2ws, ks, names, rel_names, depths, stamps = [], [], [], [], [], [], []
    for fr in frames:
        img_path = _resolve_image_path(root, fr["file_path"])
        rgb = _read_rgb(img_path)
        img_h, img_w = rgb.shape[:2]
        k, w, h = _intrinsics(fr, meta, img_w, img_h)
        if (w, h) != (img_w, img_h):  # intrinsics stated for another resolution
            k[0] *= img_w / w
            k[1] *= img_h / h
        c2w_gl = np.asarray(fr["transform_matrix"], dtype=np.float64)
        if c2w_gl.shape == (3, 4):
            c2w_gl = np.vstack([c2w_gl, [0.0, 0.0, 0.0, 1.0]])
        images.append(rgb)
        c2ws.append(opengl_to_opencv_c2w(c2w_gl))
        ks.append(k)
        names.append(img_path.stem)
        rel_names.append(_relative_name(fr["file_path"]))
        if "depth_file_path" in fr:
            depths.append(read_depth(root / fr["depth_file_path"], png_scale))
        if "timestamp_ns" in fr:
            stamps.append(int(fr["timestamp_ns"]))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{path}: frames have different image sizes {sorted(shapes)}")
    if len(set(names)) != len(names):  # same stem in several folders: keep the relative path
        names = rel_names
    depth_arr = None
    if depths and len(depths) == len(images):
        depth_arr = np.stack(depths)
    elif depths:
        logger.warning("%s: only %d of %d frames have depth; depth dropped", path, len(depths), len(images))
    return PosedImages(
        images=np.stack(images),
        c2w=np.stack(c2ws),
        K=np.stack(ks),
        names=names,
        depths=depth_arr,
        timestamps=np.asarray(stamps, dtype=np.int64) if len(stamps) == len(images) else None,
    )


# --------------------------------------------------------------------------- writing
def _safe_stem(name: str, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return stem or f"frame_{index:05d}"


def write_depth_png(path: Path, depth_m: np.ndarray, png_scale: float = 1e-3) -> None:
    """``(H, W)`` metres -> 16-bit PNG in units of ``png_scale`` (mm by default), clipped to 65535."""
    depth = np.where(np.isfinite(depth_m), depth_m, 0.0)  # no measurement -> 0
    raw = np.clip(np.rint(depth / png_scale), 0, 65535).astype(np.uint16)
    Image.fromarray(raw).save(path)


def write_transforms_json(
    out_dir: str | Path,
    posed: PosedImages,
    *,
    image_dir: str = "images",
    depth_dir: str = "depth",
    depth_format: str = "png",
) -> Path:
    """Write ``posed`` as ``out_dir/transforms.json`` + ``images/<name>.png`` (+ depth files).

    Intrinsics go to the top level when all frames share one K, otherwise per frame.
    ``depth_format``: ``"png"`` (16-bit millimetres, what nerfstudio reads; 1 mm steps,
    at most 65.535 m) or ``"npy"`` (float32 metres, exact). Returns the json path.
    """
    if depth_format not in ("png", "npy"):
        raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    out = Path(out_dir)
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    if posed.depths is not None:
        (out / depth_dir).mkdir(parents=True, exist_ok=True)
    h, w = posed.height, posed.width

    def intr(k: np.ndarray) -> dict:
        return {
            "fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]),
            "cx": float(k[0, 2]), "cy": float(k[1, 2]), "w": w, "h": h,
        }

    shared_k = bool(np.all(posed.K == posed.K[0]))
    meta: dict = {"camera_model": "OPENCV"}
    if shared_k:
        meta.update(intr(posed.K[0]))
    c2w_gl = opencv_to_opengl_c2w(posed.c2w.astype(np.float64))
    frames = []
    stems: set[str] = set()
    for i in range(len(posed)):
        stem = _safe_stem(posed.names[i], i)
        if stem in stems:
            stem = f"{stem}_{i:05d}"
        stems.add(stem)
        Image.fromarray(posed.images[i]).save(out / image_dir / f"{stem}.png")
        fr: dict = {"file_path": f"{image_dir}/{stem}.png", "transform_matrix": c2w_gl[i].tolist()}
        if not shared_k:
            fr.update(intr(posed.K[i]))
        if posed.depths is not None:
            if depth_format == "png":
                write_depth_png(out / depth_dir / f"{stem}.png", posed.depths[i])
                fr["depth_file_path"] = f"{depth_dir}/{stem}.png"
            else:
                np.save(out / depth_dir / f"{stem}.npy", posed.depths[i].astype(np.float32))
                fr["depth_file_path"] = f"{depth_dir}/{stem}.npy"
        if posed.timestamps is not None:
            fr["timestamp_ns"] = int(posed.timestamps[i])
        frames.append(fr)
    meta["frames"] = frames
    path = out / "transforms.json"
    path.write_text(json.dumps(meta, indent=1))
    return path
