"""Fusion policy of the global Gaussian map: configuration and the per-window geometry.

How a new window is fused (``MapConfig.fusion = True``):

1. **Prune** the window's Gaussians: opacity < ``min_opacity``, largest scale <
   ``min_scale``, largest scale > ``max_scale`` (if set), farther than
   ``max_integration_distance_m`` from every window camera (if set), non-finite values.
2. **Observed depth**: z-buffer the surviving means into each window camera at
   ``1/depth_downsample`` of the image resolution, keeping per cell the minimum and
   the maximum camera depth (``z``). A cell with no mean is *unknown*: nothing there is
   carved or replaced. (An expected-depth image of the window may be given instead.)
3. **Classify** every existing Gaussian in the chunks whose bounds intersect a window
   frustum, per camera it projects into (inside the image, ``z > near``), with
   ``tol = depth_tol_abs + depth_tol_rel * dmin`` of its cell:
   - *free space*: ``z < dmin - tol`` — the window saw through it;
   - *near surface* ("seen again"): ``dmin - tol <= z <= dmax + tol``;
   - otherwise occluded (behind the observed surface): untouched.
   A Gaussian in free space for some camera and near the surface for none is
   **carved** (removed). A seen-again Gaussian is **replaced** (removed, the window's
   Gaussians take over) when the closest window camera that sees it at the surface is
   no farther than ``replace_distance_ratio`` times the distance from which it was
   observed (``src_dist``); otherwise it is **kept** (its observation count and
   last-seen window are updated) and the window's own Gaussians in the same cell
   within ``tol`` of its depth are dropped, so the closer observation is not duplicated.
4. **Insert** the rest into their chunks; a window Gaussian inherits ``1 + `` the
   largest observation count replaced in its cell. Optionally keep at most one
   Gaussian per ``dedup_voxel`` cell in changed chunks (closest source first, then
   newest, then oldest insertion).
5. **Caps**: per chunk then in total, evicting in a deterministic order (see
   ``eviction``).

With ``fusion = False`` window Gaussians are only pruned and appended (then capped).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ilrm_ros.core.params import param
from ilrm_ros.core.wire import COL_MEANS, COL_OPACITY, COL_SCALES, ROW_FLOATS
from ilrm_ros.mapping import fusion_native


@dataclass
class MapConfig:
    """The global map: chunking, fusion, bounds, publishing and saving (parameters ``map.*``),
    then the fusion policy's internal knobs (plain fields: not parameters)."""

    chunk_size_m: float = param(2.0, "Edge length of a map chunk (voxel block)", 0.1, 100.0)
    """Edge of a chunk block in metres; chunk key = floor(mean / chunk_size_m)."""

    fusion: bool = param(True, "Fuse overlapping windows (False = append)")
    """Fuse windows (carve / replace / drop duplicates); False = plain append."""

    max_integration_distance_m: float = param(8.0, "Drop window Gaussians farther than this from every window "
                                                   "camera (0 = keep all)", 0.0, 1000.0)
    """If > 0: prune window Gaussians farther than this from every window camera
    (e.g. sky placed at the model's maximum distance)."""

    max_gaussians: int = param(2_000_000, "Cap on Gaussians in the whole map (0 = unlimited)", 0, 100_000_000)
    """Cap on the whole map (0 = unlimited)."""

    max_gaussians_per_chunk: int = param(200_000, "Cap on Gaussians per chunk (0 = unlimited)", 0, 100_000_000)
    """Cap per chunk (0 = unlimited)."""

    eviction: str = param("global", "Which Gaussians go first when a cap is hit", choices=("global", "local"))
    """Which Gaussians go first when a cap is exceeded:
    "global": lowest contribution score ``opacity * (s0*s1*s2)^(2/3) * obs_count``
    (opacity times the mean cross-section area, times how often the surface was
    observed); "local": farthest from the robot position (default: the newest window's
    mean camera centre). Ties: oldest window first, then oldest insertion."""

    eviction_pool: float = param(4.0, "The total cap evicts from about this many times its excess lowest-priority "
                                      "Gaussians, whole chunks' worth (1 = exactly the lowest; more = fewer chunks "
                                      "rewritten and re-sent)", 1.0, 100.0)
    """The total cap evicts its excess from among about the ``eviction_pool`` x excess Gaussians
    first in the eviction order (a threshold estimated from every 64th priority on large maps),
    taking all the candidates of the chunks with the most of them per Gaussian held first (the
    chunk that completes the excess gives its first ones). A chunk that loses Gaussians is
    rewritten and re-sent whole, and the lowest priorities are spread over most chunks: this
    rewrites and re-sends about 1/eviction_pool of the chunks that evicting exactly the excess
    first in order (1.0) would. Measured with ``bench map-soak`` at 1M (2 cores): windows that
    evict 23.5 -> 10.5-11.7 ms with 4.0."""

    publish_period_s: float = param(2.0, "Republish ~/map (PointCloud2) at most this often (0 = after every window)",
                                    0.0, 3600.0, runtime=True)
    save_path: str = param("", "PLY path for save_map with an empty path and for saving on shutdown", runtime=True)
    save_on_shutdown: bool = param(True, "Save the map to save_path on shutdown (when save_path is set)",
                                   runtime=True)

    # ------------------------------------------------------------ internal knobs (not parameters)

    depth_downsample: int = 4
    """Observed-depth images are (ceil(H / d), ceil(W / d)) cells; one cell should hold
    several of the window's own Gaussians (iLRM: one per viewpoint-grid pixel)."""

    depth_tol_abs: float = 0.05
    """Absolute part of the surface tolerance, metres."""

    depth_tol_rel: float = 0.03
    """Relative part of the surface tolerance (times the cell's observed depth)."""

    near: float = 0.05
    """Points closer to a camera than this (metres, along z) are not tested."""

    carve: bool = True
    """Remove old Gaussians that a window camera sees through (free space)."""

    replace: bool = True
    """Let a window's observation replace seen-again old Gaussians (closer camera wins)."""

    replace_distance_ratio: float = 1.1
    """The window replaces a seen-again Gaussian when its closest camera seeing it is at
    most this times the distance the Gaussian was observed from (>1 favours new data)."""

    dedup_voxel: float = 0.0
    """If > 0: keep at most one Gaussian per cubic cell of this edge (metres) in changed
    chunks, preferring the closest source camera, then the newest window. 0 = off."""

    min_opacity: float = 0.005
    """Prune Gaussians with opacity below this. The mapper sets it to the parameter
    ``model.min_opacity`` (one threshold for the window's and the map's Gaussians)."""

    min_scale: float = 1e-4
    """Prune Gaussians whose largest scale (metres) is below this."""

    max_scale: float = 0.0
    """If > 0: prune Gaussians whose largest scale (metres) exceeds this."""

    evict_to_fraction: float = 0.95
    """When a cap is exceeded, evict down to this fraction of it (hysteresis): eviction,
    and the chunk re-sends it causes, then happens every few windows instead of after
    every window. 1.0 = evict exactly down to the cap."""

    def __post_init__(self) -> None:
        if self.eviction_pool < 1.0:
            raise ValueError(f"eviction_pool must be >= 1, got {self.eviction_pool}")
        if self.eviction not in ("global", "local"):
            raise ValueError(f"eviction must be 'global' or 'local', got {self.eviction!r}")
        if self.chunk_size_m <= 0 or self.depth_downsample < 1:
            raise ValueError("chunk_size_m must be > 0 and depth_downsample >= 1")
        if not 0.0 < self.evict_to_fraction <= 1.0:
            raise ValueError(f"evict_to_fraction must be in (0, 1], got {self.evict_to_fraction}")


