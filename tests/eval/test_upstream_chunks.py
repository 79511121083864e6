"""Upstreams on clips longer than a run's model reads at once: encoded in consecutive windows of
max_len * stack frames, equal to encoding each window alone; clips that fit are encoded exactly
as before; `selfsup embed` on a long file from the CLI (its run's trimming applied)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import cli, write_speech

from selfsup.data.features import FeatureConfig, compute_features
from selfsup.encoders.audio import AudioConfig, build_audio_encoder
from selfsup.eval.upstream import RunUpstream, load_upstream

F, STACK, MAX_LEN = 6, 3, 8  # the model reads at most 8 stacked frames: 24 frames


def tiny_upstream(causal: bool = False, arch: str = "transformer", stats=None) -> RunUpstream:
    torch.manual_seed(0)
    stack = STACK if arch == "transformer" else 1
    cfg = AudioConfig(feature_dim=F, stack=stack, arch=arch, dim=16, n_layers=2, n_heads=2,
                      ffn_dim=32, max_len=MAX_LEN, dropout=0.0, attn_dropout=0.0,
                      causal=causal)  # fmt: skip
    return RunUpstream(build_audio_encoder(cfg), FeatureConfig(), stats, "tiny")


def batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), F, generator=g)
    pad = torch.arange(max(lengths))[None] >= torch.tensor(lengths)[:, None]
    return x.masked_fill(pad[..., None], 0.0), pad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [25, 61, 72])  # just over, a partial last window, exact windows
def test_a_long_clip_is_encoded_window_by_window(causal, T):
    up = tiny_upstream(causal)
    W = MAX_LEN * STACK
    assert up.window == W
    x, pad = batch([T])
    with pytest.raises(ValueError, match="max_len"):  # what the encoder alone does
        up.encoder(x, pad)
    with torch.no_grad():
        out = up(x, pad)
        windows = [up.encoder(x[:, s : s + W], pad[:, s : s + W], return_all=True)
                   for s in range(0, T, W)]  # fmt: skip
    assert out["padding_mask"].shape == (1, -(-T // STACK)) and not out["padding_mask"].any()
    assert len(out["all_hidden"]) == up.n_layers
    for layer, h in enumerate(out["all_hidden"]):
        assert h.shape == (1, -(-T // STACK), 16)
        expected = torch.cat([w["all_hidden"][layer] for w in windows], dim=1)
        torch.testing.assert_close(h, expected, rtol=0, atol=0)


def test_clips_of_several_lengths_in_one_batch():
    """Each example equals itself encoded alone; an example with no frames in a later window
    gets zeros marked as padding there (never NaN)."""
    up = tiny_upstream()
    lengths = [70, 20, 50, 3]
    x, pad = batch(lengths)
    with torch.no_grad():
        out = up(x, pad)
        alone = [up(x[i : i + 1, :n], pad[i : i + 1, :n]) for i, n in enumerate(lengths)]
    T = -(-70 // STACK)
    assert out["padding_mask"].shape == (4, T)
    for i, n in enumerate(lengths):
        real = -(-n // STACK)
        assert not out["padding_mask"][i, :real].any() and out["padding_mask"][i, real:].all()
        for h, a in zip(out["all_hidden"], alone[i]["all_hidden"], strict=True):
            torch.testing.assert_close(h[i, :real], a[0], rtol=1e-5, atol=1e-5)
            assert torch.isfinite(h[i]).all()
    assert not out["all_hidden"][-1][1, 8:].any()  # clip 1 has no frames in windows 2 and 3


def test_a_clip_that_fits_is_encoded_as_before():
    mean, std = np.linspace(-1, 1, F, dtype=np.float32), np.full(F, 2.0, np.float32)
    up = tiny_upstream(stats=(mean, std))
    x, pad = batch([24, 17])
    with torch.no_grad():
        out = up(x, pad)
        z = ((x - torch.from_numpy(mean)) / torch.from_numpy(std)).masked_fill(pad[..., None], 0)
        ref = up.encoder(z, pad, return_all=True)
    assert torch.equal(out["padding_mask"], ref["padding_mask"])
    for h, r in zip(out["all_hidden"], ref["all_hidden"], strict=True):
        assert torch.equal(h, r)


def test_a_recurrent_run_reads_any_length_in_one_pass():
    up = tiny_upstream(arch="gru")
    assert up.window is None
    x, pad = batch([100])
    with torch.no_grad():
        out = up(x, pad)
        ref = up.encoder(x, pad, return_all=True)
    assert out["all_hidden"][-1].shape == (1, 100, 16)
    assert torch.equal(out["all_hidden"][-1], ref["all_hidden"][-1])


@pytest.fixture(scope="module")
def short_context_run(tmp_path_factory):
    """A tiny Mockingjay run that reads at most 20 stacked frames (60 frames, 0.6 s) and trims
    silence below 30 dB."""
    from selfsup.presets import preset
    from selfsup.pretraining import pretrain

    root = tmp_path_factory.mktemp("short")
    cfg = preset("tiny", "audio")
    cfg.data.paths = [str(write_speech(root / "clips", n=8))]
    cfg.data.cache_dir = str(root / "cache")
    cfg.data.max_frames, cfg.data.heldout_every = 60, 4
    cfg.data.features.trim_db = 30.0
    cfg.model.max_len = 20
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = 1, 4, 0
    cfg.validate()
    pretrain(cfg, root / "run", progress=False, log=lambda _: None)
    return root / "run"


def test_embed_a_long_file_from_the_cli(short_context_run, tmp_path, capsys):
    run = short_context_run
    assert json.loads((run / "config.json").read_text())["data"]["features"]["trim_db"] == 30.0
    upstream = load_upstream(str(run))
    assert upstream.features.trim_db == 30.0 and upstream.window == 60
    folder = tmp_path / "long"
    folder.mkdir()
    rate = 16000
    t = np.arange(3 * rate) / rate
    tone = 0.4 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)]).astype(np.float32)
    sf.write(folder / "long.wav", wave, rate)
    sf.write(folder / "short.wav", tone[: rate // 2].astype(np.float32), rate)
    n_frames = len(compute_features(wave, upstream.features))  # trimmed: about 300, not 400
    assert 300 <= n_frames < 320 and n_frames > upstream.window
    code, _, err = cli(capsys, "embed", run, "--input", folder, "--out", tmp_path / "f.npz",
                       "--pooling", "frames", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    z = np.load(tmp_path / "f.npz", allow_pickle=False)
    assert [p.rsplit("/", 1)[-1] for p in z["paths"]] == ["long.wav", "short.wav"]
    assert np.diff(z["offsets"]).tolist() == [-(-n_frames // 3), -(-51 // 3)]
    assert np.isfinite(z["vectors"]).all()
    code, _, err = cli(capsys, "embed", run, "--input", folder, "--out", tmp_path / "m.npy",
                       "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    mean = np.load(tmp_path / "m.npy", allow_pickle=False)
    o = z["offsets"]
    np.testing.assert_allclose(mean[0], z["vectors"][o[0] : o[1]].mean(0), atol=1e-5)
    np.testing.assert_allclose(mean[1], z["vectors"][o[1] : o[2]].mean(0), atol=1e-5)
