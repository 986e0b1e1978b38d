"""Replay recorded iLRM windows through the mapper's global map and describe what came out.

Shared by ``record.py`` (which writes ``expected_stream.json`` with it) and
``test_golden_replay.py`` (which compares the current code's stream to that file).

A recorded window is what ``Mapper.process_window`` hands to ``GaussianMap.integrate``:
the window's Gaussians in the map frame as rows (N, 14) float32 (message layout), the
window's cameras c2w (V, 4, 4) and K (V, 3, 3) as the keyframes held them (float64),
the image size, the window id and its keyframe ids. The robot position is the newest
camera's centre, as the mapper passes it.

The map is the one a ``Mapper`` builds from a ``MappingConfig`` given as dotted
parameter names (``map.max_gaussians`` ...), so the replay follows the node's own path
from parameters to the fusion policy.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ilrm_ros.mapping.chunks import MapUpdate, array_to_gaussians
from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.mapping.fusion import WindowCameras
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.mapper import Mapper
from ilrm_ros.model.ilrm import ILRMConfig

HERE = Path(__file__).resolve().parent
RECORDING = HERE / "windows.npz"
EXPECTED = HERE / "expected_stream.json"

HASH_CHARS = 16
"""Leading hex digits of sha256 kept per hash (64 bits: enough to tell contents apart)."""


@dataclass
class RecordedWindow:
    """One window as the map receives it: rows (N, 14) float32 map frame, c2w (V, 4, 4), K (V, 3, 3)."""

    window_id: int
    keyframe_ids: tuple[int, ...]
    rows: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    height: int
    width: int


def save_recording(path: Path, windows: list[RecordedWindow]) -> None:
    """Write windows to one compressed npz (arrays per window, prefixed ``w<i>_``)."""
    arrays: dict[str, np.ndarray] = {"num_windows": np.array(len(windows))}
    for i, w in enumerate(windows):
        arrays[f"w{i}_rows"] = np.ascontiguousarray(w.rows, np.float32)
        arrays[f"w{i}_c2w"], arrays[f"w{i}_K"] = w.c2w, w.K
        arrays[f"w{i}_ids"] = np.array([w.window_id, *w.keyframe_ids], np.int64)
        arrays[f"w{i}_size"] = np.array([w.height, w.width], np.int64)
    np.savez_compressed(path, **arrays)


def load_recording(path: Path = RECORDING) -> list[RecordedWindow]:
    """Read the windows written by :func:`save_recording`, in recording order."""
    with np.load(path) as z:
        out = []
        for i in range(int(z["num_windows"])):
            ids, size = z[f"w{i}_ids"].tolist(), z[f"w{i}_size"].tolist()
            out.append(RecordedWindow(window_id=ids[0], keyframe_ids=tuple(ids[1:]), rows=z[f"w{i}_rows"],
                                      c2w=z[f"w{i}_c2w"], K=z[f"w{i}_K"], height=size[0], width=size[1]))
    return out


class _NoModel(torch.nn.Module):
    """Stands in for iLRM so a Mapper can be built; the replay never runs a model."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = ILRMConfig(name="replay")

    def forward(self, *args: Any) -> None:
        raise AssertionError("the golden replay feeds recorded Gaussians: no model call expected")


def new_map(overrides: dict[str, Any]) -> GaussianMap:
    """The empty global map a Mapper builds from config/mapping.yaml with dotted ``overrides``."""
    cfg = load_mapping_config(overrides=overrides)
    return Mapper(cfg, model=_NoModel(), device=torch.device("cpu"), model_id="replay").map


def integrate(gmap: GaussianMap, w: RecordedWindow) -> MapUpdate:
    """Fuse one recorded window exactly as ``Mapper.process_window`` does."""
    cams = WindowCameras(c2w=torch.from_numpy(w.c2w), K=torch.from_numpy(w.K), height=w.height, width=w.width)
    return gmap.integrate(array_to_gaussians(torch.from_numpy(w.rows)), cams, window_id=w.window_id,
                          keyframe_ids=w.keyframe_ids, robot_position=w.c2w[-1, :3, 3])


