"""Procedural scenes, trajectories and the synth dataset writer/loader."""
import json
import logging
import math

import numpy as np
import pytest

from ilrm_ros.data.scene import Scene, render
from ilrm_ros.data.scene_geometry import signed_distance
from ilrm_ros.data.rooms import random_scene
from ilrm_ros.data.sequence_io import load_npz, load_scene, load_scene_description, save_npz
from ilrm_ros.data.synth import SynthConfig, cli_main, random_trajectory, sequence_rng, synth_sequence
from ilrm_ros.data.trajectories import TrajectoryConfig

SMALL = dict(width=32, height=24, num_frames=6)


def test_same_seed_gives_byte_identical_sequences():
    cfg = SynthConfig(**SMALL)
    _, a = synth_sequence(11, 3, cfg)
    _, b = synth_sequence(11, 3, cfg)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.depths.tobytes() == b.depths.tobytes()
    assert a.c2w.tobytes() == b.c2w.tobytes() and a.K.tobytes() == b.K.tobytes()
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_different_seed_or_index_gives_different_sequences():
    cfg = SynthConfig(**SMALL)
    _, a = synth_sequence(11, 3, cfg)
    _, b = synth_sequence(12, 3, cfg)
    _, c = synth_sequence(11, 4, cfg)
    assert not np.array_equal(a.images, b.images) and not np.array_equal(a.c2w, b.c2w)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("kind,index", [("ground", 0), ("ground", 1), ("handheld", 0), ("loop", 0)])
def test_sequences_have_valid_cameras_images_and_depth(kind, index):
    cfg = SynthConfig(trajectory=kind, **SMALL)
    scene, posed = synth_sequence(5, index, cfg)
    geo = scene.geometry
    assert posed.meta["trajectory"] == kind and len(posed) == 6
    assert posed.images.shape == (6, 24, 32, 3) and posed.depths.shape == (6, 24, 32)
    centres = posed.c2w[:, :3, 3].astype(np.float64)
    # clear of every surface; a ground camera may ride lower above the floor than the clearance
    walls_only = kind != "handheld"
    clearance = signed_distance(geo, centres, floor_and_ceiling=not walls_only)
    assert np.all(clearance >= cfg.motion.clearance - 1e-3)
    assert np.all(signed_distance(geo, centres) >= 0.2 - 1e-3)
    rot = posed.c2w[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    assert np.all(np.isfinite(posed.depths)) and posed.depths.min() > 0.1
    assert np.all(np.diff(posed.timestamps) > 0)
    assert posed.images.std() > 10  # textured and shaded, not flat


def test_depth_back_projects_onto_scene_surfaces():
    cfg = SynthConfig(trajectory="handheld", width=40, height=30, num_frames=3)
    scene, posed = synth_sequence(2, 1, cfg)
    for i in range(3):
        k, c2w, depth = posed.K[i].astype(np.float64), posed.c2w[i].astype(np.float64), posed.depths[i]
        v, u = np.mgrid[0:30, 0:40] + 0.5
        cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1) * depth[..., None]
        world = cam.reshape(-1, 3) @ c2w[:3, :3].T + c2w[:3, 3]
        assert np.abs(signed_distance(scene.geometry, world)).max() < 2e-4 * depth.max() + 1e-5


def test_ground_robot_drives_level_at_constant_height_with_bounded_turn_rate():
    motion = TrajectoryConfig(num_frames=24)
    for index in range(3):
        rng = sequence_rng(7, index)
        scene = random_scene(rng)
        try:
            c2w, times = random_trajectory(rng, scene, "ground", motion)
        except RuntimeError:
            continue
        z = c2w[:, 2, 3] - scene.geometry.room_lo[2]
        assert 0.2 - 0.01 <= z.min() and z.max() <= 1.5 + 0.01 and np.ptp(z) < 0.02
        forward = c2w[:, :3, 2]  # optical axis
        pitch = np.degrees(np.arcsin(-forward[:, 2]))
        assert np.abs(pitch).max() <= motion.max_pitch_deg + 1e-6
        yaw = np.unwrap(np.arctan2(forward[:, 1], forward[:, 0]))
        assert np.abs(np.diff(yaw)).max() / motion.frame_dt <= motion.max_yaw_rate * 1.05
        step = np.linalg.norm(np.diff(c2w[:, :2, 3], axis=0), axis=1) / motion.frame_dt
        assert step.max() <= motion.ground_speed[1] + 1e-6
        assert np.linalg.norm(c2w[-1, :2, 3] - c2w[0, :2, 3]) > 0.1 or np.ptp(yaw) > 0.5