# ---------------------------------------------------------------------------------------
# Camera geometry (OpenCV c2w, pixel K)
# ---------------------------------------------------------------------------------------


@dataclass
class WindowCameras:
    """The window's cameras: c2w (V, 4, 4) OpenCV, K (V, 3, 3) pixels, image size.

    depths: optional (V, Hd, Wd) expected depth (z, metres, 0 = nothing) of the window,
    used instead of z-buffering the window's means.
    """

    c2w: torch.Tensor
    K: torch.Tensor
    height: int
    width: int
    depths: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.c2w = torch.as_tensor(self.c2w).detach().to("cpu", torch.float32).reshape(-1, 4, 4)
        self.K = torch.as_tensor(self.K).detach().to("cpu", torch.float32).reshape(-1, 3, 3)
        if self.depths is not None:
            self.depths = torch.as_tensor(self.depths).detach().to("cpu", torch.float32)
            if self.depths.ndim == 2:
                self.depths = self.depths[None]
        if self.K.shape[0] == 1 and self.c2w.shape[0] > 1:
            self.K = self.K.expand(self.c2w.shape[0], 3, 3)
        if self.K.shape[0] != self.c2w.shape[0]:
            raise ValueError(f"{self.c2w.shape[0]} poses but {self.K.shape[0]} intrinsics")

    @property
    def centers(self) -> torch.Tensor:
        """(V, 3) camera centres."""
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return int(self.c2w.shape[0])


@dataclass
class Projection:
    """Means seen by V cameras: z (V, N) camera depth, cell (V, N) flat cell index into a
    (h, w) grid (0 where not visible), visible (V, N) inside the image with z > near,
    dist (V, N) Euclidean distance to the camera centre (None when not computed)."""

    z: torch.Tensor
    cell: torch.Tensor
    visible: torch.Tensor
    dist: torch.Tensor | None = None


