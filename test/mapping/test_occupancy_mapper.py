"""The occupancy grid driven by the Mapper (windows, reset, save/load rebuild) and by the bag
tool (occupancy.png next to the true floor plan, scores in report.json)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.data.sequence_io import write_sequence
from ilrm_ros.data.synth import SynthConfig, synth_sequence
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.mapper import Mapper
from ilrm_ros.mapping.occupancy import CellState

RES = 32



def _cfg(ckpt, **extra):
    return load_mapping_config(overrides={"model.checkpoint": str(ckpt), "model.height": RES, "model.width": RES,
                                          "keyframes.min_translation_m": 0.0, "keyframes.min_rotation_deg": 0.0,
                                          "occupancy.render_scale": 1.0, "occupancy.min_alpha": 0.0,
                                          "occupancy.enabled": True, **extra})


def _states(mapper):
    keys, states = mapper.occupancy.grid.blocks()
    order = np.lexsort(keys.T[::-1])
    return keys[order], states[order]


def test_windows_fill_the_grid_reset_empties_it_and_load_map_rebuilds_it(tmp_path, tiny_checkpoint):
    _, seq = synth_sequence(4, 0, SynthConfig(width=RES, height=RES, num_frames=8, trajectory="ground", shadows=False))
    mapper = Mapper(_cfg(tiny_checkpoint))
    for i in range(8):
        window = mapper.add_frame(Frame(rgb=seq.images[i], K=seq.K[i].astype(np.float64), stamp_ns=i * 10**8,
                                        frame_id="cam", c2w=seq.c2w[i].astype(np.float64)))
        if window is not None:
            result = mapper.process_window(window)
            mapper.update_occupancy(result)
            assert result.timings["occupancy_update_s"] >= 0 and result.timings["occupancy_render_s"] > 0
    assert mapper.occupancy.num_scans == 3 * 4       # 3 windows of 4 keyframes
    assert len(mapper.occupancy.grid.voxels(CellState.FREE)) > 0
    path = mapper.save(tmp_path / "m.ply")
    assert len(json.loads((tmp_path / "m.ply.json").read_text())["keyframe_cameras"]) == 8
    mapper.reset()
    assert mapper.occupancy.grid.num_blocks == 0
    mapper.load(path)
    first = _states(mapper)
    assert mapper.occupancy.num_scans == 8 and len(first[0]) > 0   # one scan per saved keyframe camera
    mapper.load(path)                                                 # the rebuild depends on the map only
    second = _states(mapper)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    (tmp_path / "m.ply.json").unlink()                                # a PLY without cameras: unknown grid
    mapper.load(path)
    assert mapper.occupancy.grid.num_blocks == 0


@pytest.mark.parametrize("refined_depth", [True, False])
def test_a_refinement_step_that_changed_the_map_integrates_its_keyframe_depth(tiny_checkpoint, refined_depth):
    """Each refined region reaches the grid: after a background refinement step that changed the map, the
    chosen keyframe's depth, rendered from the refined map, is integrated (one scan more, the grid changes);
    ``occupancy.refined_depth: false`` leaves the grid to the windows."""
    _, seq = synth_sequence(4, 0, SynthConfig(width=RES, height=RES, num_frames=6, trajectory="ground", shadows=False))
    mapper = Mapper(_cfg(tiny_checkpoint, **{"refine.map_enabled": True, "refine.map_step_budget_s": 60.0,
                                             "refine.map_iters_per_step": 3, "refine.downscale": 1,
                                             "occupancy.refined_depth": refined_depth}))
    for i in range(6):
        window = mapper.add_frame(Frame(rgb=seq.images[i], K=seq.K[i].astype(np.float64), stamp_ns=i * 10**8,
                                        frame_id="cam", c2w=seq.c2w[i].astype(np.float64)))
        if window is not None:
            mapper.update_occupancy(mapper.process_window(window))
    scans, revision = mapper.occupancy.num_scans, mapper.occupancy.grid.revision
    update, stats = mapper.refine_map_step()
    assert update.updates and stats.iterations == 3
    if refined_depth:
        assert mapper.occupancy.num_scans == scans + 1 and mapper.occupancy.grid.revision != revision
    else:
        assert mapper.occupancy.num_scans == scans and mapper.occupancy.grid.revision == revision


def test_disabled_occupancy_costs_nothing(tiny_checkpoint):
    mapper = Mapper(_cfg(tiny_checkpoint, **{"occupancy.enabled": False}))
    _, seq = synth_sequence(4, 0, SynthConfig(width=RES, height=RES, num_frames=4, trajectory="ground", shadows=False))
    for i in range(4):
        window = mapper.add_frame(Frame(rgb=seq.images[i], K=seq.K[i].astype(np.float64), stamp_ns=i * 10**8,
                                        frame_id="cam", c2w=seq.c2w[i].astype(np.float64)))
    result = mapper.process_window(window)
    mapper.update_occupancy(result)
    assert "occupancy_update_s" not in result.timings and mapper.occupancy.grid.num_blocks == 0


@pytest.mark.slow
def test_bag_tool_writes_occupancy_png_and_scores_against_the_true_scene(tmp_path, tiny_checkpoint):
    from PIL import Image

    from ilrm_ros.tools.bag import BagOptions, run_bag

    scene, posed = synth_sequence(1000, 3, SynthConfig(width=48, height=48, num_frames=10, trajectory="ground",
                                                       shadows=False))
    write_sequence(tmp_path / "scene_00003", scene, posed, fmt="bag")
    cfg = load_mapping_config(overrides={"model.checkpoint": str(tiny_checkpoint), "model.height": 48,
                                         "model.width": 48, "keyframes.min_translation_m": 0.0,
                                         "keyframes.min_rotation_deg": 0.0, "occupancy.enabled": True})
    report = run_bag(tmp_path / "scene_00003" / "bag", tmp_path / "out", cfg, BagOptions(holdout=5))
    occ = report["occupancy"]
    assert occ["truth"].endswith("scene.json")
    for key in ("accuracy", "false_free_rate_3m", "observed_voxels", "missed_occupied_3m"):
        assert key in occ["scores_3d"]
    assert all("occupancy_update_s" in w for w in report["windows"])
    # the same integration from exact depth scores what the grid itself can do (the targets)
    exact = occ["exact_depth"]["scores_3d"]
    assert exact["accuracy"] >= 0.95 and exact["false_free_rate_3m"] <= 0.01
    png = Image.open(tmp_path / "out" / "occupancy.png")
    w, h = occ["grid_cells"]
    assert png.width >= 3 * w and png.height > h                    # grid | truth | errors
    assert (tmp_path / "out" / "exact_depth" / "occupancy.png").exists()
    # the output bag carries the grid as the node publishes it
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    with Reader(tmp_path / "out" / "outputs_bag") as reader:
        grids = [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                 if c.topic == "/ilrm_mapping/occupancy/grid"]
    assert len(grids) == 1 and grids[0].header.frame_id == "map"
    assert len(grids[0].data) == grids[0].info.width * grids[0].info.height
