"""`bench node`'s occupancy stage: the grid is pre-filled to the issue's 20 m x 20 m x 3 m area
(memory follows the observed blocks), and the per-window times are summarised."""
import numpy as np

from ilrm_ros.tools.bench.occupancy import prefill, summarise, table
from ilrm_ros.mapping.occupancy import CellState, VoxelGrid


def test_prefill_observes_the_whole_area_in_blocks():
    grid = VoxelGrid(0.1)                                      # 10 cm keeps the test quick
    info = prefill(grid, np.array([5.0, 3.0]), (4.0, 3.2, 1.6))
    assert info["blocks"] == grid.num_blocks
    # 40 x 32 x 16 voxels, offset by the centre: 3 or 4 blocks (1.6 m) along x, 2 or 3 along y, 1 along z
    assert 3 * 2 <= grid.num_blocks <= 4 * 3
    assert info["memory_bytes"] >= grid.num_blocks * 4096 * 5
    assert len(grid.voxels(CellState.FREE)) == 0               # one miss is not yet "free" (p = 0.4)
    assert grid.counts()["observed_voxels"] == 40 * 32 * 16


def test_summary_takes_median_and_max_of_the_windows_that_have_the_stage():
    windows = [{"occupancy_update_s": 0.01}, {"occupancy_update_s": 0.03, "occupancy_publish_s": 0.2},
               {"occupancy_update_s": 0.02}, {}]
    s = summarise(windows)
    assert s["occupancy_update_s_median"] == 0.02 and s["occupancy_update_s_max"] == 0.03
    assert s["occupancy_publish_s_median"] == 0.2 and "occupancy_render_s_median" not in s
    line = table(s, {"area_m": [20, 20, 3], "blocks_end": 2500, "memory_bytes_end": 51_000_000})
    assert "update median 20.0 ms" in line and "render n/a" in line
