"""The mapping node's configuration: one table of parameters, one dataclass tree.

Every parameter is declared here once (name, default, description, range). The ROS
node declares them from this table (``ros/parameters.py``), ``config/mapping.yaml``
mirrors them (a test checks the two agree), and the offline tools build the same
``MappingConfig`` from the same YAML without ROS.
"""
from __future__ import annotations

import array
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml


def _p(default: Any, description: str, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None, special: tuple = ()):
    """A dataclass field carrying its ROS parameter description and range.

    ``special``: values outside [lo, hi] that mean something (e.g. 0 = "the model's own");
    the ROS descriptor's range is widened to include them, ``validate_value`` allows them.
    """
    return field(default=default, metadata={"description": description, "range": (lo, hi), "choices": choices,
                                            "special": tuple(special)})


def _pl(default: list, description: str, lo: float | None = None, hi: float | None = None):
    """A list-of-floats field; ``lo``/``hi`` bound every element (all elements must be finite)."""
    return field(default_factory=lambda: list(default), metadata={"description": description, "range": (lo, hi),
                                                                  "choices": None, "special": ()})


@dataclass
class InputConfig:
    image_topic: str = _p("image", "sensor_msgs/Image topic (remap it in launch)")
    use_compressed: bool = _p(False, "Subscribe to sensor_msgs/CompressedImage on compressed_topic instead")
    compressed_topic: str = _p("image/compressed", "sensor_msgs/CompressedImage topic")
    camera_info_topic: str = _p("camera_info", "sensor_msgs/CameraInfo topic")
    qos: str = _p("auto", "QoS of the image subscription: auto = reliable while every camera publisher is reliable "
                          "(large images need it), best effort otherwise", choices=("auto", "sensor_data", "reliable"))
    queue_depth: int = _p(10, "Image subscription history depth (KEEP_LAST)", 1, 100)
    max_pending: int = _p(30, "Frames kept while waiting for TF; the oldest is dropped beyond this", 1, 1000)
    max_input_pixels: int = _p(33_554_432, "Drop images with more pixels than this, read from the message or image "
                                           "header before decoding (0 = no limit)", 0, 1 << 40)
    max_decoded_bytes: int = _p(268_435_456, "Drop images whose decoded pixels would take more bytes than this "
                                             "(0 = no limit)", 0, 1 << 40)
    rectified: str = _p("auto", "Whether the images are rectified: auto = the image topic's name contains 'rect'. "
                                "Rectified: intrinsics from CameraInfo.p; raw: from k, and distortion is warned about",
                        choices=("auto", "always", "never"))


@dataclass
class FramesConfig:
    map_frame: str = _p("map", "Fixed frame of the map (REP 105)")
    camera_frame: str = _p("", "Camera optical frame; empty = frame_id of the image header")
    tf_timeout_s: float = _p(1.0, "How long a frame may wait for its TF before it is dropped", 0.0, 60.0)
    tf_max_future_s: float = _p(10.0, "Reject /tf samples stamped more than this after the node's clock "
                                      "(0 = no check)", 0.0, 1e9)


@dataclass
class KeyframeConfig:
    min_translation_m: float = _p(0.10, "Admit a keyframe after this much camera translation", 0.0, 100.0)
    min_rotation_deg: float = _p(10.0, "Admit a keyframe after this much camera rotation", 0.0, 180.0)
    max_interval_s: float = _p(2.0, "Admit a keyframe after this long even without motion (0 = never)", 0.0, 3600.0)
    min_interval_s: float = _p(0.0, "Never admit two keyframes closer in time than this", 0.0, 60.0)
    capacity: int = _p(64, "Keyframes kept in memory", 2, 10000)


@dataclass
class WindowConfig:
    size: int = _p(0, "Keyframes per iLRM window (V); 0 = what the model was trained on (re10k 2, dl3dv 16, ours 4)",
                   2, 64, special=(0,))
    stride: int = _p(0, "New keyframes needed before the next window; 0 = the model's default (re10k 1, dl3dv 8, "
                        "ours 2)", 1, 64, special=(0,))
    min_period_s: float = _p(0.0, "Minimum wall time between two windows", 0.0, 3600.0)
    max_queue: int = _p(1, "Windows waiting for the model; older ones are coalesced away", 1, 16)


@dataclass
class ModelConfig:
    checkpoint: str = _p("", "Checkpoint path: ours, the authors' re10k .ckpt / dl3dv .pt, a state dict or "
                             ".safetensors; empty = the checkpoint shipped with the package")
    architecture: str = _p("auto", "Model architecture: auto (from the tensors), re10k, dl3dv or a config name / YAML")
    trust_pickle: bool = _p(False, "Allow checkpoints holding Python objects besides tensors (only for files you trust)")
    device: str = _p("auto", "Where the model runs", choices=("auto", "cuda", "cpu"))
    height: int = _p(0, "Model input height; 0 = the architecture's (re10k 256, dl3dv 544, ours 128)", 16, 4096,
                     special=(0,))
    width: int = _p(0, "Model input width; 0 = the architecture's (re10k 256, dl3dv 960, ours 128)", 16, 4096,
                    special=(0,))
    resize_mode: str = _p("crop", "How images are fitted to the model size", choices=("crop", "pad", "stretch"))
    max_gaussians_per_window: int = _p(0, "Keep at most this many Gaussians per window, highest opacity first (0 = all)",
                                        0, 10_000_000)
    min_opacity: float = _p(0.005, "Drop window Gaussians below this opacity", 0.0, 1.0)


