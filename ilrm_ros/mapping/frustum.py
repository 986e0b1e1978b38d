"""Which parts of the map a camera may see: chunk boxes against the window's frusta, and the map's
Gaussians (padded by their scale) against one camera (the culling behind ``GaussianMap``'s frustum
queries and the chunks a window is fused with)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.core.wire import COL_MEANS, COL_SCALES
from ilrm_ros.mapping.chunks import ChunkKey, array_to_gaussians
from ilrm_ros.mapping.fusion import EIGHT_TRUE, WindowCameras
from ilrm_ros.mapping.map_storage import rows_bounds

__all__ = ["frustum_planes", "rotate_rows", "boxes_in_frusta", "chunks_hit", "in_view", "FrustumRows", "SeenRows"]


def frustum_planes(cams: WindowCameras, near: float, far: float) -> torch.Tensor:
    """(V, 6, 4) planes (n, d) in camera coordinates, inside where n.p + d >= 0."""
    k = cams.K
    fx, fy, cx, cy = k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    planes = [
        torch.stack([fx, zero, cx, zero], -1),                       # u >= 0
        torch.stack([-fx, zero, cams.width - cx, zero], -1),         # u <= W
        torch.stack([zero, fy, cy, zero], -1),                       # v >= 0
        torch.stack([zero, -fy, cams.height - cy, zero], -1),        # v <= H
        torch.stack([zero, zero, one, -near * one], -1),             # z >= near
        torch.stack([zero, zero, -one, far * one], -1),              # z <= far
    ]
    return torch.stack(planes, 1)


_CORNER_BITS = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32)
"""(8, 3) the corners of the unit box."""


def rotate_rows(offsets: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """offsets (V, N, 3) @ rot (V, 3, 3) -> (V, N, 3) (a view), computed as (rot^T offsets^T)^T: the same
    BLAS products and sums bit for bit (tested), several times faster on CPU for these shapes."""
    return (rot.transpose(1, 2) @ offsets.transpose(1, 2)).transpose(1, 2)


def boxes_in_frusta(lo: torch.Tensor, hi: torch.Tensor, cams: WindowCameras, near: float, far: float) -> torch.Tensor:
    """Conservative AABB-vs-frustum test: (C,) bool, True if box C may touch any camera's frustum.

    lo, hi: (C, 3) box corners in the map frame. A box is rejected only when all of its
    eight corners are outside one plane of a frustum.
    """
    if lo.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    corners = lo[:, None, :] + _CORNER_BITS[None] * (hi - lo)[:, None, :]          # (C, 8, 3)
    pc = rotate_rows((corners[None] - cams.centers[:, None, None, :]).reshape(len(cams), -1, 3),
                     cams.c2w[:, :3, :3]).reshape(len(cams), -1, 8, 3)             # (V, C, 8, 3)
    planes = frustum_planes(cams, near, far)                                       # (V, 6, 4)
    vals = torch.einsum("vcki,vpi->vckp", pc, planes[..., :3]) + planes[:, None, None, :, 3]
    # a plane with all 8 corners outside: their 8 flags, made contiguous, read as one uint64 word
    corners_out = np.ascontiguousarray((vals.numpy() < 0).transpose(0, 1, 3, 2)).view(np.uint64)[..., 0]
    outside = (corners_out == EIGHT_TRUE).any(axis=-1)                               # (V, C)
    return torch.from_numpy(~outside.all(axis=0))


def chunks_hit(table: np.ndarray, cams: WindowCameras, near: float, far: float, sigmas: float) -> np.ndarray:
    """Indices (H,) ascending of the chunks whose bounds, padded by ``sigmas`` times their largest scale, may
    touch a camera frustum. table: (C, 7) float64 lo (3), hi (3), largest scale per chunk."""
    pad = sigmas * table[:, 6:]
    hit = boxes_in_frusta(torch.from_numpy((table[:, :3] - pad).astype(np.float32)),
                          torch.from_numpy((table[:, 3:6] + pad).astype(np.float32)), cams, near, far)
    return np.flatnonzero(hit.numpy())


def in_view(rows: np.ndarray, cams: WindowCameras, near: float, far: float, sigmas: float) -> np.ndarray:
    """(N,) bool: rows (N, 14) whose mean, padded by ``sigmas`` times the largest scale, may project into
    the first camera of ``cams`` between ``near`` and ``far`` (or straddles its camera plane).

    The camera-frame means (mean - centre) @ R come from torch's matmul as its transpose, R^T (mean -
    centre)^T (3, N): the same BLAS products and sums (tested), ~3x faster on CPU for N x 3 by 3 x 3,
    and already in rows. The tests are numpy float32: the IEEE operations of the torch expressions they
    replace, in the same order (the same flags).
    """
    offsets = torch.from_numpy(rows[:, COL_MEANS]) - cams.centers[0]             # (N, 3)
    x, y, z = rotate_rows(offsets[None], cams.c2w[:1, :3, :3])[0].T.numpy()    # (3, N) rows
    c = COL_SCALES.start
    pad = np.float32(sigmas) * np.maximum(np.maximum(rows[:, c], rows[:, c + 1]), rows[:, c + 2])
    fx, fy, cx, cy = (np.float32(v) for v in cams.K[0].numpy()[[0, 1, 0, 1], [0, 1, 2, 2]])
    zs = np.maximum(z, np.float32(1e-6))
    keep = (z + pad > np.float32(near)) & (z - pad < np.float32(far))
    for centre, f, p, size in ((x, fx, cx, cams.width), (y, fy, cy, cams.height)):
        at, r = f * centre / zs + p, f * pad / zs
        keep &= at + r >= 0
        keep &= at - r < size
    keep |= np.abs(z) <= pad   # straddling the camera plane: cannot be projected reliably, kept
    return keep


@dataclass(frozen=True)
class FrustumRows:
    """What one camera may see of the map at the moment this was taken, selected later: every chunk's rows,
    held as the chunks' own arrays (which the map never modifies in place: every change writes past the
    rows or assigns new ones), and their bounds where the map had them cached (None: computed from the rows
    when needed). Taking it costs no copy and no culling; the Gaussians it gives are those of that moment.
    cams: that one camera."""

    chunks: tuple[np.ndarray, ...]
    bounds: tuple[tuple[np.ndarray, np.ndarray, float] | None, ...]
    cams: WindowCameras
    near: float
    far: float
    sigmas: float

    def gaussians(self) -> Gaussians:
        """The Gaussians (N, k) that may be visible from the camera: the chunks :func:`chunks_hit` selects,
        then their rows :func:`in_view` keeps."""
        if not self.chunks:
            return Gaussians.empty()
        table = np.array([np.concatenate([lo, hi, [smax]]) for lo, hi, smax in
                          (b if b is not None else rows_bounds(r) for r, b in zip(self.chunks, self.bounds))])
        hit = chunks_hit(table, self.cams, self.near, self.far, self.sigmas)
        if not len(hit):
            return Gaussians.empty()
        rows = np.concatenate([self.chunks[i] for i in hit.tolist()])
        keep = np.flatnonzero(in_view(rows, self.cams, self.near, self.far, self.sigmas))
        return array_to_gaussians(torch.from_numpy(rows.take(keep, axis=0)))


class SeenRows(NamedTuple):
    """One chunk's rows that a query's cameras may see: its key, the row indices (K,) ascending, the chunk's
    rows (M, 14) as they were (the map's own array: read only; the map assigns new arrays, never writes into
    these rows) and the chunk's last window id."""

    key: ChunkKey
    index: np.ndarray
    chunk_rows: np.ndarray
    last_window_id: int
