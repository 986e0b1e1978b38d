"""The launch file parses and names files and parameters that exist."""
import ast
import runpy
from pathlib import Path

import pytest

from ilrm_ros.mapping.config import parameter_specs

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "mapping.launch.py"


def test_launch_file_is_valid_python_declaring_the_documented_arguments():
    tree = ast.parse(LAUNCH.read_text())
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"config", "checkpoint", "architecture", "namespace", "use_sim_time", "rviz"} <= declared


def test_launch_file_overrides_only_declared_parameters_and_ships_its_files():
    text = LAUNCH.read_text()
    names = {s.name for s in parameter_specs()}
    assert '"model.checkpoint"' in text and "model.checkpoint" in names
    assert '"model.architecture"' in text and "model.architecture" in names
    for rel in ("config/mapping.yaml", "config/ilrm.rviz"):
        assert (ROOT / rel).exists()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake


def test_launch_description_builds_where_ros2_launch_is_installed(monkeypatch):
    pytest.importorskip("launch_ros", reason="ROS 2 `launch`/`launch_ros` are not on PyPI; only a ROS install has them")
    ns = runpy.run_path(str(LAUNCH))
    ld = ns["generate_launch_description"]()
    assert len(ld.entities) > 5
