"""The mapping node's configuration: one dataclass tree, each parameter declared once.

The tree nests the core's own configurations (``KeyframeConfig``, ``WindowConfig``,
``ModelConfig``, ``MapConfig``, ``RefineConfig``, ``QualityConfig``, ``OccupancyConfig``: each
next to the code that reads it)
with the node's sections defined here (input, frames, render, diagnostics). Every
parameter is a field made with :func:`ilrm_ros.core.params.param` (name, default,
description, range, runtime); plain fields are internal knobs, not parameters. The ROS
node declares the parameters from this tree (``ros/parameters.py``),
``config/mapping.yaml`` and the README's table are generated from it
(``mapping/parameter_docs.py``, a test keeps them in sync), and the offline tools build the
same ``MappingConfig`` from the same YAML without ROS.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ilrm_ros.core import params
from ilrm_ros.core.params import ParameterSpec, flatten_nested, param, param_list
from ilrm_ros.mapping.fusion import MapConfig
from ilrm_ros.mapping.inference import ModelConfig
from ilrm_ros.mapping.keyframes import KeyframeConfig
from ilrm_ros.mapping.occupancy_stage import OccupancyConfig
from ilrm_ros.mapping.quality import QualityConfig
from ilrm_ros.mapping.refine import RefineConfig
from ilrm_ros.mapping.scheduler import WindowConfig


@dataclass
class InputConfig:
    """The image stream: topics, QoS, queues and input bounds (``input.*``)."""

    image_topic: str = param("image", "sensor_msgs/Image topic (remap it in launch)")
    use_compressed: bool = param(False, "Subscribe to sensor_msgs/CompressedImage on compressed_topic instead")
    compressed_topic: str = param("image/compressed", "sensor_msgs/CompressedImage topic")
    camera_info_topic: str = param("camera_info", "sensor_msgs/CameraInfo topic")
    qos: str = param("auto", "QoS of the image subscription: auto = reliable while every camera publisher is "
                             "reliable (large images need it), best effort otherwise",
                     choices=("auto", "sensor_data", "reliable"))
    queue_depth: int = param(10, "Image subscription history depth (KEEP_LAST)", 1, 100)
    max_pending: int = param(30, "Frames kept while waiting for TF; the oldest is dropped beyond this", 1, 1000)
    max_input_pixels: int = param(33_554_432, "Drop images with more pixels than this, read from the message or "
                                              "image header before decoding (0 = no limit)", 0, 1 << 40)
    max_decoded_bytes: int = param(268_435_456, "Drop images whose decoded pixels would take more bytes than this "
                                                "(0 = no limit)", 0, 1 << 40)
    rectified: str = param("auto", "Whether the images are rectified: auto = the image topic's name contains "
                                   "'rect'. Rectified: intrinsics from CameraInfo.p; raw: from k, and distortion is "
                                   "warned about", choices=("auto", "always", "never"))


@dataclass
class FramesConfig:
    """Coordinate frames and TF (``frames.*``)."""

    map_frame: str = param("map", "Fixed frame of the map (REP 105)")
    camera_frame: str = param("", "Camera optical frame; empty = frame_id of the image header")
    tf_timeout_s: float = param(1.0, "How long a frame may wait for its TF before it is dropped (time the node "
                                     "could not run, a gap of over 1 s between resolver passes, does not count)",
                                0.0, 60.0, runtime=True)
    tf_max_future_s: float = param(10.0, "Reject /tf samples stamped more than this after the node's clock "
                                         "(0 = no check)", 0.0, 1e9, runtime=True)


@dataclass
class RenderConfig:
    """Re-renders of each window and the render_view service (``render.*``)."""

    publish: bool = param(True, "Publish ~/rendered/* after every window", runtime=True)
    source: str = param("window", "Render the last window's Gaussians or the global map", choices=("window", "map"),
                        runtime=True)
    novel_offset: list = param_list([0.0, 0.0, -0.3], "Novel view: offset of the camera in the newest keyframe's "
                                                      "optical frame (metres, x right, y down, z forward)",
                                    runtime=True)
    background: list = param_list([1.0, 1.0, 1.0], "Background colour of renders, RGB in [0, 1]", 0.0, 1.0,
                                  runtime=True)
    max_render_pixels: int = param(4_194_304, "Largest width x height the render_view service renders "
                                              "(0 = no limit)", 0, 1 << 40, runtime=True)


@dataclass
class DiagnosticsConfig:
    """The /diagnostics publisher (``diagnostics.*``)."""

    period_s: float = param(1.0, "Diagnostics publishing period", 0.1, 60.0)
    stale_after_s: float = param(5.0, "Warn when no images/camera_info/TF arrived for this long", 0.5, 3600.0,
                                 runtime=True)


@dataclass
class MappingConfig:
    """Everything the mapping node and the offline tools need (see config/mapping.yaml)."""

    input: InputConfig = field(default_factory=InputConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    map: MapConfig = field(default_factory=MapConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)


def parameter_specs() -> list[ParameterSpec]:
    """The node's parameters: the tree flattened into dotted specs (``map.chunk_size_m`` ...)."""
    return params.parameter_specs(MappingConfig)


