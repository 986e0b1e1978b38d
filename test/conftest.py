"""Session-wide test setup.

ROS traffic stays on this machine and on a domain of its own, so parallel test runs
(and other developers' nodes) never cross-talk: set before anything imports rclpy.
"""
import os
import random

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 101)))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
