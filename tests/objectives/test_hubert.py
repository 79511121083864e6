"""HuBERT (arXiv:2106.07447): labels resampled from 100 Hz MFCC frames to the encoder's 50 Hz
frames by the nearest centre, crops that start on a frame and carry their labels, the loss
equal to the paper's formula on a small batch, the paper's defaults, exact resume, two
processes equal to one, and one-line errors for labels that do not fit the audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_clean_error, cli, write_speech

from selfsup.cluster_audio import cluster_audio
from selfsup.data.audio import collate_frames
from selfsup.data.audio_batches import AudioBatches, FrameTargets, load_frames
from selfsup.data.frame_labels import (
    COUNT_TOLERANCE,
    FrameGeometry,
    check_count,
    resample_labels,
)
from selfsup.encoders.wav2vec2 import Wav2Vec2Config
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, IGNORE, PADDING_MASK, TARGETS, TIME_MASK
from selfsup.layers.conv_frontend import conv_output_lengths
from selfsup.objectives import build_objective
from selfsup.objectives.base import batch_loss
from selfsup.objectives.hubert import HuBERT, HuBERTConfig, model_geometry
from selfsup.presets import preset
from selfsup.pretraining import pretrain

MFCC = FrameGeometry(16000, 160, 0.0)  # 100 Hz, centred windows
MODEL = model_geometry(Wav2Vec2Config(), 16000)  # 50 Hz: 320 samples a frame, 400 read
# A tiny waveform model for the runs (the conv front end keeps wav2vec 2.0's strides)
TINY = ["model.conv_channels=16,16,16,16,16,16,16", "model.dim=32", "model.n_heads=2",
        "model.ffn_dim=64", "model.pos_conv_kernel=16", "model.pos_conv_groups=4",
        "objective.final_dim=16", "data.max_frames=9600", "data.heldout_every=6"]  # fmt: skip
TIMING = {"frames_per_s", "data_share", "elapsed_s"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_speech(tmp_path_factory.mktemp("hubert") / "clips", n=12)


@pytest.fixture(scope="module")
def labels(clips) -> Path:
    out = clips.parent / "labels"
    cluster_audio("mfcc", [str(clips)], 8, out, cache_dir=str(clips.parent / "cache"),
                  log=lambda _: None)  # fmt: skip
    return out


def tiny_cfg(clips, labels, steps=4):
    from selfsup.config import apply_overrides

    cfg = preset("tiny", "audio")
    cfg.set_objective("hubert")
    apply_overrides(cfg, TINY)
    cfg.data.paths, cfg.data.labels = [str(clips)], str(labels)
    cfg.data.cache_dir = str(clips.parent / "cache")
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = steps, 4, 1
    cfg.train.eval_every, cfg.train.save_every, cfg.train.log_every = 2, 2, 1
    cfg.validate()
    return cfg


def rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# labels at the model's frames


def test_mfcc_labels_at_100_hz_become_the_centre_frames_at_50_hz():
    n_samples = 16000
    mfcc_frames = 1 + n_samples // 160  # 101 centred windows
    n = conv_output_lengths(n_samples, Wav2Vec2Config().conv_layers)  # 49 frames
    out = resample_labels(np.arange(mfcc_frames), MFCC, MODEL, n)
    # model frame j reads samples [320 j, 320 j + 400), centred on 320 j + 199.5: MFCC frame
    # 2 j + 1 (centred on 160 (2 j + 1) = 320 j + 160) is 39.5 samples away, 2 j + 2 120.5
    assert n == 49 and out.tolist() == [2 * j + 1 for j in range(n)]
    for j in range(n):  # the rule itself: the MFCC frame of nearest centre
        centre = 320 * j + 199.5
        assert out[j] == np.argmin(np.abs(160 * np.arange(mfcc_frames) - centre))


def test_resampling_is_the_identity_between_equal_frames_and_clips_at_the_ends():
    lab = np.array([4, 1, 7, 7, 2])
    assert resample_labels(lab, MODEL, MODEL, 5).tolist() == lab.tolist()
    assert resample_labels(lab, MODEL, MODEL, 7).tolist() == [4, 1, 7, 7, 2, 2, 2]  # clipped
    late = FrameGeometry(16000, 160, -80.0)  # target centres fall exactly between two frames
    ties = resample_labels(np.arange(10), late, FrameGeometry(16000, 160, 0.0), 3)
    assert ties.tolist() == [1, 2, 3]  # a tie goes to the later frame
    with pytest.raises(ConfigError, match="8000 Hz"):
        resample_labels(lab, FrameGeometry(8000, 80, 0.0), MODEL, 3)


def test_label_count_allows_two_frames_of_rounding_and_no_more():
    # 1 s at 100 Hz is 100 frames by duration; MFCC's centred windows make 101
    for n in range(100 - COUNT_TOLERANCE, 100 + COUNT_TOLERANCE + 1):
        check_count("a.wav", n, 16000, MFCC)
    for n in (100 - COUNT_TOLERANCE - 1, 100 + COUNT_TOLERANCE + 1):
        with pytest.raises(ConfigError, match=r"labels for a.wav: \d+ frames at 100 Hz"):
            check_count("a.wav", n, 16000, MFCC)


# ---------------------------------------------------------------------------------------------
# crops aligned to the label frames


def numbered_waves(lengths):
    """Clip i's sample t holds t (exact in float32 at these lengths)."""
    return [np.arange(n, dtype=np.float32)[:, None] for n in lengths]


