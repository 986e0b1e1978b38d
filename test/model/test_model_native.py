"""The model's compiled CPU kernels (model/native.py) compute what their torch twins compute.

Attention: the twin is ``fused.normed_attention_torch``: per-head RMSNorm of queries and keys, torch's SDPA,
heads merged. Compared on the shipped model's shapes and on awkward ones (tails of the 32-query
and 8-key blocks, head sizes that are not a multiple of 64, strided rows, peaked softmax), against
a float64 reference too. Tokenizer inputs: the twins are ``fused_tokens.image_token_input`` and
``viewpoint_token_input``, on both ray encodings and layouts. Gaussian head: the twin is
``fused_head.gaussians_torch``, with and without offsets and the colour residual. LayerNorm:
the twin is ``F.layer_norm``. On a machine with a C compiler the kernel must build: ``make setup``
builds it, so a missing library there is a failure, not a skip.
"""
import shutil

import pytest
import torch
import torch.nn.functional as F

from ilrm_ros.model import native as an
from ilrm_ros.model import fused as fz
from ilrm_ros.model.fused_head import gaussians, gaussians_torch
from ilrm_ros.model.fused_tokens import image_token_input, image_tokens, viewpoint_token_input, viewpoint_tokens
from ilrm_ros.model.layers import ReadBlock, SelfBlock
from _models import inputs, random_cameras, tiny

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and an.load() is None,
                                reason="no C compiler and no built kernel on this machine")


def projections(b: int, nq: int, nk: int, heads: int, d: int, seed: int, scale: float = 1.0):
    """q (B, Nq, H*D) rows of a wider buffer, k and v side by side in one (B, Nk, 2*H*D) buffer, q factor (D,)."""
    gen = torch.Generator().manual_seed(seed)
    w = heads * d
    q = torch.randn(b, nq, w + 8, generator=gen)[..., 4:4 + w]       # strided rows, as slices of a projection
    kv = torch.randn(b, nk, 2 * w, generator=gen)
    q_weight = (0.5 + torch.rand(d, generator=gen)) * scale / d ** 0.5
    return q, kv[..., :w], kv[..., w:], q_weight


def reference64(q, k, v, heads: int, q_weight, eps: tuple[float, float]) -> torch.Tensor:
    """The same attention in float64 with plain expressions: (B, Nq, H*D)."""
    b, nq, w = q.shape
    d = w // heads
    qh = q.double().reshape(b, nq, heads, d).transpose(1, 2)
    kh = k.double().reshape(b, -1, heads, d).transpose(1, 2)
    vh = v.double().reshape(b, -1, heads, d).transpose(1, 2)
    qn = qh / torch.sqrt(qh.square().mean(-1, keepdim=True) + eps[0]) * q_weight.double()
    kn = kh / torch.sqrt(kh.square().mean(-1, keepdim=True) + eps[1])
    out = torch.softmax(qn @ kn.transpose(-1, -2), dim=-1) @ vh
    return out.transpose(1, 2).reshape(b, nq, w)


def test_the_kernel_is_built_where_a_compiler_exists(capsys):
    assert an.status() == "", an.status()
    assert an.cli_main([]) == 0 and "loaded from" in capsys.readouterr().out


@pytest.mark.parametrize("b,nq,nk,heads,d", [
    (4, 128, 256, 4, 64),    # the shipped model's read blocks at 4 x 128^2 (uplift 2)
    (1, 256, 256, 4, 64),    # its self blocks
    (2, 33, 13, 2, 64),      # one query past a 32-block, keys past an 8-key tile
    (1, 1, 1, 1, 16),        # a single query and key
    (3, 40, 70, 3, 32),      # head size below 64: the channel tail path only
    (2, 17, 9, 2, 80),       # 64 channels in registers plus a tail of 16
    (1, 5, 300, 1, 128),     # several key blocks of 64 for few queries
])
def test_kernel_matches_the_torch_twin_and_a_float64_reference(b, nq, nk, heads, d):
    q, k, v, g = projections(b, nq, nk, heads, d, seed=nq + nk)
    eps = (0.05, 1e-3)   # far apart, so that swapping them would show
    assert an.available(q, k, v, heads)
    with torch.inference_mode():
        fast = an.attention_native(q, k, v, heads, g, eps)
        twin = fz.normed_attention_torch(q, k, v, heads, g, eps)
    exact = reference64(q, k, v, heads, g, eps)
    assert fast.shape == (b, nq, heads * d) and fast.is_contiguous()
    torch.testing.assert_close(fast, twin, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=2e-6)


