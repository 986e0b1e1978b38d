"""`bench node`'s summary: where a window's end-to-end time goes, as medians over the steady windows."""
import pytest

pytest.importorskip("rclpy")

from ilrm_ros.tools.bench.node import summarise  # noqa: E402


def _window(model: float, fuse: float, prepare: float, queued: float, publish: float) -> dict:
    process = model + fuse + prepare
    return {"model_s": model, "integrate_s": fuse, "process_s": process, "queued_s": queued, "handoff_s": 0.0,
            "publish_chunks_s": publish, "end_to_end_s": queued + process + publish, "render_s": 0.05}


def test_the_summary_splits_the_rest_into_fusion_preparation_queueing_and_publishing():
    warmup = _window(1.0, 0.5, 0.5, 0.5, 0.5)   # the first window is left out
    steady = [_window(0.080, 0.010, 0.002, 0.002, 0.004) for _ in range(3)]
    s = summarise({"windows": [warmup, *steady], "rss_samples": []})
    assert s["windows"] == 4
    assert s["end_to_end_s_median"] == pytest.approx(0.098)
    assert s["prepare_s_median"] == pytest.approx(0.002)
    assert s["rest_s_median"] == pytest.approx(0.018)
    assert s["rest_without_fusion_fraction_median"] == pytest.approx(0.008 / 0.098)
