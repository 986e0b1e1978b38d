"""Window refinement and live map quality in the node's messages: MapInfo fields and the
/diagnostics quality status (ros/conversions.py make_map_info, ros/diagnostics.py map_statuses)."""
import math
from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ilrm_ros.msg import MapInfo  # noqa: E402
from ilrm_ros.ros.conversions import make_map_info  # noqa: E402
from ilrm_ros.ros.diagnostics import map_statuses  # noqa: E402

STATS = {"num_gaussians": 1000, "num_chunks": 3, "quality_mode": "new_keyframes", "quality_count": 7,
         "quality_psnr_latest_db": 21.5, "quality_psnr_mean_db": 20.25, "quality_ssim_latest": 0.625,
         "quality_ssim_mean": 0.5, "quality_held_out": 0, "refine_windows": 4, "refine_gain_last_db": 1.5,
         "refine_gain_mean_db": 1.25}


def _info(stats: dict, last) -> MapInfo:
    msg = make_map_info(Header(frame_id="map"), "m", stats, "model", "ckpt", "cpu", last, 0)
    return deserialize_message(serialize_message(msg), MapInfo)  # what a subscriber gets


def test_map_info_carries_the_live_quality_and_the_last_windows_refinement():
    last = SimpleNamespace(timings={"model_s": 0.2, "end_to_end_s": 0.5, "refine_s": 0.75, "refine_iters": 6.0,
                                    "refine_gain_db": 2.0})
    info = _info(STATS, last)
    assert info.quality_mode == "new_keyframes" and info.quality_count == 7
    assert (info.quality_psnr_latest_db, info.quality_psnr_mean_db) == (21.5, 20.25)
    assert (info.quality_ssim_latest, info.quality_ssim_mean) == (0.625, 0.5)
    assert (info.last_refine_gain_db, info.last_refine_s, info.last_refine_iterations) == (2.0, 0.75, 6)
    assert info.refine_gain_mean_db == 1.25


def test_map_info_says_nan_before_any_score_and_without_refinement():
    info = _info({"quality_mode": "holdout", "quality_count": 0, "quality_psnr_mean_db": math.nan},
                 SimpleNamespace(timings={"model_s": 0.2}))
    assert info.quality_mode == "holdout" and info.quality_count == 0
    assert math.isnan(info.quality_psnr_mean_db) and math.isnan(info.quality_psnr_latest_db)
    assert math.isnan(info.last_refine_gain_db) and info.last_refine_iterations == 0
    assert math.isnan(_info({}, None).refine_gain_mean_db)


def test_diagnostics_put_quality_and_refinement_in_their_own_status():
    map_status, quality = map_statuses(STATS)
    q = {kv.key: kv.value for kv in quality.values}
    m = {kv.key: kv.value for kv in map_status.values}
    assert quality.name == "ilrm_mapping: map quality" and "20.25 dB" in quality.message
    assert q["quality_count"] == "7" and q["quality_psnr_mean_db"] == "20.25" and q["quality_ssim_latest"] == "0.625"
    assert q["refine_gain_mean_db"] == "1.25" and q["quality_mode"] == "new_keyframes"
    assert m["num_gaussians"] == "1000" and not any(k.startswith(("quality_", "refine_")) for k in m)
    _, empty = map_statuses({"quality_mode": "none", "quality_count": 0})
    assert "no views scored" in empty.message
