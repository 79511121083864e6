"""The shared Transformer against blocks composed by hand here from the papers' equations
(post-LN arXiv:1810.04805, pre-LN arXiv:2002.04745, encoder-decoder arXiv:1706.03762), values and
gradients, on the CPU matmul path and on SDPA; decoders are causal; padded memory is ignored;
the default stack keeps BERT's parameter names."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from selfsup.encoders.transformer import (
    PostLNBlock,
    PostLNDecoderBlock,
    PreLNBlock,
    PreLNDecoderBlock,
    Transformer,
    causal_attn_mask,
    causal_padding_attn_mask,
)
from selfsup.layers import attention
from selfsup.layers.norm import RMSNorm

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
B, T, S, D, H, F = 3, 8, 6, 16, 4, 32
LENGTHS, MEMORY_LENGTHS = [8, 5, 2], [6, 3, 1]


# ---- references, from the equations -------------------------------------------------------


def ref_norm(x, n):
    if isinstance(n, RMSNorm):  # x / sqrt(mean(x^2) + eps) * g
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + n.eps) * n.weight
    mean = x.mean(-1, keepdim=True)  # (x - mean) / sqrt(var + eps) * g + b
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + n.eps) * n.weight + n.bias


def ref_linear(x, lin):
    return x @ lin.weight.T + lin.bias


def ref_mlp(x, mlp):
    h = ref_linear(x, mlp.up)
    return ref_linear(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), mlp.down)  # exact GELU


def ref_attend(q, k, v, keep):
    """softmax(q k^T / sqrt(d)) v over the keys where keep; inputs (B, T|S, D), H heads."""
    d = q.shape[-1] // H
    q, k, v = (t.unflatten(-1, (H, d)).transpose(1, 2) for t in (q, k, v))  # (B, H, ., d)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(d)
    if keep is not None:
        scores = torch.where(keep, scores, float("-inf"))
    w = (scores - scores.amax(-1, keepdim=True).detach()).exp()
    w = w / w.sum(-1, keepdim=True)
    return torch.einsum("bhts,bhsd->bhtd", w, v).transpose(1, 2).flatten(2)  # (B, T, D)


def ref_self_attn(attn, x, keep):
    q, k, v = ref_linear(x, attn.qkv).chunk(3, -1)
    return ref_linear(ref_attend(q, k, v, keep), attn.out)


def ref_cross_attn(attn, x, memory, keep):
    k, v = ref_linear(memory, attn.kv).chunk(2, -1)
    return ref_linear(ref_attend(ref_linear(x, attn.q), k, v, keep), attn.out)


def ref_block(blk, x, keep, memory=None, memory_keep=None):
    if type(blk) is PostLNBlock:  # exact types: the pre-LN blocks subclass the post-LN ones
        x = ref_norm(x + ref_self_attn(blk.attn, x, keep), blk.attn_norm)
        return ref_norm(x + ref_mlp(x, blk.mlp), blk.mlp_norm)
    if type(blk) is PreLNBlock:
        x = x + ref_self_attn(blk.attn, ref_norm(x, blk.attn_norm), keep)
        return x + ref_mlp(ref_norm(x, blk.mlp_norm), blk.mlp)
    if type(blk) is PostLNDecoderBlock:
        x = ref_norm(x + ref_self_attn(blk.attn, x, keep), blk.attn_norm)
        x = ref_norm(x + ref_cross_attn(blk.cross_attn, x, memory, memory_keep), blk.cross_norm)
        return ref_norm(x + ref_mlp(x, blk.mlp), blk.mlp_norm)
    x = x + ref_self_attn(blk.attn, ref_norm(x, blk.attn_norm), keep)
    x = x + ref_cross_attn(blk.cross_attn, ref_norm(x, blk.cross_norm), memory, memory_keep)
    return x + ref_mlp(ref_norm(x, blk.mlp_norm), blk.mlp)


# ---- inputs -------------------------------------------------------------------------------


def keys_keep(lengths, n):
    """(B, 1, 1, n): True at the keys before each length."""
    return torch.tensor([[s < k for s in range(n)] for k in lengths])[:, None, None]


def lower_triangle(n):
    return torch.tensor([[s <= t for s in range(n)] for t in range(n)])


def randomized(module, seed=0):
    """Norm weights and biases away from 1 and 0, so a norm left out or misplaced shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(
                    (1.0 if name.endswith("weight") else 0.0)
                    + 0.3 * torch.randn(p.shape, generator=g)
                )
    return module


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, requires_grad=True)
    memory = torch.randn(B, S, D, generator=g, requires_grad=True)
    return x, memory


