"""The compiled depth test of map fusion (render/csrc/depth_test_cpu.c) against its numpy twins.

project_cells is fusion.project_camera and classify_camera is the per-camera step of
window_fusion.classify_old, bit for bit: the same visibility, cells, surface/free verdicts and
squared distances on points that sit on the image border, behind or at the near plane, far
off-axis, or carry NaN/inf, against depth grids with empty (inf) cells. surface_cells gives the
twin's per-cell depth ranges and observation counts, zbuffer_cells fusion.zbuffer's scatters.
And the golden replay gives exactly the recorded stream with the kernels and with the twins.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from golden.replay import first_difference, load_expected, load_recording, replay

from ilrm_ros.mapping import fusion_native
from ilrm_ros.mapping.fusion import Projection, project_camera, zbuffer
from ilrm_ros.mapping.window_fusion import classify_camera, surface_cells
from ilrm_ros.render import native

pytestmark = pytest.mark.skipif(native.load() is None, reason=f"kernels not built: {native.status()}")

HEIGHT, WIDTH, DOWN = 48, 64, 4
K = np.array([[50.0, 0.25, 31.7], [0.0, 52.0, 23.9], [0.0, 0.0, 1.0]], np.float32)


def _points(n: int, seed: int) -> np.ndarray:
    """(3, n) camera-frame points: in front and behind, on the image border, at the near plane, non-finite."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1.0, 6.0, n).astype(np.float32)
    u, v = rng.uniform(-10, WIDTH + 10, n), rng.uniform(-10, HEIGHT + 10, n)
    u[: n // 8] = rng.choice([0.0, WIDTH, WIDTH - 1e-4, -1e-6], n // 8)          # exactly on the border
    x = ((u - K[0, 2]) * z / K[0, 0]).astype(np.float32)
    y = ((v - K[1, 2]) * z / K[1, 1]).astype(np.float32)
    z[n // 8: n // 8 + 20] = np.float32(0.05)                                      # at the near plane
    z[n // 8 + 20: n // 8 + 30] = np.float32(1e-12)
    x[-12:-8], y[-8:-4], z[-4:] = np.nan, np.inf, [np.nan, np.inf, -np.inf, 0.0]
    return np.ascontiguousarray(np.stack([x, y, z]))


def _depth_grids(cams: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (cams * cells,) dmin, dmax with a third of the cells empty (+inf / -inf)."""
    rng = np.random.default_rng(seed)
    cells = cams * (HEIGHT // DOWN) * (WIDTH // DOWN)
    dmin = rng.uniform(0.2, 5.0, cells).astype(np.float32)
    dmax = dmin + rng.uniform(0.0, 0.5, cells).astype(np.float32)
    empty = rng.random(cells) < 0.33
    dmin[empty], dmax[empty] = np.inf, -np.inf
    return dmin, dmax


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_project_cells_is_project_camera_bit_for_bit(seed):
    pc = _points(5000, seed)
    assert fusion_native.available(pc, K)
    visible, cell = fusion_native.project_cells(pc, K, (HEIGHT, WIDTH), DOWN, 0.05)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        want_visible, want_cell = project_camera(pc, K, (HEIGHT, WIDTH), DOWN, 0.05)
    assert 0 < visible.sum() < len(visible)
    np.testing.assert_array_equal(visible, want_visible)
    np.testing.assert_array_equal(cell, want_cell)


@pytest.mark.parametrize("with_closest", [True, False])
@pytest.mark.parametrize("camera", [0, 2])
def test_classify_camera_is_the_numpy_step_bit_for_bit(camera, with_closest):
    pc, depth = _points(6000, 10 + camera), _depth_grids(3, camera)
    grid = (HEIGHT, WIDTH, DOWN, camera * (HEIGHT // DOWN) * (WIDTH // DOWN))
    tol = (0.05, 0.02, 0.05)
    rng = np.random.default_rng(camera)
    start_free, start_near = rng.random(6000) < 0.1, rng.random(6000) < 0.1   # earlier cameras' verdicts

    def run(classify):
        out = (np.empty(6000, np.int32), np.empty(6000, bool), start_free.copy(), start_near.copy(),
               np.full(6000, np.inf, np.float32) if with_closest else None)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            classify(pc, K, grid, tol, depth, out)
        return out

    got, want = run(fusion_native.classify_camera), run(classify_camera)
    assert want[1].sum() > 100 and (want[2] & ~start_free).sum() > 100, "the case tests surface and free points"
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1])
def test_surface_cells_are_the_masked_scatters_bit_for_bit(seed):
    """Three cameras' verdicts on 5,000 points (depths in rows of a (V, 3, M) array, as classify_old keeps
    them): the kept points' depth range and the replaced points' largest count per cell."""
    rng = np.random.default_rng(seed)
    n_cams, m, n_cells = 3, 5000, 2000
    pc = rng.uniform(0.1, 6.0, (n_cams, 3, m)).astype(np.float32)
    near_v = rng.random((n_cams, m)) < 0.4
    flat = np.where(near_v, rng.integers(0, n_cams * n_cells, (n_cams, m)), 0).astype(np.int32)
    kept = rng.random(m) < 0.6
    obs = rng.integers(1, 50, m).astype(np.int32)
    got = fusion_native.surface_cells(near_v, flat, pc[:, 2], kept, obs, n_cells)
    want = surface_cells(near_v, flat, pc[:, 2], kept, obs, n_cells)
    assert got[3:] == want[3:] and want[3] > 1000 and want[4] > 1000
    for a, b in zip(got[:3], want[:3]):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert np.isinf(want[0]).any() and (want[2] == 0).any(), "some cells have neither"


def test_zbuffer_cells_are_the_scatters_of_zbuffer(monkeypatch):
    rng = np.random.default_rng(7)
    n_cams, n, n_cells = 4, 8000, 1024
    pc = rng.uniform(0.1, 6.0, (n_cams, 3, n)).astype(np.float32)
    proj = Projection(z=torch.from_numpy(pc[:, 2]), cell=torch.from_numpy(rng.integers(0, n_cells, (n_cams, n))),
                      visible=torch.from_numpy(rng.random((n_cams, n)) < 0.7))
    got = zbuffer(proj, n_cells)
    monkeypatch.setattr(fusion_native, "ENABLED", False)
    want = zbuffer(proj, n_cells)
    assert np.isinf(want[0].numpy()).any() and np.isfinite(want[0].numpy()).any()
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_without_the_library_or_float32_inputs_the_twins_run(monkeypatch):
    pc = _points(100, 3)
    assert not fusion_native.available(pc.astype(np.float64), K)
    assert not fusion_native.available(pc, K.astype(np.float64))
    assert not fusion_native.available(np.asfortranarray(pc), K)
    monkeypatch.setattr(fusion_native, "ENABLED", False)
    assert not fusion_native.available(pc, K) and not fusion_native.available()


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "twins"])
def test_the_golden_replay_is_exact_with_the_kernel_and_with_the_twins(monkeypatch, compiled):
    monkeypatch.setattr(fusion_native, "ENABLED", compiled)
    calls = []
    names = {"project_cells", "classify_camera", "surface_cells", "zbuffer_cells"}
    for name in names:
        kernel = getattr(fusion_native, name)
        monkeypatch.setattr(fusion_native, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    expected = load_expected()["configs"]["fused_global_eviction"]
    assert first_difference(expected, replay(load_recording(), expected["overrides"])) is None
    assert (names <= set(calls)) == compiled
