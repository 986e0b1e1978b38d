"""Start the ilrm_mapping node with config/mapping.yaml (and optionally rviz).

    ros2 launch ilrm_ros mapping.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info use_sim_time:=true rviz:=true

On the pip route (no `ros2 launch`) the same node and parameter file start with
`ilrm_mapping --params-file config/mapping.yaml` (see README).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("ilrm_ros")
    args = [
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "mapping.yaml"),
                              description="ROS 2 parameter file for ilrm_mapping"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="iLRM checkpoint: ours, the authors' re10k_2view.ckpt / "
                                          "ilrm_undistort_dl3dv*.pt, a state dict or .safetensors; "
                                          "empty = model.checkpoint of the parameter file"),
        DeclareLaunchArgument("architecture", default_value="",
                              description="auto, re10k, dl3dv or a config name; empty = model.architecture "
                                          "of the parameter file (auto: detected from the tensors)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag playback)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/ilrm.rviz"),
        DeclareLaunchArgument("image", default_value="image", description="Input sensor_msgs/Image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="Input CameraInfo topic"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logger level of the node"),
    ]
    use_sim_time = LaunchConfiguration("use_sim_time")
    mapping = OpaqueFunction(function=_mapping_node)
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "ilrm.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(args + [mapping, rviz])


def _mapping_node(context, *_args, **_kwargs) -> list:
    """The node, with model.checkpoint / model.architecture overridden only when the launch argument is given."""
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")}
    for arg, param in (("checkpoint", "model.checkpoint"), ("architecture", "model.architecture")):
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[param] = value
    return [Node(
        package="ilrm_ros",
        executable="ilrm_mapping",
        name="ilrm_mapping",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("config"), overrides],
        remappings=[("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info"))],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )]