def assert_same_with_grads(ours, ref, inputs):
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=ATOL)
    up = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    for a, b in zip(
        torch.autograd.grad(ours, inputs, up), torch.autograd.grad(ref, inputs, up), strict=True
    ):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


@pytest.fixture(params=["math", "sdpa"])
def path(request, monkeypatch):
    if request.param == "sdpa":  # every row above the CPU limit: SDPA
        monkeypatch.setattr(attention, "CPU_MATH_MAX_LEN", 0)
    return request.param


# ---- tests --------------------------------------------------------------------------------


def test_default_is_bert_post_ln(path):
    """Positional arguments as text.py passes them; two post-LN LayerNorm blocks by hand."""
    model = randomized(Transformer(D, 2, H, F, 0.0, 0.0, 1e-12))
    x, _ = inputs()
    keep = keys_keep(LENGTHS, T)
    ours = model(x, keep)
    ref = x
    for blk in model.blocks:
        ref = ref_norm(ref + ref_self_attn(blk.attn, ref, keep), blk.attn_norm)
        ref = ref_norm(ref + ref_mlp(ref, blk.mlp), blk.mlp_norm)
    assert_same_with_grads(ours, ref, [x, *model.parameters()])
    states = model(x, keep, return_all=True)
    assert len(states) == 3 and states[0] is x
    torch.testing.assert_close(states[-1], ours, atol=0, rtol=0)


def test_default_keeps_bert_names():
    """checkpoint.py's HF-BERT mapping and FSDP2 sharding (model.blocks) rely on these."""
    model = Transformer(D, 2, H, F, 0.1, 0.1, 1e-12)
    per_block = [
        "attn.qkv.weight", "attn.qkv.bias", "attn.out.weight", "attn.out.bias",
        "attn_norm.weight", "attn_norm.bias", "mlp.up.weight", "mlp.up.bias",
        "mlp.down.weight", "mlp.down.bias", "mlp_norm.weight", "mlp_norm.bias",
    ]  # fmt: skip
    assert list(model.state_dict()) == [f"blocks.{i}.{n}" for i in range(2) for n in per_block]
    assert all(isinstance(b, PostLNBlock) for b in model.blocks)
    assert all(isinstance(m, nn.LayerNorm) for b in model.blocks for m in (b.attn_norm, b.mlp_norm))
    assert model.blocks[0].attn_norm.eps == 1e-12 and model.blocks[0].drop.p == 0.1


@pytest.mark.parametrize("norm", [nn.LayerNorm, RMSNorm])
@pytest.mark.parametrize("causal", [False, True])
def test_pre_ln_block_equals_reference(norm, causal, path):
    blk = randomized(PreLNBlock(D, H, F, 0.0, 0.0, 1e-6, norm=norm))
    x, _ = inputs()
    mask = keys_keep(LENGTHS, T)
    keep = mask & lower_triangle(T) if causal else mask
    assert_same_with_grads(
        blk(x, mask, causal=causal), ref_block(blk, x, keep), [x, *blk.parameters()]
    )


def test_pre_ln_stack_with_final_norm(path):
    """GPT-2's layout: pre-LN blocks, causal, a final norm; here with RMSNorm."""
    model = randomized(
        Transformer(D, 2, H, F, 0.0, 0.0, 1e-6, block=PreLNBlock, norm=RMSNorm, final_norm=True)
    )
    assert isinstance(model.final_norm, RMSNorm) and "final_norm.weight" in model.state_dict()
    x, _ = inputs()
    mask = keys_keep(LENGTHS, T)
    ours = model(x, mask, causal=True)
    ref = x
    for blk in model.blocks:
        ref = ref_block(blk, ref, mask & lower_triangle(T))
    ref = ref_norm(ref, model.final_norm)
    assert_same_with_grads(ours, ref, [x, *model.parameters()])
    states = model(x, mask, return_all=True, causal=True)
    assert len(states) == 3
    torch.testing.assert_close(states[-1], ours, atol=0, rtol=0)


@pytest.mark.parametrize("block", [PostLNDecoderBlock, PreLNDecoderBlock])
def test_decoder_equals_reference(block, path):
    """Causal self-attention with decoder padding, cross-attention with memory padding."""
    model = randomized(Transformer(D, 2, H, F, 0.0, 0.0, 1e-6, block=block))
    x, memory = inputs()
    mask, memory_mask = keys_keep(LENGTHS, T), keys_keep(MEMORY_LENGTHS, S)
    ours = model(x, mask, memory=memory, memory_mask=memory_mask[:, 0, 0])  # (B, S) form
    ref = x
    for blk in model.blocks:
        ref = ref_block(blk, ref, mask & lower_triangle(T), memory, memory_mask)
    assert_same_with_grads(ours, ref, [x, memory, *model.parameters()])


