"""Pip-route packaging of ilrm_ros (Python code and console scripts).

On a ROS 2 install the package is built by colcon from CMakeLists.txt/package.xml
(ament_cmake: messages + these same sources). On the pip route, pip_route/setup.sh
builds the messages with that CMakeLists.txt and installs this file editable.
"""
from setuptools import find_packages, setup

setup(
    name="ilrm_ros",
    version="0.1.0",
    description="ROS 2 mapping node: camera stream to a 3D Gaussian map with iLRM",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ilrm_ros", "ilrm_ros.*"]),
    package_data={"ilrm_ros": ["configs/*/*.yaml", "checkpoints/*", "assets/*"]},
    include_package_data=True,
    entry_points={
        "console_scripts": [
            "ilrm_mapping = ilrm_ros.ros.node:main",
            "ilrm-ros = ilrm_ros.tools.cli:main",
        ]
    },
)
