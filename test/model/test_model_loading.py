"""One way to name a model: every layout loads, the architecture is detected, failures are one line
(model/loading.py, model/official.py detection, model/tools.py commands)."""
import json

import pytest
import torch

from ilrm_ros.model.checkpoint import FORMAT, FORMAT_V1, default_checkpoint_path, load_checkpoint, save_checkpoint
from ilrm_ros.model.ilrm import ILRM, load_model_config
from ilrm_ros.model.loading import CheckpointError, inspect_checkpoint, load_model_file
from ilrm_ros.model.official import detect_architecture
from ilrm_ros.tools.checkpoints import convert_main, random_main

from _models import REFERENCE, inputs, same_weights, tiny


def _manifest_state(name: str) -> dict:
    """Meta tensors with the names (prefix included) and shapes of the authors' release."""
    ref = json.loads((REFERENCE / f"official-{name}-state-dict.json").read_text())
    with torch.device("meta"):
        return {ref["key_prefix_in_checkpoint"] + k: torch.empty(s) for k, s in ref["tensors"].items()}


@pytest.mark.parametrize("name", ["re10k", "dl3dv"])
def test_the_authors_architectures_are_detected_from_their_tensor_names_and_shapes(name):
    det = detect_architecture(_manifest_state(name))
    assert det.name == name and det.how == "detected"
    assert det.prefix == ("encoder.scaler." if name == "re10k" else "")
    assert det.config.pose_normalization == ("re10k" if name == "re10k" else "wide")


def test_a_given_architecture_overrides_detection_and_a_wrong_one_fails_in_one_line():
    state = _manifest_state("dl3dv")
    assert detect_architecture(state, "dl3dv").how == "given"
    with pytest.raises(ValueError) as err:
        detect_architecture(state, "re10k", source="/x/ilrm_undistort_dl3dv.pt")
    msg = str(err.value)
    assert "\n" not in msg and "/x/ilrm_undistort_dl3dv.pt" in msg and "re10k" in msg


