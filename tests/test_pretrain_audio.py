"""Audio pretraining through `selfsup pretrain`: the same recipe, loop, checkpoints and exact
resume as text, one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import cli, pretrain_straight_and_resumed, write_speech

from selfsup.config import RunConfig
from selfsup.data.audio_batches import AudioBatches, AudioDataConfig
from selfsup.encoders.audio import AudioConfig
from selfsup.keys import FEATURES, PADDING_MASK
from selfsup.presets import preset
from selfsup.pretraining import pretrain


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips")


def audio_cfg(speech, objective="mockingjay", steps=6, **train) -> RunConfig:
    cfg = preset("tiny", "audio")
    if objective != cfg.objective.name:
        cfg.set_objective(objective)
    cfg.data.paths = [str(speech)]
    cfg.data.cache_dir = str(speech.parent / "cache")
    cfg.data.max_frames = 60
    cfg.data.heldout_every = 6
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = steps, 4, 1
    cfg.train.eval_every, cfg.train.save_every, cfg.train.log_every = 3, 3, 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    cfg.validate()
    return cfg


def rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


TIMING = {"frames_per_s", "data_share", "elapsed_s"}


@pytest.mark.parametrize("objective", ["mockingjay", "tera", "apc"])
def test_pretrain_writes_a_run(speech, tmp_path, objective):
    out = tmp_path / "run"
    summary = pretrain(audio_cfg(speech, objective), out, progress=False, log=lambda _: None)
    saved = json.loads((out / "config.json").read_text())
    assert saved["objective"]["name"] == objective
    assert saved["model"]["feature_dim"] == 80 and saved["data"]["features"]["n_mels"] == 80
    assert (out / "model.safetensors").exists()
    assert summary["clips"] == 24 and summary["heldout_clips"] == 4
    assert 0 < summary["eval_loss"] < float("inf")
    cfg = RunConfig.from_dict(saved)  # round trip: the nested feature section too
    assert isinstance(cfg.data, AudioDataConfig) and isinstance(cfg.model, AudioConfig)
    assert cfg.data.features == audio_cfg(speech, objective).data.features


def test_batches_are_a_function_of_seed_and_index(speech):
    from selfsup.pretraining_audio import prepare_audio

    cfg = audio_cfg(speech)
    a = prepare_audio(cfg, speech.parent / "unused", False, "utf-8", lambda _: None).batches
    b = prepare_audio(cfg, speech.parent / "unused", False, "utf-8", lambda _: None).batches
    for k in (0, 3, 11, 40):  # 40: a later epoch
        x, y = a[k], b[k]
        assert torch.equal(x[FEATURES], y[FEATURES]) and torch.equal(
            x[PADDING_MASK], y[PADDING_MASK]
        )
    assert not torch.equal(a[0][FEATURES][:, :10], a[1][FEATURES][:, :10])


def test_interrupted_run_resumes_exactly(speech, tmp_path):
    """A run stopped after its step-3 checkpoint and resumed equals one uninterrupted run."""
    pretrain_straight_and_resumed(
        lambda: audio_cfg(speech, "tera"), tmp_path / "a", tmp_path / "b", 4
    )
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))


def test_cli_pretrain_audio(speech, tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, err = cli(
        capsys, "pretrain", "--objective", "apc", "--data", speech, "--steps", "4",
        "--batch-size", "4", "--cache-dir", tmp_path / "cache", "--out", out, "--no-progress",
        "--set", "data.max_frames=50", "--set", "model.arch=gru",
    )  # fmt: skip
    assert code == 0, err
    assert "24 clips" in stdout and "objective apc" in stdout
    assert json.loads((out / "config.json").read_text())["model"]["arch"] == "gru"


# long clips: consecutive chunks


def numbered_clips(lengths, dim=2):
    """Clip i's frame t holds (i, t), so an example says where it was cut from."""
    return [np.stack([np.full(n, i), np.arange(n)], axis=1).astype(np.float32)[:, :dim]
            for i, n in enumerate(lengths)]  # fmt: skip


def epoch_examples(batches, epoch):
    return [e for j in range(len(batches)) for e in batches.examples(epoch * len(batches) + j)]


