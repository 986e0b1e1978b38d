"""The ROS-free mapping core: posed frames in, map updates and renders out.

    Frame ──fit_to_model──▶ KeyframePolicy.admit ──▶ KeyframeBuffer ──WindowScheduler──▶ Window
    Window ──normalize_cameras──▶ ILRM ──▶ Gaussians (window frame) ──Similarity──▶ map frame
    ──refine_window (refine.*, off by default)──GaussianMap.integrate──▶ MapUpdate (changed chunks)
    between windows: refine_map_step (map_refine, refine.map_*, off by default) ──▶ MapUpdate (UPSERTs)
    + renders of the window; new (or held-out) keyframes are scored against the map as it was
    before their window was fused (quality_stage, quality.*; score_quality after the chunks went out)

The ROS node and the offline bag tool both drive this class; only the source of frames
(DDS or a bag) and the sink of results differ. ``process_window`` is called on a worker
thread by the node (see scheduler.WindowWorker) and synchronously by the offline tool;
map access is guarded by a lock so services can render/save while a window runs.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ilrm_ros.mapping.config import MappingConfig
from ilrm_ros.geometry.poses import transform_gaussians
from ilrm_ros.io.frames import Frame, Keyframe, fit_to_model
from ilrm_ros.mapping.chunks import MapUpdate, gaussians_to_array
from ilrm_ros.mapping.fusion import MapConfig, WindowCameras
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.window_fusion import one_torch_thread
from ilrm_ros.mapping.map_io import load_map, load_sidecar, save_map
from ilrm_ros.mapping import occupancy_stage
from ilrm_ros.mapping.quality_stage import QualityStage
from ilrm_ros.mapping.map_refine import MapRefiner, MapRefineStats
from ilrm_ros.mapping.refine import refine_window, warm_up
from ilrm_ros.mapping.keyframes import KeyframeBuffer, KeyframePolicy
from ilrm_ros.mapping.scheduler import Window, WindowScheduler
from ilrm_ros.mapping.inference import (
    KeepUpMonitor,
    fill_model_defaults,
    load_model,
    predict_window,
    resolve_device,
    views_warning,
    warm_up_model,
)
from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.model.ilrm import ILRM
from ilrm_ros.render.render import render_gaussians

log = logging.getLogger(__name__)


@dataclass
class RenderedView:
    """A rendered camera: rgb (H, W, 3) uint8, depth (H, W) float32 metres (NaN where
    nothing was hit, REP 118), alpha (H, W) float32, c2w (4, 4) map frame, K (3, 3)."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    c2w: np.ndarray
    K: np.ndarray


@dataclass
class WindowResult:
    """What one window produced: the map delta, its Gaussians and timings (seconds)."""

    window: Window
    update: MapUpdate
    num_gaussians_window: int
    gaussians: Gaussians | None = None  # the window's Gaussians in the map frame (N, k)
    quality_views: list = field(default_factory=list)
    """Keyframes to score with what the map saw before this window (``Mapper.score_quality``)."""
    timings: dict[str, float] = field(default_factory=dict)
    stamp_ns: int = 0
    warning: str | None = None
    """Set (once per mapper) when this window outlasted keyframe interval x stride."""


def select_window_gaussians(g: Gaussians, min_opacity: float, max_count: int) -> Gaussians:
    """Drop near-transparent Gaussians, keep the ``max_count`` most opaque (0 = all). g: (N, k).
    When every Gaussian is kept, ``g`` itself is returned (no copy)."""
    keep = g.opacities >= min_opacity
    if not bool(keep.all()):
        g = g.index(keep)
    if 0 < max_count < len(g):
        g = g.index(torch.topk(g.opacities, max_count).indices.sort().values)
    return g


