"""The node's occupancy outputs, for planners (the grid itself lives in the ROS-free core,
``mapping.occupancy_stage``; this module only converts and publishes).

    ~/occupancy/grid    nav_msgs/OccupancyGrid      2-D projection of the height band, 100 / 0 / -1
    ~/occupancy/voxels  sensor_msgs/PointCloud2     occupied voxel centres (x, y, z float32)
    ~/occupancy/esdf    ilrm_ros/DistanceMapSlice   2-D signed distance slice on the grid's cells
    ~/query_occupancy   ilrm_ros/QueryOccupancy     points in -> state and distance out

All three topics are reliable and transient-local (late subscribers such as a Nav2 static
layer get the latest), in the map frame, republished after a window changed the grid at
most every ``occupancy.publish_period_s``, and right away after reset / load_map.
"""
from __future__ import annotations

import array
import time
from typing import Any

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from ilrm_ros.io.input_stage import InputRejected
from ilrm_ros.mapping.occupancy_maps import Grid2D, distances_to_occupied
from ilrm_ros.msg import DistanceMapSlice
from ilrm_ros.ros.guard import failed_response
from ilrm_ros.ros.qos import LATCHED
from ilrm_ros.srv import QueryOccupancy

MAX_QUERY_POINTS = 100_000


def _fill_info(info: Any, grid2d: Grid2D, header: Header, z: float) -> None:
    """MapMetaData of a Grid2D: resolution, size, origin (corner of cell (0, 0)) at height z."""
    info.map_load_time = header.stamp
    info.resolution = float(grid2d.resolution)
    info.width, info.height = grid2d.width, grid2d.height
    info.origin.position.x, info.origin.position.y = (float(v) for v in grid2d.origin)
    info.origin.position.z = float(z)
    info.origin.orientation.w = 1.0


def grid_msg(grid2d: Grid2D, header: Header, z: float) -> OccupancyGrid:
    """nav_msgs/OccupancyGrid of a projected grid (row-major from the origin, x along a row)."""
    msg = OccupancyGrid(header=header)
    _fill_info(msg.info, grid2d, header, z)
    msg.data = array.array("b", np.ascontiguousarray(grid2d.values, np.int8).tobytes())
    return msg


def esdf_msg(grid2d: Grid2D, esdf: np.ndarray, header: Header, z: float, max_distance: float,
             unknown_value: float) -> DistanceMapSlice:
    """ilrm_ros/DistanceMapSlice: esdf (H, W) float32 on the cells of ``grid2d``."""
    msg = DistanceMapSlice(header=header, max_distance=float(max_distance), unknown_value=float(unknown_value),
                           z_min=float(grid2d.z_range[0]), z_max=float(grid2d.z_range[1]))
    _fill_info(msg.info, grid2d, header, z)
    msg.data = array.array("f", np.ascontiguousarray(esdf, "<f4").tobytes())
    return msg


def voxels_msg(centres: np.ndarray, header: Header) -> PointCloud2:
    """PointCloud2 (x, y, z float32, dense) of voxel centres (M, 3)."""
    pts = np.ascontiguousarray(centres, "<f4").reshape(-1, 3)
    msg = PointCloud2(header=header, height=1, width=len(pts), is_bigendian=False, point_step=12,
                      row_step=12 * len(pts), is_dense=True)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    msg.data = array.array("B", pts.tobytes())
    return msg


class OccupancyOutputs:
    """Publishers and the query service of a MappingNode; publishing runs on the worker thread."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cfg = node.cfg.occupancy
        self.pub_grid = node.create_publisher(OccupancyGrid, "~/occupancy/grid", LATCHED)
        self.pub_voxels = node.create_publisher(PointCloud2, "~/occupancy/voxels", LATCHED)
        self.pub_esdf = node.create_publisher(DistanceMapSlice, "~/occupancy/esdf", LATCHED)
        node.create_service(QueryOccupancy, "~/query_occupancy",
                            node.guard("the query_occupancy service", failed_response)(self.query),
                            callback_group=MutuallyExclusiveCallbackGroup())
        self._last_publish = -float("inf")
        self._published_revision = -1

    def on_window(self, result: Any) -> None:
        """After a window's chunks went out: integrate its depth, then publish (throttled)."""
        if not self.cfg.enabled:
            return
        self.node.mapper.update_occupancy(result)
        t0 = time.monotonic()
        if self.publish():
            result.timings["occupancy_publish_s"] = time.monotonic() - t0

    def publish(self, force: bool = False) -> bool:
        """Publish grid, voxels and ESDF when the grid changed and the period passed (or ``force``)."""
        mapper = self.node.mapper
        now = time.monotonic()
        if not self.cfg.enabled or (not force and (now - self._last_publish < self.cfg.publish_period_s
                                                   or mapper.occupancy.grid.revision == self._published_revision)):
            return False
        with mapper.map_lock:
            products = mapper.occupancy.products()
        header = Header(frame_id=self.node.map_frame, stamp=self.node.get_clock().now().to_msg())
        z = self.cfg.floor_z_m
        self.pub_grid.publish(grid_msg(products.grid2d, header, z))
        self.pub_esdf.publish(esdf_msg(products.grid2d, products.esdf, header, z, self.cfg.esdf_max_distance_m,
                                       self.cfg.esdf_unknown_value))
        self.pub_voxels.publish(voxels_msg(products.occupied_centres, header))
        self._last_publish, self._published_revision = now, products.revision
        return True

    def query(self, req: QueryOccupancy.Request, resp: QueryOccupancy.Response) -> QueryOccupancy.Response:
        node = self.node
        resp.max_distance = float(self.cfg.esdf_max_distance_m)
        resp.voxel_size = float(self.cfg.voxel_size_m)
        if not self.cfg.enabled:
            resp.success, resp.message = False, "occupancy.enabled is false"
            return resp
        if len(req.points) > MAX_QUERY_POINTS:
            resp.success, resp.message = False, f"{len(req.points)} points: at most {MAX_QUERY_POINTS} per request"
            return resp
        pts = np.array([[p.x, p.y, p.z] for p in req.points], np.float64).reshape(-1, 3)
        if not np.isfinite(pts).all():
            resp.success, resp.message = False, "points must be finite"
            return resp
        frame = (req.header.frame_id or node.map_frame).strip().lstrip("/") or node.map_frame
        if frame != node.map_frame:
            try:
                T = node.tf.lookup(node.map_frame, frame, 0)
            except InputRejected as exc:
                T, why = None, f": {exc}"
            else:
                why = ""
            if T is None:
                resp.success, resp.message = False, f"no TF {node.map_frame} <- {frame!r}{why}"
                return resp
            pts = pts @ np.asarray(T)[:3, :3].T + np.asarray(T)[:3, 3]
        with node.mapper.map_lock:
            grid = node.mapper.occupancy.grid
            states = grid.states_at(pts)
            dist = distances_to_occupied(grid, pts, self.cfg.esdf_max_distance_m)
        resp.states = array.array("B", states.astype(np.uint8).tobytes())
        resp.distances = array.array("f", dist.astype("<f4").tobytes())
        resp.success, resp.message = True, f"{len(pts)} points"
        return resp
