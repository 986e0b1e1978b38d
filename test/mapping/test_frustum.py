"""Frustum culling: the numpy per-Gaussian test gives exactly the flags of the torch expressions it replaced."""
from __future__ import annotations

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS, COL_SCALES, ROW_FLOATS
from ilrm_ros.mapping.frustum import in_view
from ilrm_ros.mapping.fusion import WindowCameras


def _torch_reference(rows: torch.Tensor, cams: WindowCameras, near: float, far: float, sigmas: float) -> torch.Tensor:
    pc = (rows[:, COL_MEANS] - cams.centers[0]) @ cams.c2w[0, :3, :3]
    z = pc[:, 2]
    pad = sigmas * rows[:, COL_SCALES].amax(dim=1)
    k = cams.K[0]
    zs = z.clamp_min(1e-6)
    u = k[0, 0] * pc[:, 0] / zs + k[0, 2]
    v = k[1, 1] * pc[:, 1] / zs + k[1, 2]
    r_u, r_v = k[0, 0] * pad / zs, k[1, 1] * pad / zs
    keep = (z + pad > near) & (z - pad < far)
    keep &= (u + r_u >= 0) & (u - r_u < cams.width) & (v + r_v >= 0) & (v - r_v < cams.height)
    return keep | (z.abs() <= pad)


def test_in_view_equals_the_torch_expressions_bit_for_bit():
    rng = np.random.default_rng(9)
    rows = rng.standard_normal((20000, ROW_FLOATS)).astype(np.float32) * 3
    rows[:, COL_SCALES] = np.abs(rows[:, COL_SCALES]) * 0.05
    rows[:50, 2] = 0.0                                      # on the camera plane
    angle = 0.3
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    c2w[:3, 3] = torch.tensor([0.2, -0.1, -1.0])
    for near, far, sigmas, size in ((0.01, 1e4, 3.0, (64, 64)), (0.3, 4.0, 1.5, (90, 120)), (0.05, 8.0, 0.0, (128, 128))):
        K = torch.tensor([[size[1] * 0.9, 0.0, size[1] / 2 + 0.3], [0.0, size[0] * 0.9, size[0] / 2 - 0.2], [0, 0, 1]])
        cams = WindowCameras(c2w=c2w, K=K, height=size[0], width=size[1])
        got = in_view(rows, cams, near, far, sigmas)
        want = _torch_reference(torch.from_numpy(rows), cams, near, far, sigmas).numpy()
        assert 0 < got.sum() < len(rows)
        np.testing.assert_array_equal(got, want)


def test_rotate_rows_gives_the_products_of_the_plain_matmuls_it_replaced():
    """(means - c) @ R of one camera (in_view) and the corners' (V, C, 8, 3) @ (V, 1, 3, 3) (boxes_in_frusta)."""
    from ilrm_ros.mapping.frustum import rotate_rows

    gen = torch.Generator().manual_seed(1)
    for n in (1, 7, 300, 40_000):
        for scale in (0.01, 1.0, 300.0):
            c2w = torch.eye(4).repeat(4, 1, 1)
            c2w[:, :3, :3] = torch.linalg.qr(torch.randn(4, 3, 3, generator=gen))[0]
            offsets = torch.randn(n, 3, generator=gen) * scale
            assert torch.equal(rotate_rows(offsets[None], c2w[:1, :3, :3])[0], offsets @ c2w[0, :3, :3])
            corners = torch.randn(4, max(n // 8, 1), 8, 3, generator=gen) * scale
            plain = corners @ c2w[:, None, :3, :3]
            assert torch.equal(rotate_rows(corners.reshape(4, -1, 3), c2w[:, :3, :3]).reshape(plain.shape), plain)
