"""Our checkpoint format and the loader for the authors' layouts."""
import argparse
import json
from pathlib import Path

import pytest
import torch

from ilrm_ros.model.checkpoint import (
    FORMAT,
    CheckpointShapeError,
    default_checkpoint_path,
    load_checkpoint,
    load_official,
    save_checkpoint,
)
from ilrm_ros.model.ilrm import ILRM, ILRMConfig, load_model_config

REFERENCE = Path("/work/shared/reference")


def tiny(layout: str = "wide", **kw) -> ILRM:
    base = dict(dim=64, iterations=1, head_dim=32, patch_size=4)
    if layout == "re10k":
        base.update(layout="re10k", ray_encoding="plucker6", viewpoint_factor=1, uplift=1, predict_offset=False)
    base.update(kw)
    return ILRM(ILRMConfig(**base))


def inputs(H: int = 16, W: int = 16, v: int = 2):
    c2w = torch.eye(4).repeat(1, v, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(0, 1, v)
    K = torch.tensor([[16.0, 0, W / 2], [0, 16.0, H / 2], [0, 0, 1]]).repeat(1, v, 1, 1)
    return torch.rand(1, v, 3, H, W), c2w, K


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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
    np = pytest.importorskip("numpy")
    path = save_checkpoint(tmp_path / "m.pt", tiny(), {"seed": np.int64(5), "data": Path("/x/y"), "t": (1, 2)})
    _, meta = load_checkpoint(path)
    assert meta == {"seed": 5, "data": "/x/y", "t": [1, 2]}


def test_load_checkpoint_refuses_foreign_files(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save(tiny().state_dict(), p)
    with pytest.raises(ValueError, match="load_official"):
        load_checkpoint(p)


def test_default_checkpoint_path_is_the_shipped_small_model():
    p = default_checkpoint_path()
    assert p.name == "ilrm_small.pt" and p.parent.name == "checkpoints" and p.parent.parent.name == "ilrm_ros"


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
