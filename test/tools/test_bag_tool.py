"""`ilrm-ros bag`: the mapping core over a rosbag2 bag, without DDS."""
import json

import numpy as np
import pytest
from PIL import Image

from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.io.bags import BagFormat, write_bag
from ilrm_ros.data.synth import SynthConfig, synth_sequence
from ilrm_ros.mapping.chunks import MapReplica
from ilrm_ros.tools.bag import BagOptions, run_bag

pytestmark = pytest.mark.slow



def replay_chunks(bag):
    """The chunk stream of an output bag applied to a MapReplica; returns it and the bag's topics."""
    from rosbags.rosbag2 import Reader

    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from ilrm_ros.mapping.chunks import ChunkUpdate, UpdateAction
    from ilrm_ros.tools.output_bag import msg_definition

    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(msg_definition("GaussianChunk"), "ilrm_ros/msg/GaussianChunk"))
    replica = MapReplica()
    with Reader(bag) as reader:
        topics = {c.topic for c in reader.connections}
        for conn, _, raw in reader.messages():
            if conn.topic != "/ilrm_mapping/chunks":
                continue
            m = ts.deserialize_cdr(raw, conn.msgtype)
            rows = np.frombuffer(bytes(m.gaussians.data), dtype="<f4").reshape(-1, 14)
            replica.apply(ChunkUpdate(UpdateAction(m.action), m.map_id, tuple(int(k) for k in m.chunk_key),
                                      m.chunk_size, int(m.revision), rows=rows, part=m.part,
                                      num_parts=m.num_parts))
    return replica, topics


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_is_mapped_into_ply_renders_report_and_an_output_bag(tmp_path, tiny_checkpoint, storage):
    _, posed = synth_sequence(11, 0, SynthConfig(width=64, height=48, num_frames=12, trajectory="ground",
                                                  shadows=False))
    write_bag(tmp_path / "in", posed, BagFormat(storage=storage))
    cfg = load_mapping_config(overrides={"model.checkpoint": str(tiny_checkpoint), "model.height": 48,
                                         "model.width": 64, "keyframes.min_translation_m": 0.0,
                                         "keyframes.min_rotation_deg": 0.0, "refine.window_iters": 2,
                                         "refine.window_budget_s": 0.0})
    report = run_bag(tmp_path / "in", tmp_path / "out", cfg, BagOptions(holdout=4))
    out = tmp_path / "out"
    assert report == json.loads((out / "report.json").read_text())
    assert report["frames"] == 12 and report["frames_mapped"] == 9 and len(report["held_out"]) == 3
    assert report["drops"] == {}
    # 9 keyframes, windows of 4 every 2 -> windows at keyframes 4, 6, 8
    assert [w["keyframe_ids"] for w in report["windows"]] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    for w in report["windows"]:
        assert w["model_s"] > 0 and w["gaussians_window"] > 0 and w["render_s"] >= 0
        assert w["refine_iters"] == 2 and w["refine_gain_db"] is not None
    # the node's live quality: keyframes 4, 5 and 6, 7 scored before their windows were fused
    q = report["quality"]
    assert q["mode"] == "new_keyframes" and q["count"] == 4 and q["held_out"] == 0
    assert 0 < q["psnr_mean_db"] < 100 and -1 <= q["ssim_mean"] <= 1 and q["psnr_latest_db"] is not None
    assert [w["quality_views"] for w in report["windows"]] == [0, 2, 2]
    r = report["refine"]
    assert r["windows"] == 3 and r["iterations_mean"] == 2
    assert r["gain_mean_db"] == pytest.approx(np.mean([w["refine_gain_db"] for w in report["windows"]]), abs=1e-3)
    assert all(np.isfinite([r["psnr_map"], r["psnr_last_window"], r["psnr_nearest_frame"]]).all()
               for r in report["held_out"])
    assert (out / "map_growth.png").stat().st_size > 0
    assert len(list((out / "rendered").glob("heldout_*_render_vs_truth.png"))) == 3
    grid = np.asarray(Image.open(out / "rendered" / "heldout_grid.png"))  # truth | map render | nearest frame
    assert grid.shape[0] > 3 * 48 and grid.shape[1] > 3 * 64
    from plyfile import PlyData

    assert PlyData.read(out / "map.ply")["vertex"].count == report["map"]["num_gaussians"]

    # the output bag replays: its chunk stream rebuilds the saved map
    replica, topics = replay_chunks(out / "outputs_bag")
    assert {"/ilrm_mapping/chunks", "/ilrm_mapping/map", "/ilrm_mapping/rendered/image"} <= topics
    assert sum(len(a) for a in replica.chunk_arrays().values()) == report["map"]["num_gaussians"]


