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


@pytest.fixture(scope="session")
def authors_checkpoints(tmp_path_factory):
    """Random-weight checkpoints in both of the authors' release layouts, at full size.

    Shapes come from our re10k/dl3dv configs (test_model_official.py pins them to the
    authors' manifests): re10k_2view.ckpt (Lightning: ``state_dict``, ``encoder.scaler.``)
    and ilrm_undistort_dl3dv.pt (weights under ``model``), fp16 on disk (~343 / 372 MB).
    """
    from ilrm_ros.model.loading import random_model
    from ilrm_ros.model.official import save_authors_layout

    folder = tmp_path_factory.mktemp("authors")
    paths = {}
    for arch, name in (("re10k", "re10k_2view.ckpt"), ("dl3dv", "ilrm_undistort_dl3dv.pt")):
        paths[arch] = save_authors_layout(random_model(arch, seed=1), folder / name, arch, torch.float16)
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained checkpoint of the ``tiny`` architecture (fast enough for mapper/bag-tool specs),
    with weights from a fixed seed whichever test asks for it first."""
    from ilrm_ros.model.checkpoint import save_checkpoint
    from ilrm_ros.model.ilrm import ILRM, load_model_config

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_checkpoint(path, ILRM(load_model_config("tiny")), {"note": "untrained"})
    return path