def grid_shape(height: int, width: int, downsample: int) -> tuple[int, int]:
    return -(-height // downsample), -(-width // downsample)


def camera_points(means: torch.Tensor, cams: WindowCameras) -> np.ndarray:
    """Means (N, 3) (a transposed (3, N) view is copy-free) in every camera's frame: (V, 3, N) float32,
    one batched matmul."""
    rot_t = cams.c2w[:, :3, :3].transpose(1, 2)                             # (V, 3, 3) world -> cam
    shift = -(rot_t @ cams.centers[:, :, None])                              # (V, 3, 1) = -R^T t
    return torch.baddbmm(shift, rot_t, means.to(torch.float32).T.contiguous().expand(len(cams), 3, -1)).numpy()


def project_camera(pc: np.ndarray, k: np.ndarray, size: tuple[int, int], downsample: int,
                   near: float, offset: int = 0, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One camera's points pc (3, N) float32 with intrinsics k (3, 3), image (height, width) ->
    visible (N,) bool (inside the image, z > near) and cell (N,) int32 (0 where not visible), plus
    ``offset`` where visible (the camera's first cell in stacked grids); written into ``out`` (N,) int32
    when given.

    numpy on float32 (the IEEE operations torch would do, in the same order: the same bits), as
    its comparisons and float-to-int casts are several times faster than torch's CPU kernels.
    """
    x, y, z = pc
    height, width = size
    inv_z = np.maximum(z, np.float32(1e-9))
    np.reciprocal(inv_z, out=inv_z)
    # the operations of (k00 x + k01 y) / z + cx and k11 y / z + cy in that order, in place (fewer temporaries)
    u = k[0, 0] * x
    u += k[0, 1] * y
    u *= inv_z
    u += k[0, 2]
    v = k[1, 1] * y
    v *= inv_z
    v += k[1, 2]
    visible = z > near
    visible &= u >= 0
    visible &= u < width
    visible &= v >= 0
    visible &= v < height
    w = grid_shape(height, width, downsample)[1]
    # Inside the image u, v >= 0, so truncation is the floor; outside, the cell is 0. int32: 4x faster casts.
    u /= downsample
    v /= downsample
    cell = np.empty(x.shape, np.int32) if out is None else out
    with np.errstate(invalid="ignore"):   # non-finite u, v of invisible points cast to anything: masked
        np.copyto(cell, v, casting="unsafe")   # the truncating cast of astype, written in place
        cell *= w
        cell += u.astype(np.int32)
    if offset:
        cell += offset
    cell *= visible
    return visible, cell


def squared_norms(pc: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """|p|^2 of camera-frame points (..., 3, N) -> (..., N) float32, summed x, y, z in that order
    (``scratch``: a (..., N) float32 buffer for the products, for repeated calls)."""
    x, y, z = pc[..., 0, :], pc[..., 1, :], pc[..., 2, :]
    out = x * x
    sq = np.multiply(y, y, out=scratch)
    out += sq
    out += np.multiply(z, z, out=sq)
    return out


def distances(pc: np.ndarray) -> torch.Tensor:
    """|p| of camera-frame points (..., 3, N) -> (..., N), with torch's sqrt (numpy's rounds differently)."""
    return torch.from_numpy(squared_norms(pc)).sqrt_()


def project(means: torch.Tensor, cams: WindowCameras, downsample: int, near: float) -> Projection:
    """Project means (N, 3) into every camera; cells of ``downsample``-pixel blocks.

    One batched matmul to a (V, 3, N) layout, then each camera's N points: the compiled
    ``fusion_native.project_cells`` where it is built, else its numpy twin :func:`project_camera`.
    """
    pc = camera_points(means, cams)
    k = cams.K.numpy()
    visible = np.empty(pc[:, 0].shape, dtype=bool)
    cell = np.empty(pc[:, 0].shape, dtype=np.int64)
    one_camera = fusion_native.project_cells if fusion_native.available(pc, k) else project_camera
    for i in range(len(cams)):
        visible[i], cell[i] = one_camera(pc[i], k[i], (cams.height, cams.width), downsample, near)
    return Projection(z=torch.from_numpy(pc[:, 2]), cell=torch.from_numpy(cell), visible=torch.from_numpy(visible),
                      dist=distances(pc))


def zbuffer(proj: Projection, num_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per camera and cell the min and max depth of the visible points.

    Returns dmin (V, num_cells) (+inf where empty) and dmax (V, num_cells) (-inf where empty).
    The compiled ``fusion_native.zbuffer_cells`` where it is built and the layouts fit, else these scatters.
    """
    compiled = fusion_native.zbuffer_cells(proj.visible.numpy(), proj.cell.numpy(), proj.z.numpy(), num_cells)
    if compiled is not None:
        return torch.from_numpy(compiled[0]), torch.from_numpy(compiled[1])
    n_cams = proj.z.shape[0]
    # Invisible points go to one spare cell past the end (no boolean compaction needed); numpy (faster).
    spare = n_cams * num_cells
    flat = np.where(proj.visible.numpy(), (np.arange(n_cams) * num_cells)[:, None] + proj.cell.numpy(), spare)
    flat = torch.from_numpy(flat.reshape(-1))
    zs = proj.z.reshape(-1)
    dmin = torch.full((spare + 1,), float("inf")).scatter_reduce_(0, flat, zs, reduce="amin")
    dmax = torch.full((spare + 1,), float("-inf")).scatter_reduce_(0, flat, zs, reduce="amax")
    return dmin[:spare].view(n_cams, num_cells), dmax[:spare].view(n_cams, num_cells)


def depth_image_bounds(depths: torch.Tensor, cams: WindowCameras, downsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max of an expected-depth image (V, Hd, Wd) (0 or non-finite = nothing) per cell."""
    n_cams, hd, wd = depths.shape
    h, w = grid_shape(cams.height, cams.width, downsample)
    ys = (torch.arange(hd, dtype=torch.float32) + 0.5) * (cams.height / hd)
    xs = (torch.arange(wd, dtype=torch.float32) + 0.5) * (cams.width / wd)
    cell = ((ys // downsample).long().clamp(max=h - 1)[:, None] * w
            + (xs // downsample).long().clamp(max=w - 1)[None, :]).reshape(-1)
    d = depths.reshape(n_cams, -1).to(torch.float32)
    valid = torch.isfinite(d) & (d > 0)
    proj = Projection(z=d, cell=cell.expand(n_cams, -1), visible=valid)
    return zbuffer(proj, h * w)


def gather_cells(img: torch.Tensor, proj: Projection) -> torch.Tensor:
    """Look up a per-camera cell image (V, C) at projected points -> (V, N)."""
    return torch.gather(img, 1, proj.cell)


# ---------------------------------------------------------------------------------------
# Pruning and eviction order
# ---------------------------------------------------------------------------------------


EIGHT_TRUE = np.frombuffer(np.ones(8, dtype=bool).tobytes(), np.uint64)[0]
"""Eight True flags (bool bytes) read as one uint64 word."""


def finite_rows(r: np.ndarray) -> np.ndarray:
    """(N,) bool: rows of r (N, ROW_FLOATS) whose values are all finite. The flags go into rows of 16 bytes
    (two padding flags set) read as two uint64 words: no reduction along the short axis."""
    flags = np.ones((r.shape[0], 16), dtype=bool)
    np.isfinite(r, out=flags[:, :ROW_FLOATS])
    words = flags.view(np.uint64)                                    # (N, 2)
    return (words[:, 0] == EIGHT_TRUE) & (words[:, 1] == EIGHT_TRUE)


def prune_mask(rows: torch.Tensor, cfg: MapConfig) -> torch.Tensor:
    """(N,) bool: rows (N, 14) that survive pruning (opacity, scale, finite values)."""
    assert rows.shape[1] == ROW_FLOATS
    r = rows.detach().cpu().numpy()   # numpy: its comparisons are several times faster than torch's on CPU
    c = COL_SCALES.start  # the largest of three scales; reductions over a 3- or 14-wide axis are slow
    smax = np.maximum(np.maximum(r[:, c], r[:, c + 1]), r[:, c + 2])
    keep = finite_rows(r)
    keep &= r[:, COL_OPACITY] >= cfg.min_opacity
    keep &= smax >= cfg.min_scale
    if cfg.max_scale > 0:
        keep &= smax <= cfg.max_scale
    return torch.from_numpy(keep)


def contribution_score(rows: torch.Tensor, obs_count: torch.Tensor) -> torch.Tensor:
    """(N,) opacity * (s0*s1*s2)^(2/3) * obs_count: what "global" eviction keeps."""
    s = rows[:, COL_SCALES].clamp_min(1e-12)
    area = torch.exp(torch.log(s).sum(dim=1) * (2.0 / 3.0))
    return rows[:, COL_OPACITY] * area * obs_count.to(torch.float32)


def eviction_priority(rows: torch.Tensor, obs_count: torch.Tensor, cfg: MapConfig,
                      robot_position: torch.Tensor | None) -> torch.Tensor:
    """(N,) float: smaller is evicted first (ties broken by the caller: born, then gid)."""
    if cfg.eviction == "global":
        return contribution_score(rows, obs_count)
    if robot_position is None:
        raise ValueError("local eviction needs a robot position")
    return -torch.linalg.vector_norm(rows[:, COL_MEANS] - robot_position.reshape(1, 3), dim=1)