def test_an_unknown_architecture_name_is_a_checkpoint_error_listing_the_known_ones():
    with pytest.raises(CheckpointError) as err:
        load_model_file(None, "nonsense", torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and "'nonsense'" in msg and "re10k" in msg and "dl3dv" in msg


def test_tensors_of_no_known_architecture_or_of_several_identical_configs_are_refused_clearly():
    with pytest.raises(ValueError, match=r"^f\.pt: no known iLRM architecture matches its 1 tensors"):
        detect_architecture({"foo.weight": torch.zeros(2)}, source="f.pt")
    with torch.device("meta"):
        small = ILRM(load_model_config("small")).state_dict()
    with pytest.raises(ValueError, match="small, small_cpu, small_rc.*set model.architecture"):
        detect_architecture(small)
    assert detect_architecture(small, "small_rc").name == "small_rc"


@pytest.mark.parametrize("container", ["lightning", "model", "plain", "safetensors"])
def test_every_layout_loads_through_one_function_with_the_given_architecture(tmp_path, container):
    from safetensors.torch import save_file

    src = ILRM(load_model_config("tiny")).eval()
    sd = src.state_dict()
    path = tmp_path / ("w.safetensors" if container == "safetensors" else "w.pt")
    if container == "lightning":
        torch.save({"state_dict": {"encoder.scaler." + k: v for k, v in sd.items()}, "epoch": 3}, path)
    elif container == "model":
        torch.save({"model": sd, "step": 1}, path)
    elif container == "plain":
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    model, source = load_model_file(path)  # tiny's tensors are unique among our configs: detected
    assert source.architecture == "tiny" and source.how == "detected" and same_weights(src, model)
    assert source.layout == {"lightning": "lightning", "model": "model", "plain": "plain",
                             "safetensors": "safetensors"}[container]
    x = inputs(32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(*x).means, src(*x).means)


def test_unreadable_missing_and_pickled_files_fail_with_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    for path, pattern in ((bad, "garbage.ckpt: not a readable checkpoint"), (tmp_path / "none.pt", "not found")):
        with pytest.raises(CheckpointError) as err:
            load_model_file(path)
        assert "\n" not in str(err.value) and pattern in str(err.value) and path.name in str(err.value)
    import argparse

    pickled = tmp_path / "hp.ckpt"
    torch.save({"model": tiny().state_dict(), "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        load_model_file(pickled, architecture="auto")


def _as_format_1(model: ILRM, path):
    """Write ``model`` the way format 1 stored it: uplifted q rows / proj columns as consecutive chunks."""
    k = model.cfg.uplift
    state = {}
    for name, w in model.state_dict().items():
        if name.endswith("read_cross.q.weight"):  # interleaved (d, k) -> chunks (k, d)
            w = w.reshape(-1, k, w.shape[1]).transpose(0, 1).reshape(w.shape)
        elif name.endswith("read_cross.proj.weight"):
            w = w.reshape(w.shape[0], -1, k).transpose(1, 2).reshape(w.shape)
        state[name] = w.clone()
    cfg = model.cfg.to_dict()
    del cfg["qk_norm_eps"]
    torch.save({"format": FORMAT_V1, "config": cfg, "state_dict": state, "dtype": "float32", "meta": {}}, path)


def test_format_1_files_are_permuted_at_load_into_the_same_function(tmp_path):
    model = tiny("wide", uplift=2, qk_norm_eps=1e-6).eval()
    _as_format_1(model, tmp_path / "v1.pt")
    loaded, _ = load_checkpoint(tmp_path / "v1.pt")
    assert loaded.cfg.qk_norm_eps == 1e-6 and same_weights(model, loaded)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x).means, model(*x).means)
    resaved = save_checkpoint(tmp_path / "v2.pt", loaded)
    assert torch.load(resaved, weights_only=True)["format"] == FORMAT


def test_the_shipped_checkpoint_is_our_format_and_loads_as_our_small_model():
    model, source = load_model_file(None)
    assert source.layout == FORMAT and source.how == "file config" and source.architecture == "small_rc"
    assert model.cfg.pose_normalization == "ilrm_ros_floor"  # stage 2: narrow windows keep metres
    assert source.model_id.startswith("ilrm_small.pt@")
    assert inspect_checkpoint(default_checkpoint_path()).summary()["input size"].startswith("128x128")


def test_convert_writes_our_format_with_the_detected_config_in_the_chosen_dtype(tmp_path, capsys):
    src = tmp_path / "w.pt"
    model = ILRM(load_model_config("tiny")).eval()
    torch.save({"model": model.state_dict()}, src)
    assert convert_main([str(src), "--out", str(tmp_path / "c.pt"), "--dtype", "bf16"]) == 0
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["dtype"] == "bfloat16" and raw["config"]["name"] == "tiny"
    assert raw["meta"]["source_layout"] == "model"
    converted, source = load_model_file(tmp_path / "c.pt")
    assert source.how == "file config"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[k], v, atol=2e-3, rtol=1e-2)
    assert "architecture" in capsys.readouterr().out
    assert convert_main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 2


def test_random_checkpoints_in_the_authors_layouts_are_what_detection_expects(tmp_path):
    assert random_main(["tiny", "--out", str(tmp_path / "t.pt"), "--layout", "ours"]) == 0
    assert load_model_file(tmp_path / "t.pt")[1].architecture == "tiny"
    with pytest.raises(SystemExit):
        random_main(["tiny", "--out", str(tmp_path / "a.pt"), "--layout", "authors"])


@pytest.mark.slow
@pytest.mark.parametrize("arch,layout", [("re10k", "lightning"), ("dl3dv", "model")])
def test_full_size_random_checkpoints_in_the_authors_layouts_load_and_convert(authors_checkpoints, tmp_path, arch,
                                                                              layout, capsys):
    from ilrm_ros.tools.info import cli_main as info_main

    assert info_main(["--checkpoint", str(authors_checkpoints[arch])]) == 0
    printed = capsys.readouterr().out
    assert f"{arch} (detected)" in printed and layout in printed
    assert {"re10k": "171,336,960", "dl3dv": "185,885,952"}[arch] in printed
    assert {"re10k": "256x256", "dl3dv": "544x960"}[arch] in printed
    assert convert_main([str(authors_checkpoints[arch]), "--out", str(tmp_path / "ours.pt"), "--dtype", "fp16"]) == 0
    _, source = load_model_file(tmp_path / "ours.pt", device="meta")
    assert source.architecture == arch and source.layout == FORMAT and source.num_parameters == \
        {"re10k": 171_336_960, "dl3dv": 185_885_952}[arch]
