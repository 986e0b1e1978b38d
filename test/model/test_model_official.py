"""The authors' checkpoint layouts: containers, prefixes, shapes (model/official.py)."""
import argparse
import json

import pytest
import torch

from ilrm_ros.model.ilrm import ILRM, load_model_config
from ilrm_ros.model.official import CheckpointShapeError, load_official

from _models import REFERENCE, same_weights, tiny


def test_lightning_checkpoint_loads_by_stripping_prefix_and_ignores_wrapper_entries(tmp_path):
    src = tiny("re10k")
    state = {"encoder.scaler." + k: v.clone() for k, v in src.state_dict().items()}
    state["encoder.backbone.extra.weight"] = torch.zeros(3)  # another sub-module of the wrapper
    state["lpips.net.0.weight"] = torch.zeros(2)
    ckpt = {"state_dict": state, "epoch": 4, "global_step": 1000, "optimizer_states": [{"lr": 1.0}]}
    path = tmp_path / "re10k_2view.ckpt"
    torch.save(ckpt, path)
    dst = tiny("re10k")
    assert not same_weights(src, dst)
    report = load_official(path, dst)
    assert same_weights(src, dst)
    assert report.ok and report.layout == "lightning" and report.prefix == "encoder.scaler."
    assert len(report.loaded) == len(src.state_dict())
    assert set(report.ignored) == {"epoch", "global_step", "optimizer_states", "encoder.backbone.extra.weight", "lpips.net.0.weight"}


def test_model_container_and_plain_and_safetensors_layouts_load(tmp_path):
    from safetensors.torch import save_file

    src = tiny("wide")
    sd = src.state_dict()
    for obj, layout in (({"model": sd, "optimizer": {"state": {}}, "step": 5}, "model"), (dict(sd), "plain")):
        dst = tiny("wide")
        report = load_official(obj, dst)
        assert report.ok and report.layout == layout and same_weights(src, dst)
    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    dst = tiny("wide")
    assert load_official(p, dst).ok and same_weights(src, dst)


def test_half_precision_official_weights_are_cast_to_the_model_dtype():
    src = tiny("wide")
    dst = tiny("wide")
    load_official({"model": {k: v.half() for k, v in src.state_dict().items()}}, dst)
    assert all(v.dtype == torch.float32 for v in dst.state_dict().values())
    torch.testing.assert_close(dst.processor.blocks[0].read_cross.q.weight, src.processor.blocks[0].read_cross.q.weight,
                               atol=1e-3, rtol=1e-3)


def test_shape_mismatches_are_refused_with_every_offending_key_listed():
    src = tiny("wide", uplift=2)
    dst = tiny("wide", uplift=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointShapeError) as err:
        load_official({"model": src.state_dict()}, dst)
    bad = set(err.value.mismatches)
    assert bad == {"processor.blocks.0.read_cross.q.weight", "processor.blocks.0.read_cross.proj.weight"}
    assert "processor.blocks.0.read_cross.q.weight: checkpoint [128, 64] vs model [64, 64]" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing copied


def test_missing_and_unexpected_keys_are_reported_and_strict_refuses_them():
    src = tiny("re10k")
    state = {"encoder.scaler." + k: v for k, v in src.state_dict().items() if not k.startswith("token_decoder")}
    state["encoder.scaler.processor.norm.weight"] = torch.ones(64)
    dst = tiny("re10k")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(KeyError, match="token_decoder.1.weight"):
        load_official({"state_dict": state}, dst, strict=True)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    report = load_official({"state_dict": state}, dst)
    assert not report.ok
    assert report.missing == ["token_decoder.0.weight", "token_decoder.1.weight"]
    assert report.unexpected == ["encoder.scaler.processor.norm.weight"]
    assert "missing (2)" in report.summary() and "unexpected (1)" in report.summary()
    torch.testing.assert_close(dst.input_tokenizer.weight, src.input_tokenizer.weight)
    assert torch.equal(dst.token_decoder[1].weight, before["token_decoder.1.weight"])


def test_nothing_matching_and_pickled_objects_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint tensor name matches"):
        load_official({"state_dict": {"foo.bar": torch.zeros(1)}}, tiny())
    with pytest.raises(ValueError, match="no weights found"):
        load_official({"epoch": 3}, tiny())
    src = tiny("re10k")
    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": {"encoder.scaler." + k: v for k, v in src.state_dict().items()},
                "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    dst = tiny("re10k")
    with pytest.raises(ValueError, match="trust_pickle"):
        load_official(path, dst)
    assert load_official(path, dst, trust_pickle=True).ok and same_weights(src, dst)


@pytest.mark.parametrize("name,wrong", [("re10k", "dl3dv"), ("dl3dv", "re10k")])
def test_authors_layouts_map_onto_our_full_size_models(name, wrong):
    """Name/shape mapping on the real layouts, with meta tensors of the reference shapes."""
    ref = json.loads((REFERENCE / f"official-{name}-state-dict.json").read_text())
    with torch.device("meta"):
        state = {ref["key_prefix_in_checkpoint"] + k: torch.empty(s) for k, s in ref["tensors"].items()}
        model = ILRM(load_model_config(name))
        other = ILRM(load_model_config(wrong))
    report = load_official({ref["checkpoint_container_key"]: state, "epoch": 1}, model, strict=True)
    assert report.ok and len(report.loaded) == len(ref["tensors"]) == 222
    assert report.layout == ("lightning" if name == "re10k" else "model")
    assert report.prefix == ref["key_prefix_in_checkpoint"]
    with pytest.raises((CheckpointShapeError, KeyError)):
        load_official({ref["checkpoint_container_key"]: state}, other, strict=True)


@pytest.mark.slow
def test_full_size_re10k_lightning_file_loads_into_a_real_model(tmp_path):
    """One real-size load (171M parameters; fp16 file of ~343 MB)."""
    ref = json.loads((REFERENCE / "official-re10k-state-dict.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {"encoder.scaler." + k: torch.empty(s, dtype=torch.float16).normal_(0, 0.02, generator=gen)
             for k, s in ref["tensors"].items()}
    path = tmp_path / "re10k_2view.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, path)
    probe = {k: state["encoder.scaler." + k][:2].float().clone() for k in ("input_tokenizer.weight", "token_decoder.1.weight")}
    del state
    with torch.device("meta"):
        model = ILRM(load_model_config("re10k"))
    model = model.to_empty(device="cpu")
    report = load_official(path, model, strict=True)
    assert report.ok
    torch.testing.assert_close(model.input_tokenizer.weight[:2], probe["input_tokenizer.weight"])
    torch.testing.assert_close(model.token_decoder[1].weight[:2], probe["token_decoder.1.weight"])
