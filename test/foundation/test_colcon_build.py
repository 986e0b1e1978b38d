"""The same tree builds as an ament_cmake package with colcon (on the pip route here),
and the installed package carries messages, Python sources, launch/config and executables."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("colcon", path=str(VENV / "bin")) is None and shutil.which("colcon") is None,
                    reason="colcon not installed")
def test_colcon_build_installs_a_working_package(tmp_path: Path):
    src = tmp_path / "src" / "ilrm_ros"
    src.parent.mkdir(parents=True)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", "install", "log", ".git", "outputs",
                                                             "data", "runs", "__pycache__", "*.egg-info", "_native"))
    env = dict(os.environ)
    if not os.environ.get("ROS_DISTRO"):  # pip route: the wheels in this venv are the ROS install
        env.update(AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV))
    colcon = shutil.which("colcon", path=str(VENV / "bin")) or shutil.which("colcon")
    build = subprocess.run([colcon, "build", "--packages-select", "ilrm_ros", "--cmake-args",
                            f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    prefix = tmp_path / "install" / "ilrm_ros"
    for rel in ("share/ilrm_ros/package.xml", "share/ilrm_ros/launch/mapping.launch.py",
                "share/ilrm_ros/config/mapping.yaml", "share/ilrm_ros/config/ilrm.rviz",
                "lib/ilrm_ros/ilrm_mapping", "lib/ilrm_ros/ilrm-ros"):
        assert (prefix / rel).exists(), rel
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import ilrm_ros.mapping.config, ilrm_ros.ros.node\n"
        "from ilrm_ros.msg import GaussianChunk, MapInfo\n"
        "from ilrm_ros.srv import SaveMap, LoadMap, RenderView\n"
        "from ilrm_ros.render import native\n"
        "from ilrm_ros.model import native as model_native\n"
        "for lib in (native, model_native):\n"
        "    assert lib.status() == '' and str(lib.LIBRARY).startswith(str(lib.SOURCES[0].parents[2])), lib.status()\n"
        "print(ilrm_ros.mapping.config.__file__)\n"
        "print(ilrm_ros.mapping.config.default_params_file())\n")
    run = subprocess.run(["bash", "-c", f"source {tmp_path}/install/setup.bash && cd {tmp_path} && "
                                        f"{sys.executable} {probe}"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    module_file, params_file = run.stdout.split()[-2:]
    assert module_file.startswith(str(prefix)), "the Python sources must come from the colcon install"
    assert params_file == str(prefix / "share/ilrm_ros/config/mapping.yaml")