def test_a_peaked_softmax_stays_finite_and_exact():
    """Scores in the hundreds (a q factor 100x the usual): exp of large negative differences must underflow to
    zero, not overflow or turn into NaN, and the float32 rounding of such scores costs the kernel no more
    than it costs the twin."""
    q, k, v, g = projections(2, 40, 50, 2, 64, seed=3, scale=100.0)
    with torch.inference_mode():
        fast = an.attention_native(q, k, v, 2, g, (1e-5, 1e-5))
        twin = fz.normed_attention_torch(q, k, v, 2, g, (1e-5, 1e-5))
    exact = reference64(q, k, v, 2, g, (1e-5, 1e-5))
    assert torch.isfinite(fast).all()
    assert float((fast - exact).abs().max()) <= 2 * float((twin - exact).abs().max()) + 1e-6


def test_the_result_does_not_depend_on_the_number_of_threads():
    q, k, v, g = projections(4, 70, 90, 4, 64, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = an.attention_native(q, k, v, 4, g, (1e-5, 1e-5))
        torch.set_num_threads(max(2, before))
        many = an.attention_native(q, k, v, 4, g, (1e-5, 1e-5))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


def test_inputs_it_cannot_take_go_to_the_twin():
    q, k, v, g = projections(1, 8, 8, 2, 64, seed=7)
    assert not an.available(q.double(), k.double(), v.double(), 2)          # float64
    assert not an.available(q, k, v, 3)                                       # 128 channels do not split in 3
    assert not an.available(q[..., :120], k[..., :120], v[..., :120], 2)      # head size 60, not a multiple of 16
    assert not an.available(q, k[:, :0], v[:, :0], 2)                         # no keys
    assert not an.available(q.clone().requires_grad_(), k, v, 2)              # autograd: the kernel has no backward
    wide = torch.randn(1, 8, 128 * 2)[..., ::2]                               # channels not contiguous
    assert not an.available(wide, k, v, 2)
    an.set_enabled(False)
    try:
        assert not an.available(q, k, v, 2)
        with torch.inference_mode():
            assert torch.equal(fz.normed_attention(q, k, v, 2, g, (1e-5, 1e-5)),
                               fz.normed_attention_torch(q, k, v, 2, g, (1e-5, 1e-5)))
    finally:
        an.set_enabled(True)


def test_without_the_library_the_twin_runs(tmp_path, monkeypatch):
    built = an.build(tmp_path / "lib.so")
    q, k, v, g = projections(2, 20, 30, 2, 64, seed=9)
    monkeypatch.setenv(an.ENV_PATH, str(built))
    an.reload()
    try:
        assert an.status() == "" and an.available(q, k, v, 2)
        monkeypatch.setenv(an.ENV_PATH, str(tmp_path / "missing.so"))
        an.reload()
        assert an.load() is None and "not built" in an.status() and not an.available(q, k, v, 2)
        with torch.inference_mode():
            assert torch.equal(fz.normed_attention(q, k, v, 2, g, (1e-5, 1e-5)),
                               fz.normed_attention_torch(q, k, v, 2, g, (1e-5, 1e-5)))
    finally:
        monkeypatch.delenv(an.ENV_PATH)
        an.reload()
    assert an.status() == ""


@pytest.mark.parametrize("block", [ReadBlock, SelfBlock])
def test_fused_blocks_go_through_the_kernel(block, monkeypatch):
    """A fused path that silently fell back to the twin would still match the reference: count the calls."""
    calls = []
    real = an.attention_native
    monkeypatch.setattr(an, "attention_native", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    torch.manual_seed(0)
    layer = block(64, 16, 2, 2) if block is ReadBlock else block(64, 16, 2)
    x, images = torch.randn(1, 2 * 6, 64), torch.randn(2, 10, 64)
    with torch.inference_mode():
        fused = layer(x, images)
        layer.fused = False
        plain = layer(x, images)
    assert len(calls) == 1
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=2e-5)


# --------------------------------------------------------------------------- tokenizer inputs
@pytest.mark.parametrize("encoding,rgb_first,size,patch", [
    ("plucker9", False, (16, 24), 4),     # the wide layout (the shipped model's), a non-square image
    ("plucker6", True, (16, 16), 8),      # the re10k layout
    ("plucker6", False, (32, 16), 16),
    ("plucker9", True, (8, 8), 2),
])
def test_the_token_kernel_writes_what_the_torch_code_writes(encoding, rgb_first, size, patch):
    h, w = size
    c2w, K = random_cameras(2, 3, h, w, seed=patch)
    images = torch.rand(2, 3, 3, h, w, generator=torch.Generator().manual_seed(h + w))
    assert an.rays_available(images, encoding, (h, w), patch)
    with torch.inference_mode():
        fast = image_tokens(images, c2w, K, patch, encoding, rgb_first)
        twin = image_token_input(images * 2.0 - 1.0, c2w, K, patch, encoding, rgb_first)
    assert fast.shape == twin.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, twin, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoding,grid,stride,patch", [
    ("plucker9", (8, 12), 2, 4),          # the shipped model: every 2nd pixel, patches of 8 in its 64 x 64 grid
    ("plucker6", (8, 8), 1, 8),           # re10k: the viewpoint grid is the pixel grid
    ("plucker9", (4, 8), 4, 2),
])
def test_viewpoint_tokens_from_the_kernel_are_the_patchified_ray_grid(encoding, grid, stride, patch):
    c2w, K = random_cameras(1, 2, grid[0] * stride, grid[1] * stride, seed=stride)
    with torch.inference_mode():
        fast = viewpoint_tokens(c2w, K, grid, stride, patch, encoding)
        twin = viewpoint_token_input(c2w, K, grid, stride, patch, encoding)
    assert fast.shape == twin.shape
    torch.testing.assert_close(fast, twin, rtol=1e-5, atol=1e-6)


