"""Our checkpoint format (model/checkpoint.py)."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ilrm_ros.model.checkpoint import FORMAT, default_checkpoint_path, load_checkpoint, save_checkpoint

from _models import inputs, same_weights, tiny

def test_own_checkpoint_round_trips_config_weights_meta_and_outputs(tmp_path):
    model = tiny().eval()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, {"step": 1200, "data_seed": 7, "lr": 3e-4})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["dtype"] == "float32" and raw["config"]["dim"] == 64
    loaded, meta = load_checkpoint(path)
    assert meta == {"step": 1200, "data_seed": 7, "lr": 3e-4}
    assert loaded.cfg == model.cfg and not loaded.training
    assert same_weights(model, loaded)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x).means, model(*x).means)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_fp16_storage_halves_the_file_and_loads_back_as_float32(tmp_path):
    model = tiny()
    full = save_checkpoint(tmp_path / "f32.pt", model, {})
    half = save_checkpoint(tmp_path / "f16.pt", model, {"step": 3}, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = load_checkpoint(half)
    assert meta["step"] == 3
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, model.state_dict()[k], atol=1e-4, rtol=1e-3)


def test_meta_with_numpy_and_paths_is_stored_as_plain_values(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny(), {"seed": np.int64(5), "data": Path("/x/y"), "t": (1, 2)})
    _, meta = load_checkpoint(path)
    assert meta == {"seed": 5, "data": "/x/y", "t": [1, 2]}


def test_load_checkpoint_refuses_foreign_files(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save(tiny().state_dict(), p)
    with pytest.raises(ValueError, match="load_model_file"):
        load_checkpoint(p)


def test_default_checkpoint_path_is_the_shipped_small_model():
    p = default_checkpoint_path()
    assert p.name == "ilrm_small.pt" and p.parent.name == "checkpoints" and p.parent.parent.name == "ilrm_ros"


