"""Window refinement and live map quality wired into the Mapper (refine.*, quality.*).

An untrained tiny iLRM at 32x32 on a generated sequence: refinement parameters reach the
window, its timings report the context PSNR gain, its time budget holds; new or held-out
keyframes are scored against the map before their window is fused.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ilrm_ros.data.synth import SynthConfig, synth_sequence
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.mapping.mapper import Mapper

RES = 32



@pytest.fixture(scope="module")
def sequence():
    _, posed = synth_sequence(5, 0, SynthConfig(width=RES, height=RES, num_frames=12, trajectory="ground",
                                                shadows=False))
    return posed


def new_mapper(ckpt, **overrides) -> Mapper:
    cfg = load_mapping_config(overrides={
        "model.checkpoint": str(ckpt), "model.device": "cpu", "model.height": RES, "model.width": RES,
        "window.size": 4, "window.stride": 2, "keyframes.min_translation_m": 0.0, "keyframes.min_rotation_deg": 0.0,
        **overrides})
    return Mapper(cfg)


def run(mapper: Mapper, seq, frames: int) -> list:
    """Feed the first ``frames`` frames (every one a keyframe); process each window as it comes."""
    results = []
    for i in range(frames):
        frame = Frame(rgb=seq.images[i], K=seq.K[i], stamp_ns=(i + 1) * 500_000_000, frame_id="cam",
                      c2w=np.asarray(seq.c2w[i], np.float64))
        window = mapper.add_frame(frame)
        if window is not None:
            results.append(mapper.process_window(window))
            mapper.score_quality(results[-1])
    return results


def test_refine_parameters_reach_the_window_and_its_timings_report_the_gain(tiny_checkpoint, sequence):
    (res,) = run(new_mapper(tiny_checkpoint, **{"refine.window_iters": 3, "refine.window_budget_s": 0.0}),
                 sequence, 4)
    t = res.timings
    assert t["refine_iters"] == 3 and t["refine_s"] > 0
    assert t["refine_psnr_after_db"] > t["refine_psnr_before_db"]
    assert t["refine_gain_db"] == pytest.approx(t["refine_psnr_after_db"] - t["refine_psnr_before_db"])
    (plain,) = run(new_mapper(tiny_checkpoint), sequence, 4)
    assert not any(k.startswith("refine_") for k in plain.timings)  # off by default
    # the refined Gaussians are what was fused: same count, different values
    assert res.num_gaussians_window == plain.num_gaussians_window
    assert not np.allclose(res.gaussians.colors.numpy(), plain.gaussians.colors.numpy())


def test_the_mapper_reports_refinement_over_windows(tiny_checkpoint, sequence):
    mapper = new_mapper(tiny_checkpoint, **{"refine.window_iters": 2, "refine.window_budget_s": 0.0})
    results = run(mapper, sequence, 8)
    gains = [r.timings["refine_gain_db"] for r in results]
    s = mapper.stats()
    assert s["refine_windows"] == len(results) == 3
    assert s["refine_gain_last_db"] == pytest.approx(gains[-1])
    assert s["refine_gain_mean_db"] == pytest.approx(float(np.mean(gains)))


def test_the_refinement_budget_holds_in_the_mapper(tiny_checkpoint, sequence):
    budget = 2.5  # well above the default (1 s): refinement that ran longer than 1 s got this budget
    mapper = new_mapper(tiny_checkpoint, **{"refine.window_iters": 100_000, "refine.window_budget_s": budget,
                                            "refine.downscale": 4, "model.max_gaussians_per_window": 256})
    results = run(mapper, sequence, 6)
    timings = [r.timings for r in results]
    assert len(timings) == 2
    for t in timings:
        assert 1 <= t["refine_iters"] < 100_000, timings  # it ran, and the budget stopped it
        assert 1.0 < t["refine_s"] <= budget + 0.3, timings  # + one step's misprediction on a busy CPU
        assert t["process_s"] >= t["refine_s"]


def test_new_keyframes_are_scored_against_the_map_before_their_window_is_fused(tiny_checkpoint, sequence):
    mapper = new_mapper(tiny_checkpoint)  # quality.mode defaults to new_keyframes
    assert mapper.cfg.quality.mode == "new_keyframes"
    first, second, third = run(mapper, sequence, 8)
    assert first.timings["quality_views"] == 0  # the map was empty: nothing to judge
    assert second.timings["quality_views"] == 2 and third.timings["quality_views"] == 2  # stride 2: two new each
    s = mapper.stats()
    assert s["quality_count"] == 4 and s["quality_mode"] == "new_keyframes" and s["quality_held_out"] == 0
    assert 0 < s["quality_psnr_latest_db"] < 100 and 0 < s["quality_psnr_mean_db"] < 100
    assert -1 <= s["quality_ssim_latest"] <= 1 and -1 <= s["quality_ssim_mean"] <= 1
    assert s["num_keyframes_total"] == 8  # scored keyframes still feed windows
    mapper.reset()
    s = mapper.stats()
    assert s["quality_count"] == 0 and math.isnan(s["quality_psnr_mean_db"])


def test_holdout_mode_keeps_every_nth_keyframe_from_the_windows_and_scores_it(tiny_checkpoint, sequence):
    mapper = new_mapper(tiny_checkpoint, **{"quality.mode": "holdout", "quality.holdout_every_n": 3})
    results = run(mapper, sequence, 12)  # keyframes 2, 5, 8, 11 held out; 8 reach windows
    fed = {k for r in results for k in r.window.keyframe_ids}
    s = mapper.stats()
    assert s["quality_held_out"] == 4 and s["num_keyframes_total"] == 8 and len(fed) == 8
    # the held-out keyframes after the first window were scored (2 of them: 8 and 11 arrived after it;
    # 11 is scored at the next window, which never comes: 5 is scored when the second window is fused)
    assert s["quality_count"] == sum(int(r.timings["quality_views"]) for r in results) >= 1


def test_quality_mode_none_scores_nothing(tiny_checkpoint, sequence):
    mapper = new_mapper(tiny_checkpoint, **{"quality.mode": "none"})
    results = run(mapper, sequence, 8)
    assert all(r.timings["quality_views"] == 0 for r in results)
    assert mapper.stats()["quality_count"] == 0
