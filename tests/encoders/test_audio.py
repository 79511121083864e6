"""Speech encoders: frame stacking, padding never changing real positions, causality (APC),
the encoder contract."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders.audio import AudioConfig, build_audio_encoder, stack_frames, unstack_frames
from selfsup.errors import ConfigError


def tiny(**kw) -> AudioConfig:
    base = dict(feature_dim=6, stack=3, dim=16, n_layers=2, n_heads=2, ffn_dim=32, max_len=64,
                dropout=0.0, attn_dropout=0.0)  # fmt: skip
    return AudioConfig(**{**base, **kw})


def test_stack_frames_round_trip_and_mask():
    x = torch.randn(2, 10, 4)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 7:] = True  # 7 real frames: stacked frames 0-1 real, 2 (frames 6-8) real, 3 padding
    s, spad = stack_frames(x, pad, 3)
    assert s.shape == (2, 4, 12)
    assert torch.equal(s[0, 1], x[0, 3:6].reshape(-1))  # frames 3, 4, 5 side by side
    assert spad.tolist() == [[False] * 4, [False, False, False, True]]
    assert torch.equal(unstack_frames(s, 3, 10), x)


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
def test_padding_changes_no_real_position(arch):
    torch.manual_seed(0)
    kw = {"stack": 1, "causal": arch == "transformer"} if arch != "transformer" else {}
    enc = build_audio_encoder(tiny(arch=arch, **kw)).eval()
    short = torch.randn(1, 12, 6)
    padded = torch.cat([short, torch.randn(1, 9, 6) * 5], 1)  # junk in the padding
    pad = torch.zeros(1, 21, dtype=torch.bool)
    pad[0, 12:] = True
    alone = enc(short)["hidden"]
    out = enc(padded, pad)
    n = alone.shape[1]
    torch.testing.assert_close(out["hidden"][:, :n], alone, atol=1e-5, rtol=1e-5)
    assert out["padding_mask"][0, n:].all() and not out["padding_mask"][0, :n].any()


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
def test_causal_encoders_cannot_see_the_future(arch):
    """Changing frame t + 1 (and every later one) changes no output at positions <= t."""
    torch.manual_seed(0)
    enc = build_audio_encoder(tiny(arch=arch, stack=1, causal=True)).eval()
    x = torch.randn(2, 15, 6)
    t = 7
    y = x.clone()
    y[:, t + 1 :] = torch.randn(2, 15 - t - 1, 6)
    a, b = enc(x)["hidden"], enc(y)["hidden"]
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_bidirectional_transformer_sees_the_future():
    torch.manual_seed(0)
    enc = build_audio_encoder(tiny(stack=1)).eval()
    x = torch.randn(1, 10, 6)
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(enc(x)["hidden"][:, 0], enc(y)["hidden"][:, 0])


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_all_hidden_contract(arch):
    kw = {"stack": 1} if arch == "gru" else {}
    cfg = tiny(arch=arch, **kw)
    enc = build_audio_encoder(cfg)
    out = enc(torch.randn(2, 9, 6), return_all=True)
    layers = out["all_hidden"]
    assert len(layers) == cfg.n_layers + (1 if arch == "transformer" else 0)
    assert all(h.shape == out["hidden"].shape for h in layers)
    assert torch.equal(layers[-1], out["hidden"])


def test_config_errors():
    with pytest.raises(ConfigError, match="stack"):
        tiny(arch="gru").validate()
    with pytest.raises(ConfigError, match="n_heads"):
        tiny(dim=15).validate()
    with pytest.raises(ConfigError, match="arch"):
        tiny(arch="conformer").validate()
