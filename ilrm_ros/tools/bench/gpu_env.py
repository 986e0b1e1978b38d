"""The GPU machine as ``scripts/gpu_check.sh`` finds it: the card and its software, which
carried wheels to install, gsplat's first CUDA build, and ``ilrm-ros`` run with the ROS
modules blocked (the bag tool and the benchmarks must not need ROS)."""
from __future__ import annotations

import importlib.abc
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")  # the script's log lines name the check, whichever helper wrote them

#: Top-level modules of a ROS install (and our generated interfaces) that the bag tool and
#: the benchmarks must not need.
ROS_MODULES = (
    "rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rosidl_generator_py", "ament_index_python",
    "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
    "diagnostic_msgs", "tf2_msgs", "tf2_ros", "rosgraph_msgs", "ilrm_ros.msg", "ilrm_ros.srv",
)


def _run(cmd: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run a command; (return code, stdout+stderr). 127 when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return 127, f"{cmd[0]}: not found"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: timed out after {timeout} s"
    return p.returncode, (p.stdout + p.stderr).strip()


# --------------------------------------------------------------------------- card
def card_info() -> dict:
    """The card and the software that drives it (every field best effort)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "python_executable": sys.executable,
                            "machine": platform.machine(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    rc, text = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"])
    info["nvidia_smi_rc"] = rc
    info["nvidia_smi"] = text.splitlines()
    if rc == 0 and len(text.splitlines()) > 1:
        name, mem, driver = (s.strip() for s in text.splitlines()[1].split(",")[:3])
        info.update(gpu_name=name, gpu_memory=mem, driver=driver)
    rc, text = _run(["nvcc", "--version"])
    info["nvcc"] = text.splitlines()[-1] if rc == 0 and text else f"unavailable (rc {rc})"
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(torch_device=props.name, capability=f"{props.major}.{props.minor}",
                        multiprocessors=props.multi_processor_count, torch_memory_gib=round(props.total_memory / 2**30, 1),
                        bf16_supported=torch.cuda.is_bf16_supported(),
                        flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled())
    except Exception as exc:  # noqa: BLE001 - a broken torch is itself the finding
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    for dist in ("gsplat", "numpy", "packaging", "jaxtyping", "rich", "ninja", "rosbags", "plyfile", "pytest"):
        try:
            info.setdefault("packages", {})[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info.setdefault("packages", {})[dist] = None
    return info


# --------------------------------------------------------------------------- wheels
def wheel_distribution(path: Path) -> str:
    """Normalised distribution name of a wheel file: "ruamel.yaml-0.19.1-py3-none-any.whl" -> "ruamel-yaml"."""
    return re.sub(r"[-_.]+", "-", path.name.split("-")[0]).lower()


def is_installed(dist: str) -> bool:
    """Whether the running Python has ``dist`` (any version)."""
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def wheels_to_install(folder: Path, force: tuple[str, ...] = ()) -> list[Path]:
    """Wheels in ``folder`` whose distribution this Python lacks (plus the ``force``d ones).

    One version per distribution is expected; with several, the newest file name wins and a
    warning is logged (two versions would stop ``pip install``).
    """
    chosen: dict[str, Path] = {}
    for whl in sorted(folder.glob("*.whl")):
        dist = wheel_distribution(whl)
        if dist in chosen:
            log.warning("two wheels of %s: %s and %s; using the latter", dist, chosen[dist].name, whl.name)
        chosen[dist] = whl
    forced = {re.sub(r"[-_.]+", "-", f).lower() for f in force}
    return [p for d, p in sorted(chosen.items()) if d in forced or not is_installed(d)]


# --------------------------------------------------------------------------- gsplat
def warm_gsplat() -> dict:
    """Import gsplat, compile its CUDA kernels (timed) and rasterize a small scene twice."""
    result: dict[str, Any] = {"ok": False, "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR"),
                              "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
                              "max_jobs": os.environ.get("MAX_JOBS")}
    t0 = time.perf_counter()
    try:
        import gsplat
        import torch

        result["version"], result["path"] = gsplat.__version__, str(Path(gsplat.__file__).parent)
        result["import_s"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        from gsplat.cuda._backend import _C  # first use: JIT compile (minutes) or load the cached build

        result["compile_s"] = round(time.perf_counter() - t1, 2)
        if _C is None:
            result["error"] = "gsplat's CUDA extension did not build (no CUDA toolkit found?)"
            return result
        from ilrm_ros.core.gaussians import Gaussians
        from ilrm_ros.geometry.cameras import PinholeCameras
        from ilrm_ros.render import render

        n = 2000
        gen = torch.Generator().manual_seed(0)
        z = torch.rand(n, generator=gen) * 4 + 2
        scene = dict(means=torch.cat([(torch.rand(n, 2, generator=gen) - 0.5) * z[:, None], z[:, None]], 1),
                     quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                     scales=torch.full((n, 3), 0.05), opacities=torch.full((n,), 0.5), colors=torch.rand(n, 3, generator=gen))
        scene = {k: v.cuda() for k, v in scene.items()}
        Ks = torch.tensor([[[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]]], device="cuda")
        for key in ("first_render_s", "second_render_s"):
            t2 = time.perf_counter()
            out = render(Gaussians(**scene), PinholeCameras(torch.eye(4, device="cuda")[None], Ks, 256, 256),
                         backend="gsplat")
            torch.cuda.synchronize()
            result[key] = round(time.perf_counter() - t2, 4)
        result["mean_alpha"] = round(float(out.alpha.mean()), 4)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported, and the script carries on without gsplat
        result["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    result["total_s"] = round(time.perf_counter() - t0, 2)
    return result


# --------------------------------------------------------------------------- ROS-free CLI
class _BlockModules(importlib.abc.MetaPathFinder):
    """Make the named top-level modules (and their submodules) fail to import."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"{fullname} is blocked by gpu_check --no-ros (the tool must not need ROS)",
                                      name=fullname)
        return None


def block_ros() -> None:
    """Install the blocker for :data:`ROS_MODULES` (before anything imports them)."""
    loaded = [m for m in ROS_MODULES if m in sys.modules]
    if loaded:
        log.warning("already imported before blocking: %s", loaded)
    sys.meta_path.insert(0, _BlockModules(ROS_MODULES))


def run_cli(args: list[str], no_ros: bool) -> int:
    """``ilrm-ros ARGS`` in this process, optionally without ROS."""
    if no_ros:
        block_ros()
    from ilrm_ros.tools.cli import main

    return main(args)
