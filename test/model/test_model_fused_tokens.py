"""The token-order image tokenizer input (model/fused_tokens.py) and the oneDNN linears (model/fused.py)
against the plain reference code: same values to float32 rounding."""
import pytest
import torch
import torch.nn.functional as F

from ilrm_ros.geometry.cameras import camera_rays, ray_features
from ilrm_ros.model import fused as fz
from ilrm_ros.model.fused_tokens import image_token_input, skew, token_order_rays
from ilrm_ros.model.layers import patchify
from _models import random_cameras


def test_skew_matrices_compute_cross_products():
    a, x = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close((skew(a) @ x[..., None])[..., 0], torch.cross(a, x, dim=-1))


@pytest.mark.parametrize("encoding", ["plucker6", "plucker9"])
def test_token_order_rays_are_the_patchified_ray_image(encoding):
    h, w, p = 16, 24, 4
    c2w, K = random_cameras(2, 3, h, w)
    plain = ray_features(*camera_rays(c2w, K, h, w), encoding).flatten(0, 1)  # (N, H, W, R)
    expected = patchify(plain.permute(0, 3, 1, 2), p)                        # (N, T, p*p*R)
    got = token_order_rays(c2w, K, h, w, p, encoding).flatten(0, 1)           # (N, P, R)
    torch.testing.assert_close(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,encoding", [("re10k", "plucker6"), ("wide", "plucker9"), ("wide", "plucker6")])
def test_image_token_input_is_patchify_of_the_concatenated_channels(layout, encoding):
    h, w, p = 16, 16, 8
    c2w, K = random_cameras(1, 2, h, w, seed=1)
    rgb = torch.rand(1, 2, 3, h, w) * 2 - 1
    rays = ray_features(*camera_rays(c2w, K, h, w), encoding).flatten(0, 1).permute(0, 3, 1, 2)
    parts = (rgb.flatten(0, 1), rays) if layout == "re10k" else (rays, rgb.flatten(0, 1))
    expected = patchify(torch.cat(parts, dim=1), p)
    got = image_token_input(rgb, c2w, K, p, encoding, rgb_first=layout == "re10k")
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


needs_onednn = pytest.mark.skipif(fz.ONEDNN_LINEAR is None, reason="this torch has no oneDNN linear")


@needs_onednn
def test_packed_weights_are_opaque_onednn_tensors_of_the_same_shape():
    w = torch.randn(32, 16)
    packed = fz.pack(w)
    assert packed.is_mkldnn and packed.shape == w.shape
    assert fz.pack(w.double()) is not None and not fz.pack(w.double()).is_mkldnn  # float32 only


@pytest.mark.parametrize("packed", [pytest.param(True, marks=needs_onednn), False])
def test_linear_kernels_match_plain_torch(packed):
    torch.manual_seed(0)
    x, res = torch.randn(3, 40, 64), torch.randn(3, 40, 96)
    w1, w2 = torch.randn(96, 64) / 8, torch.randn(96, 96) / 10
    p1, p2 = (fz.pack(w1), fz.pack(w2)) if packed else (w1, w2)
    with torch.inference_mode():
        torch.testing.assert_close(fz.linear(x, p1), F.linear(x, w1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fz.linear_gelu(x, p1), F.gelu(F.linear(x, w1)), rtol=1e-5, atol=1e-5)
        h = F.gelu(F.linear(x, w1))
        torch.testing.assert_close(fz.linear_residual(res, h, p2), res + F.linear(h, w2), rtol=1e-5, atol=1e-5)
        strided = torch.randn(3, 40, 128)[..., ::2]  # inputs need not be contiguous
        torch.testing.assert_close(fz.linear(strided, p1), F.linear(strided, w1), rtol=1e-5, atol=1e-5)
