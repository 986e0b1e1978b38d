"""The node's map services: ``~/save_map``, ``~/load_map``, ``~/reset``, ``~/render_view``.

Each handler answers every request: a bad request (a path that cannot be written, a file
that fails validation, a camera too large or a pose with a zero quaternion) gets
``success = False`` and a message naming the problem, and the map stays as it was.
Anything unexpected propagates to the node's callback guard, which counts it as
``internal_error`` and answers with a failure too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ilrm_ros.io.image_codec import encode_image
from ilrm_ros.io.input_stage import InputRejected, usable_pose
from ilrm_ros.io.rigid import transform_from_pose


def render_camera(width: int, height: int, k: Any, max_pixels: int) -> np.ndarray:
    """K (3, 3) of a requested render camera; ValueError unless its size and intrinsics are usable."""
    K = np.asarray(list(k), dtype=np.float64)
    if K.shape != (9,):
        raise ValueError(f"camera_info.k must hold 9 values, got {K.shape[0]}")
    K = K.reshape(3, 3)
    if not (width > 0 and height > 0 and np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError("camera_info needs width, height and a finite k with fx, fy > 0")
    if max_pixels and width * height > max_pixels:
        raise ValueError(f"{width}x{height} is more than render.max_render_pixels = {max_pixels}")
    return K


def render_pose(T_map_frame: np.ndarray | None, position: Any, orientation: Any) -> np.ndarray:
    """c2w in the map frame from a requested pose in a frame whose pose in the map is ``T_map_frame``.

    ValueError unless the pose passes the input stage's checks (:func:`~ilrm_ros.io.input_stage.usable_pose`)."""
    c2w = transform_from_pose((position.x, position.y, position.z),
                              (orientation.x, orientation.y, orientation.z, orientation.w), "render_view pose")
    if T_map_frame is not None:
        c2w = T_map_frame @ c2w
    try:
        return usable_pose(c2w)
    except InputRejected as exc:  # the input stage's checks, answered as a bad request
        raise ValueError(f"render_view pose: {exc}") from None


class MapServices:
    """Service handlers bound to a MappingNode (which registers them under its callback guard)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def save(self, req, resp):
        node = self.node
        path = req.path or node.cfg.map.save_path
        if not path:
            resp.success, resp.message = False, "no path given and map.save_path is empty"
            return resp
        try:
            written = node.mapper.save(path)
        except (OSError, ValueError) as exc:
            resp.success, resp.message = False, f"save failed: {exc}"
            return resp
        resp.success, resp.path = True, str(Path(written).resolve())
        resp.num_gaussians = int(node.mapper.stats().get("num_gaussians", 0))
        resp.message = f"saved {resp.num_gaussians} Gaussians"
        return resp

    def load(self, req, resp):
        node = self.node
        try:
            update = node.mapper.load(req.path)
        except (OSError, ValueError, KeyError) as exc:  # MapFileError is a ValueError
            resp.success, resp.message = False, f"load failed (map unchanged): {exc}"
            node.get_logger().warning(f"load_map {req.path!r} refused, map unchanged: {exc}")
            return resp
        node.outputs.publish_whole_update(update)
        resp.success = True
        resp.num_gaussians = int(node.mapper.stats().get("num_gaussians", 0))
        resp.message = f"loaded {resp.num_gaussians} Gaussians from {req.path}"
        return resp

    def reset(self, req, resp):
        node = self.node
        node.worker.wait_idle(30.0)
        node.outputs.publish_whole_update(node.mapper.reset())
        resp.success, resp.message = True, "map and keyframes cleared"
        return resp

    def render(self, req, resp):
        node = self.node
        info = req.camera_info
        map_frame = node.map_frame
        try:
            K = render_camera(int(info.width), int(info.height), info.k, node.cfg.render.max_render_pixels)
            frame = (req.header.frame_id or map_frame).strip().lstrip("/") or map_frame
            T = None
            if frame != map_frame:
                T = node.tf.lookup(map_frame, frame, 0)
                if T is None:
                    raise ValueError(f"no TF {map_frame} <- {frame!r}")
            c2w = render_pose(T, req.pose.position, req.pose.orientation)
        except (ValueError, InputRejected) as exc:
            resp.success, resp.message = False, f"render failed: {exc}"
            return resp
        view = node.mapper.render(c2w, K, int(info.width), int(info.height))
        header = Header(frame_id=req.header.frame_id or map_frame, stamp=req.header.stamp)
        resp.image = encode_image(view.rgb, "rgb8", header=header, msg=Image())
        resp.depth = encode_image(view.depth, "32FC1", header=header, msg=Image())
        resp.success, resp.message = True, "ok"
        return resp