def offset_pose(c2w: np.ndarray, offset_cam: np.ndarray) -> np.ndarray:
    """Move a camera by ``offset_cam`` (3,) metres expressed in its own optical frame."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:3, 3] += out[:3, :3] @ np.asarray(offset_cam, dtype=np.float64)
    return out


def render_view(g: Gaussians, c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                background: torch.Tensor, name: str = "view") -> RenderedView:
    """Render Gaussians (N, k) from one camera (c2w in the Gaussians' frame, metres)."""
    dev = g.means.device
    c2w_t = torch.as_tensor(c2w, dtype=torch.float32, device=dev)[None]
    K_t = torch.as_tensor(K, dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        out = render_gaussians(g, c2w_t, K_t, width, height, background=background.to(dev))
    alpha = out.alpha[0].float().cpu().numpy()
    depth = out.surface_depth(0.5)[0].float().cpu().numpy()
    rgb = (out.rgb[0].float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return RenderedView(name, rgb, depth, alpha, np.asarray(c2w, np.float64), np.asarray(K, np.float64))


class Mapper:
    """Frames in; windows, map updates and renders out. Not thread-safe except where noted."""

    def __init__(self, cfg: MappingConfig, model: ILRM | None = None, device: torch.device | None = None,
                 model_id: str = "") -> None:
        self.cfg = cfg
        self.device = device or resolve_device(cfg.model.device)
        if model is None:
            model, source = load_model(cfg.model, self.device)
            model_id = source.model_id
        self.model = model.to(self.device).eval()
        self.model_id = model_id or type(model).__name__
        filled = fill_model_defaults(cfg.model, cfg.window, self.model.cfg)
        if filled:
            log.info("from the architecture (%s): %s", self.model.cfg.name,
                     ", ".join(f"{k}={v}" for k, v in filled.items()))
        if (msg := views_warning(cfg.window.size, self.model.cfg)) is not None:
            log.warning(msg)
        self.keep_up = KeepUpMonitor(cfg.window.stride)
        self.policy = KeyframePolicy(cfg.keyframes)
        self.keyframes = KeyframeBuffer(cfg.keyframes.capacity)
        self.scheduler = WindowScheduler(cfg.window)
        self.map = self._new_map()
        self.map_lock = threading.RLock()
        self.background = torch.tensor(cfg.render.background, dtype=torch.float32)
        self.num_windows = 0
        self.occupancy = occupancy_stage.OccupancyMap(cfg.occupancy)
        self.quality = QualityStage(cfg.quality)
        self._refine_gain = (0, 0.0, math.nan)  # refined windows, sum and last of their context PSNR gains (dB)
        self.map_refiner = MapRefiner(cfg.refine, self.device)
        if cfg.refine.window_iters > 0 or cfg.refine.map_enabled:
            warm_up()   # torch.optim's first use costs ≈1 s: at start-up, not in a refinement's budget

    # ------------------------------------------------------------------ input side
    def map_config(self) -> MapConfig:
        """The map's configuration: ``map.*``, pruning at ``model.min_opacity`` like the window's Gaussians."""
        return replace(self.cfg.map, min_opacity=self.cfg.model.min_opacity)

    def _new_map(self) -> GaussianMap:
        return GaussianMap(self.map_config(), map_frame=self.cfg.frames.map_frame, model_id=self.model_id)

    def update_keyframe_policy(self) -> None:
        """Apply changed keyframe thresholds (runtime parameters), keeping the policy's state."""
        self.policy.config = replace(self.cfg.keyframes)

    def prepare(self, frame: Frame) -> Frame:
        """Fit a posed frame to the model's input size (intrinsics adjusted exactly)."""
        m = self.cfg.model
        rgb, K = fit_to_model(frame.rgb, frame.K, m.height, m.width, m.resize_mode)
        return Frame(rgb=rgb, K=K, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, c2w=frame.c2w)

    def add_frame(self, frame: Frame, arrival_time: float | None = None) -> Window | None:
        """Offer a posed frame; returns a Window when one became due (caller runs it).

        frame.c2w must be set (map frame, OpenCV). Frames the policy rejects are dropped
        here; resizing happens only for admitted keyframes.
        """
        if frame.c2w is None:
            raise ValueError("add_frame needs a posed frame (c2w is None)")
        if not self.policy.admit(frame):
            return None
        keyframe = self.prepare(frame)
        if self.quality.offer(keyframe):  # held out: scored against the map, never fed to a window
            return None
        self.keyframes.add(keyframe)
        # keyframe pace: when frames arrived (the node: wall time, also for bags played at a rate),
        # else their stamps (the offline tool, which runs as fast as it can)
        self.keep_up.on_keyframe(int(arrival_time * 1e9) if arrival_time is not None else frame.stamp_ns)
        self.scheduler.on_keyframe()
        if not self.scheduler.due():
            return None
        return self.scheduler.take(self.keyframes.latest(self.cfg.window.size),
                                   trigger_time=arrival_time if arrival_time is not None else time.monotonic())

    # ------------------------------------------------------------------ the model
    def warm_up_model(self) -> int:
        """One forward at the configured window and input size (``inference.warm_up_model``); returns the
        bytes of its largest CPU tensor (0 on a GPU)."""
        return warm_up_model(self.model, self.cfg.window.size, self.cfg.model.height, self.cfg.model.width,
                             self.device)

    def predict(self, keyframes: list[Keyframe]) -> tuple[Gaussians, object]:
        """Run iLRM on keyframes; returns (Gaussians (N, k) in the window frame, Similarity to map)."""
        return predict_window(self.model, keyframes, self.device)

    def process_window(self, window: Window) -> WindowResult:
        """Model -> map frame -> fuse into the map. Safe to call from a worker thread.

        Renders are not made here (chunks should go out first): call ``window_renders``.
        """
        t0 = time.monotonic()
        kfs = window.keyframes
        g_win, sim = self.predict(kfs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t_model = time.monotonic()
        with one_torch_thread():   # small ops: a second OpenMP thread only waits for a shared core (same bits)
            g_win = select_window_gaussians(g_win, self.cfg.model.min_opacity,
                                            self.cfg.model.max_gaussians_per_window)
            g_map = transform_gaussians(g_win, sim)
        c2w = np.stack([k.c2w for k in kfs])
        Ks = np.stack([k.K for k in kfs])
        H, W = kfs[0].rgb.shape[:2]
        g_map, extra = self._refine(g_map, kfs, c2w, Ks)
        t_fuse = time.monotonic()
        with self.map_lock:
            due = self.quality.take_due(kfs[-1].stamp_ns)  # what the map saw of them before this window
            pending = self.quality.views(due, self._cull) if due and len(self.map) else []
            cams = WindowCameras(c2w=torch.from_numpy(c2w), K=torch.from_numpy(Ks), height=H, width=W)
            update = self.map.integrate(g_map.to("cpu"), cams, window_id=window.window_id,
                                        keyframe_ids=window.keyframe_ids, robot_position=c2w[-1, :3, 3])
            self.num_windows += 1
        t_map = time.monotonic()
        return WindowResult(window=window, update=update, num_gaussians_window=len(g_map), gaussians=g_map,
                            quality_views=pending,
                            stamp_ns=kfs[-1].stamp_ns, warning=self.keep_up.check(t_map - t0),
                            timings={"queued_s": t0 - window.trigger_time,
                                     "handoff_s": t0 - window.submit_time if window.submit_time else 0.0,
                                     "model_s": t_model - t0,
                                     "integrate_s": t_map - t_fuse, "process_s": t_map - t0, **extra})

    def _refine(self, g_map: Gaussians, kfs: list[Keyframe], c2w: np.ndarray,
                Ks: np.ndarray) -> tuple[Gaussians, dict[str, float]]:
        """Window refinement (``refine.*``) of the window's Gaussians (N, k) in the map frame against its
        keyframes (c2w (V, 4, 4), K (V, 3, 3)); returns them and the refine_* timings (none when off)."""
        if self.cfg.refine.window_iters == 0 or len(g_map) == 0:
            return g_map, {}
        images = torch.from_numpy(np.stack([k.rgb for k in kfs])).permute(0, 3, 1, 2).float().div_(255.0)
        cams = WindowCameras(c2w=torch.from_numpy(c2w), K=torch.from_numpy(Ks), height=images.shape[-2],
                             width=images.shape[-1])
        out, st = refine_window(g_map, cams, images, self.cfg.refine, background=self.background)
        gain = st.gain_db if st.iterations else 0.0
        with self.map_lock:
            n, total, _ = self._refine_gain
            self._refine_gain = (n + 1, total + gain, gain)
        return out, {"refine_s": st.seconds, "refine_iters": float(st.iterations),
                     "refine_psnr_before_db": st.psnr_before, "refine_psnr_after_db": st.psnr_after,
                     "refine_gain_db": gain}

    def refine_map_step(self, budget_s: float | None = None,
                        preempt: Callable[[], bool] | None = None) -> tuple[MapUpdate, MapRefineStats]:
        """One background map refinement step (``refine.map_*``; nothing when off) over the stored
        keyframes, within ``budget_s`` (default ``refine.map_step_budget_s``), ended early when
        ``preempt()`` says so (a window waits); when it changed the map, the occupancy grid integrates
        the chosen keyframe's depth rendered from the refined map (``occupancy.refined_depth``).
        Holds map_lock throughout."""
        with self.map_lock:
            keyframes = self.keyframes.snapshot()
            update, stats = self.map_refiner.step(self.map, keyframes, budget_s, background=self.background,
                                                  preempt=preempt)
            if update.updates and self.cfg.occupancy.enabled and self.cfg.occupancy.refined_depth:
                chosen = [k for k in keyframes if k.id == stats.keyframe_ids[0]]
                self.occupancy.integrate(occupancy_stage.window_depth_views(self.cfg.occupancy, chosen, None,
                                                                            self._depth_view))
            return update, stats

    def score_quality(self, result: WindowResult) -> None:
        """Render and score the keyframes ``process_window`` gathered (``quality.*``); adds quality_s and
        quality_views. Call after the window's chunks went out (it adds no latency to them)."""
        n, seconds = self.quality.score(result.quality_views, self._render_rgb)
        result.quality_views = []
        result.timings.update(quality_s=seconds, quality_views=float(n))

    def _cull(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> Callable[[], Gaussians]:
        """The map's Gaussians one camera may see, as of now, given when called (call under map_lock; the
        call needs no lock: ``FrustumRows`` holds the chunks' immutable arrays)."""
        return self.map.frustum_rows(torch.as_tensor(c2w, dtype=torch.float32),
                                     torch.as_tensor(K, dtype=torch.float32), width, height).gaussians

    def _render_rgb(self, g: Gaussians, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> torch.Tensor:
        """Gaussians (N, k) rendered from one camera -> (3, height, width) float in [0, 1]."""
        c2w_t = torch.as_tensor(c2w, dtype=torch.float32, device=self.device)[None]
        K_t = torch.as_tensor(K, dtype=torch.float32, device=self.device)[None]
        with torch.no_grad():
            out = render_gaussians(g.to(self.device), c2w_t, K_t, width, height,
                                   background=self.background.to(self.device))
        return out.rgb[0].permute(2, 0, 1).clamp(0, 1)

    def window_renders(self, result: WindowResult) -> list[RenderedView]:
        """Re-render a processed window at its newest keyframe and at the novel pose next to it
        (from the window's Gaussians or the global map, per ``render.source``); adds render_s."""
        t0 = time.monotonic()
        views = self._window_renders(result.gaussians, result.window.keyframes)
        result.timings["render_s"] = time.monotonic() - t0
        return views

    def _window_renders(self, g_map: Gaussians, kfs: list[Keyframe]) -> list[RenderedView]:
        """Re-render the newest keyframe's pose and a novel pose next to it."""
        newest = kfs[-1]
        H, W = newest.rgb.shape[:2]
        novel = offset_pose(newest.c2w, np.asarray(self.cfg.render.novel_offset))
        views = []
        for name, pose in (("keyframe", newest.c2w), ("novel", novel)):
            if self.cfg.render.source == "map":
                views.append(self.render(pose, newest.K, W, H, name=name))
            else:
                views.append(render_view(g_map, pose, newest.K, W, H, self.background, name))
        return views

    def update_occupancy(self, result: WindowResult) -> None:
        """Render depth at the window's keyframes (from its Gaussians or the map, per
        ``occupancy.depth_source``) and integrate it into the occupancy grid; adds
        occupancy_render_s and occupancy_update_s. Call after ``process_window``."""
        if not self.cfg.occupancy.enabled:
            return
        t0 = time.monotonic()
        views = occupancy_stage.window_depth_views(self.cfg.occupancy, result.window.keyframes, result.gaussians,
                                                   self._depth_view)
        t1 = time.monotonic()
        with self.map_lock:
            self.occupancy.integrate(views)
        result.timings["occupancy_render_s"] = t1 - t0
        result.timings["occupancy_update_s"] = time.monotonic() - t1

    def _depth_view(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> occupancy_stage.DepthView:
        """The global map rendered for the occupancy grid (depth + alpha) from one camera."""
        with self.map_lock:
            g = self.map.gaussians_in_frustum(torch.as_tensor(c2w, dtype=torch.float32),
                                              torch.as_tensor(K, dtype=torch.float32), width, height)
        return occupancy_stage.render_depth_views(g.to(self.device), np.asarray(c2w)[None], np.asarray(K)[None],
                                                  width, height)[0]

    # ------------------------------------------------------------------ map access (thread-safe)
    def render(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int, name: str = "view") -> RenderedView:
        """Render the global map (only Gaussians in the frustum) from any camera."""
        with self.map_lock:
            g = self.map.gaussians_in_frustum(torch.as_tensor(c2w, dtype=torch.float32),
                                              torch.as_tensor(K, dtype=torch.float32), width, height)
        return render_view(g.to(self.device), c2w, K, width, height, self.background, name)

    def all_rows(self) -> np.ndarray:
        """The whole map as (N, 14) float32 rows (message layout), chunk-key order."""
        with self.map_lock:
            return gaussians_to_array(self.map.all_gaussians()).numpy()

    def reset(self) -> MapUpdate:
        """Empty the map and the keyframes; returns the CLEAR update (new map id)."""
        with self.map_lock:
            update = self.map.reset()
            self.keyframes.clear()
            self.scheduler.reset()
            self.policy.reset()
            self.keep_up.reset()
            self.occupancy.reset()
            self.quality.reset()
        return update

    def save(self, path: str | Path) -> Path:
        """Atomically write the map as 3DGS PLY + JSON sidecar (keyframe poses, model id)."""
        with self.map_lock:
            kfs = self.keyframes.snapshot()
            poses = {k.id: k.c2w for k in kfs}
            return save_map(path, self.map, keyframe_poses=poses,
                            extra={"model_id": self.model_id, **occupancy_stage.keyframe_cameras(kfs)})

    def load(self, path: str | Path) -> MapUpdate:
        """Replace the map by a PLY; returns the updates that rebuild it (CLEAR + UPSERTs).

        On any error the current map is kept and the exception propagates.
        """
        loaded = load_map(path, config=self.map_config(), map_frame=self.cfg.frames.map_frame)
        with self.map_lock:
            self.map = loaded
            self.quality.reset()  # scores of the previous map mean nothing for this one
            if self.cfg.occupancy.enabled:  # the grid follows the map it was built from
                occupancy_stage.rebuild(self.occupancy, occupancy_stage.cameras_from_sidecar(load_sidecar(path)),
                                        self._depth_view)
            return self.map.snapshot()

    def stats(self) -> dict:
        with self.map_lock:
            s = dict(self.map.stats())
            s.update(self.occupancy.stats())
            n, total, last = self._refine_gain
            s.update(refine_windows=n, refine_gain_last_db=last, refine_gain_mean_db=total / n if n else math.nan)
        s.update(self.quality.stats())
        s["num_keyframes_total"] = self.keyframes.total_added
        s["num_windows"] = self.num_windows
        return s

