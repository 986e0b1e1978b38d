"""The map fusion's numeric steps, compiled (``render/csrc/depth_test_cpu.c``, in the CPU rasterizer's
library): points projected into a camera's cell grid and tested against per-cell depth ranges, in one
pass per camera, and the per-cell depth ranges of the window and of the map's surface points.

The twins are :func:`ilrm_ros.mapping.fusion.project_camera`, :func:`ilrm_ros.mapping.fusion.zbuffer`,
:func:`ilrm_ros.mapping.window_fusion.classify_camera` and :func:`~ilrm_ros.mapping.window_fusion.surface_cells`;
the kernels do their float32 operations in their order, so the results are the same bits
(``test/mapping/test_fusion_native.py``). Where the library is not built, or the inputs are not
float32, the twins run.
"""
from __future__ import annotations

import numpy as np

from ilrm_ros.render import native

__all__ = ["ENABLED", "available", "project_cells", "classify_camera", "surface_cells", "zbuffer_cells"]

ENABLED = True
"""Whether fusion uses the kernels where it can (tests switch it off to run the twins)."""


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def available(pc: np.ndarray | None = None, k: np.ndarray | None = None) -> bool:
    """Whether the kernels run: enabled, the library loaded, and (when given) camera points pc (..., 3, N)
    and intrinsics k (..., 3, 3) float32, pc C-contiguous."""
    if pc is not None and not (pc.dtype == np.float32 and pc.flags.c_contiguous):
        return False
    if k is not None and k.dtype != np.float32:
        return False
    return ENABLED and native.load() is not None


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


def surface_cells(near_v: np.ndarray, flat: np.ndarray, z: np.ndarray, kept: np.ndarray, obs: np.ndarray,
                  n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Per stacked cell (V * n_cells,): the depth range kmin, kmax (float32, +inf/-inf where none) of the
    points kept at the surface and the largest observation count best (int32, 0 where none) of the ones
    replaced there; and how many (camera, point) entries of each. near_v (V, M) bool, flat (V, M) int32
    from the classification; z (V, M) float32 camera depths (rows may be strided); kept (M,) bool: the
    points at the surface that stay (the others at the surface are replaced); obs (M,) int32."""
    n_cams, m = near_v.shape
    size = n_cams * n_cells
    kmin, kmax, best = np.full(size, np.inf, np.float32), np.full(size, -np.inf, np.float32), np.zeros(size, np.int32)
    counts = np.zeros(2, np.int64)
    assert z.dtype == np.float32 and z.strides[1] == 4 and near_v.flags.c_contiguous and flat.flags.c_contiguous
    shape = np.array([n_cams, m, z.strides[0] // 4], np.int64)
    kept, obs = np.ascontiguousarray(kept), np.ascontiguousarray(obs, np.int32)
    native.load().ilrm_surface_cells(_ptr(near_v), _ptr(flat), _ptr(z), _ptr(shape), _ptr(kept), _ptr(obs),
                                     _ptr(kmin), _ptr(kmax), _ptr(best), _ptr(counts))
    return kmin, kmax, best, int(counts[0]), int(counts[1])


def zbuffer_cells(visible: np.ndarray, cell: np.ndarray, z: np.ndarray,
                  num_cells: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``fusion.zbuffer``'s per camera and cell min and max depth of the visible points: visible (V, N) bool,
    cell (V, N) int64 within one camera's grid, z (V, N) float32 (rows may be strided) -> dmin, dmax
    (V, num_cells) float32 (+inf / -inf where empty); None where the layouts do not fit the kernel."""
    n_cams, n = visible.shape
    if not (visible.flags.c_contiguous and cell.dtype == np.int64 and cell.flags.c_contiguous
            and z.dtype == np.float32 and z.strides[1] == 4 and available()):
        return None
    dmin, dmax = np.full((n_cams, num_cells), np.inf, np.float32), np.full((n_cams, num_cells), -np.inf, np.float32)
    shape = np.array([n_cams, n, z.strides[0] // 4, num_cells], np.int64)
    native.load().ilrm_zbuffer(_ptr(visible), _ptr(cell), _ptr(z), _ptr(shape), _ptr(dmin), _ptr(dmax))
    return dmin, dmax
