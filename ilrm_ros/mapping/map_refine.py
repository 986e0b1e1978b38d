"""Background map refinement: one bounded photometric step on the map's Gaussians seen by a keyframe.

    stored keyframes ──least recently refined first──▶ keyframe (+ ``map_covisible`` nearest ones)
    ──rows of the map in their frusta (GaussianMap.rows_in_views)──▶ optimise_gaussians (refine.py,
      scored on the chosen keyframe)
    ──clamp means into their chunk, prune below min_opacity──▶ GaussianMap.replace_rows ──▶ MapUpdate

The step changes rows of existing chunks only (never adds any), so fusion's bookkeeping, the
caps and eviction stay as they were; the changed chunks go out as ordinary UPSERTs (DELETE when
pruning emptied one) with one new map revision, so a ``MapReplica`` fed every update stays exact.

Chunk membership: a refined mean that left its chunk's block is clamped back onto the block's
boundary (chunks never exchange Gaussians here; a mean that still floors into another block after
the float32 cast keeps its previous position). Rows that became invalid (opacity below the
map's ``min_opacity``, scale out of range, not finite) are pruned.

Time: ``budget_s`` bounds the whole step (gathering, optimisation, evaluations); the write-back
(array copies, milliseconds) is not predicted. Determinism: the choice of keyframes is a pure
function of the stored keyframes and the refiner's history, the optimisation one of ``refine.seed``
(on CPU; see refine.py for CUDA).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch

from ilrm_ros.core.wire import COL_MEANS
from ilrm_ros.io.frames import Keyframe
from ilrm_ros.mapping.chunks import ChunkKey, MapUpdate, array_to_gaussians, chunk_keys, gaussians_to_array
from ilrm_ros.mapping.fusion import WindowCameras, prune_mask
from ilrm_ros.mapping.frustum import SeenRows
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.refine import RefineConfig, Schedule, optimise_gaussians

log = logging.getLogger(__name__)

__all__ = ["MapRefineStats", "MapRefiner", "pick_keyframes"]


@dataclass
class MapRefineStats:
    """One map refinement step: the keyframes used (the chosen one first), rows optimised, chunks published,
    rows pruned, optimisation steps, wall time (s), PSNR (dB) of the chosen keyframe before/after, and why it
    stopped ("off", "no_keyframes", "empty", "budget", "iters", "preempted", "no_gain")."""

    keyframe_ids: tuple[int, ...] = ()
    gaussians: int = 0
    chunks: int = 0
    pruned: int = 0
    iterations: int = 0
    seconds: float = 0.0
    psnr_before: float = math.nan
    psnr_after: float = math.nan
    stopped_by: str = "off"


def pick_keyframes(keyframes: Sequence[Keyframe], last_refined: dict[int, int], covisible: int) -> list[Keyframe]:
    """The least recently refined keyframe (never refined first, then the oldest id) and its
    ``covisible`` nearest keyframes by camera centre (ties by id). Empty when there are none."""
    if not keyframes:
        return []
    first = min(keyframes, key=lambda k: (last_refined.get(k.id, -1), k.id))
    centre = np.asarray(first.c2w)[:3, 3]
    others = sorted((k for k in keyframes if k.id != first.id),
                    key=lambda k: (float(np.linalg.norm(np.asarray(k.c2w)[:3, 3] - centre)), k.id))
    return [first] + others[:covisible]


def _clamp_to_blocks(rows: np.ndarray, old: np.ndarray, keys: np.ndarray, chunk_size: float) -> np.ndarray:
    """rows (M, 14) with each mean clamped into the block of its chunk, keys (M, 3); a mean that still floors
    into another block (float32 rounding at the boundary) gets its value from ``old`` (M, 14) back."""
    lo = keys.astype(np.float64) * chunk_size
    hi = np.nextafter(lo + chunk_size, -np.inf)
    out = rows.copy()
    out[:, COL_MEANS] = np.clip(rows[:, COL_MEANS].astype(np.float64), lo, hi).astype(np.float32)
    wrong = (chunk_keys(torch.from_numpy(out[:, COL_MEANS]), chunk_size).numpy() != keys).any(axis=1)
    out[wrong, COL_MEANS] = old[wrong, COL_MEANS]
    return out


class MapRefiner:
    """Background refinement of a :class:`GaussianMap` (``refine.map_*``), one bounded step per call.

    Keeps only which keyframe was refined when (round-robin, least recently refined first). Call
    :meth:`step` from the map's owner (it mutates the map) while no window is waiting.
    """

    def __init__(self, cfg: RefineConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.steps = 0
        self._last_refined: dict[int, int] = {}

    def step(self, gmap: GaussianMap, keyframes: Sequence[Keyframe], budget_s: float | None = None,
             clock: Callable[[], float] = time.monotonic, background: torch.Tensor | None = None,
             preempt: Callable[[], bool] | None = None) -> tuple[MapUpdate, MapRefineStats]:
        """One refinement step within ``budget_s`` (default ``refine.map_step_budget_s``).

        keyframes: stored keyframes (rgb (H, W, 3) uint8 at the model size, K, c2w in the map frame);
        background: (3,) as the map is rendered; preempt: asked before every optimisation step, True
        ends the step early (what it gained is written back). Returns the update (no chunk updates
        when nothing changed, revision unchanged) and the step's stats.
        """
        cfg = self.cfg
        nothing = MapUpdate(map_id=gmap.map_id, revision=gmap.revision)
        if not cfg.map_enabled:
            return nothing, MapRefineStats()
        t0 = clock()
        budget = cfg.map_step_budget_s if budget_s is None else budget_s
        views = pick_keyframes(list(keyframes), self._last_refined, cfg.map_covisible)
        if not views:
            return nothing, MapRefineStats(stopped_by="no_keyframes")
        self.steps += 1
        self._last_refined[views[0].id] = self.steps
        ids = tuple(k.id for k in views)
        cams = SimpleNamespace(c2w=torch.from_numpy(np.stack([np.asarray(k.c2w, np.float32) for k in views])),
                               K=torch.from_numpy(np.stack([np.asarray(k.K, np.float32) for k in views])))
        seen = gmap.rows_in_views([WindowCameras(c2w=cams.c2w[i], K=cams.K[i], height=k.rgb.shape[0],
                                                 width=k.rgb.shape[1]) for i, k in enumerate(views)])
        if not seen:
            return nothing, MapRefineStats(ids, stopped_by="empty", seconds=clock() - t0)
        if preempt is not None and preempt():  # a window came while gathering: yield before evaluating
            return nothing, MapRefineStats(ids, stopped_by="preempted", seconds=clock() - t0)
        rows = np.concatenate([part.chunk_rows[part.index] for part in seen])
        images = torch.from_numpy(np.stack([k.rgb for k in views])).permute(0, 3, 1, 2).float().div_(255.0)
        schedule = Schedule(cfg.map_iters_per_step, max(budget - (clock() - t0), 1e-9), preempt, scored_views=1)
        g = array_to_gaussians(torch.from_numpy(rows)).to(self.device)
        own = replace(cfg, views_per_iter=cfg.map_views_per_iter, downscale=cfg.map_downscale)
        out, st = optimise_gaussians(g, cams, images, own, schedule, clock, background)
        stats = MapRefineStats(ids, len(rows), 0, 0, st.iterations, 0.0, st.psnr_before, st.psnr_after,
                               st.stopped_by)
        if out is g:
            stats.seconds = clock() - t0
            return nothing, stats
        edits = self._edits(gmap, seen, rows, gaussians_to_array(out.to("cpu")).numpy())
        last_window = max(part.last_window_id for part in seen)
        update = gmap.replace_rows(edits, last_window, ids) if edits else nothing
        stats.chunks, stats.pruned, stats.seconds = len(update.updates), update.num_removed, clock() - t0
        log.debug("map refinement on keyframes %s: %d Gaussians, %d steps (%s), PSNR %.2f -> %.2f dB, %d chunks",
                  ids, len(rows), st.iterations, st.stopped_by, st.psnr_before, st.psnr_after, stats.chunks)
        return update, stats

    @staticmethod
    def _edits(gmap: GaussianMap, seen: list[SeenRows], old: np.ndarray,
               refined: np.ndarray) -> dict[ChunkKey, tuple[np.ndarray, np.ndarray]]:
        """Per changed chunk: (kept row indices, its full new rows): the refined rows (M, 14) written over the
        gathered ones ``old`` (M, 14) (means clamped into their block), the refined rows now invalid pruned."""
        counts = [len(part.index) for part in seen]
        keys = np.repeat(np.asarray([part.key for part in seen], np.int64).reshape(-1, 3), counts, axis=0)
        new = _clamp_to_blocks(refined, old, keys, gmap.chunk_size)
        valid = prune_mask(torch.from_numpy(new), gmap.config).numpy()
        touched = ~valid | (new != old).any(axis=1)
        edits, start = {}, 0
        for (key, idx, chunk_rows, _), n in zip(seen, counts):
            span = slice(start, start + n)
            start += n
            if not touched[span].any():
                continue
            full = chunk_rows.copy()
            full[idx] = new[span]
            keep = np.ones(len(full), bool)
            keep[idx[~valid[span]]] = False
            edits[key] = (np.flatnonzero(keep), full[keep])
        return edits
