"""The fused float32 inference kernels (model/fused.py) against the plain reference code of layers.py."""
import pytest
import torch
import torch.nn.functional as F

from ilrm_ros.model import fused as fz
from ilrm_ros.model.layers import ReadBlock, SelfBlock
from _models import inputs, tiny


def _perturb_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-unit norm weights, so that folding the k weight into q is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.mul_(1 + 0.3 * torch.randn(p.shape, generator=gen))


def _outputs(model, fused: bool, *args):
    model.processor.set_fused(fused)
    with torch.inference_mode():
        return model(*args)


@pytest.mark.parametrize("layout,kw", [
    ("wide", {}), ("wide", {"uplift": 3, "head_dim": 16}), ("re10k", {}),
    ("wide", {"viewpoint_factor": 2, "ray_encoding": "plucker9", "predict_offset": True, "uplift": 2}),
    ("wide", {"viewpoint_factor": 2, "ray_encoding": "plucker9", "predict_offset": False}),
])
def test_fused_forward_matches_the_reference_to_float32_rounding(layout, kw):
    torch.manual_seed(0)
    model = tiny(layout, iterations=2, **kw).eval()
    _perturb_norms(model)
    args = inputs(16, 16, v=3)
    ref, fast = _outputs(model, False, *args), _outputs(model, True, *args)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=1e-4, atol=2e-5, msg=name)
    # and the two paths are really different code (a fused path that silently fell back would pass above)
    assert not torch.equal(fast.means, ref.means)


def test_with_autograd_the_plain_path_runs_bit_identical():
    torch.manual_seed(1)
    model = tiny(iterations=1)
    _perturb_norms(model)
    args = inputs()
    model.processor.set_fused(True)
    a = model(*args).means
    model.processor.set_fused(False)
    b = model(*args).means
    assert torch.equal(a, b) and a.requires_grad


def test_fused_weights_follow_in_place_and_loaded_weight_changes():
    torch.manual_seed(2)
    model = tiny(iterations=1).eval()
    args = inputs()
    _outputs(model, True, *args)  # builds the caches
    other = tiny(iterations=1)
    _perturb_norms(other, seed=3)
    model.load_state_dict(other.state_dict())
    ref, fast = _outputs(model, False, *args), _outputs(model, True, *args)
    torch.testing.assert_close(fast.means, ref.means, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("block", ["read", "self"])
def test_fused_blocks_equal_x_plus_the_update(block):
    torch.manual_seed(4)
    x, images = torch.randn(2, 12, 64), torch.randn(6, 16, 64)
    m = ReadBlock(64, 16, 4, uplift=2) if block == "read" else SelfBlock(64, 16, 4)
    _perturb_norms(m)
    with torch.inference_mode():
        m.fused = False
        ref = m(x, images)
        m.fused = True
        fast = m(x, images)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_rms_scale_is_rms_norm_with_eps_1e_5():
    x = torch.randn(3, 7, 4, 64) * 1e-3  # small values: eps matters
    w = 1 + 0.1 * torch.randn(64)
    expected = F.rms_norm(x, (64,), w, 1e-5)
    torch.testing.assert_close(x * fz.rms_scale(x, 1e-5) * w, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(x * fz.rms_scale(x, 1e-9), expected, rtol=1e-3, atol=0)


def test_uplift_permutations_reorder_channels_from_d_u_to_u_d():
    d, u = 4, 3
    w = torch.arange(d * u, dtype=torch.float32)[:, None].expand(d * u, 2)
    rows = fz.uplift_rows(w, u)[:, 0]
    assert rows.tolist() == [float(c * u + s) for s in range(u) for c in range(d)]
    cols = fz.uplift_cols(w.T.contiguous(), u)[0]
    assert torch.equal(cols, rows)


def test_fused_path_is_only_taken_without_autograd_in_float32():
    x = torch.zeros(2, 3)
    assert fz.fused_ok(x) is False  # grad mode on
    with torch.no_grad():
        assert fz.fused_ok(x) and not fz.fused_ok(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fz.fused_ok(x)


def test_a_model_with_built_caches_deep_copies_and_pickles_and_the_copy_rebuilds_them():
    import copy
    import pickle

    torch.manual_seed(4)
    model = tiny(iterations=1).eval()
    args = inputs()
    ref = _outputs(model, True, *args)   # builds the caches (oneDNN-packed weights on CPU)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(_outputs(clone, True, *args).means, ref.means, rtol=0, atol=0)


def test_queries_and_keys_normalised_together_equal_two_separate_passes_bit_for_bit():
    torch.manual_seed(5)
    qkv = torch.randn(2, 7, 3 * 4 * 8)   # (B, N, 3 H D), H = 4, D = 8
    g = torch.rand(8) + 0.5
    q, k = fz.normed_qk(qkv[..., :64], 4, 1e-5, g)
    assert torch.equal(q, fz.normed_heads(qkv[..., :32], 4, 1e-5, g))
    assert torch.equal(k, fz.normed_heads(qkv[..., 32:64], 4, 1e-5))
