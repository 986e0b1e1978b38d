"""Fused inference twin of the image tokenizer: rays built straight in token order.

The plain path (:meth:`ILRM._image_tokens`) computes the full-resolution ray image
(``camera_rays`` + ``ray_features``: a cross product and a concatenation per pixel),
concatenates it with the RGB image channels-first and patchifies (a 6-D permuted copy)
before one Linear. Here the same Linear input is built in one buffer that is already
in token order, (N, hh*ww, p*p, C) with channels fastest:

- the pixel grid is enumerated in token order (patch row, patch column, row in patch,
  column in patch), so every per-pixel ray value lands where patchify would put it;
- a ray's channels are linear in the un-normalised direction ``M [u, v, 1]``
  (``M = R K^-1``): ``d = M uv1 / |M uv1|`` and ``o x d = ([o]x M) uv1 / |M uv1|``, so
  (d, o x d) is one small matmul of ``[M; [o]x M]`` (6 x 3 per view) and one scaling;
- the projection runs through :func:`ilrm_ros.model.fused.linear` (oneDNN on CPU).

Same values as the plain path to float32 rounding (tests compare them). This torch code is in
turn the twin of the compiled kernel ``ilrm_ros::ray_tokens`` (:mod:`ilrm_ros.model.native`),
which writes the same buffer in one pass; :func:`image_tokens` and :func:`viewpoint_tokens` pick
the kernel where it runs.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ilrm_ros.geometry.cameras import camera_rays, pixel_centers, pixel_to_direction, ray_channels, ray_features
from ilrm_ros.model import native
from ilrm_ros.model.layers import patchify

__all__ = ["token_order_pixels", "skew", "RayRows", "ray_rows", "token_order_rays", "image_token_input", "image_tokens",
           "viewpoint_token_input", "viewpoint_tokens"]


def token_order_pixels(height: int, width: int, patch: int, device: torch.device | str | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel centres (u, v) of an H x W image in patchify's token order: (H*W, 2), pixels ordered
    (patch row, patch column, row in patch, column in patch)."""
    uv = pixel_centers(height, width, 1, device=device, dtype=dtype)  # (H, W, 2)
    hh, ww = height // patch, width // patch
    return uv.reshape(hh, patch, ww, patch, 2).permute(0, 2, 1, 3, 4).reshape(height * width, 2)


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices: v (..., 3) -> (..., 3, 3) with ``skew(v) @ x == cross(v, x)``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).unflatten(-1, (3, 3))


class RayRows(NamedTuple):
    """Per view, the six rows that map a homogeneous pixel (u, v, 1) to a ray's un-normalised channels."""

    rows: torch.Tensor            # (B, V, 6, 3): "plucker6" (o x d, d), "plucker9" (d, o x d)
    origin: torch.Tensor | None   # (B, V, 3) for "plucker9" (its first three channels), else None
    first: int                    # the direction's first row (3 or 0)

    @property
    def direction(self) -> torch.Tensor:
        """R K^-1 (B, V, 3, 3): homogeneous pixel -> world direction."""
        return self.rows[..., self.first:self.first + 3, :]


def ray_rows(c2w: torch.Tensor, K: torch.Tensor, encoding: str) -> RayRows:
    """:class:`RayRows` of cameras c2w (B, V, 4, 4), K (B, V, 3, 3) for a ray encoding."""
    if encoding not in ("plucker6", "plucker9"):
        raise ValueError(f"unknown ray encoding {encoding!r}")
    M = pixel_to_direction(c2w, K)                                   # (B, V, 3, 3) homogeneous pixel -> direction
    o = c2w[..., :3, 3]                                              # (B, V, 3)
    om = skew(o) @ M                                                  # (B, V, 3, 3) homogeneous pixel -> o x direction
    if encoding == "plucker6":
        return RayRows(torch.cat((om, M), dim=-2), None, 3)
    return RayRows(torch.cat((M, om), dim=-2), o, 0)