def test_token_inputs_the_kernel_cannot_take_go_to_the_torch_code():
    c2w, K = random_cameras(1, 2, 16, 16)
    images = torch.rand(1, 2, 3, 16, 16)
    assert not an.rays_available(images.double(), "plucker9", (16, 16), 8)
    assert not an.rays_available(images, "plucker9", (16, 16), 5)     # 16 is not a multiple of 5
    assert not an.rays_available(images, "plucker7", (16, 16), 8)
    an.set_enabled(False)
    try:
        assert not an.rays_available(images, "plucker9", (16, 16), 8)
        with torch.inference_mode():
            assert torch.equal(image_tokens(images, c2w, K, 8, "plucker9", False),
                               image_token_input(images * 2.0 - 1.0, c2w, K, 8, "plucker9", False))
    finally:
        an.set_enabled(True)


# --------------------------------------------------------------------------- Gaussian head
@pytest.mark.parametrize("kw", [
    {},                                                                 # the shipped model's head
    {"predict_offset": False},
    {"color_residual": False},
    {"viewpoint_factor": 1, "predict_offset": False, "color_residual": False, "patch_size": 4},
])
def test_the_head_kernel_places_and_activates_what_the_torch_head_does(kw):
    cfg = tiny(**{"viewpoint_factor": 2, "predict_offset": True, "color_residual": True, "patch_size": 4,
                  "scale_bias": -3.0, "opacity_bias": -1.0, "max_depth": 8.0, **kw}).cfg
    b, v, H, W = 2, 3, 16, 24
    h, w = H // cfg.viewpoint_factor, W // cfg.viewpoint_factor
    gen = torch.Generator().manual_seed(4)
    raw = 2 * torch.randn(b, v * (h // cfg.patch_size) * (w // cfg.patch_size),
                          cfg.patch_size ** 2 * cfg.gaussian_channels, generator=gen)
    images = torch.rand(b, v, 3, H, W, generator=gen)
    c2w, K = random_cameras(b, v, H, W, seed=5)
    with torch.inference_mode():
        fast, fast_off = gaussians(raw, images, c2w, K, cfg)
        twin, twin_off = gaussians_torch(raw, images, c2w, K, cfg)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert getattr(fast, name).shape == getattr(twin, name).shape, name
        torch.testing.assert_close(getattr(fast, name), getattr(twin, name), rtol=1e-5, atol=2e-6, msg=name)
    assert (fast_off is None) == (twin_off is None) == (not cfg.predict_offset)
    if cfg.predict_offset:
        torch.testing.assert_close(fast_off, twin_off, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,calls", [
    ("attention_native", 4),    # every block: 2 read + 2 self
    ("ray_tokens_op", 2),       # both tokenizers
    ("gaussian_head_op", 1),
])
def test_the_fused_forward_calls_each_kernel(op, calls, monkeypatch):
    """A fused path that silently fell back to a twin would still match the reference: count the calls."""
    seen = []
    real = getattr(an, op)
    monkeypatch.setattr(an, op, lambda *a, **kw: seen.append(1) or real(*a, **kw))
    model = tiny(iterations=2).eval()
    with torch.inference_mode():
        model(*inputs(16, 16, v=2))
    assert len(seen) == calls


# --------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("shape,affine", [((4, 64, 256), "weight"), ((1, 7, 32), "both"), ((3, 16), "none")])
def test_the_layer_norm_kernel_matches_torch(shape, affine):
    gen = torch.Generator().manual_seed(shape[-1])
    x = 3 * torch.randn(*shape, generator=gen) + 1.5           # an offset mean, as residual streams have
    w = torch.rand(shape[-1], generator=gen) + 0.5 if affine in ("weight", "both") else None
    b = torch.randn(shape[-1], generator=gen) if affine == "both" else None
    assert an.layer_norm_available(x, shape[-1])
    with torch.inference_mode():
        fast = an.layer_norm_op(x, w, b, 1e-5)
    torch.testing.assert_close(fast, F.layer_norm(x, shape[-1:], w, b, 1e-5), rtol=1e-5, atol=2e-6)
    assert not an.layer_norm_available(x[..., :8], 8)                  # width not a multiple of 16
    assert not an.layer_norm_available(x.transpose(0, -1).contiguous().transpose(0, -1), shape[-1])  # strided
