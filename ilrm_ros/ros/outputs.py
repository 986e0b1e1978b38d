"""What the node publishes besides chunks and the map: window renders and the novel-view frame."""
from __future__ import annotations

from typing import Any

from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ilrm_ros.io.image_codec import encode_image
from ilrm_ros.mapping.mapper import RenderedView
from ilrm_ros.ros.conversions import camera_info_msg


def novel_view_tf(camera_frame: str, offset: list[float], stamp: Any) -> TFMessage:
    """The novel view's fixed offset from the camera, for /tf_static (frame ``<camera>_ilrm_novel``)."""
    ts = TransformStamped()
    ts.header.frame_id = camera_frame
    ts.header.stamp = stamp
    ts.child_frame_id = f"{camera_frame}_ilrm_novel"
    ox, oy, oz = offset
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = ox, oy, oz
    ts.transform.rotation.w = 1.0
    return TFMessage(transforms=[ts])


def publish_render(node: Any, view: RenderedView, stamp: Any, camera_frame: str, novel_tf_sent: str | None) -> str | None:
    """Publish one window render (image, depth, camera_info); announce the novel frame once.

    Returns the camera frame whose novel-view transform has been sent (pass it back next time).
    """
    frame_id = camera_frame if view.name == "keyframe" else f"{camera_frame}_ilrm_novel"
    if view.name == "novel" and novel_tf_sent != camera_frame:
        node.pub_tf_static.publish(novel_view_tf(camera_frame, node.cfg.render.novel_offset,
                                                 node.get_clock().now().to_msg()))
        novel_tf_sent = camera_frame
    header = Header(frame_id=frame_id, stamp=stamp)
    pub_img, pub_depth, pub_info = node.pub_render[view.name]
    pub_img.publish(encode_image(view.rgb, "rgb8", header=header, msg=Image()))
    pub_depth.publish(encode_image(view.depth, "32FC1", header=header, msg=Image()))
    pub_info.publish(camera_info_msg(view.K, view.rgb.shape[1], view.rgb.shape[0], header))
    return novel_tf_sent
