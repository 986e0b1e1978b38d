"""The compiled CPU rasterizer kernels (``render/csrc/*.c``): build, load, autograd.

Steps 1-3 of the CPU rasterizer as plain C, forward and backward: EWA projection
(``project_cpu.c``; twin: :func:`~ilrm_ros.render.projection.project`'s torch code), tile
binning by a counting sort and front-to-back blending (``composite_cpu.c``; twins: the torch
sort and steps in :mod:`~ilrm_ros.render.blending`). Each computes what its twin computes
(compared in ``test/render/test_render_native.py``). The blending moves a tile's pixels together
through the tile's list, 16 lanes at a time, and stops a tile once all its pixels are done, so it
does a fraction of the batched torch steps' work.

Building: ``make setup`` (``ilrm-ros kernels --build``) and colcon (``CMakeLists.txt``) compile
them with the system C compiler into ``render/_native/``; where the library is absent (no
compiler, another platform) the torch twins run, and :func:`status` and ``ilrm-ros kernels``
say why.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from ilrm_ros.core.clib import CLibrary, LoadedLibrary

__all__ = ["SOURCES", "LIBRARY", "build", "load", "status", "reload", "cli_main", "available", "skip_rows",
           "project_native", "bin_tiles_native", "composite_native"]

SOURCES = tuple(Path(__file__).parent / "csrc" / name for name in ("composite_cpu.c", "project_cpu.c",
                                                                   "depth_test_cpu.c"))
"""The kernels' C files (one library): blending and binning, projection, and the map fusion's depth
test (points against per-cell depth ranges; wrapped by ``mapping/fusion_native.py``)."""
LIBRARY = Path(__file__).parent / "_native" / "libilrm_raster.so"
"""Where builds put the library (git-ignored); ``ILRM_ROS_NATIVE_LIB`` overrides it."""
ENV_PATH = "ILRM_ROS_NATIVE_LIB"
MAX_FEATS = 8
MAX_TILE = 16
_GRAD_FIXED = 6  # per-instance gradient columns before the features: mean x, y, conic a, b, c, opacity

_c_ptr = ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the library's functions (AttributeError: one is missing)."""
    lib.ilrm_composite_forward.restype = ctypes.c_int
    lib.ilrm_composite_forward.argtypes = [_c_ptr] * 7 + [ctypes.c_int, _c_ptr, _c_ptr, _c_ptr, _c_ptr, ctypes.c_int]
    lib.ilrm_composite_backward.restype = ctypes.c_int
    lib.ilrm_composite_backward.argtypes = ([_c_ptr] * 7 + [ctypes.c_int] + [_c_ptr] * 6
                                            + [ctypes.c_int64, _c_ptr, ctypes.c_int])
    lib.ilrm_project_forward.restype = None
    lib.ilrm_project_forward.argtypes = [_c_ptr] * 13 + [ctypes.c_int]
    lib.ilrm_project_backward.restype = None
    lib.ilrm_project_backward.argtypes = [_c_ptr] * 14 + [ctypes.c_int]
    lib.ilrm_bin_tiles.restype = ctypes.c_int64
    lib.ilrm_bin_tiles.argtypes = [_c_ptr] * 6 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int64] + [_c_ptr] * 3
    lib.ilrm_composite_skip_rows.restype = None
    lib.ilrm_composite_skip_rows.argtypes = [ctypes.c_int]
    lib.ilrm_project_cells.restype = None
    lib.ilrm_project_cells.argtypes = [_c_ptr, ctypes.c_int64, _c_ptr, _c_ptr, ctypes.c_int32, ctypes.c_float,
                                       _c_ptr, _c_ptr]
    lib.ilrm_classify_camera.restype = None
    lib.ilrm_classify_camera.argtypes = [_c_ptr, ctypes.c_int64] + [_c_ptr] * 10
    lib.ilrm_surface_cells.restype = None
    lib.ilrm_surface_cells.argtypes = [_c_ptr] * 10
    lib.ilrm_zbuffer.restype = None
    lib.ilrm_zbuffer.argtypes = [_c_ptr] * 6


RASTER = CLibrary("CPU rasterizer kernels", SOURCES, LIBRARY, ENV_PATH, _declare,
                  flags=("-fopenmp-simd",), link=("-lpthread", "-lm"))
"""The library's description (core/clib.py): no OpenMP runtime, pthreads over tiles."""


_LIB = LoadedLibrary(RASTER)
load = _LIB.load
status = _LIB.status
reload = _LIB.reload
cli_main = _LIB.cli
build = _LIB.build   # (dest=LIBRARY, compiler=$CC or cc): -O3, -march=native where taken