def test_crops_and_chunks_start_on_a_frame_and_carry_that_frames_labels():
    hop, M = 320, 3200
    lengths = [2000, 4100, 5000, 6399, 7000, 9700, 3200, 12345]  # whole, crops, chunks
    waves = numbered_waves(lengths)
    labels = [1000 * i + np.arange(n // hop) for i, n in enumerate(lengths)]  # clip, frame
    targets = FrameTargets(labels, hop)
    starts = set()
    for shuffle in (True, False):
        b = AudioBatches(waves, np.arange(len(lengths)), 3, M, seed=5, shuffle=shuffle,
                         targets=targets)  # fmt: skip
        for k in range(12 if shuffle else len(b.clip) // 3):
            batch = b[k]
            x, pad, t = batch[FEATURES][..., 0], batch[PADDING_MASK], batch[TARGETS]
            for row in range(len(x)):
                first, n = int(x[row, 0]), int((~pad[row]).sum())
                assert first % hop == 0  # the crop starts on a frame
                clip = int(t[row, 0]) // 1000
                assert x[row, n - 1] == first + n - 1  # contiguous samples
                want = labels[clip][first // hop : (first + n) // hop]
                assert t[row, : len(want)].tolist() == want.tolist()
                assert (t[row, len(want) :] == IGNORE).all()
                starts.add(first)
    assert len(starts) > 5  # crops and chunk offsets do move


def test_unaligned_batches_are_those_of_before():
    """Without targets the crops are drawn as before (align 1): runs keep their batches."""
    from selfsup.data.audio import crop
    from selfsup.seeds import Stream, seed_for

    waves = numbered_waves([50, 70, 90, 130])
    b = AudioBatches(waves, np.arange(4), 1, 60, seed=2, chunk=False)
    for k in range(8):
        (i, start, n), (ex,) = b.windows(k)[0], b.examples(k)
        rng = np.random.default_rng(seed_for(2, Stream.EXAMPLE, k, 0))
        want = crop(waves[i], 60, rng) if len(waves[i]) > 60 else waves[i]
        assert np.array_equal(ex, want) and int(ex[0, 0]) == start and len(ex) == n


def tiny_model(**objective) -> HuBERT:
    shape = Wav2Vec2Config(conv_channels=(16,) * 3, conv_kernels=(10, 3, 3),
                           conv_strides=(5, 2, 2), dim=16, n_layers=2, n_heads=2, ffn_dim=32,
                           pos_conv_kernel=8, pos_conv_groups=4, dropout=0.0, attn_dropout=0.0,
                           proj_dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    return build_objective(HuBERTConfig(n_clusters=5, final_dim=8, **objective), shape)


def labelled_batch(model, lengths=(2400, 1800, 1000), seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in lengths])
    batch[TARGETS] = torch.randint(0, 5, (len(lengths), max(lengths) // 20), generator=g)
    return model.audio_needs().corrupt(batch, torch.Generator().manual_seed(seed))


def test_corruption_masks_real_frames_only_and_labels_every_real_frame():
    model = tiny_model()
    batch = labelled_batch(model)
    frames = conv_output_lengths(torch.tensor([2400, 1800, 1000]), model.encoder.conv_layers)
    T = int(frames.max())
    real = torch.arange(T)[None] < frames[:, None]  # (B, T')
    assert batch[TIME_MASK].shape == batch[TARGETS].shape == (3, T)
    assert not (batch[TIME_MASK] & ~real).any() and batch[TIME_MASK].sum(1).min() >= 10
    assert ((batch[TARGETS] != IGNORE) == real).all()
    again = labelled_batch(model)
    assert torch.equal(again[TIME_MASK], batch[TIME_MASK])  # seeded: the same mask
    assert not torch.equal(labelled_batch(model, seed=1)[TIME_MASK], batch[TIME_MASK])


def test_masking_rate_follows_the_papers_p():
    """p = 0.08 starts of 10 frames: about 1 - (1 - 0.08)^10 = 57% of a long clip (overlaps)."""
    model = tiny_model()
    batch = labelled_batch(model, lengths=(40000,) * 8)
    share = float(batch[TIME_MASK].float().mean())
    assert 0.5 < share < 0.64


# ---------------------------------------------------------------------------------------------
# the loss


@pytest.mark.parametrize("unmasked_weight", [0.0, 0.5])
def test_loss_is_the_papers_cross_entropy_over_cosine_logits(unmasked_weight):
    model = tiny_model(unmasked_weight=unmasked_weight).eval()
    batch = labelled_batch(model)
    out, counts = model(batch), model.counts(batch)
    enc = model.encoder(batch[FEATURES], batch[PADDING_MASK], mask=batch[TIME_MASK])
    a = model.final_proj(enc["hidden"])  # (B, T', 8): A o_t
    e = model.cluster_embed  # (5, 8)
    cos = (a @ e.t()) / (a.norm(dim=-1, keepdim=True) * e.norm(dim=-1))  # (B, T', C)
    logp = torch.log_softmax(cos / 0.1, dim=-1)
    labels, mask = batch[TARGETS], batch[TIME_MASK]
    lab = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T')
    real = labels != IGNORE
    top = (cos.argmax(-1) == labels) & real
    m, u = mask & real, ~mask & real
    assert counts["masked"] == int(m.sum()) and counts["unmasked"] == int(u.sum())
    torch.testing.assert_close(out["masked_loss"], -lab[m].sum(), rtol=1e-5, atol=1e-5)
    assert float(out["masked_acc"]) == float(top[m].sum())
    conv = enc["conv_features"][~enc["padding_mask"]]
    torch.testing.assert_close(out["feature_penalty"], 10 * conv.pow(2).sum())
    want = -lab[m].sum() / m.sum() + 10 * conv.pow(2).sum() / conv.numel()
    if unmasked_weight:
        torch.testing.assert_close(out["unmasked_loss"], -0.5 * lab[u].sum(), rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
        assert float(out["unmasked_acc"]) == float(top[u].sum())
        want = want - 0.5 * lab[u].sum() / u.sum()
    else:
        assert "unmasked_loss" not in out and "unmasked_loss" not in model.loss_terms
    torch.testing.assert_close(batch_loss(model, batch), want, rtol=1e-5, atol=1e-5)
    assert counts["conv_values"] == conv.numel()


def test_the_papers_defaults():
    cfg = HuBERTConfig()
    assert (cfg.mask_prob, cfg.span, cfg.temperature, cfg.unmasked_weight) == (0.08, 10, 0.1, 0)
    assert cfg.final_dim == 256 and cfg.n_clusters == 100
    run = preset("tiny", "audio")
    run.set_objective("hubert")
    assert run.model.feature_dim == 1 and run.model.conv_strides == (5, 2, 2, 2, 2, 2, 2)
    assert run.model.conv_channels == (128,) * 7  # preset_shape: as wide as the tiny model


def test_cluster_usage_monitors_the_predictions():
    model = tiny_model().eval()
    batch = labelled_batch(model)
    out = model(batch)
    with torch.no_grad():
        enc = model.encoder(batch[FEATURES], batch[PADDING_MASK], mask=batch[TIME_MASK])
        a = F.normalize(model.final_proj(enc["hidden"][batch[TIME_MASK]]), dim=-1)
        pred = (a @ F.normalize(model.cluster_embed, dim=-1).t()).argmax(-1)
    counts = torch.bincount(pred, minlength=5)
    assert float(out["cluster_used_fraction"]) == pytest.approx(float((counts > 0).sum()) / 5)
    assert float(out["cluster_max_share"]) == pytest.approx(float(counts.max() / counts.sum()))


# ---------------------------------------------------------------------------------------------
# runs


def test_pretrain_takes_k_from_the_labels_and_resumes_exactly(clips, labels, tmp_path):
    import selfsup.pretraining as recipe

    quiet = lambda _: None  # noqa: E731
    summary = pretrain(tiny_cfg(clips, labels), tmp_path / "a", progress=False, log=quiet)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["objective"]["n_clusters"] == 8 and saved["data"]["labels"] == str(labels)
    assert np.isfinite(summary["eval_masked_loss"]) and "eval_cluster_used_fraction" in summary
    real_train = recipe.train

    def stop_early(*args, **kwargs):
        return real_train(*args, **kwargs, stop_after=2)

    recipe.train = stop_early
    try:
        pretrain(tiny_cfg(clips, labels), tmp_path / "b", progress=False, log=quiet)
    finally:
        recipe.train = real_train
    assert not (tmp_path / "b" / "model.safetensors").exists()
    pretrain(None, tmp_path / "b", resume=True, progress=False, log=quiet)
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))


def test_two_processes_train_like_one(clips, labels, tmp_path):
    """The same global batches split over two gloo ranks: the same losses, accuracies and
    held-out metrics. The per-batch cluster-usage monitors of training rows are each rank's
    share's, averaged (usage is not a sum over frames), so they are left out there."""
    import torch.distributed as dist
    from test_distributed import _selfsup, assert_same_rows

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("no gloo backend")
    args = ["pretrain", "--objective", "hubert", "--labels", str(labels), "--data", str(clips),
            "--batch-size", "4", "--steps", "3", "--save-every", "0", "--eval-every", "3",
            "--seed", "3", "--set", "train.log_every=1", "train.warmup_steps=1", *TINY,
            "--cache-dir", str(clips.parent / "cache"), "--no-progress"]  # fmt: skip
    load_frames(tiny_cfg(clips, labels).data, log=lambda _: None)  # the wave cache, here
    _selfsup(1, *args, "--out", str(tmp_path / "one"))
    out = _selfsup(2, *args, "--out", str(tmp_path / "two"))
    assert "2 processes" in out
    monitors = {"cluster_used_fraction", "cluster_max_share"}
    one, two = ([{k: v for k, v in r.items() if k not in monitors} for r in rows(tmp_path / d)]
                for d in ("one", "two"))  # fmt: skip
    assert_same_rows(one, two)  # the held-out rows in full: every rank evaluates every batch
    assert any("eval_cluster_max_share" in r for r in two)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no run folder


def pretrain_args(clips, labels, out, *extra):
    return ["pretrain", "--objective", "hubert", "--data", clips, "--labels", labels,
            "--steps", "2", "--batch-size", "4", "--out", out, "--no-progress",
            "--cache-dir", clips.parent / "cache", "--set", *TINY, *extra]  # fmt: skip


def test_labels_that_do_not_fit_the_audio_are_one_line_errors(clips, labels, tmp_path, capsys):
    short = tmp_path / "short"
    shutil.copytree(labels, short)
    lines = (short / "labels.tsv").read_text().splitlines()
    path, values = lines[3].split("\t")
    lines[3] = path + "\t" + " ".join(values.split()[:-4])  # 4 frames short: beyond 2
    (short / "labels.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code, _, err = cli(capsys, *pretrain_args(clips, short, out))
    assert_clean_error(code, err, out, "labels for ")
    assert Path(path).name in err and "(+-2)" in err

    new = write_speech(tmp_path / "new", n=1, seed=9)  # a file the labels do not know
    code, _, err = cli(capsys, *pretrain_args(clips, labels, out, "--data", new))
    assert_clean_error(code, err, out, "have no line for audio file")
    assert "0_s0_0.wav" in err and str(new) in err


@pytest.mark.parametrize(
    "change, says",
    [
        (None, "give --labels"),
        ("not-a-folder", "is not a labels folder"),
        ("coarse", "are coarser than the model's 50 Hz frames"),
        ("data.max_frames=9000", "must be a multiple of the model's 320 samples"),
        ("data.features.trim_db=30", "were made with trim_db 0"),
    ],
)
def test_bad_hubert_settings_are_one_line_errors(clips, labels, tmp_path, capsys, change, says):
    out, extra = tmp_path / "run", []
    given = labels
    if change == "not-a-folder":
        given = clips
    elif change == "coarse":
        given = tmp_path / "coarse"
        shutil.copytree(labels, given)
        info = json.loads((given / "labels.json").read_text())
        (given / "labels.json").write_text(json.dumps({**info, "hop": 640}))
    elif change is not None:
        extra = ["--set", change]
    args = pretrain_args(clips, given, out, *extra)
    if change is None:
        i = args.index("--labels")
        del args[i : i + 2]
    code, _, err = cli(capsys, *args)
    assert_clean_error(code, err, out, says)


def test_labels_are_refused_by_other_objectives(clips, labels, tmp_path, capsys):
    code, _, err = cli(capsys, "pretrain", "--objective", "mockingjay", "--data", clips,
                       "--labels", labels, "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "run", "--labels does not apply")
