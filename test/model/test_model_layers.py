"""Attention backends, patch layout, read/self block semantics and token uplifting."""
import pytest
import torch

from ilrm_ros.model.layers import (
    Patchify,
    ReadBlock,
    ReadCrossAttention,
    SelfBlock,
    attention,
    patchify,
    reference_attention,
    unpatchify,
)


@pytest.mark.parametrize("nq,nk", [(7, 7), (5, 33)])
def test_sdpa_and_reference_attention_agree_in_values_and_gradients(nq, nk):
    q = torch.randn(2, 3, nq, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, nk, 16, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, nk, 16, dtype=torch.float64, requires_grad=True)
    out_fast = attention(q, k, v, "sdpa")
    out_ref = attention(q, k, v, "reference")
    torch.testing.assert_close(out_fast, out_ref)
    g = torch.randn_like(out_ref)
    grads_fast = torch.autograd.grad(out_fast, (q, k, v), g)
    grads_ref = torch.autograd.grad(out_ref, (q, k, v), g)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b)


def test_reference_attention_is_softmax_weighted_average():
    q = torch.zeros(1, 1, 16)
    k = torch.randn(1, 4, 16)
    v = torch.randn(1, 4, 16)
    # Equal logits -> plain mean of the values.
    torch.testing.assert_close(reference_attention(q, k, v), v.mean(dim=1, keepdim=True))
    with pytest.raises(ValueError):
        attention(q[None], k[None], v[None], "flash9")


def test_patchify_orders_tokens_row_major_and_features_ph_pw_c():
    p, c, h, w = 4, 3, 8, 12
    x = torch.randn(2, c, h, w)
    t = patchify(x, p)
    assert t.shape == (2, (h // p) * (w // p), p * p * c)
    for hh, ww, ph, pw, ch in [(0, 0, 0, 0, 0), (1, 2, 3, 1, 2), (0, 1, 2, 3, 1)]:
        token = hh * (w // p) + ww
        feat = (ph * p + pw) * c + ch
        assert t[1, token, feat] == x[1, ch, hh * p + ph, ww * p + pw]
    torch.testing.assert_close(unpatchify(t, h // p, w // p, p), x.permute(0, 2, 3, 1))
    torch.testing.assert_close(Patchify(p)(x), t)
    with pytest.raises(ValueError):
        patchify(torch.randn(1, 3, 10, 8), 4)


def _split_reference(block: ReadCrossAttention, x, ctx):
    """Uplifted read attention written out per sub-query and per head, from the documented layout:
    sub-query j is query channels j, j+k, j+2k, ... and proj column c*k + j reads channel c of sub-query j."""
    d, hd, k = x.shape[-1], block.head_dim, block.uplift
    xq = block.q(block.norm(x))  # (N, Nq, k*d)
    keys, vals = block.k(ctx), block.v(ctx)
    outs = []
    for j in range(k):
        sub = xq[..., j::k]  # (N, Nq, d)
        heads = []
        for h in range(d // hd):
            qh = block.q_norm(sub[..., h * hd : (h + 1) * hd])
            kh = block.k_norm(keys[..., h * hd : (h + 1) * hd])
            heads.append(reference_attention(qh, kh, vals[..., h * hd : (h + 1) * hd]))
        outs.append(torch.cat(heads, dim=-1))
    return block.proj(torch.stack(outs, dim=-1).flatten(-2))


def test_uplifted_subqueries_are_interleaved_channel_by_channel_as_in_the_authors_layout():
    """A hand-built case: q rows [1, 0; 1, 0; 0, 0; 0, 0] make BOTH sub-queries (rows 0::2 and
    1::2) point at key 0, so both read value 0 = [1, 0]; the merged output is then
    [1, 1, 0, 0] and proj row [1, 2, 3, 4] gives 1 + 2 = 3. Read as two consecutive
    chunks instead, sub-query 1 would be zero (uniform attention) and the result 2.5."""
    block = ReadCrossAttention(dim=2, head_dim=2, uplift=2).double()
    with torch.no_grad():
        block.q.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        block.k.weight.copy_(torch.eye(2))
        block.v.weight.copy_(torch.eye(2))
        block.q_norm.weight.fill_(10.0)  # sharp attention: logits 14.1 vs 0
        block.proj.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)  # LayerNorm keeps it: q = [1, 1, 0, 0]
    ctx = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    out = block(x, ctx)
    torch.testing.assert_close(out, torch.tensor([[[3.0, 0.0]]], dtype=torch.float64), atol=1e-4, rtol=0)


def test_qk_norm_eps_is_the_authors_by_default():
    block = ReadCrossAttention(dim=32, head_dim=16, uplift=2)
    assert block.q_norm.eps == block.k_norm.eps == 1e-5
    assert SelfBlock(32, 16, 4).attn.q_norm.eps == 1e-5


@pytest.mark.parametrize("uplift", [1, 2, 3])
def test_read_cross_attention_with_uplifting_matches_per_subquery_reference(uplift):
    block = ReadCrossAttention(dim=32, head_dim=16, uplift=uplift).double()
    for prm in block.parameters():
        torch.nn.init.normal_(prm, std=0.3)
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    ctx = torch.randn(3, 9, 32, dtype=torch.float64)
    assert block.q.weight.shape == (uplift * 32, 32) and block.proj.weight.shape == (32, uplift * 32)
    torch.testing.assert_close(block(x, ctx), _split_reference(block, x, ctx))


def test_read_block_lets_each_view_read_only_its_own_image():
    torch.manual_seed(0)
    block = ReadBlock(dim=64, head_dim=32, mlp_ratio=2, uplift=2)
    b, v, nv, ni = 2, 3, 4, 6
    x = torch.randn(b, v * nv, 64)
    images = torch.randn(b * v, ni, 64)
    out = block(x, images)
    images2 = images.clone()
    images2[1 * v + 2] += torch.randn(ni, 64)  # change scene 1, view 2 only
    out2 = block(x, images2)
    changed = (out2 - out).abs().amax(dim=-1).reshape(b, v, nv).amax(dim=-1) > 1e-6
    assert changed.tolist() == [[False, False, False], [False, False, True]]


def test_self_block_mixes_tokens_across_views_but_not_across_scenes():
    torch.manual_seed(0)
    block = SelfBlock(dim=64, head_dim=32, mlp_ratio=2)
    x = torch.randn(2, 8, 64)
    out = block(x)
    x2 = x.clone()
    x2[1, 7] += torch.randn(64)
    out2 = block(x2)
    diff = (out2 - out).abs().amax(dim=-1)
    assert (diff[1] > 1e-6).all()
    assert (diff[0] == 0).all()


def test_blocks_have_no_biases_and_per_head_qk_norms():
    for block in (ReadBlock(128, 64, 4, 2), SelfBlock(128, 64, 4)):
        names = dict(block.named_parameters())
        assert not [n for n in names if "bias" in n]
        assert [tuple(names[n].shape) for n in names if n.endswith(("q_norm.weight", "k_norm.weight"))] == [(64,), (64,)]
