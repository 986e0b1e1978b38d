"""`ilrm-ros bench model` with --checkpoint in any layout, --arch, and the architecture's own sizes."""
import json

import torch

from ilrm_ros.tools.bench.model import cli_main
from ilrm_ros.model.ilrm import ILRM, load_model_config


def _run(tmp_path, *args: str) -> tuple[int, dict | None]:
    out = tmp_path / "bench.json"
    rc = cli_main([*args, "--device", "cpu", "--runs", "1", "--warmup", "0", "--out", str(out)])
    return rc, json.loads(out.read_text()) if out.exists() else None


def test_checkpoint_in_a_plain_state_dict_is_detected_and_benchmarked(tmp_path):
    torch.manual_seed(3)
    model = ILRM(load_model_config("tiny"))
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    rc, data = _run(tmp_path, "--checkpoint", str(path), "--views", "2", "--res", "32x48")
    assert rc == 0
    assert data["config"] == "tiny" and data["model"]["layout"] == "plain" and data["model"]["how"] == "detected"
    (case,) = data["cases"]
    assert (case["views"], case["height"], case["width"]) == (2, 32, 48)
    assert case["render_ms"] > 0 and case["render_backend"] == "torch" and case["render_peak_mem_mb"] is not None


def test_arch_defaults_to_its_own_window_and_input_size(tmp_path):
    cfg = load_model_config("tiny")
    rc, data = _run(tmp_path, "--arch", "tiny", "--no-render")
    assert rc == 0 and data["model"]["random_weights"]
    (case,) = data["cases"]
    assert (case["views"], case["height"], case["width"]) == (cfg.window_views, cfg.input_height, cfg.input_width)


def test_resolution_off_the_token_grid_is_one_clear_error(tmp_path, capsys):
    rc, data = _run(tmp_path, "--arch", "tiny", "--res", "30x40", "--no-render")
    assert rc == 2 and data is None
    assert "not a multiple of 16" in capsys.readouterr().err
