"""(Re)record the golden replay: ``windows.npz`` (the input) and ``expected_stream.json`` (the output).

What it pins (``test/mapping/test_golden_replay.py``): given the same windows, the global
map (``mapping/gaussian_map.py``, ``fusion.py``, ``chunks.py``, the config that builds it)
emits exactly the same update stream: per window the same chunk updates (key, action,
revision, row count, sha256 of the exact float32 rows, bounds) and counts, and ends in
the same map (stats, rows and bookkeeping per chunk).

**Re-recording is only for an intentional change of the map's behaviour** (a new fusion
rule, another eviction order, a changed default in config/mapping.yaml that the map
reads ...), never to make the test pass after a refactor that was meant to keep the
behaviour: there a failing golden test is the finding. When you do change the behaviour
on purpose, say so in the commit and re-record:

    .venv/bin/python test/mapping/golden/record.py --stream-only   # same windows, new expected stream
    .venv/bin/python test/mapping/golden/record.py                 # also new windows (model/sequence changed)

``--stream-only`` keeps ``windows.npz`` and replays it through the current code; that is
the usual case. The full run (~10 s on a CPU) regenerates the windows as well: the demo's
synthetic loop (``ilrm_ros.tools.demo.demo_sequence``: 40 frames at 128x128, every 5th
held out, 4 Hz) through a ``Mapper`` with the shipped checkpoint on the CPU, keeping the
2,500 most opaque Gaussians of each window (``model.max_gaussians_per_window``) and the
windows in :data:`WINDOWS`: the first five (overlapping: carving and replacement), then
three at the end of the loop, which come back to where it started. The files must stay
small (~1.1 MB together): keep float32 rows, few windows.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402  (this folder's helper, shared with the test)

WINDOWS = (0, 1, 2, 3, 4, 12, 13, 14)
"""Window ids of the demo run that are kept."""

GAUSSIANS_PER_WINDOW = 2500

_MAP = {"model.device": "cpu", "map.fusion": True, "map.chunk_size_m": 4.0, "map.max_integration_distance_m": 8.0,
        "map.eviction": "global", "model.min_opacity": 0.005}
CONFIGS: dict[str, dict[str, Any]] = {
    # fusion, small caps: per-chunk eviction (window 4) and total eviction by contribution score
    "fused_global_eviction": {**_MAP, "map.max_gaussians": 9000, "map.max_gaussians_per_chunk": 1500,
                              "map.eviction_pool": 1.0},   # the exact eviction order; the others pool (default)
    # fusion, eviction farthest from the robot, a nearer integration distance, a higher opacity floor
    "fused_local_eviction": {**_MAP, "map.chunk_size_m": 2.0, "map.max_integration_distance_m": 4.0,
                             "map.eviction": "local", "model.min_opacity": 0.3, "map.max_gaussians": 5000,
                             "map.max_gaussians_per_chunk": 400},
    # no fusion: append, then the caps
    "append": {**_MAP, "map.fusion": False, "map.max_gaussians": 10000, "map.max_gaussians_per_chunk": 2500},
}
"""Replayed configurations: every parameter the map reads, as dotted overrides of config/mapping.yaml."""


def record_windows() -> list[replay.RecordedWindow]:
    """Run the demo sequence through a Mapper with the real model; keep :data:`WINDOWS`."""
    from ilrm_ros.io.frames import Frame
    from ilrm_ros.mapping.chunks import gaussians_to_array
    from ilrm_ros.mapping.config import load_mapping_config
    from ilrm_ros.mapping.mapper import Mapper
    from ilrm_ros.tools.demo import demo_sequence

    frames, res, holdout, rate_hz = 40, 128, 5, 4.0
    seq = demo_sequence(frames, res)
    cfg = load_mapping_config(overrides={"model.device": "cpu", "model.height": res, "model.width": res,
                                         "model.max_gaussians_per_window": GAUSSIANS_PER_WINDOW})
    mapper = Mapper(cfg)
    out = []
    for i in range(frames):
        if i % holdout == holdout - 1:
            continue
        frame = Frame(rgb=seq.images[i], K=seq.K[i], stamp_ns=int((i + 1) * 1e9 / rate_hz), frame_id="camera",
                      c2w=seq.c2w[i].astype(np.float64))
        window = mapper.add_frame(frame)
        if window is None:
            continue
        result = mapper.process_window(window)
        if window.window_id not in WINDOWS:
            continue
        kfs = window.keyframes
        out.append(replay.RecordedWindow(
            window_id=window.window_id, keyframe_ids=tuple(window.keyframe_ids),
            rows=gaussians_to_array(result.gaussians).numpy(), c2w=np.stack([k.c2w for k in kfs]),
            K=np.stack([k.K for k in kfs]), height=kfs[0].rgb.shape[0], width=kfs[0].rgb.shape[1]))
    if [w.window_id for w in out] != list(WINDOWS):
        raise RuntimeError(f"expected windows {WINDOWS}, the demo run gave {[w.window_id for w in out]}")
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=replay.HERE).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record_stream(windows: list[replay.RecordedWindow]) -> dict[str, Any]:
    """Replay every configuration through the current code."""
    return {
        "about": "Expected update stream of test/mapping/golden/windows.npz; written by record.py (read it "
                 "before re-recording: only for intentional behaviour changes).",
        "recorded_at_commit": _commit(),
        "windows_sha256": replay.recording_digest(windows),
        "configs": {name: replay.replay(windows, overrides) for name, overrides in CONFIGS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-only", action="store_true", help="keep windows.npz, recompute the expected stream")
    args = parser.parse_args(argv)
    if args.stream_only:
        windows = replay.load_recording()
    else:
        windows = record_windows()
        replay.save_recording(replay.RECORDING, windows)
        windows = replay.load_recording()  # the stream is computed from what was written
    doc = record_stream(windows)
    replay.EXPECTED.write_text(replay.to_json_text(doc) + "\n")
    sizes = {p.name: p.stat().st_size for p in (replay.RECORDING, replay.EXPECTED)}
    print(f"recorded {len(windows)} windows, {sum(len(w.rows) for w in windows)} Gaussians; {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