def token_order_rays(c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, patch: int,
                     encoding: str) -> torch.Tensor:
    """Ray features of every full-resolution pixel in token order: c2w (B, V, 4, 4), K (B, V, 3, 3)
    -> (B, V, H*W, R), the channels of :func:`ilrm_ros.geometry.cameras.ray_features` ("plucker6":
    (o x d, d); "plucker9": (o, d, o x d)) with unit d."""
    rows, o, first = ray_rows(c2w, K, encoding)
    uv = token_order_pixels(height, width, patch, device=c2w.device, dtype=c2w.dtype)  # (P, 2)
    raw = torch.matmul(uv, rows[..., :, :2].mT).add_(rows[..., None, :, 2])  # (B, V, P, 6)
    inv = torch.linalg.vector_norm(raw[..., first:first + 3], dim=-1, keepdim=True).reciprocal_()
    if o is None:
        return raw.mul_(inv)
    out = torch.empty(raw.shape[:-1] + (9,), dtype=raw.dtype, device=raw.device)
    out[..., :3] = o[..., None, :]
    torch.mul(raw, inv, out=out[..., 3:])
    return out


def image_token_input(rgb: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, patch: int, encoding: str,
                      rgb_first: bool) -> torch.Tensor:
    """The image tokenizer's Linear input, built in token order.

    rgb: (B, V, 3, H, W) in [-1, 1]; c2w (B, V, 4, 4), K (B, V, 3, 3) -> (B*V, (H/p)(W/p), p*p*C) with
    per-pixel channels (rgb, rays) when ``rgb_first`` (layout "re10k") else (rays, rgb) ("wide"),
    exactly the layout of ``patchify(cat(...))``.
    """
    b, v, _, h, w = rgb.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {patch}")
    r = ray_channels(encoding)
    rays = token_order_rays(c2w, K, h, w, patch, encoding).to(rgb.dtype)  # (B, V, P, R)
    x = torch.empty(b * v, h // patch, w // patch, patch, patch, 3 + r, dtype=rgb.dtype, device=rgb.device)
    c_rgb, c_ray = (slice(0, 3), slice(3, 3 + r)) if rgb_first else (slice(r, r + 3), slice(0, r))
    x[..., c_rgb] = rgb.reshape(b * v, 3, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    x[..., c_ray] = rays.reshape(b * v, h // patch, w // patch, patch, patch, r)
    return x.view(b * v, (h // patch) * (w // patch), patch * patch * (3 + r))


def image_tokens(images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, patch: int, encoding: str,
                 rgb_first: bool, rays: RayRows | None = None) -> torch.Tensor:
    """:func:`image_token_input` of ``images * 2 - 1`` for images (B, V, 3, H, W) in [0, 1]: from the compiled
    kernel (:mod:`ilrm_ros.model.native`, one pass) where it can run, else from this module's torch code.
    ``rays``: the cameras' :func:`ray_rows` when the caller has them."""
    h, w = images.shape[-2:]
    if native.rays_available(images, encoding, (h, w), patch) and c2w.dtype == torch.float32:
        rows, o, first = rays or ray_rows(c2w, K, encoding)
        return native.ray_tokens_op(images, rows, o, [h, w, patch, 1, first, int(rgb_first)])
    return image_token_input(images * 2.0 - 1.0, c2w, K, patch, encoding, rgb_first)


def viewpoint_token_input(c2w: torch.Tensor, K: torch.Tensor, grid: tuple[int, int], stride: int, patch: int,
                          encoding: str) -> torch.Tensor:
    """The viewpoint tokenizer's input with torch ops: the ray features of a grid (GH, GW) of every
    ``stride``-th pixel, patchified -> (B*V, (GH/p)(GW/p), p*p*R)."""
    o, d = camera_rays(c2w, K, grid[0] * stride, grid[1] * stride, stride)   # (B, V, GH, GW, 3)
    rays = ray_features(o, d, encoding).flatten(0, 1)                          # (B*V, GH, GW, R)
    return patchify(rays.permute(0, 3, 1, 2), patch)


def viewpoint_tokens(c2w: torch.Tensor, K: torch.Tensor, grid: tuple[int, int], stride: int, patch: int,
                     encoding: str, rays: RayRows | None = None) -> torch.Tensor:
    """:func:`viewpoint_token_input`, from the compiled kernel where it can run (rays built in token order).
    ``rays``: the cameras' :func:`ray_rows` when the caller has them."""
    if native.rays_available(c2w, encoding, grid, patch):
        rows, o, first = rays or ray_rows(c2w, K, encoding)
        return native.ray_tokens_op(None, rows, o, [grid[0], grid[1], patch, stride, first, 0])
    return viewpoint_token_input(c2w, K, grid, stride, patch, encoding)