def test_decoder_memory_of_another_width():
    model = Transformer(D, 1, H, F, 0.0, 0.0, block=partial(PreLNDecoderBlock, kv_dim=10))
    x, _ = inputs()
    memory = torch.randn(B, S, 10)
    assert model(x, memory=memory).shape == (B, T, D)
    assert model.blocks[0].cross_attn.kv.weight.shape == (2 * D, 10)


STACKS = {
    "post-LN causal": (PostLNBlock, {"causal": True}),
    "pre-LN causal": (PreLNBlock, {"causal": True}),
    "post-LN decoder": (PostLNDecoderBlock, {}),
    "pre-LN decoder": (PreLNDecoderBlock, {}),
}


@pytest.mark.parametrize("name", STACKS)
def test_later_tokens_never_change_earlier_outputs(name, path):
    block, kwargs = STACKS[name]
    model = Transformer(D, 2, H, F, 0.0, 0.0, block=block).eval()
    x, memory = inputs()
    if block in (PostLNDecoderBlock, PreLNDecoderBlock):
        kwargs = {"memory": memory}
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        y = model(x, **kwargs)
        for t in range(1, T):
            changed = x.clone()
            changed[:, t] = torch.randn(B, D, generator=g)
            z = model(changed, **kwargs)
            torch.testing.assert_close(z[:, :t], y[:, :t], atol=1e-6, rtol=1e-6)
            assert not torch.allclose(z[:, t], y[:, t], atol=1e-3)


@pytest.mark.parametrize("block", [PostLNDecoderBlock, PreLNDecoderBlock])
def test_decoder_ignores_padded_memory(block, path):
    model = Transformer(D, 2, H, F, 0.0, 0.0, block=block).eval()
    x, memory = inputs()
    memory_mask = keys_keep(MEMORY_LENGTHS, S)[:, 0, 0]  # (B, S)
    changed = memory.detach().clone()
    for b, n in enumerate(MEMORY_LENGTHS):
        changed[b, n:] = 5.0
    with torch.no_grad():
        y = model(x, memory=memory, memory_mask=memory_mask)
        torch.testing.assert_close(model(x, memory=changed, memory_mask=memory_mask), y)
        assert not torch.allclose(model(x, memory=changed), model(x, memory=memory))


def test_causal_masks():
    assert torch.equal(causal_attn_mask(5), lower_triangle(5))
    attention_mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])  # right and left padding
    merged = causal_padding_attn_mask(attention_mask)
    assert merged.shape == (2, 1, 4, 4) and merged.dtype == torch.bool
    real = attention_mask.bool()[:, None, :]
    expected = (lower_triangle(4) & real) | torch.eye(4, dtype=torch.bool)  # padding sees itself
    assert torch.equal(merged[:, 0], expected)


def test_merged_mask_equals_causal_flag(path):
    """causal=True with a padding mask == the one merged mask, at the real positions; the merged
    mask also keeps left-padded rows finite."""
    model = Transformer(D, 2, H, F, 0.0, 0.0, block=PreLNBlock, final_norm=True).eval()
    x, _ = inputs()
    attention_mask = keys_keep(LENGTHS, T)[:, 0, 0].long()
    with torch.no_grad():
        flag = model(x, attention_mask.bool()[:, None, None], causal=True)
        merged = model(x, causal_padding_attn_mask(attention_mask))
        real = attention_mask.bool()
        torch.testing.assert_close(merged[real], flag[real], atol=ATOL, rtol=ATOL)
        left = model(x, causal_padding_attn_mask(attention_mask.flip(1)))
        assert torch.isfinite(left).all()


@pytest.mark.parametrize("block", [PostLNBlock, PreLNBlock, PostLNDecoderBlock, PreLNDecoderBlock])
def test_every_parameter_gets_a_gradient(block):
    model = Transformer(D, 2, H, F, block=block, norm=RMSNorm, final_norm=True, act=nn.ReLU)
    x, memory = inputs()
    decoder = block in (PostLNDecoderBlock, PreLNDecoderBlock)
    model(x, memory=memory if decoder else None).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_decoder_needs_memory_and_encoder_refuses_it():
    x, memory = inputs()
    with pytest.raises(ValueError, match="memory"):
        PreLNDecoderBlock(D, H, F)(x)
    with pytest.raises(TypeError):
        Transformer(D, 1, H, F)(x, memory=memory)
