"""One configuration tree: the core reads the dataclasses the node fills, with metadata on their fields."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import pytest

from ilrm_ros.core.params import param, param_list, parameter_specs as flatten, validate_value
from ilrm_ros.mapping.config import MappingConfig, config_from_flat, parameter_specs
from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.inference import ModelConfig
from ilrm_ros.mapping.keyframes import KeyframeConfig, KeyframePolicy
from ilrm_ros.mapping.occupancy_stage import OccupancyConfig
from ilrm_ros.mapping.quality import QualityConfig
from ilrm_ros.mapping.refine import RefineConfig
from ilrm_ros.mapping.scheduler import WindowConfig, WindowScheduler

RUNTIME = {
    "keyframes.min_translation_m", "keyframes.min_rotation_deg", "keyframes.max_interval_s",
    "keyframes.min_interval_s", "window.min_period_s", "map.publish_period_s", "map.save_path",
    "map.save_on_shutdown", "render.publish", "render.source", "render.novel_offset", "render.background",
    "render.max_render_pixels", "diagnostics.stale_after_s", "frames.tf_timeout_s", "frames.tf_max_future_s",
}


@dataclass
class _Leaf:
    rate: float = param(2.0, "How often", 0.0, 10.0, runtime=True)
    size: int = param(0, "How many; 0 = automatic", 1, 8, special=(0,))
    gain: list = param_list([1.0, 2.0], "Per-axis gain", 0.0, 5.0)
    knob: float = 0.5  # internal: not a parameter


@dataclass
class _Tree:
    leaf: _Leaf = field(default_factory=_Leaf)
    name: str = param("x", "A name", choices=("x", "y"))


def test_a_tree_flattens_to_dotted_parameters_and_leaves_internal_fields_out():
    specs = {s.name: s for s in flatten(_Tree)}
    assert list(specs) == ["leaf.rate", "leaf.size", "leaf.gain", "name"]
    assert specs["leaf.rate"].runtime and not specs["leaf.size"].runtime
    assert specs["leaf.size"].declared_range() == (0, 8)
    validate_value(specs["leaf.size"], 0)  # the special value is allowed outside the range
    with pytest.raises(ValueError, match="leaf.gain"):
        validate_value(specs["leaf.gain"], [1.0, math.nan])
    with pytest.raises(ValueError, match="name"):
        validate_value(specs["name"], "z")


def test_the_node_config_nests_the_cores_own_dataclasses():
    sections = {f.name: f.type for f in fields(MappingConfig)}
    cfg = MappingConfig()
    assert isinstance(cfg.keyframes, KeyframeConfig) and isinstance(cfg.window, WindowConfig)
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.map, MapConfig)
    assert isinstance(cfg.occupancy, OccupancyConfig)
    assert isinstance(cfg.refine, RefineConfig) and isinstance(cfg.quality, QualityConfig)
    assert set(sections) == {"input", "frames", "keyframes", "window", "model", "map", "refine", "quality", "render",
                             "diagnostics", "occupancy"}


def test_internal_knobs_of_the_core_are_not_parameters():
    names = {s.name for s in parameter_specs()}
    assert "map.chunk_size_m" in names and "keyframes.capacity" in names
    for internal in ("depth_downsample", "depth_tol_abs", "replace_distance_ratio", "dedup_voxel", "min_scale",
                     "evict_to_fraction", "min_opacity"):
        assert hasattr(MapConfig(), internal) and f"map.{internal}" not in names


def test_exactly_the_runtime_parameters_may_change_while_the_node_runs():
    assert {s.name for s in parameter_specs() if s.runtime} == RUNTIME


def test_the_core_reads_the_values_the_node_sets_under_the_parameter_names():
    cfg = config_from_flat({"map.chunk_size_m": 0.5, "map.max_gaussians": 7, "keyframes.max_interval_s": 0.0,
                            "window.size": 3, "window.stride": 2})
    assert cfg.map.chunk_size_m == 0.5 and cfg.map.max_gaussians == 7
    policy = KeyframePolicy(cfg.keyframes)
    assert policy.config == cfg.keyframes and policy.config is not cfg.keyframes  # a copy: state stays the policy's
    scheduler = WindowScheduler(cfg.window)
    for _ in range(3):
        scheduler.on_keyframe()
    assert scheduler.due()


def test_keyframe_thresholds_that_cannot_work_together_are_refused():
    with pytest.raises(ValueError, match="min_interval_s"):
        KeyframeConfig(min_interval_s=3.0, max_interval_s=2.0)
    KeyframeConfig(min_interval_s=3.0, max_interval_s=0.0)  # 0 = never: any minimum works