def config_from_flat(values: dict[str, Any]) -> MappingConfig:
    """Build a validated MappingConfig from dotted names; unknown names raise KeyError."""
    return apply_flat(MappingConfig(), values)


def apply_flat(cfg: MappingConfig, values: dict[str, Any]) -> MappingConfig:
    """Validate dotted values and set them on ``cfg`` (in place, all or nothing); returns ``cfg``.

    Each value is checked against its spec, then the resulting configuration as a whole
    (:func:`validate_config`); on any error ``cfg`` is left exactly as it was.
    """
    candidate = with_values(cfg, values)
    for section in fields(MappingConfig):
        setattr(cfg, section.name, getattr(candidate, section.name))
    return cfg


def with_values(cfg: MappingConfig, values: dict[str, Any]) -> MappingConfig:
    """A validated copy of ``cfg`` with dotted ``values`` applied; ``cfg`` is not touched."""
    known = {s.name: s for s in parameter_specs()}
    for name, value in values.items():
        if name not in known:
            raise KeyError(f"unknown parameter '{name}'")
        params.validate_value(known[name], value)
    candidate = copy.deepcopy(cfg)
    for name, value in values.items():
        params.set_dotted(candidate, name, params.coerce_value(known[name].default, value))
    validate_config(candidate)
    return candidate


def validate_config(cfg: MappingConfig) -> None:
    """Checks across parameters; raise ValueError naming the parameters involved."""
    k = cfg.keyframes
    if k.max_interval_s > 0 and k.min_interval_s > k.max_interval_s:
        raise ValueError(f"keyframes.min_interval_s ({k.min_interval_s}) must not exceed keyframes.max_interval_s "
                         f"({k.max_interval_s}) unless that is 0 (never)")
    o = cfg.occupancy
    if not (o.prob_miss < 0.5 < o.prob_hit and o.clamp_min < o.free_threshold <= o.occupied_threshold < o.clamp_max):
        raise ValueError("occupancy: need prob_miss < 0.5 < prob_hit and clamp_min < free_threshold <= "
                         "occupied_threshold < clamp_max")
    if o.floor_clearance_m >= o.robot_height_m:
        raise ValueError(f"occupancy.floor_clearance_m ({o.floor_clearance_m}) must be below occupancy.robot_height_m "
                         f"({o.robot_height_m})")


def flatten_ros_yaml(doc: dict, node_name: str = "ilrm_mapping") -> dict[str, Any]:
    """Dotted parameter values from a ROS 2 parameter file (``node: ros__parameters: ...``).

    Accepts the node name with or without a leading namespace/slash and the ``/**`` wildcard.
    """
    found = None
    for key, body in doc.items():
        if key.strip("/").split("/")[-1] in (node_name, "**") and isinstance(body, dict):
            found = body.get("ros__parameters", {})
            break
    if found is None:
        raise KeyError(f"no 'ros__parameters' for node '{node_name}' in parameter file")
    return flatten_nested(found)


def load_mapping_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                        node_name: str = "ilrm_mapping") -> MappingConfig:
    """MappingConfig from a ROS parameter YAML (default: the package's config/mapping.yaml).

    ROS-only keys such as ``use_sim_time`` are ignored.
    """
    path = Path(path) if path else default_params_file()
    flat = flatten_ros_yaml(yaml.safe_load(path.read_text()), node_name)
    flat.pop("use_sim_time", None)
    flat.update(overrides or {})
    return config_from_flat(flat)


def default_params_file() -> Path:
    """config/mapping.yaml from the source tree, or from share/ilrm_ros on an installed package."""
    here = Path(__file__).resolve().parents[1]  # the ilrm_ros package
    candidate = here.parent / "config" / "mapping.yaml"
    if candidate.exists():
        return candidate
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("ilrm_ros")) / "config" / "mapping.yaml"
    except Exception as exc:  # pragma: no cover - only on odd installs
        raise FileNotFoundError("config/mapping.yaml not found next to the package nor in share/ilrm_ros") from exc
