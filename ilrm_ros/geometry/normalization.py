"""Window pose normalisation, one rule per way a model was trained.

A model only ever sees a window's cameras in a *normalised frame*; each architecture
names the frame and scale it was trained with (``ILRMConfig.pose_normalization``):

``"ilrm_ros"`` (our own models)
    the first camera at the origin with identity rotation, camera centres scaled so the
    largest distance from it is 1 (:func:`~ilrm_ros.geometry.poses.normalize_window`).

``"ilrm_ros_floor"`` (our models from stage 2 of the shipped checkpoint on)
    as ``"ilrm_ros"``, but the scale never drops below :data:`ILRM_ROS_FLOOR_M` = 1 m: a
    window narrower than that (a node window of a few keyframes ~0.1 m apart) keeps metres.
    Under ``"ilrm_ros"`` a 0.3 m window puts a wall 3 m away at 10 units, the ceiling of the
    small models' depth head (``max_depth`` 10), so such windows came out far too short;
    with the floor, normalised depths stay within a room's size in metres.

``"wide"`` (the authors' DL3DV pipeline)
    the *mean-camera frame* (below); translations then divided by their largest absolute
    coordinate, so the window's cameras span max |coordinate| = 1.

``"re10k"`` (the authors' RE10K pipeline)
    the mean-camera frame too, but the RE10K pipeline divides by the largest absolute
    coordinate of the cameras in the *dataset's world frame*, whose origin is the clip's
    first frame (SLAM convention). That number means nothing on a robot, so we use the
    rule it amounts to for a typical RE10K sample: the window's first keyframe plays the
    clip's first frame (its axes are the world axes), and the largest absolute
    coordinate of the camera centres relative to it is scaled to
    :data:`RE10K_SPREAD` = 0.72 rather than 1. 0.72 is the median, over the authors' RE10K
    evaluation index (6,474 scenes), of (j - i) / j for context frames i < j: with the
    world origin at frame 0 and steady motion, the baseline's largest coordinate is that
    fraction of the pipeline's divisor.

The mean-camera frame (both authors' pipelines): origin at the mean camera centre;
forward = normalised mean of the cameras' z axes; down = mean of the y axes made
orthogonal to forward and normalised; right = down x forward (OpenCV axes).

Every rule returns the :class:`~ilrm_ros.geometry.poses.Similarity` back to the world
(``x_world = scale * R @ x_norm + t``), so predicted Gaussians map to metres exactly.
"""
from __future__ import annotations

import logging

import torch

from ilrm_ros.geometry.poses import Similarity, normalize_window

log = logging.getLogger(__name__)

__all__ = ["ILRM_ROS_FLOOR_M", "POSE_NORMALIZATIONS", "RE10K_SPREAD", "mean_camera_frame", "normalize_cameras"]

POSE_NORMALIZATIONS = ("ilrm_ros", "ilrm_ros_floor", "re10k", "wide")
#: Smallest scale (metres per normalised unit) of the ``"ilrm_ros_floor"`` rule.
ILRM_ROS_FLOOR_M = 1.0
#: Largest |coordinate| of a window's camera spread after RE10K-style normalisation (see module doc).
RE10K_SPREAD = 0.72


def mean_camera_frame(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' mean-camera frame of a window.

    c2w: (V, 4, 4) OpenCV camera-to-world. Returns (R (3, 3) with columns right, down,
    forward; t (3,) mean camera centre), in the input dtype.
    """
    forward = torch.nn.functional.normalize(c2w[:, :3, 2].mean(dim=0), dim=0)
    down = c2w[:, :3, 1].mean(dim=0)
    down = torch.nn.functional.normalize(down - down.dot(forward) * forward, dim=0)
    right = torch.linalg.cross(down, forward, dim=0)
    return torch.stack((right, down, forward), dim=1), c2w[:, :3, 3].mean(dim=0)


def _spread(c2w: torch.Tensor, method: str) -> float:
    """Largest |coordinate| of the camera centres in the frame whose scale the rule fixes."""
    t = c2w[:, :3, 3]
    if method == "wide":
        R, t0 = mean_camera_frame(c2w)
    else:  # re10k: relative to the first camera, in its axes
        R, t0 = c2w[0, :3, :3], t[0]
    return float(((t - t0) @ R).abs().max())


def normalize_cameras(
    c2w: torch.Tensor, method: str = "ilrm_ros", min_extent: float = 1e-6
) -> tuple[torch.Tensor, Similarity]:
    """Express a window of cameras the way a model was trained (see the module doc).

    c2w: (V, 4, 4) OpenCV camera-to-world, world frame (metres). method: one of
    :data:`POSE_NORMALIZATIONS`. min_extent: if the cameras' spread is below this (world
    units; e.g. a camera only rotating in place) the scale is unobservable and is left
    at 1 instead of magnifying noise.

    Returns ``(c2w_norm (V, 4, 4), sim)`` with ``sim.apply_c2w(c2w_norm) == c2w`` up to
    rounding. Computed in float64, returned in the input dtype.
    """
    if method == "ilrm_ros":
        return normalize_window(c2w, "first", min_extent)
    if method == "ilrm_ros_floor":
        return normalize_window(c2w, "first", min_extent, min_scale=ILRM_ROS_FLOOR_M)
    if method not in POSE_NORMALIZATIONS:
        raise ValueError(f"pose normalisation must be one of {POSE_NORMALIZATIONS}, got {method!r}")
    if c2w.ndim != 3 or c2w.shape[-2:] != (4, 4):
        raise ValueError(f"expected c2w of shape (V, 4, 4), got {tuple(c2w.shape)}")
    P = c2w.to(torch.float64)
    R, t = mean_camera_frame(P)
    spread = _spread(P, method)
    target = 1.0 if method == "wide" else RE10K_SPREAD
    if spread < min_extent:
        log.debug("degenerate window: camera spread %.3g < %.3g, keeping scale 1", spread, min_extent)
        world_per_unit = 1.0
    else:
        world_per_unit = spread / target
    sim64 = Similarity(R, t, world_per_unit)
    norm = sim64.inverse().apply_c2w(P)
    return norm.to(c2w.dtype), Similarity(R.to(c2w.dtype), t.to(c2w.dtype), world_per_unit)
