"""Audio pretraining through `selfsup pretrain`: the same recipe, loop, checkpoints and exact
resume as text, one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import cli, write_speech

from selfsup.config import RunConfig
from selfsup.data.audio_batches import AudioDataConfig
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
    import selfsup.pretraining as recipe

    quiet = lambda _: None  # noqa: E731
    pretrain(audio_cfg(speech, "tera"), tmp_path / "a", progress=False, log=quiet)
    real_train = recipe.train

    def stop_early(*args, **kwargs):
        return real_train(*args, **kwargs, stop_after=4)

    recipe.train = stop_early
    try:
        pretrain(audio_cfg(speech, "tera"), tmp_path / "b", progress=False, log=quiet)
    finally:
        recipe.train = real_train
    assert not (tmp_path / "b" / "model.safetensors").exists()
    pretrain(None, tmp_path / "b", resume=True, progress=False, log=quiet)
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "mockingjay", "--max-len", "64"], "--max-len does not apply"),
        (["--modality", "audio", "--objective", "mlm"], "mlm is a text objective"),
        (["--objective", "mockingjay", "--preset", "medium"], "unknown preset 'medium' for audio"),
        (["--objective", "apc", "--set", "model.causal=false"], "causal"),
        (["--objective", "mockingjay", "--set", "data.features.kind=wav"], "kind"),
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
