"""With the shipped checkpoint, the node's map renders held-out views better than the
nearest keyframe does — end to end over DDS, exactly as `ilrm-ros demo` runs it."""
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rclpy")

from ilrm_ros.tools.demo import DemoConfig, run_demo  # noqa: E402
from ilrm_ros.model.checkpoint import default_checkpoint_path  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_held_out_views_from_the_map_beat_the_nearest_keyframe(tmp_path):
    assert default_checkpoint_path().exists(), "the package must ship its checkpoint"
    report = run_demo(tmp_path / "demo", DemoConfig(frames=24, res=128, holdout=4, rate_hz=2.0))
    assert report["node_exit_code"] == 0 and report["saved_on_shutdown"]
    assert report["windows"] >= 3 and report["frames_dropped"] == 0
    # one latency per processed window, each covering at least that window's model run
    assert len(report["window_latency_s"]) == len(report["window_model_s"]) == report["windows"]
    assert all(e >= m > 0 for e, m in zip(report["window_latency_s"], report["window_model_s"]))
    assert report["gaussians_rebuilt_from_chunks"] == report["gaussians"] == report["latched_map_points"]
    assert report["mean_psnr_map"] > report["mean_psnr_nearest_keyframe"], report["held_out"]
    # the node's own live quality on ~/map_info: each new keyframe scored before its window (the default)
    q = report["quality"]
    assert q["mode"] == "new_keyframes" and q["count"] >= 2 * (report["windows"] - 1) > 0
    assert 10 < q["psnr_mean_db"] < 60 and 0 < q["ssim_mean"] <= 1 and q["psnr_latest_db"] is not None
    grid = np.asarray(Image.open(tmp_path / "demo" / "rendered" / "heldout_grid.png"))
    assert grid.shape[0] > len(report["held_out"]) * 128 and grid.shape[1] > 3 * 128  # truth | render | nearest
