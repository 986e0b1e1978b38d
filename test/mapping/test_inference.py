"""The model inside the mapper: defaults from the architecture, views warning, keeping up (mapping/inference.py)."""
import numpy as np
import pytest

from ilrm_ros.mapping.config import MappingConfig, load_mapping_config
from ilrm_ros.mapping.inference import KeepUpMonitor, fill_model_defaults, views_warning
from ilrm_ros.model.ilrm import load_model_config


@pytest.mark.parametrize("arch,expected", [
    ("re10k", {"model.height": 256, "model.width": 256, "window.size": 2, "window.stride": 1}),
    ("dl3dv", {"model.height": 544, "model.width": 960, "window.size": 16, "window.stride": 8}),
    ("small_rc", {"model.height": 128, "model.width": 128, "window.size": 4, "window.stride": 2}),
])
def test_zero_sizes_and_window_take_the_architectures_own(arch, expected):
    cfg = MappingConfig()
    assert fill_model_defaults(cfg.model, cfg.window, load_model_config(arch)) == expected
    assert (cfg.model.height, cfg.model.width, cfg.window.size, cfg.window.stride) == tuple(expected.values())


def test_given_values_are_kept_and_must_fit_the_token_grid():
    cfg = load_mapping_config(overrides={"model.height": 64, "model.width": 96, "window.size": 3})
    filled = fill_model_defaults(cfg.model, cfg.window, load_model_config("dl3dv"))
    assert filled == {"window.stride": 3}  # stride <= size
    bad = load_mapping_config(overrides={"model.height": 72, "model.width": 96})
    with pytest.raises(ValueError, match="multiple of 16"):
        fill_model_defaults(bad.model, bad.window, load_model_config("dl3dv"))


def test_a_window_far_from_the_trained_views_is_warned_about():
    dl3dv, re10k = load_model_config("dl3dv"), load_model_config("re10k")
    assert views_warning(16, dl3dv) is None and views_warning(8, dl3dv) is None
    assert "far outside the 16-32 views" in views_warning(4, dl3dv)
    assert views_warning(2, re10k) is None and "2-2" in views_warning(8, re10k)


def test_keep_up_warns_once_when_a_window_outlasts_keyframe_interval_times_stride():
    mon = KeepUpMonitor(stride=2)
    for i in range(5):
        mon.on_keyframe(int(i * 0.25e9))  # 4 Hz keyframes
    assert mon.budget_s() == pytest.approx(0.5)
    assert mon.check(0.4) is None
    msg = mon.check(0.9)
    assert msg and "cannot keep up" in msg and "0.90 s" in msg and "0.50 s" in msg
    assert mon.check(5.0) is None  # once


def test_keep_up_gives_no_verdict_before_enough_keyframes():
    mon = KeepUpMonitor(stride=1)
    mon.on_keyframe(0)
    mon.on_keyframe(int(1e8))
    assert mon.budget_s() == 0.0 and mon.check(100.0) is None
    assert np.isclose(mon.interval_s, 0.1)


def test_the_warm_up_forward_reports_its_largest_tensor_and_packs_the_fused_weights():
    """4 x 128^2 with the shipped design: the largest tensor is the tokenizer's input, 4 views x 256 tokens
    x 768 channels (8 x 8 pixels x RGB and 9 ray values) x 4 bytes = 3 MiB."""
    import torch

    from ilrm_ros.mapping.inference import warm_up_model
    from ilrm_ros.model.loading import random_model

    model = random_model("small", 0).eval()
    ff = model.processor.blocks[0].read_ff
    assert ff._fused._key is None
    assert warm_up_model(model, 4, 128, 128, torch.device("cpu")) == 4 * 256 * 768 * 4
    assert ff._fused._key is not None  # the first window finds its weights packed
