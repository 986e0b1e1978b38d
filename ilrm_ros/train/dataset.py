"""Scenes in memory and batching for training and evaluation.

A *scene* is a sequence of posed images (a compact scene written by
``ilrm-ros data synth`` or any transforms.json dataset). A *window* is V context views
plus T target views of one scene (picked by ``data.view_sampling``). Batches are expressed in the window-normalised frame
of their context views (``geometry.poses.normalize_window``), targets included.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ilrm_ros.data.sequence_io import load_scene

log = logging.getLogger(__name__)


@dataclass
class SceneData:
    """One scene held in memory at a fixed resolution.

    images: (N, H, W, 3) uint8; c2w: (N, 4, 4) float32 OpenCV; K: (N, 3, 3) float32 pixels;
    depths: optional (N, H, W) float16 z-depth metres, 0 = invalid (generated scenes carry it).
    """

    name: str
    images: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    depths: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


@dataclass
class Batch:
    """A batch of windows, poses in each window's normalised frame.

    ctx_images (B, V, 3, H, W) float [0, 1]; ctx_c2w (B, V, 4, 4); ctx_K (B, V, 3, 3);
    tgt_images (B, T, 3, H, W); tgt_c2w (B, T, 4, 4); tgt_K (B, T, 3, 3);
    tgt_depths: optional (B, T, H, W) float32 z-depth in the normalised frame, 0 = invalid
    (only when every scene of the batch has depth).
    """

    ctx_images: torch.Tensor
    ctx_c2w: torch.Tensor
    ctx_K: torch.Tensor
    tgt_images: torch.Tensor
    tgt_c2w: torch.Tensor
    tgt_K: torch.Tensor
    tgt_depths: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                       for f in self.__dataclass_fields__))


# --------------------------------------------------------------------------- loading

def _is_scene(p: Path) -> bool:
    """A single scene: a .npz/.json file, or a folder with scene.npz, transforms.json or a bag."""
    if p.is_file():
        return p.suffix in (".npz", ".json") and p.name != "index.json"
    return any((p / n).exists() for n in ("scene.npz", "transforms.json", "metadata.yaml", "bag/metadata.yaml"))


def list_scene_paths(root: str | Path) -> list[Path]:
    """Scene files/folders under ``root`` in sorted order.

    ``root`` may itself be one scene (a ``scene_*`` folder, a ``.npz`` file, a
    transforms.json dataset), or a folder of them (``ilrm-ros data synth`` output).
    """
    root = Path(root)
    if _is_scene(root):
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no scenes at {root}")
    return [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and _is_scene(p)]


def resize_scene(images: torch.Tensor, K: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize (N, H, W, 3) uint8 images to ``size`` = (h, w) and rescale pixel K (N, 3, 3)."""
    n, h, w, _ = images.shape
    th, tw = size
    if (h, w) == (th, tw):
        return images, K
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    K = K.clone()
    K[:, 0, :] *= tw / w
    K[:, 1, :] *= th / h
    K[:, 2, :] = torch.tensor([0.0, 0.0, 1.0])
    return out, K


def resize_depths(depths: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) depth maps to ``size`` = (h, w) (no blending across edges)."""
    if tuple(depths.shape[-2:]) == tuple(size):
        return depths
    return F.interpolate(depths[:, None].float(), size=size, mode="nearest")[:, 0].to(depths.dtype)


def to_scene_data(posed, name: str, size: tuple[int, int] | None = None) -> SceneData:
    """Convert ``PosedImages`` to tensors (depth, when present, as float16), optionally resized to ``size`` = (h, w)."""
    depths = None
    if posed.depths is not None:
        depths = torch.as_tensor(np.nan_to_num(np.asarray(posed.depths), nan=0.0, posinf=0.0), dtype=torch.float16)
    images = torch.as_tensor(np.asarray(posed.images))
    c2w = torch.as_tensor(np.asarray(posed.c2w), dtype=torch.float32)
    K = torch.as_tensor(np.asarray(posed.K), dtype=torch.float32)
    if K.ndim == 2:
        K = K.expand(images.shape[0], 3, 3).clone()
    if size is not None:
        images, K = resize_scene(images, K, size)
        depths = None if depths is None else resize_depths(depths, size)
    return SceneData(name=name, images=images, c2w=c2w, K=K, depths=depths)


def load_scenes(root: str | Path, size: tuple[int, int] | None = None, max_scenes: int | None = None,
                min_frames: int = 3) -> list[SceneData]:
    """Load every scene under ``root`` (sorted), resized to ``size`` when given."""
    paths = list_scene_paths(root)
    if max_scenes is not None:
        paths = paths[:max_scenes]
    scenes = []
    for p in paths:
        name = p.parent.name if p.is_file() and p.stem == "scene" else (p.stem if p.is_file() else p.name)
        try:
            sd = to_scene_data(load_scene(p), name, size)
        except Exception as exc:  # a scene being written or corrupt: skip it, say so
            log.warning("skipping unreadable scene %s: %s", p, exc)
            continue
        if len(sd) >= min_frames:
            scenes.append(sd)
        else:
            log.warning("skipping %s: only %d frames", p, len(sd))
    log.info("loaded %d scenes from %s", len(scenes), root)
    return scenes


# --------------------------------------------------------------------------- normalisation

def normalize_targets_with_scale(ctx_c2w: torch.Tensor, tgt_c2w: torch.Tensor, method: str = "ilrm_ros"
                                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Normalise a window's context cameras by ``method`` (geometry.normalization) and map targets alike.

    ctx_c2w (V, 4, 4), tgt_c2w (T, 4, 4) -> same shapes in the normalised frame, and the
    similarity's scale (metres per normalised unit: a depth d in metres is d / scale there).
    """
    from ilrm_ros.geometry.normalization import normalize_cameras

    ctx_n, sim = normalize_cameras(ctx_c2w, method)
    return ctx_n, sim.inverse().apply_c2w(tgt_c2w), float(sim.scale)


def _imgs(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return x.permute(0, 3, 1, 2).float() / 255.0


def make_batch(scenes: Sequence[SceneData], picks: Sequence[tuple[int, list[int], list[int]]],
               method: str = "ilrm_ros") -> Batch:
    """Stack windows ``(scene index, context idx, target idx)`` into a Batch normalised by
    ``method`` (the model's ``pose_normalization``), with target depth in the normalised frame
    when every picked scene has depth."""
    parts: list[tuple[torch.Tensor, ...]] = []
    depths: list[torch.Tensor] | None = []
    for si, ctx, tgt in picks:
        s = scenes[si]
        ci, ti = torch.tensor(ctx), torch.tensor(tgt)
        cc, tc, scale = normalize_targets_with_scale(s.c2w[ci], s.c2w[ti], method)
        parts.append((_imgs(s.images[ci]), cc, s.K[ci], _imgs(s.images[ti]), tc, s.K[ti]))
        if depths is not None and s.depths is not None:
            depths.append(s.depths[ti].float() / scale)
        else:
            depths = None
    return Batch(*(torch.stack(list(col)) for col in zip(*parts)),
                 tgt_depths=None if depths is None else torch.stack(depths))