def test_loop_returns_to_its_start_pose():
    cfg = SynthConfig(trajectory="loop", **SMALL)
    _, posed = synth_sequence(3, 2, cfg)
    c2w = posed.c2w.astype(np.float64)
    np.testing.assert_allclose(c2w[-1], c2w[0], atol=1e-5)
    path = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()
    assert path > 2.0  # it went somewhere before coming back
    np.testing.assert_array_equal(posed.images[-1], posed.images[0])


def test_scene_description_re_renders_identically():
    cfg = SynthConfig(**SMALL)
    scene, posed = synth_sequence(4, 0, cfg)
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    rgb, depth = render(again, posed.c2w[2].astype(np.float64), posed.K[2], 32, 24)
    np.testing.assert_array_equal(rgb, posed.images[2])
    np.testing.assert_array_equal(depth, posed.depths[2])


def test_npz_round_trip_keeps_everything_and_depth_to_a_millimetre(tmp_path):
    _, posed = synth_sequence(1, 0, SynthConfig(**SMALL))
    save_npz(tmp_path / "s.npz", posed)
    back = load_npz(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.images, posed.images)
    np.testing.assert_array_equal(back.c2w, posed.c2w)
    np.testing.assert_array_equal(back.K, posed.K)
    np.testing.assert_array_equal(back.timestamps, posed.timestamps)
    assert back.names == posed.names and back.meta == posed.meta
    np.testing.assert_allclose(back.depths, posed.depths, rtol=1e-3)


def test_cli_writes_every_format_and_load_scene_reads_each(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="ilrm_ros.data.synth")
    out = tmp_path / "ds"
    rc = cli_main(["--out", str(out), "--scenes", "2", "--frames", "4", "--res", "32x24", "--seed", "3",
                   "--format", "all", "--trajectory", "mixed", "--workers", "1"])
    assert rc == 0
    assert "frames/s" in capsys.readouterr().out
    progress = [r for r in caplog.records if r.name == "ilrm_ros.data.synth" and r.getMessage().startswith("synth: ")]
    assert progress and {r.levelno for r in progress} == {logging.INFO}
    assert progress[-1].getMessage().startswith("synth: done, 2/2 scene in ")
    index = json.loads((out / "index.json").read_text())
    assert [s["folder"] for s in index["sequences"]] == ["scene_00000", "scene_00001"]
    _, expected = synth_sequence(3, 1, SynthConfig(width=32, height=24, num_frames=4))
    folder = out / "scene_00001"
    from_npz = load_scene(folder)
    from_json = load_scene(folder / "transforms.json")
    from_bag = load_scene(folder / "bag")
    rgb, _ = render(load_scene_description(folder), expected.c2w[3].astype(np.float64), expected.K[3], 32, 24)
    np.testing.assert_array_equal(rgb, expected.images[3])
    for got in (from_npz, from_json, from_bag):
        np.testing.assert_array_equal(got.images, expected.images)
        np.testing.assert_allclose(got.c2w, expected.c2w, atol=1e-5)
        np.testing.assert_allclose(got.K, expected.K, rtol=1e-6)
    np.testing.assert_allclose(from_json.depths, expected.depths, atol=6e-4)  # 16-bit mm PNG


@pytest.mark.slow
def test_cli_output_does_not_depend_on_the_number_of_workers(tmp_path):
    args = ["--scenes", "3", "--frames", "3", "--res", "24", "--seed", "9", "--format", "npz"]
    cli_main(["--out", str(tmp_path / "one"), "--workers", "1", *args])
    cli_main(["--out", str(tmp_path / "two"), "--workers", "2", *args])
    for i in range(3):
        a = load_scene(tmp_path / "one" / f"scene_{i:05d}")
        b = load_scene(tmp_path / "two" / f"scene_{i:05d}")
        assert a.images.tobytes() == b.images.tobytes() and a.c2w.tobytes() == b.c2w.tobytes()


def test_intrinsics_follow_the_sampled_field_of_view():
    _, posed = synth_sequence(0, 0, SynthConfig(**SMALL))
    k = posed.K[0]
    hfov = math.degrees(2 * math.atan(0.5 * 32 / k[0, 0]))
    assert hfov == pytest.approx(posed.meta["hfov_deg"], rel=1e-5) and 60 <= hfov <= 90
    assert k[0, 2] == 16 and k[1, 2] == 12 and k[0, 0] == k[1, 1]
