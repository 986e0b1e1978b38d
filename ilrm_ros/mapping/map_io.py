"""Saving and loading the global map: a standard 3DGS PLY plus a JSON sidecar.

``save_map(path, map)`` writes ``path`` (PLY, via ``ilrm_ros.io.ply.save_ply``) and
``<path>.json`` (map frame, chunk size, chunk keys, keyframe poses, model id, times,
counts). Each file is written atomically: to a temporary file in the same directory,
flushed and fsync'ed, renamed over the target with ``os.replace``, then the directory is
fsync'ed — a crash at any point leaves either the old or the new file, never a torn one.
(The two files are replaced one after the other; a crash between the renames leaves a
new PLY next to the old sidecar, which ``load_map`` detects by the count and logs.)

``load_map(path)`` re-chunks the PLY's Gaussians into a new :class:`GaussianMap`; the
sidecar is optional, so PLYs from other tools (any SH degree, extra fields) load too.
Per-Gaussian bookkeeping is not stored: loaded Gaussians have an unknown source
distance (any new observation of them replaces them) and one observation each.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.core.gaussians import Gaussians

logger = logging.getLogger(__name__)

SIDECAR_VERSION = 1


def sidecar_path(path: str | Path) -> Path:
    """``<path>.json`` (e.g. ``map.ply`` -> ``map.ply.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_ply(path: Path, g: Gaussians) -> None:
    """The PLY writer (indirection so tests can simulate a crash mid-write)."""
    from ilrm_ros.io.ply import save_ply

    save_ply(path, g)


def _read_ply(path: Path) -> Gaussians:
    from ilrm_ros.io.ply import load_ply

    return load_ply(path, validate=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Run ``write(tmp_path)`` then atomically move the result to ``path``.

    The temporary file lives in the target's directory (same file system, so the rename
    is atomic); it is fsync'ed before the rename and removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return np.asarray(o).tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def map_sidecar(gmap: GaussianMap, keyframe_poses: Mapping[int, Any] | Sequence[Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict:
    """The sidecar content for ``gmap`` (keyframe poses: id -> c2w (4, 4), or a list)."""
    if keyframe_poses is not None and not isinstance(keyframe_poses, Mapping):
        keyframe_poses = dict(enumerate(keyframe_poses))
    cfg = gmap.config
    chunks = gmap.chunks  # a property that builds every chunk view: read it once
    keys = sorted(chunks)
    doc = {
        "format": "ilrm_ros.gaussian_map",
        "version": SIDECAR_VERSION,
        "map_frame": gmap.map_frame,
        "map_id": gmap.map_id,
        "model_id": gmap.model_id,
        "created": gmap.created,
        "saved": time.time(),
        "chunk_size": cfg.chunk_size_m,
        "num_gaussians": len(gmap),
        "num_chunks": len(chunks),
        "num_windows": gmap.num_windows,
        "revision": gmap.revision,
        "chunk_keys": [list(k) for k in keys],
        "chunk_counts": [len(chunks[k]) for k in keys],
        "gaussian_layout": "3DGS PLY: opacity logit, log scales, rot wxyz, f_dc (SH degree 0)",
        "fusion": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "keyframe_poses": None if keyframe_poses is None else
        {str(int(k)): np.asarray(v, dtype=np.float64).reshape(4, 4).tolist() for k, v in keyframe_poses.items()},
    }
    if extra:
        doc.update(extra)
    return doc


def save_map(path: str | Path, gmap: GaussianMap, keyframe_poses: Mapping[int, Any] | Sequence[Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> Path:
    """Write the map as a standard 3DGS PLY at ``path`` and its sidecar ``<path>.json``, atomically.

    Returns the PLY path. The Gaussians are written in chunk-key order.
    """
    path = Path(path)
    g = gmap.all_gaussians()
    atomic_write(path, lambda tmp: _write_ply(tmp, g), suffix=path.suffix)
    doc = map_sidecar(gmap, keyframe_poses, extra)

    def write_json(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, default=_json_default)

    atomic_write(sidecar_path(path), write_json, suffix=".json")
    logger.info("saved %d Gaussians in %d chunks to %s", len(g), doc["num_chunks"], path)
    return path


def load_sidecar(path: str | Path) -> dict | None:
    """The sidecar of ``path`` if it exists and parses, else None."""
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable sidecar %s: %s", side, exc)
        return None


_OLD_SIDECAR_FIELDS = {"chunk_size": "chunk_size_m", "max_gaussians_total": "max_gaussians",
                                   "max_camera_distance": "max_integration_distance_m"}
"""Field names of sidecars written before the map's configuration took the parameter names."""


def sidecar_map_config(side: Mapping[str, Any] | None) -> MapConfig:
    """The map settings a sidecar records (``fusion``; older sidecars: their field names or only
    ``chunk_size``), MapConfig() without one."""
    if side and isinstance(side.get("fusion"), Mapping):
        stored = {_OLD_SIDECAR_FIELDS.get(k, k): v for k, v in side["fusion"].items()}
        return MapConfig(**{k: v for k, v in stored.items() if k in MapConfig.__dataclass_fields__})
    if side and "chunk_size" in side:
        return MapConfig(chunk_size_m=float(side["chunk_size"]))
    return MapConfig()


def load_map(path: str | Path, config: MapConfig | None = None, map_frame: str | None = None) -> GaussianMap:
    """A new map holding the Gaussians of a 3DGS PLY (re-chunked; sidecar optional).

    ``config`` defaults to the sidecar's map settings (else MapConfig() with the sidecar's chunk size); an
    explicit config wins. Caps and pruning of the config apply to the loaded Gaussians.
    The file is validated first (``mapping.map_validation``: counts against the file size,
    finite values, sane scales); a bad file raises ``MapFileError`` (a ValueError) naming
    the problem, so callers keep their current map. A file whose Gaussians are all pruned
    by the config raises too: loading it would silently empty the map.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such map file")
    side = load_sidecar(path)
    if config is None:
        config = sidecar_map_config(side)
    frame = map_frame or (side or {}).get("map_frame", "map")
    gmap = GaussianMap(config, map_frame=frame, model_id=(side or {}).get("model_id", ""))
    g = _read_ply(path).flatten()
    gmap.add(g, window_id=-1)
    if len(g) and not len(gmap):
        from ilrm_ros.io.map_validation import MapFileError

        raise MapFileError(f"{path}: none of its {len(g)} Gaussians survives the map's pruning (opacity below "
                           f"{config.min_opacity:g} or outside the map): refusing to replace the map with an empty one")
    if side and side.get("num_gaussians") not in (None, len(g)):
        logger.warning("%s: sidecar says %s Gaussians, PLY has %d (sidecar from another save?)",
                       path, side.get("num_gaussians"), len(g))
    logger.info("loaded %d Gaussians (%d kept) into %d chunks from %s", len(g), len(gmap), gmap.stats()["num_chunks"],
                path)
    return gmap
