"""The map fusion's depth test, compiled: points projected into a camera's cell grid and tested
against per-cell depth ranges, in one pass per camera (``render/csrc/depth_test_cpu.c``, in the
CPU rasterizer's library).

The numpy twins are :func:`ilrm_ros.mapping.fusion.project_camera` and the per-camera loop of
:func:`ilrm_ros.mapping.window_fusion.classify_old`; the kernel does their float32 operations in
their order, so the results are the same bits (``test/mapping/test_fusion_native.py``). Where the
library is not built, or the inputs are not float32, the twins run.
"""
from __future__ import annotations

import numpy as np

from ilrm_ros.render import native

__all__ = ["ENABLED", "available", "project_cells", "classify_camera"]

ENABLED = True
"""Whether fusion uses the kernel where it can (tests switch it off to run the twins)."""


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def available(pc: np.ndarray, k: np.ndarray) -> bool:
    """Whether the kernel can take camera points pc (3, N) and intrinsics k (3, 3): enabled, the library
    loaded, both float32, pc C-contiguous."""
    return (ENABLED and pc.dtype == np.float32 and k.dtype == np.float32 and pc.flags.c_contiguous
            and native.load() is not None)


def _k5(k: np.ndarray) -> np.ndarray:
    return np.array([k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]], np.float32)


def project_cells(pc: np.ndarray, k: np.ndarray, size: tuple[int, int], downsample: int,
                  near: float) -> tuple[np.ndarray, np.ndarray]:
    """``project_camera(pc, k, size, downsample, near)`` (offset 0): visible (N,) bool, cell (N,) int32.
    Requires :func:`available`."""
    n = pc.shape[1]
    visible, cell = np.empty(n, bool), np.empty(n, np.int32)
    geometry = np.array(size, np.int32)
    native.load().ilrm_project_cells(_ptr(pc), n, _ptr(_k5(k)), _ptr(geometry), int(downsample), float(near),
                                     _ptr(visible), _ptr(cell))
    return visible, cell


def classify_camera(pc: np.ndarray, k: np.ndarray, grid: tuple[int, int, int, int], tol: tuple[float, float, float],
                    depth: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, ...]) -> None:
    """One camera of ``classify_old``: pc (3, N) float32, k (3, 3) float32; grid = (height, width, downsample,
    offset of this camera's cells); tol = (depth_tol_rel, depth_tol_abs, near); depth = dmin, dmax (V * cells,)
    float32, the cameras' grids stacked. Writes out = (flat (N,) int32, near (N,) bool, any_free (N,) bool,
    any_near (N,) bool, closest (N,) float32 squared distances, or None) in place; all C-contiguous.
    Requires :func:`available`."""
    flat, near, any_free, any_near, closest = out
    dmin, dmax = depth
    geometry = np.array(grid, np.int32)
    tolerances = np.array(tol, np.float32)
    native.load().ilrm_classify_camera(_ptr(pc), pc.shape[1], _ptr(_k5(k)), _ptr(geometry), _ptr(tolerances),
                                       _ptr(dmin), _ptr(dmax), _ptr(flat), _ptr(near), _ptr(any_free),
                                       _ptr(any_near), None if closest is None else _ptr(closest))