def test_the_bag_tool_refines_the_map_within_its_budget_and_the_output_bag_follows(tmp_path, tiny_checkpoint):
    _, posed = synth_sequence(11, 0, SynthConfig(width=64, height=48, num_frames=12, trajectory="ground",
                                                  shadows=False))
    write_bag(tmp_path / "in", posed)
    cfg = load_mapping_config(overrides={"model.checkpoint": str(tiny_checkpoint), "model.height": 48,
                                         "model.width": 64, "keyframes.min_translation_m": 0.0,
                                         "keyframes.min_rotation_deg": 0.0, "refine.map_step_budget_s": 0.3,
                                         "refine.lr_opacities": 1.0})
    report = run_bag(tmp_path / "in", tmp_path / "out", cfg, BagOptions(holdout=4, refine_budget_s=1.5))
    rm = report["refine_map"]
    assert rm["steps"] >= 1 and rm["chunk_updates"] > 0
    assert rm["seconds"] <= 1.5 + 0.3  # the last step may use its whole budget
    assert np.isfinite([rm["psnr_map_before"], rm["psnr_map_after"]]).all()
    assert rm["psnr_map_after"] == pytest.approx(np.mean([r["psnr_map"] for r in report["held_out"]]))
    # the refinement's UPSERTs are in the output bag: replaying it gives the refined map's chunks
    replica, _ = replay_chunks(tmp_path / "out" / "outputs_bag")
    assert sum(len(a) for a in replica.chunk_arrays().values()) == report["map"]["num_gaussians"]
    assert max(replica.chunk_revisions().values()) == report["map"]["revision"]


def test_the_bag_tool_drops_a_frame_with_a_bad_pose_by_reason_and_keeps_mapping(tmp_path, tiny_checkpoint):
    from ilrm_ros.io.input_stage import MAX_TRANSLATION_M

    _, posed = synth_sequence(11, 0, SynthConfig(width=64, height=48, num_frames=10, trajectory="ground",
                                                  shadows=False))
    posed.c2w[4, :3, 3] = [0.0, 2 * MAX_TRANSLATION_M, 0.0]  # posed by TF, refused by the input stage
    write_bag(tmp_path / "in", posed)
    cfg = load_mapping_config(overrides={"model.checkpoint": str(tiny_checkpoint), "model.height": 48,
                                         "model.width": 64, "keyframes.min_translation_m": 0.0,
                                         "keyframes.min_rotation_deg": 0.0})
    report = run_bag(tmp_path / "in", tmp_path / "out", cfg, BagOptions(holdout=0, write_bag=False))
    assert report["drops"] == {"dropped_bad_pose": 1}
    assert report["frames"] == report["frames_mapped"] == 9
    # 9 keyframes, windows of 4 every 2 -> windows at keyframes 4, 6, 8, as with 9 good frames
    assert [w["keyframe_ids"] for w in report["windows"]] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert report["map"]["num_gaussians"] > 0


@pytest.mark.parametrize("arch", ["re10k", "dl3dv"])
def test_the_authors_checkpoints_map_a_bag_through_the_cli(tmp_path, authors_checkpoints, arch, capsys, caplog):
    """Full-size random weights in each of the authors' release layouts, named by model.checkpoint
    alone: the architecture, its pose normalisation and window come from the file."""
    from ilrm_ros.tools.bag import cli_main

    _, posed = synth_sequence(5, 0, SynthConfig(width=48, height=32, num_frames=4, trajectory="ground",
                                                 shadows=False))
    write_bag(tmp_path / "in", posed)
    sets = [f"model.checkpoint={authors_checkpoints[arch]}", "model.height=32", "model.width=48",
            "keyframes.min_translation_m=0.0", "keyframes.min_rotation_deg=0.0", "model.device=cpu",
            "map.max_integration_distance_m=0.0"]  # random weights put Gaussians far away: keep them all
    if arch == "dl3dv":
        sets += ["window.size=2", "window.stride=2"]  # 16 views at 544x960 is a GPU's job
    argv = [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--holdout", "0", "--no-output-bag"]
    with caplog.at_level("INFO"):
        assert cli_main(argv + [x for s in sets for x in ("--set", s)]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["map"]["num_gaussians"] > 0 and len(report["windows"]) >= 2
    assert all(len(w["keyframe_ids"]) == 2 for w in report["windows"])
    logged = caplog.text
    assert f"{arch} (detected)" in logged and {"re10k": "poses re10k", "dl3dv": "poses wide"}[arch] in logged
    if arch == "dl3dv":
        assert "far outside the 16-32 views" in logged
    else:  # re10k: 2 views, stride 1 -> a window per new keyframe
        assert [w["keyframe_ids"] for w in report["windows"]][:2] == [[0, 1], [1, 2]]


def test_a_wrong_architecture_stops_the_bag_tool_with_one_line(tmp_path, authors_checkpoints, capsys):
    from ilrm_ros.tools.bag import cli_main

    _, posed = synth_sequence(5, 0, SynthConfig(width=64, height=64, num_frames=2, trajectory="ground", shadows=False))
    write_bag(tmp_path / "in", posed)
    rc = cli_main([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--set",
                   f"model.checkpoint={authors_checkpoints['re10k']}", "--set", "model.architecture=dl3dv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "re10k_2view.ckpt" in err[0] and "dl3dv" in err[0]