@dataclass
class MapConfig:
    chunk_size_m: float = _p(2.0, "Edge length of a map chunk (voxel block)", 0.1, 100.0)
    fusion: bool = _p(True, "Fuse overlapping windows (False = append)")
    max_integration_distance_m: float = _p(8.0, "Drop window Gaussians farther than this from every window camera "
                                                "(0 = keep all)", 0.0, 1000.0)
    max_gaussians: int = _p(2_000_000, "Cap on Gaussians in the whole map (0 = unlimited)", 0, 100_000_000)
    max_gaussians_per_chunk: int = _p(200_000, "Cap on Gaussians per chunk (0 = unlimited)", 0, 100_000_000)
    eviction: str = _p("global", "Which Gaussians go first when a cap is hit", choices=("global", "local"))
    publish_period_s: float = _p(2.0, "Republish ~/map (PointCloud2) at most this often (0 = after every window)",
                                 0.0, 3600.0)
    save_path: str = _p("", "PLY path for save_map with an empty path and for saving on shutdown")
    save_on_shutdown: bool = _p(True, "Save the map to save_path on shutdown (when save_path is set)")


@dataclass
class RenderConfig:
    publish: bool = _p(True, "Publish ~/rendered/* after every window")
    source: str = _p("window", "Render the last window's Gaussians or the global map", choices=("window", "map"))
    novel_offset: list = _pl([0.0, 0.0, -0.3], "Novel view: offset of the camera in the newest keyframe's optical "
                                               "frame (metres, x right, y down, z forward)")
    background: list = _pl([1.0, 1.0, 1.0], "Background colour of renders, RGB in [0, 1]", 0.0, 1.0)
    max_render_pixels: int = _p(4_194_304, "Largest width x height the render_view service renders (0 = no limit)",
                                0, 1 << 40)


@dataclass
class OccupancyConfig:
    enabled: bool = _p(False, "Build the 3-D occupancy grid from the Gaussian map and publish ~/occupancy/* and "
                              "~/query_occupancy (off by default: see README, Occupancy)")
    voxel_size_m: float = _p(0.05, "Edge of an occupancy voxel in the map frame", 0.01, 1.0)
    max_blocks: int = _p(20_000, "Bound on allocated blocks of 16x16x16 voxels (20 KiB each); beyond it the blocks "
                                 "farthest from the robot are dropped", 1, 10_000_000)
    depth_source: str = _p("map", "Depth integrated after a window: rendered from the fused map or from the window's "
                                  "Gaussians alone, at the window's keyframes", choices=("map", "window"))
    render_scale: float = _p(0.5, "Keyframe depth for the grid is rendered at this fraction of the model input size",
                             0.05, 1.0)
    min_alpha: float = _p(0.9, "Integrate only pixels whose rendered opacity reaches this", 0.0, 1.0)
    max_range_m: float = _p(5.0, "Rays longer than this carve free space up to it and mark no surface", 0.1, 100.0)
    free_margin_m: float = _p(0.1, "Free space stops this far short of the rendered surface", 0.0, 5.0)
    free_margin_rel: float = _p(0.35, "Free space also stops this fraction of the range short of the surface "
                                      "(for depth whose error grows with range)", 0.0, 0.95)
    prob_hit: float = _p(0.7, "Occupancy probability a surface observation gives its voxel (> 0.5)", 0.5, 0.999)
    prob_miss: float = _p(0.4, "Occupancy probability a ray passing through gives a voxel (< 0.5)", 0.001, 0.5)
    clamp_min: float = _p(0.12, "Lower clamp of a voxel's occupancy probability", 0.001, 0.5)
    clamp_max: float = _p(0.97, "Upper clamp of a voxel's occupancy probability", 0.5, 0.999)
    occupied_threshold: float = _p(0.5, "A voxel above this probability is occupied", 0.001, 0.999)
    free_threshold: float = _p(0.35, "A voxel below this probability is free (between the thresholds: unknown)",
                               0.001, 0.999)
    floor_z_m: float = _p(0.0, "Height of the floor in the map frame (the 2-D grid's band is measured from it)",
                          -1000.0, 1000.0)
    floor_clearance_m: float = _p(0.15, "2-D grid band starts this high above the floor (ignores the floor)",
                                  0.0, 100.0)
    robot_height_m: float = _p(1.0, "2-D grid band ends this high above the floor (the robot's height)", 0.0, 100.0)
    min_free_fraction: float = _p(0.75, "A 2-D cell is free only when no band voxel is occupied and at least this "
                                       "fraction of its band's voxels are observed free", 0.0, 1.0)
    esdf_max_distance_m: float = _p(2.0, "Distances (ESDF slice, query service) saturate at this", 0.05, 100.0)
    esdf_unknown_value: float = _p(-1000.0, "ESDF slice value of unknown cells", -1e9, 1e9)
    publish_period_s: float = _p(1.0, "Republish the grid, voxels and ESDF slice at most this often (after a window "
                                      "changed them)", 0.0, 3600.0)