def available(feats: Tensor, tile_size: int) -> bool:
    """Whether the kernel can blend ``feats`` (..., F) in tiles of ``tile_size``: loaded, CPU, float32,
    F ≤ 8, tile_size ≤ 16."""
    return (feats.device.type == "cpu" and feats.dtype == torch.float32 and 1 <= feats.shape[-1] <= MAX_FEATS
            and 1 <= tile_size <= MAX_TILE and load() is not None)


def skip_rows(on: bool) -> None:
    """Whether the blending kernel skips the rows of a tile a Gaussian cannot reach with alpha above the 1/255
    cut (on by default). Exact: those rows would take no weight, gradient or state from it; the specs compare
    both settings bit for bit. No-op without the library."""
    lib = load()
    if lib is not None:
        lib.ilrm_composite_skip_rows(1 if on else 0)


def _ptr(t: Tensor) -> int:
    """The address of ``t``'s data. Keep ``t`` referenced until the C call returns: the address of a
    temporary (``_ptr(x.contiguous())``) may be freed before the call reads it."""
    return t.data_ptr()


class _Composite(torch.autograd.Function):
    """Blending with the kernel: per-instance tables in, (out (C, H, W, F), trans (C, H, W)) out."""

    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, bins: tuple, geometry: Tensor):
        lib = load()
        ids, starts, counts = bins
        n_cams, width, height = (int(v) for v in geometry[:3])
        nf = feats.shape[1]
        tables = [t.detach().contiguous() for t in (means2d, conics, opac, feats)]
        out = torch.empty(n_cams, height, width, nf)
        trans = torch.empty(n_cams, height, width)
        last = torch.empty(n_cams, height, width, dtype=torch.int32)
        code = lib.ilrm_composite_forward(_ptr(ids), _ptr(starts), _ptr(counts), *(_ptr(t) for t in tables), nf,
                                          _ptr(geometry), _ptr(out), _ptr(trans), _ptr(last), torch.get_num_threads())
        if code != 0:
            raise ValueError(f"native compositing refused F = {nf}, tile {int(geometry[3])} (code {code})")
        ctx.save_for_backward(*tables, trans, last)
        ctx.bins, ctx.geometry = bins, geometry
        ctx.mark_non_differentiable(last)
        return out, trans, last

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_trans: Tensor | None, _grad_last: Tensor | None):
        means2d, conics, opac, feats, trans, last = ctx.saved_tensors
        ids, starts, counts = ctx.bins
        nf, m = feats.shape[1], feats.shape[0]
        grad_out = torch.zeros(*trans.shape, nf) if grad_out is None else grad_out.contiguous()
        grad_trans = torch.zeros_like(trans) if grad_trans is None else grad_trans.contiguous()
        ng = _GRAD_FIXED + nf
        grad_entries = torch.zeros(ids.numel(), ng)
        grad_inst = torch.zeros(m, ng)
        load().ilrm_composite_backward(
            _ptr(ids), _ptr(starts), _ptr(counts), *(_ptr(t) for t in (means2d, conics, opac, feats)), nf,
            _ptr(ctx.geometry), _ptr(trans), _ptr(last), _ptr(grad_out), _ptr(grad_trans), _ptr(grad_entries),
            ids.numel(), _ptr(grad_inst), torch.get_num_threads())
        return grad_inst[:, :2], grad_inst[:, 2:5], grad_inst[:, 5], grad_inst[:, 6:], None, None