def digest(*arrays: np.ndarray) -> str:
    """Short sha256 of the arrays' exact bytes (little-endian, C order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()[:HASH_CHARS]


def describe_update(update: MapUpdate) -> dict[str, Any]:
    """A MapUpdate as plain data: counts, then per chunk update its key, action, rows and hash."""
    chunks = [{"key": list(u.key), "action": u.action.name, "revision": u.revision, "rows": int(len(u.rows)),
               "sha256": digest(np.asarray(u.rows, np.float32)), "bounds_min": list(u.bounds_min),
               "bounds_max": list(u.bounds_max), "chunk_size": u.chunk_size, "window_id": u.window_id,
               "keyframe_ids": list(u.keyframe_ids), "part": u.part, "num_parts": u.num_parts}
              for u in update.updates]
    return {"window_id": update.window_id, "revision": update.revision, "num_added": update.num_added,
            "num_removed": update.num_removed, "num_carved": update.num_carved,
            "num_replaced": update.num_replaced, "num_evicted": update.num_evicted, "chunks": chunks}


def describe_map(gmap: GaussianMap) -> dict[str, Any]:
    """Final state: stats (but the random map id) and per chunk its rows and bookkeeping hashes."""
    stats = {k: v for k, v in gmap.stats().items() if k != "map_id"}
    chunks = [{"key": list(key), "rows": len(c), "revision": c.revision, "sha256": digest(c.rows.numpy()),
               "book_sha256": digest(c.src_dist.numpy(), c.born.numpy(), c.last_seen.numpy(),
                                     c.obs_count.numpy(), c.gid.numpy())}
              for key, c in gmap.chunks.items()]
    return {"stats": stats, "chunks": chunks}


def replay(windows: list[RecordedWindow], overrides: dict[str, Any]) -> dict[str, Any]:
    """The update stream (one entry per window) and the final map of one configuration."""
    gmap = new_map(overrides)
    stream = [describe_update(integrate(gmap, w)) for w in windows]
    return {"overrides": overrides, "windows": stream, "final": describe_map(gmap)}


def recording_digest(windows: list[RecordedWindow]) -> str:
    """One hash over every recorded array and id: ties an expected stream to its recording."""
    parts = []
    for w in windows:
        parts += [np.array([w.window_id, *w.keyframe_ids, w.height, w.width], np.int64), w.rows, w.c2w, w.K]
    return digest(*parts)


# ------------------------------------------------------------------ comparison


def _diff_fields(expected: dict, actual: dict) -> str:
    names = sorted(set(expected) | set(actual))
    return ", ".join(f"{n}: expected {expected.get(n)!r}, got {actual.get(n)!r}"
                     for n in names if expected.get(n) != actual.get(n))


def _first_chunk_difference(expected: list[dict], actual: list[dict]) -> str | None:
    for i, (e, a) in enumerate(zip(expected, actual)):
        if e != a:
            return f"chunk #{i} {tuple(e['key'])}: {_diff_fields(e, a)}"
    if len(expected) != len(actual):
        extra = expected[len(actual):] or actual[len(expected):]
        return (f"{len(expected)} chunk updates expected, got {len(actual)} "
                f"(first unmatched: {tuple(extra[0]['key'])} {extra[0].get('action', '')})")
    return None


def first_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """None when two replays (one configuration each) agree, else where they first differ:
    the configuration's window (recording index and window id) and chunk, or the final map."""
    if expected["overrides"] != actual["overrides"]:
        return f"different configurations: {_diff_fields(expected['overrides'], actual['overrides'])}"
    for i, (e, a) in enumerate(zip(expected["windows"], actual["windows"])):
        where = f"window #{i} (window_id {e['window_id']})"
        counts_e = {k: v for k, v in e.items() if k != "chunks"}
        counts_a = {k: v for k, v in a.items() if k != "chunks"}
        if (chunk := _first_chunk_difference(e["chunks"], a["chunks"])) is not None:
            return f"{where}: {chunk}" + (f"; counts: {_diff_fields(counts_e, counts_a)}" if counts_e != counts_a
                                          else "")
        if counts_e != counts_a:
            return f"{where}: {_diff_fields(counts_e, counts_a)}"
    if len(expected["windows"]) != len(actual["windows"]):
        return f"{len(expected['windows'])} windows expected, got {len(actual['windows'])}"
    e, a = expected["final"], actual["final"]
    if e["stats"] != a["stats"]:
        return f"final map stats: {_diff_fields(e['stats'], a['stats'])}"
    if (chunk := _first_chunk_difference(e["chunks"], a["chunks"])) is not None:
        return f"final map: {chunk}"
    return None


# ------------------------------------------------------------------ the JSON file


def _flat(x: Any) -> bool:
    """A value written on one line: a scalar, or a dict/list holding only scalars or lists of scalars."""
    items = x.values() if isinstance(x, dict) else x if isinstance(x, list) else None
    if items is None:
        return True
    return all(not isinstance(v, (dict, list)) or (isinstance(v, list) and all(not isinstance(s, (dict, list))
                                                                                  for s in v)) for v in items)


def to_json_text(doc: Any, indent: str = "") -> str:
    """JSON with one line per flat record (a chunk update, the stats), nested containers indented."""
    if _flat(doc):
        return json.dumps(doc)
    inner = indent + "  "
    if isinstance(doc, dict):
        body = ",\n".join(f"{inner}{json.dumps(k)}: {to_json_text(v, inner)}" for k, v in doc.items())
        return "{\n" + body + "\n" + indent + "}"
    body = ",\n".join(inner + to_json_text(v, inner) for v in doc)
    return "[\n" + body + "\n" + indent + "]"


def load_expected(path: Path = EXPECTED) -> dict[str, Any]:
    return json.loads(path.read_text())