def test_long_clips_are_cut_into_consecutive_chunks():
    M = 50
    lengths = [30, 70, 260, 100, 99]  # whole, one crop, 5 chunks (10 left over), 2, one crop
    frames = numbered_clips(lengths)
    b = AudioBatches(frames, np.arange(5), 1, M, seed=3)
    assert len(b) == 1 + 1 + 5 + 2 + 1 and (b.chunked_clips, b.chunks) == (2, 7)
    offsets = {}
    for epoch in range(12):
        by_clip: dict[int, list] = {}
        for e in epoch_examples(b, epoch):
            i, t = int(e[0, 0]), e[:, 1].astype(int)
            assert (e[:, 0] == i).all() and (np.diff(t) == 1).all()  # a contiguous window
            by_clip.setdefault(i, []).append(t)
        assert sorted(by_clip) == [0, 1, 2, 3, 4]
        assert [len(by_clip[i]) for i in range(5)] == [1, 1, 5, 2, 1]  # every example once
        assert len(by_clip[0][0]) == 30 and all(len(t) == M for i in (1, 2, 3, 4)
                                                for t in by_clip[i])  # fmt: skip
        for i in (2, 3):  # chunks tile [offset, offset + count * M) without overlap
            starts = sorted(int(t[0]) for t in by_clip[i])
            assert np.diff(starts).tolist() == [M] * (len(starts) - 1)
            offsets.setdefault(i, set()).add(starts[0])
    assert offsets[3] == {0} and len(offsets[2]) > 3 and offsets[2] <= set(range(11))
    # a pure function of (seed, k): another instance (a resumed run) cuts the same way
    again = AudioBatches(frames, np.arange(5), 1, M, seed=3)
    for k in (0, 7, 25, 61):
        assert all(np.array_equal(x, y) for x, y in zip(b.examples(k), again.examples(k),
                                                         strict=True))  # fmt: skip
    # held out: read from the start, every chunk at offset 0
    held = AudioBatches(frames, np.arange(5), 32, M, seed=3, shuffle=False)
    ((*cut,),) = [held.examples(0)]
    starts = [(int(e[0, 0]), int(e[0, 1]), len(e)) for e in cut]
    assert starts == [(0, 0, 30), (1, 0, 50), *[(2, s, 50) for s in range(0, 250, 50)],
                      (3, 0, 50), (3, 50, 50), (4, 0, 50)]  # fmt: skip


def test_clips_shorter_than_two_crops_keep_their_batches():
    """Chunking changes nothing for clips under 2 * max_frames: the same batches as one crop
    per clip ("crop", the behaviour before chunking)."""
    frames = numbered_clips([30, 70, 99, 45, 50, 12, 88, 64])
    chunked = AudioBatches(frames, np.arange(8), 2, 50, seed=1)
    cropped = AudioBatches(frames, np.arange(8), 2, 50, seed=1, chunk=False)
    assert len(chunked) == len(cropped) == 4
    for k in range(12):
        for x, y in zip(chunked.examples(k), cropped.examples(k), strict=True):
            assert np.array_equal(x, y)
    long = numbered_clips([30, 70, 260])
    assert len(AudioBatches(long, np.arange(3), 1, 50, seed=1, chunk=False)) == 3


def test_pretraining_chunks_long_clips_and_says_so(speech, tmp_path, capsys):
    from selfsup.pretraining_audio import prepare_audio

    cfg = audio_cfg(speech, "tera", steps=2)
    cfg.data.max_frames = 30
    logs = []
    summary = pretrain(cfg, tmp_path / "a", progress=False, log=logs.append)
    s = prepare_audio(cfg, tmp_path / "unused", False, "utf-8", lambda _: None).stats
    assert s["chunked_clips"] > 0 and s["train_examples"] > s["train_clips"]
    assert summary["chunks"] == s["chunks"]
    line = (f"{s['chunked_clips']} long training clips cut into {s['chunks']} chunks, "
            f"{s['train_examples']} examples an epoch")  # fmt: skip
    assert any(r.startswith("data: ") and r.endswith(line) for r in logs), logs
    code, out, err = cli(capsys, "pretrain", "--objective", "tera", "--data", speech, "--steps",
                         "2", "--batch-size", "4", "--cache-dir", tmp_path / "cache",
                         "--no-progress", "--set", "data.max_frames=30", "--set",
                         "data.long_clips=crop", "--out", tmp_path / "b")  # fmt: skip
    assert code == 0, err
    assert "long training clips" not in out and "crops of up to 30 frames\n" in out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["long_clips"] == "crop"


