"""The quantizers: wav2vec 2.0's Gumbel product quantizer against HF transformers with the same
noise (values and gradients), straight-through gradients, hard codes, seeds; vq-wav2vec's k-means
quantizer against brute-force nearest entries and its loss formula; the temperature schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.layers.quantize import (
    GumbelQuantizer,
    KMeansQuantizer,
    code_perplexity,
    gumbel_noise,
    gumbel_temperature,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gumbel(in_dim=6, dim=8, n_groups=2, n_entries=5, out_dim=None, seed=0):
    torch.manual_seed(seed)
    return GumbelQuantizer(in_dim, dim, n_groups, n_entries, out_dim=out_dim)


def x_of(n=16, d=6, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("training", [True, False])
def test_gumbel_quantizer_equals_hf_transformers(training):
    modeling = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    config = modeling.Wav2Vec2Config(
        conv_dim=(6,),
        conv_stride=(5,),
        conv_kernel=(10,),
        num_codevector_groups=2,
        num_codevectors_per_group=5,
        codevector_dim=8,
    )
    ref = modeling.Wav2Vec2GumbelVectorQuantizer(config)
    ours = gumbel()
    with torch.no_grad():
        ref.weight_proj.weight.copy_(ours.logits.weight)
        ref.weight_proj.bias.copy_(torch.randn(10) * 0.1)
        ours.logits.bias.copy_(ref.weight_proj.bias)
        ref.codevectors.copy_(ours.codebooks.reshape(1, 10, 4))
    ref.train(training), ours.train(training)
    ref.temperature = ours.temperature = 1.3
    x = x_of().requires_grad_()
    torch.manual_seed(5)  # torch's gumbel_softmax draws Exp(1) on the global RNG; so do we, here
    noise = -torch.empty(16 * 2, 5).exponential_().log().view(16, 2, 5)
    torch.manual_seed(5)
    want, want_ppl = ref(x[None])
    out = ours(x, noise=noise if training else None)
    torch.testing.assert_close(out["quantized"], want[0])
    torch.testing.assert_close(out["perplexity"].sum(), want_ppl)
    up = torch.randn(16, 8)
    # In eval the argmax passes no gradient to the input or logits: only the entries get one.
    params = (x, ours.logits.weight, ours.codebooks) if training else (ours.codebooks,)
    ref_params = (x, ref.weight_proj.weight, ref.codevectors) if training else (ref.codevectors,)
    grads = torch.autograd.grad((out["quantized"] * up).sum(), params)
    ref_grads = torch.autograd.grad((want[0] * up).sum(), ref_params)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b.reshape(a.shape))


def test_gumbel_training_is_hard_per_group_with_straight_through_gradients():
    q = gumbel(out_dim=3).train()
    x = x_of().requires_grad_()
    out = q(x, generator=torch.Generator().manual_seed(0))
    codes = out["codes"]
    assert codes.shape == (16, 2) and codes.dtype == torch.long
    # Before the projection each row is exactly one entry per group, concatenated.
    q.out = None
    raw = q(x, generator=torch.Generator().manual_seed(0))["quantized"]
    want = torch.cat([q.codebooks[0, codes[:, 0]], q.codebooks[1, codes[:, 1]]], 1)
    torch.testing.assert_close(raw, want, rtol=0, atol=1e-6)
    # The soft-max's gradient reaches the logits layer and the input; the codebooks get it
    # only on the chosen entries.
    up = torch.randn(16, 8)
    gx, gw, gb = torch.autograd.grad((raw * up).sum(), (x, q.logits.weight, q.codebooks))
    assert gx.abs().sum() > 0 and gw.abs().sum() > 0
    used = F.one_hot(codes, 5).sum(0).bool()  # (G, V)
    assert (gb.abs().sum(-1) > 0).eq(used).all()
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(16, 2))


def test_gumbel_seeds_reproduce_and_eval_is_deterministic():
    q = gumbel().train()
    x = x_of()
    a = q(x, generator=torch.Generator().manual_seed(3))["codes"]
    assert torch.equal(a, q(x, generator=torch.Generator().manual_seed(3))["codes"])
    assert not torch.equal(a, q(x, generator=torch.Generator().manual_seed(4))["codes"])
    with pytest.raises(ValueError, match="generator or noise"):
        q(x)
    q.eval()
    e = q(x)
    assert torch.equal(e["codes"], q(x)["codes"])
    assert torch.equal(e["codes"], e["probs"].argmax(-1))
    torch.testing.assert_close(e["perplexity"], code_perplexity(F.one_hot(e["codes"], 5)))


def test_gumbel_low_temperature_picks_the_argmax_with_small_noise():
    q = gumbel().train()
    q.temperature = 0.5
    x = x_of() * 20  # logits far apart: the noise rarely changes the choice
    noise = gumbel_noise((16, 2, 5), torch.Generator().manual_seed(0)) * 0.01
    assert torch.equal(q(x, noise=noise)["codes"], q.eval()(x)["codes"])


def test_gumbel_temperature_schedule():
    assert gumbel_temperature(0) == 2.0
    assert gumbel_temperature(1000) == pytest.approx(2.0 * 0.999995**1000)
    turn = math.log(0.5 / 2.0) / math.log(0.999995)  # about 277,000 steps
    assert gumbel_temperature(int(turn) - 10) > 0.5
    assert gumbel_temperature(int(turn) + 10) == 0.5
    assert gumbel_temperature(10**7) == 0.5
    assert gumbel_temperature(10, start=1.0, end=0.1, decay=0.5) == 0.1


def test_kmeans_quantizer_picks_nearest_entries_and_its_losses():
    torch.manual_seed(0)
    q = KMeansQuantizer(8, n_groups=2, n_entries=6)
    with torch.no_grad():
        q.codebooks.normal_()
    z = x_of(20, 8, seed=2).requires_grad_()
    out = q(z)
    zg = z.detach().view(20, 2, 4)
    for g in range(2):
        want = torch.cdist(zg[:, g], q.codebooks[g].detach()).argmin(-1)
        assert torch.equal(out["codes"][:, g], want)
    e = torch.stack([q.codebooks[g, out["codes"][:, g]] for g in range(2)], 1)  # (N, G, 4)
    torch.testing.assert_close(out["quantized"], e.reshape(20, 8).detach())
    sq = (zg - e.detach()).pow(2).sum()
    torch.testing.assert_close(out["codebook_loss"], sq)
    torch.testing.assert_close(out["commitment_loss"], sq)
    torch.testing.assert_close(out["loss"], 1.25 * sq)
    # Straight-through: the quantized output passes its gradient to z unchanged.
    up = torch.randn(20, 8)
    (gz,) = torch.autograd.grad((out["quantized"] * up).sum(), z, retain_graph=True)
    torch.testing.assert_close(gz, up)
    # The codebook term moves only the entries, the commitment term only the encoder output.
    gz_cb, gb_cb = torch.autograd.grad(
        out["codebook_loss"], (z, q.codebooks), allow_unused=True, retain_graph=True
    )
    assert gz_cb is None and gb_cb.abs().sum() > 0
    gz_cm, gb_cm = torch.autograd.grad(out["commitment_loss"], (z, q.codebooks), allow_unused=True)
    assert gb_cm is None
    torch.testing.assert_close(gz_cm, 2 * (zg - e.detach()).reshape(20, 8))


def test_kmeans_quantizer_is_deterministic_and_returns_perplexity():
    torch.manual_seed(0)
    q = KMeansQuantizer(4, n_groups=1, n_entries=3)
    z = x_of(10, 4, seed=3)
    a, b = q(z), q(z)
    assert torch.equal(a["codes"], b["codes"])
    usage = torch.bincount(a["codes"][:, 0], minlength=3).double() / 10
    want = math.exp(-sum(float(p) * math.log(float(p)) for p in usage if p > 0))
    assert float(a["perplexity"][0]) == pytest.approx(want, rel=1e-5)


def test_no_rows_quantize_to_no_rows():
    from selfsup.layers.quantize import GumbelQuantizer, KMeansQuantizer

    g = GumbelQuantizer(8, 16, n_groups=2, n_entries=5).train()
    out = g(torch.zeros(0, 8), generator=torch.Generator().manual_seed(0))
    assert out["quantized"].shape == (0, 16) and out["codes"].shape == (0, 2)
    k = KMeansQuantizer(8, n_groups=2, n_entries=5)
    out = k(torch.zeros(0, 8))
    assert out["quantized"].shape == (0, 8) and out["codes"].shape == (0, 2)
