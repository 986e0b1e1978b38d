"""`ilrm-ros info`: what this install is made of."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
from pathlib import Path


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report, never fail
        return f"not available ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def _ros_distro() -> str:
    distro = os.environ.get("ROS_DISTRO")
    if distro:
        return f"{distro} (ROS install)"
    try:
        import rclpy  # noqa: F401
    except Exception:  # noqa: BLE001
        return "none (rclpy not importable)"
    return "kilted (PyPI wheels, pip route)"


def collect() -> dict:
    """A dict of versions, device and distro facts."""
    import torch

    from ilrm_ros import __version__

    info = {
        "ilrm_ros": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "gsplat": _version("gsplat"),
        "numpy": _version("numpy"),
        "rosbags": _version("rosbags"),
        "rclpy": _version("rclpy"),
        "tf2_ros": _version("tf2_ros"),
        "ros_distro": _ros_distro(),
        "rmw_implementation": os.environ.get("RMW_IMPLEMENTATION", "default"),
        "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0 (default)"),
    }
    try:
        from ilrm_ros.model.checkpoint import default_checkpoint_path

        path = Path(default_checkpoint_path())
        info["default_checkpoint"] = f"{path} ({path.stat().st_size / 1e6:.1f} MB)" if path.exists() else \
            f"{path} (missing)"
    except Exception as exc:  # noqa: BLE001
        info["default_checkpoint"] = f"unavailable ({exc})"
    try:
        import ilrm_ros.msg  # noqa: F401

        info["messages"] = "ilrm_ros.msg, ilrm_ros.srv built"
    except Exception as exc:  # noqa: BLE001
        info["messages"] = f"not built ({exc})"
    return info


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ilrm-ros info",
                                     description="Print versions, device and ROS distro, or describe a checkpoint.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--checkpoint", help="describe this checkpoint: layout, architecture, parameters, input size "
                                             "and pose normalisation it implies")
    parser.add_argument("--architecture", default="auto", help="with --checkpoint: override the detection")
    parser.add_argument("--trust-pickle", action="store_true", help="with --checkpoint: allow Python objects")
    args = parser.parse_args(argv)
    if args.checkpoint:
        from ilrm_ros.model.loading import CheckpointError, inspect_checkpoint

        try:
            info = inspect_checkpoint(args.checkpoint, args.architecture, args.trust_pickle).summary()
        except CheckpointError as exc:
            print(f"ilrm-ros info: {exc}")
            return 2
    else:
        info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
