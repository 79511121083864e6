"""The wav2vec 2.0 / HuBERT waveform encoder: the convolutional front end (lengths, padding
mask, gradient scaling), the positional convolution, the mask embedding and the encoder
contract. Parity with transformers (weights, hidden states, output lengths) lives in
tests/interop/test_hf_wav2vec2.py, which pays for importing it."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders.wav2vec2 import Wav2Vec2Config, build_wav2vec2
from selfsup.errors import ConfigError
from selfsup.layers.conv_frontend import (
    WAV2VEC2_CONV_LAYERS,
    ConvPositionalEmbedding,
    conv_output_lengths,
    downsample_padding_mask,
    receptive_field,
    scale_grad,
    total_stride,
)

TINY_LAYERS = [(32, 10, 5), (32, 3, 2), (32, 3, 2)]


def tiny(**kw) -> Wav2Vec2Config:
    base = dict(conv_channels=(32, 32, 32), conv_kernels=(10, 3, 3), conv_strides=(5, 2, 2),
                dim=32, n_layers=2, n_heads=2, ffn_dim=64, pos_conv_kernel=16, pos_conv_groups=4,
                dropout=0.0, attn_dropout=0.0, proj_dropout=0.0)  # fmt: skip
    cfg = Wav2Vec2Config(**{**base, **kw})
    cfg.validate()
    return cfg


def encoder(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_wav2vec2(tiny(**kw)).eval()


def padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) waveforms zero-padded to the longest and the (B, T) padding mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    wave = torch.randn(len(lengths), T, generator=g)
    pad = torch.arange(T)[None] >= torch.tensor(lengths)[:, None]
    return wave.masked_fill(pad, 0.0), pad


# ------------------------------------------------------------------------------------------
# Front end: lengths and padding mask
# ------------------------------------------------------------------------------------------


def test_default_front_end_is_wav2vec2s_20ms_frames():
    assert WAV2VEC2_CONV_LAYERS == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert total_stride(WAV2VEC2_CONV_LAYERS) == 320  # 20 ms at 16 kHz
    assert receptive_field(WAV2VEC2_CONV_LAYERS) == 400  # 25 ms
    assert conv_output_lengths(16000, WAV2VEC2_CONV_LAYERS) == 49
    assert conv_output_lengths(399, WAV2VEC2_CONV_LAYERS) == 0
    assert conv_output_lengths(400, WAV2VEC2_CONV_LAYERS) == 1


def test_front_end_output_length_is_the_formula():
    enc = encoder()
    for T in (400, 401, 999, 1000, 1234):
        out = enc(torch.randn(1, T))
        assert out["hidden"].shape[1] == conv_output_lengths(T, TINY_LAYERS)
        assert out["conv_features"].shape == (1, conv_output_lengths(T, TINY_LAYERS), 32)


def test_downsampled_padding_mask_marks_frames_that_reach_padding():
    lengths = [1000, 700, 203, 40, 39]
    wave, pad = padded(lengths)
    out = encoder()(wave, pad)
    T = out["hidden"].shape[1]
    frame_pad = out["padding_mask"]
    assert frame_pad.shape == (5, T)
    for b, n in enumerate(lengths):
        real = conv_output_lengths(n, TINY_LAYERS)
        assert frame_pad[b].tolist() == [t >= real for t in range(T)]
        # frame t reads samples [t * 20, t * 20 + 40): real exactly when that window is
        assert real == sum(t * 20 + 40 <= n for t in range(T))
    assert not frame_pad[3, 0] and frame_pad[3, 1:].all()  # 40 samples: exactly one frame
    assert frame_pad[4].all()  # 39: none
    assert torch.equal(downsample_padding_mask(pad, TINY_LAYERS, T), frame_pad)
    assert downsample_padding_mask(None, TINY_LAYERS, T) is None


def test_padding_never_changes_real_frames_with_layer_norm_front_end():
    """Layer norm over channels works per frame, so a padded batch gives each clip's real frames
    what the clip alone gives (a group-norm front end normalises over time: not so)."""
    enc = encoder(conv_norm="layer", conv_bias=True, stable_layer_norm=True)
    lengths = [1000, 640, 433]
    wave, pad = padded(lengths)
    wave_noise = wave + pad * torch.randn(wave.shape)  # what padding holds must not matter
    out = enc(wave_noise, pad, return_all=True)
    for b, n in enumerate(lengths):
        alone = enc(wave[b : b + 1, :n], return_all=True)
        real = conv_output_lengths(n, TINY_LAYERS)
        for h, h1 in zip(out["all_hidden"], alone["all_hidden"], strict=True):
            torch.testing.assert_close(h[b, :real], h1[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["hidden"][b, :real], alone["hidden"][0], atol=1e-5,
                                   rtol=1e-5)  # fmt: skip


def test_group_norm_front_end_depends_on_padding_as_documented():
    enc = encoder()
    wave, pad = padded([1000, 600])
    real = conv_output_lengths(600, TINY_LAYERS)
    batch = enc(wave, pad)["conv_features"][1, :real]
    alone = enc(wave[1:, :600])["conv_features"][0]
    assert not torch.allclose(batch, alone, atol=1e-4)


def test_clip_shorter_than_the_receptive_field_stays_finite():
    wave, pad = padded([1000, 30])
    out = encoder()(wave, pad, return_all=True)
    assert out["padding_mask"][1].all()
    assert all(torch.isfinite(h).all() for h in out["all_hidden"])
    # a batch shorter than one frame (how selfsup.eval.upstream probes an encoder): one frame,
    # all padding
    for short in (torch.zeros(1, 2, 1), torch.randn(2, 39)):
        out = encoder()(short, return_all=True)
        assert out["hidden"].shape == (short.shape[0], 1, 32)
        assert out["padding_mask"].all() and len(out["all_hidden"]) == 3
        assert all(torch.isfinite(h).all() for h in out["all_hidden"])


# ------------------------------------------------------------------------------------------
# Gradient scaling
# ------------------------------------------------------------------------------------------


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(5, requires_grad=True)
    y = scale_grad(x, 0.1)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, 0.1 * torch.arange(5.0))


def _grads(enc, wave):
    enc.zero_grad()
    enc(wave)["hidden"].pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}


def test_feature_grad_mult_scales_only_front_end_grads():
    wave = torch.randn(2, 800)
    full = _grads(encoder(feature_grad_mult=1.0).train(), wave)
    scaled = _grads(encoder(feature_grad_mult=0.1).train(), wave)
    assert full.keys() == scaled.keys()
    front = [n for n in full if n.startswith("frontend.")]
    assert front and len(front) < len(full)
    for n in full:
        factor = 0.1 if n.startswith("frontend.") else 1.0
        torch.testing.assert_close(scaled[n], factor * full[n], rtol=1e-4, atol=1e-7)
    frozen = _grads(encoder(feature_grad_mult=0.0).train(), wave)
    assert not any(n.startswith("frontend.") for n in frozen)
    assert frozen.keys() == full.keys() - set(front)


def test_every_parameter_gets_a_gradient():
    for kw in ({}, {"conv_norm": "layer", "conv_bias": True, "stable_layer_norm": True}):
        enc = encoder(feature_grad_mult=1.0, **kw).train()
        mask = torch.zeros(2, 44, dtype=torch.bool)  # 900 samples: 44 frames
        mask[:, 2:5] = True
        enc(torch.randn(2, 900), mask=mask)["hidden"].sum().backward()
        missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing


# ------------------------------------------------------------------------------------------
# Positional convolution, mask embedding, the encoder contract
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [16, 15])
def test_positional_conv_keeps_length_and_is_weight_normalised(kernel):
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(32, kernel, 4)
    x = torch.randn(2, 23, 32)
    y = pos(x)
    assert y.shape == x.shape
    w = pos.weight
    assert w.shape == (32, 8, kernel)
    # weight = g * v / ||v||, the norm over all but the kernel axis (dim=2)
    norms = w.norm(dim=(0, 1))
    torch.testing.assert_close(norms, pos.weight_g.reshape(-1).abs())
    with torch.no_grad():
        pos.weight_v.mul_(3.0)  # the direction alone: its scale changes nothing
    torch.testing.assert_close(pos(x), y)
    y = pos(x)
    # position t sees x[t - K/2 .. t + K/2 - 1] (even K: the extra frame is dropped) or
    # x[t - K//2 .. t + K//2] (odd K): at most (K - 1) // 2 frames ahead
    x2 = x.clone()
    x2[:, 22] += 1.0
    changed = (pos(x2) - y).abs().sum((0, 2)) > 0
    assert changed.nonzero().min().item() == 22 - (kernel - 1) // 2


def test_mask_embedding_replaces_exactly_the_masked_frames():
    enc = encoder()
    wave = torch.randn(2, 1000)
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, 3:9] = True
    mask[1, 40:] = True
    out = enc(wave, mask=mask)
    projected = out["projected"]
    x = enc.apply_mask(projected, mask)
    assert torch.equal(x[mask], enc.mask_embed.expand(int(mask.sum()), -1))
    assert torch.equal(x[~mask], projected[~mask])
    assert torch.equal(out["projected"], enc(wave)["projected"])  # taken before masking
    assert not torch.allclose(out["hidden"], enc(wave)["hidden"])
    with pytest.raises(ValueError, match="mask"):
        enc(wave, mask=mask[:, :10])


def test_contract_and_attributes():
    for kw, pre_norm in (({}, False), ({"stable_layer_norm": True, "conv_norm": "layer"}, True)):
        enc = encoder(**kw)
        assert (enc.dim, enc.n_layers, enc.stack, enc.feature_dim) == (32, 2, 1, 1)
        assert (enc.frame_stride, enc.receptive_field) == (20, 40)
        wave = torch.randn(2, 1000)
        out = enc(wave, return_all=True)
        assert torch.equal(enc(wave[..., None])["hidden"], out["hidden"])  # (B, T, 1) frames
        assert out["hidden"].shape == (2, 49, 32)
        assert out["padding_mask"].shape == (2, 49) and not out["padding_mask"].any()
        assert out["extract_features"].shape == out["conv_features"].shape == (2, 49, 32)
        assert out["projected"].shape == (2, 49, 32)
        assert len(out["all_hidden"]) == 3
        last = enc.norm(out["all_hidden"][-1]) if pre_norm else out["all_hidden"][-1]
        torch.testing.assert_close(last, out["hidden"])
        assert "all_hidden" not in enc(wave)
    with pytest.raises(ValueError, match="one value per frame"):
        enc(torch.randn(2, 1000, 2))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"conv_norm": "batch"}, "conv_norm"),
        ({"conv_kernels": (10, 3)}, "same length"),
        ({"conv_channels": ()}, "at least one"),
        ({"conv_strides": (5, 0, 2)}, "positive"),
        ({"dim": 33}, "multiple of n_heads"),
        ({"pos_conv_groups": 5}, "pos_conv_groups"),
        ({"pos_conv_kernel": 0}, "pos_conv_kernel"),
        ({"dropout": 1.0}, "dropout"),
        ({"feature_grad_mult": -0.1}, "feature_grad_mult"),
        ({"feature_dim": 80}, "feature_dim"),
        ({"norm_eps": 0.0}, "norm_eps"),
    ],
)
def test_bad_configs_are_one_line_errors(change, message):
    cfg = tiny()
    for k, v in change.items():
        setattr(cfg, k, v)
    with pytest.raises(ConfigError, match=message) as e:
        cfg.validate()
    assert "\n" not in str(e.value)


def test_config_defaults_are_wav2vec2_base():
    cfg = Wav2Vec2Config()
    cfg.validate()
    assert cfg.conv_layers == WAV2VEC2_CONV_LAYERS
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim) == (768, 12, 12, 3072)
    assert (cfg.conv_norm, cfg.conv_bias, cfg.stable_layer_norm) == ("group", False, False)
    assert (cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.feature_grad_mult) == (128, 16, 0.1)
