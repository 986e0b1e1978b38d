"""Posed-image data: containers and formats, procedural scenes rendered by an exact ray
caster, rosbag2 bags, and window samplers.

Main entry points::

    PosedImages, load_transforms_json, write_transforms_json, opengl_to_opencv_c2w
    synth_sequence, SynthConfig, load_scene                 (synthetic data; CLI: ilrm-ros data synth)
    write_bag, read_bag                                     (rosbag2 via rosbags, imported on use)
    sample_window_indices, eval_window_indices              (V context + T target views)
"""
from .sequence_io import load_scene, save_npz
from .synth import SynthConfig, synth_sequence
from ilrm_ros.io.transforms_json import (
    PosedImages,
    load_transforms_json,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    write_transforms_json,
)
from .view_sampling import eval_window_indices, sample_window_indices


def write_bag(*args, **kwargs):
    """See :func:`ilrm_ros.io.bags.write_bag` (rosbags is imported on first use)."""
    from ilrm_ros.io.bags import write_bag as _write

    return _write(*args, **kwargs)


def read_bag(*args, **kwargs):
    """See :func:`ilrm_ros.io.bags.read_bag` (rosbags is imported on first use)."""
    from ilrm_ros.io.bags import read_bag as _read

    return _read(*args, **kwargs)


__all__ = [
    "PosedImages", "load_transforms_json", "write_transforms_json", "opengl_to_opencv_c2w",
    "opencv_to_opengl_c2w", "SynthConfig", "synth_sequence", "load_scene", "save_npz",
    "write_bag", "read_bag", "sample_window_indices", "eval_window_indices",
]