@dataclass
class DiagnosticsConfig:
    period_s: float = _p(1.0, "Diagnostics publishing period", 0.1, 60.0)
    stale_after_s: float = _p(5.0, "Warn when no images/camera_info/TF arrived for this long", 0.5, 3600.0)


@dataclass
class MappingConfig:
    """Everything the mapping node and the offline tools need (see config/mapping.yaml)."""

    input: InputConfig = field(default_factory=InputConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    map: MapConfig = field(default_factory=MapConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter: dotted name, default, description, numeric range, choices."""

    name: str
    default: Any
    description: str
    range: tuple[float | None, float | None]
    choices: tuple[str, ...] | None
    special: tuple = ()
    """Values outside ``range`` with a documented meaning (e.g. 0 = the model's own)."""

    def declared_range(self) -> tuple[float | None, float | None]:
        """The range to declare to ROS: ``range`` widened to include the special values."""
        lo, hi = self.range
        if self.special and lo is not None:
            lo = min(lo, *self.special)
        if self.special and hi is not None:
            hi = max(hi, *self.special)
        return lo, hi


def parameter_specs(cfg_type: type = MappingConfig, prefix: str = "") -> list[ParameterSpec]:
    """Flatten the config tree into dotted parameter specs (``map.chunk_size_m`` ...)."""
    specs: list[ParameterSpec] = []
    inst = cfg_type()
    for f in fields(cfg_type):
        value = getattr(inst, f.name)
        name = f"{prefix}{f.name}"
        if is_dataclass(value):
            specs.extend(parameter_specs(type(value), name + "."))
        else:
            specs.append(ParameterSpec(name, value, f.metadata["description"], f.metadata["range"],
                                       f.metadata["choices"], f.metadata.get("special", ())))
    return specs


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
        validate_value(known[name], value)
    candidate = copy.deepcopy(cfg)
    for name, value in values.items():
        section, _, leaf = name.partition(".")
        setattr(getattr(candidate, section), leaf, _coerce(known[name].default, value))
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


def _coerce(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, list):
        return [float(v) for v in list(value)]
    return value


def validate_value(spec: ParameterSpec, value: Any) -> None:
    """Raise ValueError with a clear message when ``value`` is outside the spec."""
    d = spec.default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(d, int) and not isinstance(d, bool):
            ok = isinstance(value, int)
    elif isinstance(d, list):
        _validate_list(spec, value)
        return
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"parameter '{spec.name}': expected {type(d).__name__} like {d!r}, got {value!r}")
    lo, hi = spec.range
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in spec.special:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            extra = f" (or {', '.join(map(str, spec.special))})" if spec.special else ""
            raise ValueError(f"parameter '{spec.name}'={value} outside [{lo}, {hi}]{extra}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter '{spec.name}'={value!r} not one of {list(spec.choices)}")


def _validate_list(spec: ParameterSpec, value: Any) -> None:
    """A list parameter: any sequence of real numbers (rclpy passes ``array('d')``) of the default's
    length, every element finite and inside ``spec.range``."""
    n = len(spec.default)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, array.array, Sequence)):
        raise ValueError(f"parameter '{spec.name}': expected a list of {n} numbers like {spec.default}, got {value!r}")
    items = list(value)
    if len(items) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ValueError(f"parameter '{spec.name}': expected a list of {n} numbers like {spec.default}, got {items}")
    lo, hi = spec.range
    for v in items:
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"parameter '{spec.name}'={items}: every element must be finite"
                             + (f" and in [{lo}, {hi}]" if lo is not None or hi is not None else ""))


def flatten_ros_yaml(doc: dict, node_name: str = "ilrm_mapping") -> dict[str, Any]:
    """Dotted parameter values from a ROS 2 parameter file (``node: ros__parameters: ...``).

    Accepts the node name with or without a leading namespace/slash and the ``/**`` wildcard.
    """
    params = None
    for key, body in doc.items():
        if key.strip("/").split("/")[-1] in (node_name, "**") and isinstance(body, dict):
            params = body.get("ros__parameters", {})
            break
    if params is None:
        raise KeyError(f"no 'ros__parameters' for node '{node_name}' in parameter file")
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(params, "")
    return flat


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
