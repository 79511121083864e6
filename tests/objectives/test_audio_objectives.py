"""Audio objectives against their papers' formulas computed directly (a loop over frames here,
not the objective's vectorised code), and their corruption's plumbing."""

from __future__ import annotations

import pytest
import torch

from selfsup.data.audio import collate_frames
from selfsup.encoders.audio import AudioConfig
from selfsup.keys import FEATURES, FRAME_MASK, PADDING_MASK, TARGETS
from selfsup.objectives import build_objective, get_objective
from selfsup.objectives.base import batch_loss

F = 5
LENGTHS = [50, 33, 17]


def model_and_batch(name: str, **shape):
    cls = get_objective(name)
    base = dict(feature_dim=F, dim=16, n_layers=2, n_heads=2, ffn_dim=32, max_len=64,
                dropout=0.0, attn_dropout=0.0)  # fmt: skip
    cfg = AudioConfig(**{**base, **shape})
    if name == "apc" and not shape:
        cfg = cls.default_model(cfg)
    torch.manual_seed(0)
    model = build_objective(cls.Config(name=name), cfg).eval()
    g = torch.Generator().manual_seed(1)
    batch = collate_frames([torch.randn(n, F, generator=g).numpy() for n in LENGTHS])
    corrupt = model.audio_needs().corrupt
    return model, corrupt(batch, torch.Generator().manual_seed(2)) if corrupt else batch


@pytest.mark.parametrize("name", ["mockingjay", "tera"])
def test_reconstruction_loss_is_the_mean_l1_over_altered_values(name):
    model, batch = model_and_batch(name)
    stack = model.encoder.stack
    with torch.no_grad():
        h = model.encoder(batch[FEATURES], batch[PADDING_MASK])["hidden"]  # (B, T', D)
        out = model.head(h)  # (B, T', stack * F)
    total, n = 0.0, 0
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            # frame t is slice t % stack of stacked step t // stack
            pred = out[b, t // stack, (t % stack) * F : (t % stack + 1) * F]
            for f in range(F):
                if batch[FRAME_MASK][b, t, f]:
                    total += abs(float(pred[f]) - float(batch[TARGETS][b, t, f]))
                    n += 1
    assert n > 0 and n == model.counts(batch)["values"]
    assert float(batch_loss(model, batch).detach()) == pytest.approx(total / n, rel=1e-5)


def test_mockingjay_scores_whole_chosen_frames_and_targets_are_the_originals():
    model, batch = model_and_batch("mockingjay")
    mask = batch[FRAME_MASK]
    assert torch.equal(mask, mask[:, :, :1].expand_as(mask))  # all channels of a chosen frame
    assert not mask[batch[PADDING_MASK]].any()
    changed = (batch[FEATURES] != batch[TARGETS]).any(-1)
    assert not (changed & ~mask[:, :, 0]).any()  # only chosen frames were altered


def test_tera_frequency_alone_scores_one_band_of_every_real_frame():
    from selfsup.objectives.tera import TERAConfig, tera_corrupt

    g = torch.Generator().manual_seed(1)
    batch = collate_frames([torch.randn(n, 40, generator=g).numpy() for n in LENGTHS])
    cfg = TERAConfig(time=False, noise=False, max_width_ratio=0.5)
    out = tera_corrupt(cfg, 1, batch, torch.Generator().manual_seed(3))
    real = ~batch[PADDING_MASK]
    for b in range(len(LENGTHS)):
        band = out[FRAME_MASK][b][real[b]]  # (T_b, F): the same channels on every real frame
        assert torch.equal(band, band[:1].expand_as(band))
        channels = band[0].nonzero().flatten().tolist()
        assert channels == list(range(channels[0], channels[0] + len(channels))) if channels else 1
        assert len(channels) <= 20
        assert (out[FEATURES][b][real[b]][:, band[0]] == 0).all()
    assert not out[FRAME_MASK][batch[PADDING_MASK]].any()


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
def test_apc_loss_is_the_l1_to_the_frame_n_ahead(arch):
    extra = {} if arch == "transformer" else {"arch": arch}
    model, batch = model_and_batch("apc", stack=1, causal=True, **extra)
    n = model.cfg.shift
    with torch.no_grad():
        pred = model.head(model.encoder(batch[FEATURES], batch[PADDING_MASK])["hidden"])
    total, count = 0.0, 0
    for b, length in enumerate(LENGTHS):
        for t in range(length - n):
            total += float((pred[b, t] - batch[FEATURES][b, t + n]).abs().sum())
            count += F
    assert count == model.counts(batch)["values"]
    assert float(batch_loss(model, batch).detach()) == pytest.approx(total / count, rel=1e-5)


def test_apc_refuses_a_model_that_sees_the_future():
    from selfsup.errors import ConfigError

    cfg = AudioConfig(feature_dim=F, dim=16, n_layers=1, n_heads=2, ffn_dim=32, stack=1)
    with pytest.raises(ConfigError, match="causal"):
        build_objective(get_objective("apc").Config(), cfg)


def test_corruption_is_seeded():
    model, _ = model_and_batch("tera")
    g = torch.Generator().manual_seed(1)
    batch = collate_frames([torch.randn(n, F, generator=g).numpy() for n in LENGTHS])
    corrupt = model.audio_needs().corrupt
    a = corrupt(batch, torch.Generator().manual_seed(5))
    b = corrupt(batch, torch.Generator().manual_seed(5))
    c = corrupt(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a[FEATURES], b[FEATURES]) and torch.equal(a[FRAME_MASK], b[FRAME_MASK])
    assert not torch.equal(a[FRAME_MASK], c[FRAME_MASK])
