"""The map soak benchmark runs end to end on a tiny setting and writes its outputs."""
from __future__ import annotations

import json
import logging

import torch
from PIL import Image

from ilrm_ros.tools.bench import map_soak


def test_stub_gaussians_lie_on_the_room_surfaces():
    room = map_soak.Room()
    c2w = torch.stack([map_soak.camera_pose(t) for t in (10.0, 10.5)])
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]]).expand(2, 3, 3)
    stub = map_soak.StubConfig(grid=16, depth_noise=0.0, jitter_m=0.0)
    g = map_soak.stub_window(room, c2w, K, 64, stub, torch.Generator().manual_seed(0))
    assert len(g) == 2 * 16 * 16
    assert float(map_soak.surface_distance(room, g.means).max()) < 1e-3
    inside = (g.means >= torch.tensor(room.lo) - 1e-3) & (g.means <= torch.tensor(room.hi) + 1e-3)
    assert bool(inside.all())


def test_map_soak_cli_writes_json_png_and_fusion_stays_below_append(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger=map_soak.__name__)
    rc = map_soak.cli_main(["--duration-s", "40", "--period-s", "2", "--grid", "16", "--max-gaussians", "8000",
                            "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "map_soak.json").read_text())
    fused, append = doc["results"]["fusion"]["summary"], doc["results"]["append"]["summary"]
    assert "STUB" in doc["note"] and "STUB" in capsys.readouterr().out
    assert fused["windows"] == append["windows"] == 20
    assert append["reached_cap_at_s"] is not None and 0.9 * 8000 <= append["final_gaussians"] <= 8000
    assert fused["reached_cap_at_s"] is None
    assert fused["final_gaussians"] < append["final_gaussians"]
    assert max(doc["results"]["append"]["series"]["num_gaussians"]) <= 8000
    assert append["integrate_ms_evicting_max"] is not None and fused["integrate_ms_evicting_mean"] is None
    assert len(doc["results"]["append"]["series"]["integrate_ms"]) == 20
    assert doc["malloc_pinned_as_in_the_node"] in (True, False)   # recorded (False where not glibc)
    finals = [r.getMessage() for r in caplog.records if ": done, " in r.getMessage()]
    assert [m.split(" in ")[0] for m in finals] == ["map-soak fusion: done, 20/20 window",
                                                    "map-soak append: done, 20/20 window"]
    with Image.open(tmp_path / "map_soak.png") as img:
        assert img.size == (960, 1140)   # Gaussians, memory, fusion time per window
        assert len(img.getcolors(1 << 16)) > 3   # lines drawn, not a blank canvas
