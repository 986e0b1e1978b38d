"""The bag tool's output bag: what the node would publish, as an mcap bag (rosbags writer, our
message types registered) that rviz / Foxglove can replay."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ilrm_ros.core.chunk_cdr import chunk_cdr
from ilrm_ros.core.wire import MessageTypes, cloud_message
from ilrm_ros.io.frames import ns_to_stamp

_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def msg_definition(name: str) -> str:
    """Text of one of our .msg files (source tree or installed share/)."""
    path = _MSG_DIR / f"{name}.msg"
    if not path.exists():
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("ilrm_ros")) / "msg" / f"{name}.msg"
    return path.read_text()


def rosbags_message_types(ts: Any) -> MessageTypes:
    """The wire builders' classes from a rosbags typestore that has ``GaussianChunk`` registered."""
    T = ts.types
    return MessageTypes(chunk=T["ilrm_ros/msg/GaussianChunk"], cloud=T["sensor_msgs/msg/PointCloud2"],
                        field=T["sensor_msgs/msg/PointField"], point=T["geometry_msgs/msg/Point"],
                        byte_array=lambda packed: packed.view(np.uint8).reshape(-1),
                        uint64_array=lambda ids: np.asarray(ids, np.uint64))


class OutputBag:
    """An mcap bag of what the node would publish (rosbags writer, our types registered)."""

    def __init__(self, path: Path, map_frame: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        self.ts = get_typestore(Stores.ROS2_JAZZY)
        types = {}
        for name in ("GaussianChunk", "MapInfo"):
            types.update(get_types_from_msg(msg_definition(name), f"ilrm_ros/msg/{name}"))
        self.ts.register(types)
        self.T = self.ts.types
        self.types = rosbags_message_types(self.ts)
        self.map_frame = map_frame
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conns = {}

    def _conn(self, topic: str, msgtype: str):
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return self.conns[topic]

    def _header(self, stamp_ns: int, frame_id: str):
        sec, nsec = ns_to_stamp(stamp_ns)
        return self.T["std_msgs/msg/Header"](stamp=self.T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                             frame_id=frame_id)

    def write(self, topic: str, msgtype: str, msg, stamp_ns: int) -> None:
        self.writer.write(self._conn(topic, msgtype), int(stamp_ns), self.ts.serialize_cdr(msg, msgtype))

    def write_update(self, update, stamp_ns: int) -> None:
        """Every transport part as the node publishes it (``core.chunk_cdr``: the serialized message)."""
        sec, nsec = ns_to_stamp(stamp_ns)
        conn = self._conn("/ilrm_mapping/chunks", "ilrm_ros/msg/GaussianChunk")
        for u in update.transport_parts():
            self.writer.write(conn, int(stamp_ns), chunk_cdr(u, sec, nsec, self.map_frame))

    def write_image(self, topic: str, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        h, w = rgb.shape[:2]
        msg = self.T["sensor_msgs/msg/Image"](header=self._header(stamp_ns, frame_id), height=h, width=w,
                                               encoding="rgb8", is_bigendian=0, step=3 * w,
                                               data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))
        self.write(topic, "sensor_msgs/msg/Image", msg, stamp_ns)

    def write_map(self, rows: np.ndarray, stamp_ns: int) -> None:
        self.write("/ilrm_mapping/map", "sensor_msgs/msg/PointCloud2",
                   cloud_message(self.types, rows, self._header(stamp_ns, self.map_frame)), stamp_ns)

    def write_grid(self, grid2d, z: float, stamp_ns: int) -> None:
        """The occupancy grid as the node publishes it on ~/occupancy/grid (nav_msgs/OccupancyGrid)."""
        T = self.T
        header = self._header(stamp_ns, self.map_frame)
        origin = T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=float(grid2d.origin[0]), y=float(grid2d.origin[1]), z=float(z)),
            orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        info = T["nav_msgs/msg/MapMetaData"](map_load_time=header.stamp, resolution=float(grid2d.resolution),
                                            width=grid2d.width, height=grid2d.height, origin=origin)
        msg = T["nav_msgs/msg/OccupancyGrid"](header=header, info=info,
                                             data=np.ascontiguousarray(grid2d.values, np.int8).reshape(-1))
        self.write("/ilrm_mapping/occupancy/grid", "nav_msgs/msg/OccupancyGrid", msg, stamp_ns)

    def close(self) -> None:
        self.writer.close()
