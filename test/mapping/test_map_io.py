"""Saving and loading the global map: atomic PLY + JSON sidecar, re-chunking on load."""
from __future__ import annotations

import json
import os

import numpy as np
import plyfile
import pytest
import torch

from ilrm_ros.mapping import map_io
from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.map_io import atomic_write, load_map, save_map, sidecar_path
from ilrm_ros.core.gaussians import Gaussians


def random_gaussians(n: int, seed: int = 0, spread: float = 6.0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen)
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * spread,
        quats=q / q.norm(dim=1, keepdim=True),
        scales=torch.rand(n, 3, generator=gen) * 0.05 + 0.001,
        opacities=torch.rand(n, generator=gen) * 0.9 + 0.05,
        colors=torch.rand(n, 3, generator=gen),
    )


def small_map(n: int = 2000, seed: int = 0) -> GaussianMap:
    gmap = GaussianMap(MapConfig(chunk_size_m=1.5, max_gaussians_per_chunk=0, max_gaussians=0),
                       map_frame="odom", model_id="small@abc123")
    gmap.add(random_gaussians(n, seed), window_id=3)
    return gmap


def _fake_writer(payload: bytes):
    def write(path, g):
        with open(path, "wb") as f:
            f.write(payload + str(len(g)).encode())
    return write


def _leftovers(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp" in p.name]


def test_save_writes_the_ply_and_a_sidecar_describing_the_map(tmp_path, monkeypatch):
    monkeypatch.setattr(map_io, "_write_ply", _fake_writer(b"PLY:"))
    gmap = small_map()
    poses = {4: np.eye(4), 9: np.diag([1.0, 1.0, 1.0, 1.0])}
    out = save_map(tmp_path / "map.ply", gmap, keyframe_poses=poses)
    assert out.read_bytes() == b"PLY:" + str(len(gmap)).encode()
    side = json.loads(sidecar_path(out).read_text())
    assert side["map_frame"] == "odom" and side["model_id"] == "small@abc123"
    assert side["chunk_size"] == 1.5 and side["num_gaussians"] == len(gmap)
    assert [tuple(k) for k in side["chunk_keys"]] == sorted(gmap.chunks)
    assert sum(side["chunk_counts"]) == len(gmap)
    assert side["keyframe_poses"]["9"] == np.eye(4).tolist()
    assert side["created"] <= side["saved"]
    assert _leftovers(tmp_path) == []


def test_a_crash_while_writing_keeps_the_previous_files_intact(tmp_path, monkeypatch):
    target = tmp_path / "map.ply"
    target.write_bytes(b"the previous map")
    sidecar_path(target).write_text('{"previous": true}')

    def crash_mid_write(path, g):
        with open(path, "wb") as f:
            f.write(b"half of a new m")
            f.flush()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(map_io, "_write_ply", crash_mid_write)
    with pytest.raises(OSError, match="simulated"):
        save_map(target, small_map())
    assert target.read_bytes() == b"the previous map"
    assert json.loads(sidecar_path(target).read_text()) == {"previous": True}
    assert _leftovers(tmp_path) == []


def test_a_crash_before_the_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def fail_replace(src, dst):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(map_io.os, "replace", fail_replace)
    with pytest.raises(OSError):
        atomic_write(target, lambda p: p.write_text("new content"))
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(map_io.os, "fsync", spy)
    atomic_write(tmp_path / "a.bin", lambda p: p.write_bytes(b"1234"))
    assert (tmp_path / "a.bin").read_bytes() == b"1234"
    assert len(synced) >= 2   # the temporary file, then the directory


def test_ply_round_trip_through_save_map_and_load_map(tmp_path):
    gmap = small_map()
    path = save_map(tmp_path / "map.ply", gmap)
    loaded = load_map(path)
    assert loaded.map_frame == "odom" and loaded.chunk_size == 1.5
    assert sorted(loaded.chunks) == sorted(gmap.chunks)
    a, b = gmap.all_gaussians(), loaded.all_gaussians()
    assert len(a) == len(b)
    torch.testing.assert_close(b.means, a.means, rtol=0, atol=0)
    torch.testing.assert_close(b.scales, a.scales, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.opacities, a.opacities, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.colors, a.colors, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.quats, a.quats, rtol=1e-5, atol=1e-6)


def test_load_map_takes_the_map_settings_from_the_sidecar_also_under_their_old_names(tmp_path):
    path = save_map(tmp_path / "map.ply", small_map())
    side = json.loads(sidecar_path(path).read_text())
    assert side["fusion"]["chunk_size_m"] == 1.5 and side["fusion"]["max_gaussians"] == 0
    assert load_map(path).config == MapConfig(chunk_size_m=1.5, max_gaussians_per_chunk=0, max_gaussians=0)
    old = {k: v for k, v in side["fusion"].items() if k not in ("chunk_size_m", "max_gaussians")}
    side["fusion"] = {**old, "chunk_size": 0.75, "max_gaussians_total": 500}  # a sidecar written before the rename
    sidecar_path(path).write_text(json.dumps(side))
    loaded = load_map(path)
    assert loaded.chunk_size == 0.75 and loaded.config.max_gaussians == 500 and len(loaded) <= 500 < 2000


def test_load_map_rechunks_without_a_sidecar_and_honours_the_given_config(tmp_path):
    gmap = small_map()
    path = save_map(tmp_path / "map.ply", gmap)
    sidecar_path(path).unlink()
    loaded = load_map(path, config=MapConfig(chunk_size_m=0.5, max_gaussians_per_chunk=0, max_gaussians=0))
    assert len(loaded) == len(gmap) and loaded.chunk_size == 0.5
    assert len(loaded.chunks) > len(gmap.chunks)


def test_load_map_reads_a_ply_from_another_tool_with_sh_degree_one_and_extra_fields(tmp_path):
    n = 500
    rng = np.random.default_rng(0)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "confidence"])
    table = np.zeros(n, dtype=[(k, "<f4") for k in names])
    for k in names:
        table[k] = rng.normal(size=n)
    table["opacity"] = 2.0           # logit: ~0.88
    for k in ("scale_0", "scale_1", "scale_2"):
        table[k] = -4.0              # log: ~1.8 cm
    path = tmp_path / "other.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(table, "vertex")]).write(str(path))
    loaded = load_map(path)
    assert len(loaded) == n
    g = loaded.all_gaussians()
    assert float(g.opacities.min()) == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)
    assert sorted(map(tuple, np.asarray(g.means).round(4).tolist())) == \
        sorted(map(tuple, np.stack([table["x"], table["y"], table["z"]], 1).round(4).tolist()))