def test_audio_runs_written_before_chunking_keep_one_crop_per_clip(speech):
    d = audio_cfg(speech).to_dict()
    assert d["data"]["long_clips"] == "chunk"
    del d["data"]["long_clips"]  # a config.json from before data.long_clips
    assert RunConfig.from_dict(d).data.long_clips == "crop"
    assert RunConfig.from_dict(audio_cfg(speech).to_dict()).data.long_clips == "chunk"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "mockingjay", "--max-len", "64"], "--max-len does not apply"),
        (["--modality", "audio", "--objective", "mlm"], "mlm is a text objective"),
        (["--objective", "mockingjay", "--preset", "medium"], "unknown preset 'medium' for audio"),
        (["--objective", "apc", "--set", "model.causal=false"], "causal"),
        (["--objective", "mockingjay", "--set", "data.features.kind=wav"], "kind"),
        (["--objective", "tera", "--set", "data.features.trim_db=-30"], "trim_db"),
        (["--objective", "tera", "--set", "data.features.trim_db=loud"], "trim_db"),
        (["--objective", "tera", "--set", "data.long_clips=split"], "data.long_clips"),
    ],
)
def test_bad_audio_settings_are_one_line_errors(speech, tmp_path, capsys, args, message):
    code, _, err = cli(capsys, "pretrain", "--data", speech, "--out", tmp_path / "r", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_empty_folder_and_non_audio_file_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "pretrain", "--objective", "tera", "--data", tmp_path / "empty",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    bad = tmp_path / "bad"
    write_speech(bad, n=6)
    (bad / "notes.wav").write_text("not audio at all")
    code, _, err = cli(capsys, "pretrain", "--objective", "tera", "--data", bad, "--out",
                       tmp_path / "r", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 2 and "notes.wav" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_inspect_masking_reports_realised_frame_statistics(speech, tmp_path, capsys):
    code, out, err = cli(
        capsys, "inspect-masking", "--objective", "tera", "--data", speech, "--batches", "30",
        "--batch-size", "8", "--cache-dir", tmp_path / "cache", "--json",
        "--set", "objective.max_width_ratio=0.5",
    )  # fmt: skip
    assert code == 0, err
    stats = json.loads(out)
    assert abs(stats["time_masked_rate"] - 0.15) < 0.05
    assert set(stats["run_lengths"]) <= {str(21 * n) for n in range(1, 10)}  # spans of 7 x 3
    assert stats["zeroed_share"] > stats["random_share"] and stats["zeroed_share"] > 0.6
    assert 4 < stats["mean_band_channels"] < 36  # uniform in 0..40 channels, among banded
    assert 0 < stats["noised_utterances"] < 0.3


@pytest.fixture(scope="module")
def mockingjay_run(speech, tmp_path_factory):
    out = tmp_path_factory.mktemp("mj") / "run"
    pretrain(audio_cfg(speech, "mockingjay"), out, progress=False, log=lambda _: None)
    return out


def test_run_keeps_its_global_cmvn_statistics(mockingjay_run):
    stats = json.loads((mockingjay_run / "feature_stats.json").read_text())
    assert len(stats["mean"]) == len(stats["std"]) == 80 and min(stats["std"]) > 0


def test_embed_audio_files(mockingjay_run, speech, tmp_path, capsys):
    import numpy as np

    code, out, err = cli(capsys, "embed", mockingjay_run, "--input", speech, "--out",
                         tmp_path / "v.npz", "--pooling", "frames", "--cache-dir",
                         tmp_path / "c")  # fmt: skip
    assert code == 0, err
    z = np.load(tmp_path / "v.npz", allow_pickle=False)
    assert len(z["paths"]) == 24 and z["offsets"][-1] == len(z["vectors"])
    assert z["vectors"].shape[1] == 128
    # mean pooling, one batch per file, equals the mean of the frames of padded batches
    code, _, err = cli(capsys, "embed", mockingjay_run, "--input", speech, "--out",
                       tmp_path / "m.npy", "--batch-size", "1",
                       "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    mean = np.load(tmp_path / "m.npy", allow_pickle=False)
    offsets = z["offsets"]
    frames = [z["vectors"][a:b].mean(0) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    np.testing.assert_allclose(mean, np.stack(frames), atol=1e-5)
    code, _, err = cli(capsys, "embed", mockingjay_run, "--input", speech, "--out",
                       tmp_path / "f.npy", "--pooling", "frames")  # fmt: skip
    assert code == 2 and ".npz" in err and not (tmp_path / "f.npy").exists()


def test_superb_cli_on_a_users_labelled_folder(mockingjay_run, speech, tmp_path, capsys):
    code, out, err = cli(
        capsys, "superb", "fbank", mockingjay_run, "--task", "classify", "--data", speech,
        "--pattern", "{label}_{speaker}_{index}", "--seeds", "1", "--epochs", "3",
        "--lrs", "1e-3", "--cache-dir", tmp_path / "c", "--out", tmp_path / "sb",
    )  # fmt: skip
    assert code == 0, err
    table = out.strip().splitlines()[-4:]
    assert table[0].startswith("| upstream | classify acc %")
    assert table[2].startswith("| fbank |") and table[3].startswith(f"| {mockingjay_run} |")
    assert len(list((tmp_path / "sb").glob("*/superb.json"))) == 2
    code, _, err = cli(capsys, "superb", "fbank", "--task", "asr")
    assert code == 2 and "asr" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["export", "--format", "hf", "--out", "x"],
                                     ["fill-mask", "hello [MASK]"]])  # fmt: skip
def test_text_commands_on_a_speech_run_are_one_line_errors(mockingjay_run, capsys, command):
    code, _, err = cli(capsys, command[0], mockingjay_run, *command[1:])
    assert code == 2 and "speech" in err and len(err.strip().splitlines()) == 1, err
