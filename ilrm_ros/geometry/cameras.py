"""Pinhole cameras: intrinsics helpers and per-pixel rays (Plücker coordinates).

Conventions (see docs/CONTRACTS.md):
- Poses are OpenCV camera-to-world matrices ``c2w`` (x right, y down, z forward).
- Intrinsics ``K`` are in pixels. The centre of pixel (row i, column j) sits at the
  continuous image coordinate ``(u, v) = (j + 0.5, i + 0.5)`` (gsplat's convention), so
  resizing an image by a factor ``f`` scales ``fx, fy, cx, cy`` by ``f`` exactly.
- A ray grid computed with ``stride=s`` has one ray per ``s x s`` block of pixels,
  through the block centre ``(s * (j + 0.5), s * (i + 0.5))`` in full-resolution pixels.

Ray directions are unit vectors in the world frame; the origin of every ray of a view
is that camera's centre. :class:`PinholeCameras` is the batch of cameras the renderers
take (world→camera ``viewmats``, as gsplat).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "PinholeCameras",
    "pixel_to_direction",
    "RAY_ENCODINGS",
    "ray_channels",
    "normalize_intrinsics",
    "denormalize_intrinsics",
    "scale_intrinsics",
    "pixel_centers",
    "camera_rays",
    "rays_through_pixels",
    "ray_features",
    "plucker_rays",
]

#: Ray feature layouts: "plucker6" = (o x d, d) as in the RE10K model,
#: "plucker9" = (o, d, o x d) as in the DL3DV ("wide") model.
RAY_ENCODINGS = ("plucker6", "plucker9")


@dataclass(frozen=True)
class PinholeCameras:
    """C pinhole cameras sharing one image size, in gsplat's layout.

    viewmats: (C, 4, 4) world→camera (OpenCV axes), the inverse of ``c2w``.
    Ks:       (C, 3, 3) intrinsics in pixels.
    width, height: image size in pixels.
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int

    @staticmethod
    def from_c2w(c2w: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> "PinholeCameras":
        """Cameras from camera-to-world poses ``(C, 4, 4)`` or ``(4, 4)`` and ``Ks`` ``(C, 3, 3)`` or ``(3, 3)``."""
        if c2w.dim() == 2:
            c2w = c2w[None]
        if Ks.dim() == 2:
            Ks = Ks[None]
        return PinholeCameras(torch.linalg.inv(c2w), Ks, width, height)

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])


def ray_channels(encoding: str) -> int:
    """Number of channels of a ray encoding (6 or 9)."""
    if encoding == "plucker6":
        return 6
    if encoding == "plucker9":
        return 9
    raise ValueError(f"unknown ray encoding {encoding!r}; expected one of {RAY_ENCODINGS}")


def normalize_intrinsics(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel intrinsics ``(..., 3, 3)`` -> intrinsics normalised by the image size.

    Row 0 (fx, skew, cx) is divided by ``width`` and row 1 (fy, cy) by ``height``.
    """
    out = K.clone()
    out[..., 0, :] = K[..., 0, :] / width
    out[..., 1, :] = K[..., 1, :] / height
    return out


def denormalize_intrinsics(K_norm: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Exact inverse of :func:`normalize_intrinsics`: ``(..., 3, 3)`` -> pixels."""
    out = K_norm.clone()
    out[..., 0, :] = K_norm[..., 0, :] * width
    out[..., 1, :] = K_norm[..., 1, :] * height
    return out


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float | None = None) -> torch.Tensor:
    """Intrinsics ``(..., 3, 3)`` for an image resized by ``(sx, sy)`` (pixel-centre exact)."""
    sy = sx if sy is None else sy
    out = K.clone()
    out[..., 0, :] = K[..., 0, :] * sx
    out[..., 1, :] = K[..., 1, :] * sy
    return out


def pixel_centers(
    height: int,
    width: int,
    stride: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Full-resolution pixel coordinates of the ray grid, ``(H/stride, W/stride, 2)`` as (u, v)."""
    if height % stride or width % stride:
        raise ValueError(f"image size {height}x{width} is not divisible by stride {stride}")
    h, w = height // stride, width // stride
    v = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
    u = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu, vv), dim=-1)


def pixel_to_direction(c2w: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """R K^-1: c2w (..., 4, 4), K (..., 3, 3) pixels -> (..., 3, 3) mapping a homogeneous pixel (u, v, 1)
    to its (un-normalised) world-frame ray direction."""
    return c2w[..., :3, :3] @ torch.linalg.inv(K)


def rays_through_pixels(c2w: torch.Tensor, K: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Unit world-frame ray directions through pixel coordinates.

    c2w: (..., 4, 4); K: (..., 3, 3) pixels; uv: (..., N, 2) pixel coordinates whose
    leading dims broadcast against those of ``c2w`` (e.g. ``(N, 2)`` for all cameras).
    Returns (..., N, 3).
    """
    M = pixel_to_direction(c2w, K)  # (..., 3, 3): homogeneous pixel -> world dir
    # M @ [u, v, 1] = M[:, :2] @ (u, v) + M[:, 2], done as one batched matmul.
    d = uv @ M[..., :, :2].mT + M[..., None, :, 2]
    return d / d.norm(dim=-1, keepdim=True)


def camera_rays(
    c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ray origins and unit directions on a (possibly strided) grid.

    c2w: (..., 4, 4), K: (..., 3, 3) pixels.
    Returns ``(origins, directions)``, both ``(..., H/stride, W/stride, 3)`` (channels last);
    ``origins`` is an expanded view of the camera centres (no copy).
    """
    uv = pixel_centers(height, width, stride, device=c2w.device, dtype=c2w.dtype)
    h, w = uv.shape[:2]
    d = rays_through_pixels(c2w, K, uv.reshape(h * w, 2)).unflatten(-2, (h, w))
    o = c2w[..., None, None, :3, 3].expand_as(d)
    return o, d


def ray_features(origins: torch.Tensor, directions: torch.Tensor, encoding: str = "plucker6") -> torch.Tensor:
    """Stack ray channels, channels last: ``(..., 3)`` x2 -> ``(..., 6 | 9)``.

    "plucker6": (o x d, d); "plucker9": (o, d, o x d).
    """
    m = torch.cross(origins, directions, dim=-1)
    if encoding == "plucker6":
        return torch.cat((m, directions), dim=-1)
    if encoding == "plucker9":
        return torch.cat((origins, directions, m), dim=-1)
    raise ValueError(f"unknown ray encoding {encoding!r}; expected one of {RAY_ENCODINGS}")


def plucker_rays(
    c2w: torch.Tensor, K: torch.Tensor, H: int, W: int, stride: int = 1, encoding: str = "plucker6"
) -> torch.Tensor:
    """Plücker ray images, channels first.

    c2w: (B, V, 4, 4); K: (B, V, 3, 3) pixels -> (B, V, 6, H/stride, W/stride) holding
    (o x d, d) with unit d (or (B, V, 9, ...) holding (o, d, o x d) for "plucker9").
    """
    o, d = camera_rays(c2w, K, H, W, stride)
    return ray_features(o, d, encoding).movedim(-1, -3)