class _Project(torch.autograd.Function):
    """EWA projection with the kernel: (means (N, 3), quats (N, 4), scales (N, 3)) -> (means2d (C, N, 2),
    conics (C, N, 3), depths (C, N), radii (C, N, 2) int32, visible (C, N) bool); cameras and opacities
    (which only size the boxes) take no gradient."""

    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, opac: Tensor, cams: tuple, planes: Tensor):
        viewmats, Ks, sizes = cams
        n, n_cams = int(sizes[0]), int(sizes[1])
        inputs = [t.detach().contiguous() for t in (means, quats, scales)]
        opac = opac.detach().contiguous()  # named: a temporary would be freed before the call reads it
        means2d, conics = torch.empty(n_cams, n, 2), torch.empty(n_cams, n, 3)
        depths = torch.empty(n_cams, n)
        radii = torch.empty(n_cams, n, 2, dtype=torch.int32)
        visible = torch.empty(n_cams, n, dtype=torch.uint8)
        load().ilrm_project_forward(*(_ptr(t) for t in inputs), _ptr(opac), _ptr(viewmats),
                                    _ptr(Ks), _ptr(sizes), _ptr(planes), _ptr(means2d), _ptr(conics), _ptr(depths),
                                    _ptr(radii), _ptr(visible), torch.get_num_threads())
        ctx.save_for_backward(*inputs, visible)
        ctx.cams, ctx.planes = cams, planes
        ctx.mark_non_differentiable(radii, visible)
        return means2d, conics, depths, radii, visible

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_depths, _g_radii, _g_visible):
        means, quats, scales, visible = ctx.saved_tensors
        viewmats, Ks, sizes = ctx.cams
        grads = [torch.zeros(*visible.shape, *tail) if g is None else g.contiguous()
                 for g, tail in ((g_means2d, (2,)), (g_conics, (3,)), (g_depths, ()))]
        out = [torch.empty_like(t) for t in (means, quats, scales)]
        load().ilrm_project_backward(_ptr(means), _ptr(quats), _ptr(scales), _ptr(viewmats), _ptr(Ks), _ptr(sizes),
                                     _ptr(ctx.planes), _ptr(visible), *(_ptr(g) for g in grads),
                                     *(_ptr(t) for t in out), torch.get_num_threads())
        return out[0], out[1], out[2], None, None, None


def project_native(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, cameras,
                   planes: tuple[float, float, float]) -> tuple[Tensor, ...]:
    """EWA projection with the kernel (differentiable in means, quats, scales).

    means (N, 3), quats (N, 4), scales (N, 3), opacities (N,); cameras a ``PinholeCameras`` (viewmats
    (C, 4, 4), Ks (C, 3, 3), width, height) without gradients; planes = (near, far, eps2d)
    -> (means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int64, visible (C, N) bool).
    """
    sizes = torch.tensor([means.shape[0], cameras.viewmats.shape[0], cameras.width, cameras.height],
                         dtype=torch.int64)
    cams = (cameras.viewmats.detach().float().contiguous(), cameras.Ks.detach().float().contiguous(), sizes)
    means2d, conics, depths, radii, visible = _Project.apply(means, quats, scales, opacities, cams,
                                                             torch.tensor(planes, dtype=torch.float32))
    return means2d, conics, depths, radii.long(), visible.bool()


def bin_tiles_native(ids: Tensor, tile0: Tensor, rects: tuple[Tensor, Tensor, Tensor, Tensor], tiles_x: int,
                     n_tiles: int) -> tuple[Tensor, Tensor]:
    """Tile lists by a stable counting sort (the order of ``ids`` is kept within each tile).

    ids (K,) flat instance ids in list order; tile0 (K,) first tile id of each one's camera;
    rects = (x0, x1, y0, y1) (K,) tile rectangles [x0, x1) x [y0, y1)
    -> (ids grouped by tile (E,) int32, entries per tile (n_tiles,) int64).
    """
    x0, x1, y0, y1 = (r.to(torch.int32).contiguous() for r in rects)
    total = int(((x1 - x0).to(torch.int64) * (y1 - y0)).sum())
    counts = torch.zeros(n_tiles, dtype=torch.int64)
    cursor = torch.empty(n_tiles, dtype=torch.int64)
    out = torch.empty(total, dtype=torch.int32)
    ids, tile0 = ids.to(torch.int32).contiguous(), tile0.to(torch.int64).contiguous()
    written = load().ilrm_bin_tiles(_ptr(ids), _ptr(tile0), _ptr(x0), _ptr(x1), _ptr(y0), _ptr(y1), ids.numel(),
                                    tiles_x, n_tiles, _ptr(counts), _ptr(cursor), _ptr(out))
    assert written == total
    return out, counts


def composite_native(means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, bins, n_cams: int,
                     size: tuple[int, int], tile_size: int) -> tuple[Tensor, Tensor]:
    """Front-to-back blending of per-instance tables with the kernel (differentiable in the tables).

    means2d (M, 2), conics (M, 3), opac (M,), feats (M, F) with M = C·N flat instances, bins a
    :class:`~ilrm_ros.render.blending.TileBins`, size (width, height)
    -> (Σ w f (C, H, W, F), transmittance (C, H, W)).
    """
    width, height = size
    geometry = torch.tensor([n_cams, width, height, tile_size, bins.tiles_x, bins.tiles_y], dtype=torch.int32)
    tables = (bins.ids.to(torch.int32).contiguous(), bins.starts.to(torch.int64).contiguous(),
              bins.counts.to(torch.int64).contiguous())
    out, trans, _ = _Composite.apply(means2d, conics, opac, feats, tables, geometry)
    return out, trans
