"""HuggingFace wav2vec 2.0 / HuBERT folders as selfsup upstreams (`superb`, `embed`,
`finetune --task audio-classify`), the frame geometry of waveform upstreams (pr frame labels,
embed's frame times, long inputs in windows), `selfsup export RUN --format hf` for a run with a
Wav2Vec2Encoder, and one-line errors for folders that are no speech model.

The HF folders are tiny random models saved here with save_pretrained and a
preprocessor_config.json: three conv layers of 32 channels (kernels 10, 3, 3; strides 5, 2, 2:
a frame every 20 samples, each reading 40), width 32, 2 layers, 2 heads, weights perturbed so
zero biases and unit norms hide no mapping bug. Audio: synthetic tones at 16 kHz (so no
resampler sits between transformers and us).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import assert_clean_error, cli, perturb, write_speech

from selfsup.data.features import FeatureConfig
from selfsup.encoders.wav2vec2 import Wav2Vec2Config, build_wav2vec2
from selfsup.errors import ConfigError
from selfsup.eval import superb
from selfsup.eval.upstream import RunUpstream, load_upstream
from selfsup.keys import IGNORE
from selfsup.layers.conv_frontend import WAV2VEC2_CONV_LAYERS, conv_output_lengths

transformers = pytest.importorskip("transformers")

PATTERN = "{digit}_{label}_{index}"  # write_speech's middle field: the pitch, learnable
TINY = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
STRIDE, FIELD = 20, 40  # of TINY's front end: samples per frame, samples a frame reads
# name -> (transformers class, config class, config changes, do_normalize)
LAYOUTS = {
    "base": ("Wav2Vec2Model", "Wav2Vec2Config", {}, True),  # GroupNorm front end, post-LN
    "stable": ("Wav2Vec2Model", "Wav2Vec2Config",
               {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True},
               False),
    "hubert": ("HubertModel", "HubertConfig", {}, True),
}  # fmt: skip


def save_hf(folder, layout: str, seed: int = 0):
    """A tiny random transformers model of `layout` saved in `folder`; returns it (eval)."""
    model_cls, cfg_cls, changes, normalize = LAYOUTS[layout]
    cfg = getattr(transformers, cfg_cls)(**{**TINY, **changes})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    perturb(model, seed)
    model.eval().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=normalize, return_attention_mask=changes.get("feat_extract_norm") == "layer"
    ).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """{layout: (folder, transformers model)}."""
    root = tmp_path_factory.mktemp("hf")
    return {name: (root / name, save_hf(root / name, name)) for name in LAYOUTS}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=24, rates=(16000,))


def hf_states(folder, model, path) -> tuple:
    """transformers' hidden states of one file, its feature extractor normalising it."""
    wave, rate = sf.read(path, dtype="float32")
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    x = fe(wave, sampling_rate=rate, return_tensors="pt").input_values
    with torch.no_grad():
        return model(x, output_hidden_states=True).hidden_states


# --------------------------------------------------------------------------------------------
# superb, embed, finetune on HF folders


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_superb_classify_on_an_hf_folder(layout, hf, clips, tmp_path, capsys, one_thread):
    folder, model = hf[layout]
    code, out, err = cli(capsys, "superb", folder, "--tasks", "classify", "--data", clips,
                         "--pattern", PATTERN, "--seeds", "1", "--epochs", "2", "--lrs", "1e-2",
                         "--cache-dir", tmp_path / "c", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])[str(folder)]
    n_hidden = len(hf_states(folder, model, next(clips.glob("*.wav"))))
    assert report["n_layers"] == n_hidden == 3 and report["dim"] == 32
    assert len(report["tasks"]["classify"]["layer_weights"]) == n_hidden
    assert (report["frame_stride_samples"], report["frame_offset_samples"]) == (20, 20.0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_embed_equals_transformers_mean_hidden_states(layout, hf, clips, tmp_path, capsys):
    """Mean pooling of layer 1 (and of the last with frames) equals transformers' hidden states
    of each file alone, normalised by its own feature extractor; --batch-size 5 pads clips of
    different lengths together, which a GroupNorm front end must not notice."""
    folder, model = hf[layout]
    files = sorted(clips.glob("*.wav"))
    code, _, err = cli(capsys, "embed", folder, "--input", clips, "--out", tmp_path / "v.npy",
                       "--layer", "1", "--batch-size", "5",
                       "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    vectors = np.load(tmp_path / "v.npy", allow_pickle=False)
    assert vectors.shape == (len(files), 32)
    code, _, err = cli(capsys, "embed", folder, "--input", clips, "--out", tmp_path / "f.npz",
                       "--pooling", "frames", "--batch-size", "5", "--cache-dir",
                       tmp_path / "c")  # fmt: skip
    assert code == 0, err
    z = np.load(tmp_path / "f.npz", allow_pickle=False)
    assert [p.rsplit("/", 1)[-1] for p in z["paths"]] == [f.name for f in files]
    for i, f in enumerate(files):
        theirs = hf_states(folder, model, f)
        np.testing.assert_allclose(vectors[i], theirs[1][0].mean(0).numpy(), atol=2e-5)
        frames = z["vectors"][z["offsets"][i] : z["offsets"][i + 1]]
        np.testing.assert_allclose(frames, theirs[-1][0].numpy(), atol=2e-5)
        t = np.arange(len(frames))
        np.testing.assert_allclose(z["times"][z["offsets"][i] : z["offsets"][i + 1]],
                                   (t * STRIDE + FIELD / 2) / 16000)  # fmt: skip


def test_random_hf_upstream_is_seeded_and_not_the_weights(hf):
    folder, _ = hf["base"]
    x, pad = torch.randn(1, 400, 1), torch.zeros(1, 400, dtype=torch.bool)
    with torch.no_grad():
        a, b = (load_upstream(f"random:{folder}", seed=s)(x, pad) for s in (0, 0))
        c = load_upstream(f"random:{folder}", seed=1)(x, pad)
        trained = load_upstream(str(folder))(x, pad)
    assert torch.equal(a["all_hidden"][-1], b["all_hidden"][-1])
    assert not torch.allclose(a["all_hidden"][-1], c["all_hidden"][-1])
    assert not torch.allclose(a["all_hidden"][-1], trained["all_hidden"][-1])


@pytest.mark.parametrize("init", ["hf", "random:hf"])
def test_finetune_from_an_hf_folder(init, hf, clips, tmp_path, capsys, one_thread):
    """A few steps from an HF folder (or its architecture at random); the conv front end stays
    frozen, the rest trains; evaluate and predict read the folder back."""
    from selfsup.checkpoint import read_safetensors
    from selfsup.interop.hf_wav2vec2 import load_hf_wav2vec2

    folder, _ = hf["base"]
    spec = str(folder) if init == "hf" else f"random:{folder}"
    ft = tmp_path / "ft"
    code, out, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", clips,
                         "--init", spec, "--out", ft, "--pattern", PATTERN, "--epochs", "1",
                         "--batch-size", "8", "--lr", "1e-3", "--cache-dir",
                         tmp_path / "c")  # fmt: skip
    assert code == 0, err
    config = json.loads((ft / "config.json").read_text())
    assert config["encoder"] == "wav2vec2" and config["model"]["conv_strides"] == [5, 2, 2]
    assert config["features"]["kind"] == "wave" and config["features"]["cmvn"] == "utterance"
    assert config["max_frames"] == 160000  # 10 s of samples
    after = read_safetensors(ft / "model.safetensors")
    if init == "hf":
        before = load_hf_wav2vec2(folder)[0].state_dict()
        front = [k for k in before if k.startswith("frontend.")]
        rest = [k for k in before if k.startswith("transformer.")]
        assert all(torch.equal(before[k], after[f"encoder.{k}"]) for k in front)
        assert any(not torch.equal(before[k], after[f"encoder.{k}"]) for k in rest)
    else:
        return  # the folder is read back once, below
    code, out, err = cli(capsys, "evaluate", ft, "--task", "audio-classify", "--data", clips,
                         "--split", "test", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    code, out, err = cli(capsys, "predict", ft, "--input", clips, "--out", tmp_path / "p.jsonl",
                         "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["label"] for r in rows} <= {"s0", "s1", "s2"}


# --------------------------------------------------------------------------------------------
# where a waveform upstream's frames are


def tiny_wave_upstream(layers=WAV2VEC2_CONV_LAYERS, conv_norm="layer") -> RunUpstream:
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        conv_channels=(8,) * len(layers),
        conv_kernels=tuple(k for _, k, _ in layers),
        conv_strides=tuple(s for _, _, s in layers),
        conv_norm=conv_norm,
        dim=16, n_layers=1, n_heads=2, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2,
        dropout=0.0, attn_dropout=0.0, proj_dropout=0.0,
    )  # fmt: skip
    return RunUpstream(build_wav2vec2(cfg), FeatureConfig(kind="wave"), None, "tiny")


def test_wave_frame_centres_are_stride_times_t_plus_half_the_field():
    """wav2vec 2.0's front end: frame t reads samples [320 t, 320 t + 400), centred at
    320 t + 200; a clip of n samples has floor((n - 400) / 320) + 1 frames."""
    up = tiny_wave_upstream()
    assert (up.frame_stride_samples, up.frame_offset_samples) == (320, 200.0)
    for n in (400, 719, 720, 16000, 16319):
        centres = up.frame_centres(n)
        assert len(centres) == (n - 400) // 320 + 1 == up.n_steps(n)
        assert centres.tolist() == [320 * t + 200 for t in range(len(centres))]
        with torch.no_grad():
            out = up(torch.randn(1, n, 1), torch.zeros(1, n, dtype=torch.bool))
        assert out["all_hidden"][0].shape[1] == len(centres)
    assert up.n_steps(399) == 0


def test_spectral_frame_centres_keep_frame_labels_numbers():
    """The generic description reproduces frame_labels for spectral upstreams exactly."""
    segs = [(0, 800, 1), (800, 1500, 2), (1500, 2000, IGNORE), (2000, 3200, 3)]
    for spec, stack in (("fbank", 1), ("mfcc", 1)):
        up = load_upstream(spec)
        for n in (19, 21):
            want = superb.frame_labels(segs, n, 160, 16000, stack)
            assert superb.labels_at(segs, up.frame_centres(n), 16000).tolist() == want.tolist()
    # a stacked run's geometry (stack 3): centres at frame 3j + 1, clamped to the last frame
    from selfsup.encoders.audio import AudioConfig, build_audio_encoder

    enc = build_audio_encoder(AudioConfig(feature_dim=80, stack=3, dim=16, n_layers=1,
                                          n_heads=2, ffn_dim=32))  # fmt: skip
    up = RunUpstream(enc, FeatureConfig(), None, "run")
    assert (up.frame_stride_samples, up.frame_offset_samples) == (480, 160)
    for n in (19, 20, 21):
        want = superb.frame_labels(segs, n, 160, 16000, 3)
        assert superb.labels_at(segs, up.frame_centres(n), 16000).tolist() == want.tolist()


def test_pr_frame_labels_align_for_a_wave_upstream(hf, tmp_path, monkeypatch):
    """superb's pr targets over a waveform upstream: one label per encoder frame, the phone of
    the .phn segment holding sample 20 t + 20 (computed directly here), on a stand-in
    timit-sample folder of three synthetic utterances."""
    root = tmp_path / "timit-sample"
    (root / "spk").mkdir(parents=True)
    phones = ["h#", "s", "q", "iy", "pcl", "h#"]
    bounds = [0, 1000, 1777, 2200, 3500, 4100, 4800]
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        sf.write(root / "spk" / f"{name}.wav", 0.1 * rng.standard_normal(4800).astype("float32"),
                 16000)  # fmt: skip
        (root / "spk" / f"{name}.phn").write_text("".join(
            f"{bounds[i]} {bounds[i + 1]} {p}\n" for i, p in enumerate(phones)))  # fmt: skip
    real = superb._splits("timit_sample.json")
    split = {"train": ["spk/a.wav", "spk/c.wav"], "dev": ["spk/c.wav"], "test": ["spk/b.wav"]}
    monkeypatch.setattr(superb, "_splits", lambda name: {"pr": split, "fold39": real["fold39"]})
    upstream = load_upstream(str(hf["stable"][0]))
    settings = superb.Settings(data_root=tmp_path, cache_dir=tmp_path / "c", log=lambda _: None)
    n_classes, parts = superb._pr_parts(upstream, settings, "frame")
    fold = real["fold39"]
    classes = sorted({p for p in fold.values() if p is not None})
    n_frames = (4800 - FIELD) // STRIDE + 1
    want = []
    for t in range(n_frames):
        centre = t * STRIDE + FIELD / 2
        i = next(k for k in range(len(phones)) if bounds[k] <= centre < bounds[k + 1])
        want.append(IGNORE if fold[phones[i]] is None else classes.index(fold[phones[i]]))
    assert n_classes == 39
    test = parts[2]
    assert test.states[0].shape[1] == n_frames == len(test.targets[0])
    assert test.targets[0].tolist() == want
    assert IGNORE in want and classes.index("sil") in want  # q, and h# / pcl folded to sil


def test_a_long_wave_input_is_encoded_in_windows_on_the_whole_clip_frame_grid():
    """Windows start every `window` samples and read R - S samples more: window k gives frames
    k * window / S onward, equal to that stretch encoded alone; the whole has the clip's own
    frame count, and a batch's shorter clip gets zeros marked padding where it has no frame."""
    up = tiny_wave_upstream()
    up.window = 320 * 10  # 10 frames a window (the default is 30 s)
    R, S = 400, 320
    T = 320 * 27 + 500
    x = torch.randn(2, T, 1, generator=torch.Generator().manual_seed(0))
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[1, 320 * 12 :] = True  # the second clip: 12 * 320 samples, 11 frames
    with torch.no_grad():
        out = up(x, pad)
        alone = [up.encoder(x[:1, s : s + up.window + R - S], return_all=True)
                 for s in range(0, T, up.window)]  # fmt: skip
    n = int(conv_output_lengths(T, WAV2VEC2_CONV_LAYERS))
    assert out["padding_mask"].shape == (2, n) and n == 28
    assert not out["padding_mask"][0].any()
    assert (~out["padding_mask"][1]).sum() == 11 and not out["padding_mask"][1, :11].any()
    for layer, h in enumerate(out["all_hidden"]):
        expected = torch.cat([a["all_hidden"][layer] for a in alone], dim=1)[0]
        torch.testing.assert_close(h[0], expected, rtol=0, atol=1e-5)  # B=2 vs 1 rounding
        assert not h[1, 20:].any()  # no frame of clip 2 in the third window
    assert len(up.frame_centres(T)) == n


def test_groupnorm_wave_upstream_encodes_each_padded_clip_alone():
    up = tiny_wave_upstream(conv_norm="group")
    assert up.per_example
    g = torch.Generator().manual_seed(1)
    lengths = [2000, 900, 1500]
    x = torch.randn(3, 2000, 1, generator=g)
    pad = torch.arange(2000)[None] >= torch.tensor(lengths)[:, None]
    with torch.no_grad():
        out = up(x, pad)
        for i, n in enumerate(lengths):
            ref = up.encoder(x[i : i + 1, :n], return_all=True)["all_hidden"]
            m = ref[0].shape[1]
            assert (~out["padding_mask"][i]).sum() == m
            for h, r in zip(out["all_hidden"], ref, strict=True):
                torch.testing.assert_close(h[i, :m], r[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# export: a run with a Wav2Vec2Encoder -> transformers


@pytest.fixture
def wave_run(tmp_path):
    """A run-like folder of a stand-in objective that holds a Wav2Vec2Encoder (the wav2vec2 and
    hubert objectives' encoder): config.json and model.safetensors as pretraining writes them."""
    from selfsup.checkpoint import RUN_FORMAT, save_final
    from selfsup.config import RunConfig, TrainConfig
    from selfsup.data.audio_batches import WaveDataConfig
    from selfsup.objectives import OBJECTIVES, register
    from selfsup.objectives.base import Objective

    @dataclass
    class StandInConfig:
        name: str = "wave-stand-in"

    class StandIn(Objective):
        Config = StandInConfig
        modality, model_config, data_config = "audio", Wav2Vec2Config, WaveDataConfig

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        @classmethod
        def build(cls, cfg, model):
            return cls(build_wav2vec2(model))

    register("wave-stand-in", StandIn)
    try:
        model = Wav2Vec2Config(conv_channels=(32, 32, 32), conv_kernels=(10, 3, 3),
                               conv_strides=(5, 2, 2), conv_norm="layer", conv_bias=True,
                               dim=32, n_layers=2, n_heads=2, ffn_dim=64, pos_conv_kernel=16,
                               pos_conv_groups=4, stable_layer_norm=True)  # fmt: skip
        cfg = RunConfig(model=model, objective=StandInConfig(), data=WaveDataConfig(),
                        train=TrainConfig())  # fmt: skip
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"format": RUN_FORMAT, **cfg.to_dict()}))
        torch.manual_seed(3)
        objective = StandIn.build(cfg.objective, model)
        with torch.no_grad():
            for p in objective.parameters():
                p.add_(torch.randn(p.shape) * 0.05)
        save_final(run, objective)
        yield run, objective.encoder.eval()
    finally:
        OBJECTIVES.pop("wave-stand-in", None)


def test_export_a_wave_run_round_trips_through_transformers(wave_run, tmp_path, capsys):
    run, encoder = wave_run
    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", run, "--format", "hf", "--out", out)
    assert code == 0, err
    assert "Wav2Vec2Model" in stdout
    model = transformers.AutoModel.from_pretrained(out).eval()
    assert type(model).__name__ == "Wav2Vec2Model"
    fe = transformers.AutoFeatureExtractor.from_pretrained(out)
    assert fe.do_normalize is True and fe.sampling_rate == 16000  # the run's utterance CMVN
    wave = torch.randn(2, 1200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model(wave, output_hidden_states=True).hidden_states
        ours = encoder(wave, return_all=True)["all_hidden"]
        # and back: the exported folder and the run are the same upstream
        x, pad = wave[..., None], torch.zeros(2, 1200, dtype=torch.bool)
        from_run = load_upstream(str(run))(x, pad)["all_hidden"]
        from_hf = load_upstream(str(out))(x, pad)["all_hidden"]
    assert len(theirs) == len(ours) == 3
    for a, b, c, d in zip(ours, theirs, from_run, from_hf, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        torch.testing.assert_close(c, d, rtol=0, atol=0)
    capsys.readouterr()  # transformers' loading bars
    code, _, err = cli(capsys, "export", run, "--format", "onnx", "--out", tmp_path / "o")
    assert_clean_error(code, err, tmp_path / "o", "--format hf only")


# --------------------------------------------------------------------------------------------
# folders that are not speech models


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert") / "bert"
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=16)  # fmt: skip
    transformers.BertModel(cfg).save_pretrained(folder)
    return folder


def test_an_unsupported_hf_folder_is_a_one_line_error(bert_folder, hf, clips, tmp_path, capsys):
    code, _, err = cli(capsys, "superb", bert_folder, "--tasks", "classify", "--data", clips,
                       "--pattern", PATTERN, "--out", tmp_path / "sb")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "sb", "HuggingFace bert folder, not a speech model")
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", clips,
                       "--init", bert_folder, "--out", out, "--pattern", PATTERN)  # fmt: skip
    assert_clean_error(code, err, out, "not a speech model")
    # an HF speech folder is not a text model
    code, _, err = cli(capsys, "fill-mask", hf["base"][0], "a [MASK] .")
    assert_clean_error(code, err, None, "wav2vec2 (speech) model")
    with pytest.raises(ConfigError, match="not a speech model"):
        load_upstream(f"random:{bert_folder}")


# --------------------------------------------------------------------------------------------
# wav2vec2 and hubert runs: export, and the run itself as an upstream / fine-tuning init

SMALL = ["--set", "model.conv_channels=16,16,16,16,16,16,16", "--set", "model.dim=32",
         "--set", "model.n_heads=2", "--set", "model.ffn_dim=64",
         "--set", "model.pos_conv_kernel=16", "--set", "model.pos_conv_groups=4",
         "--set", "data.max_frames=9600", "--set", "data.heldout_every=6"]  # fmt: skip


def pretrain_cli(capsys, objective, clips, out, *extra):
    code, _, err = cli(capsys, "pretrain", "--objective", objective, "--preset", "tiny",
                       "--data", clips, "--steps", "2", "--batch-size", "4", "--cache-dir",
                       clips.parent / "cache", "--out", out, "--no-progress", *SMALL,
                       *extra)  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def w2v_run(clips, tmp_path_factory):
    from selfsup.cli import main

    out = tmp_path_factory.mktemp("w2v") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["pretrain", "--objective", "wav2vec2", "--preset", "tiny", "--data", str(clips),
              "--steps", "2", "--batch-size", "4", "--cache-dir", str(clips.parent / "cache"),
              "--out", str(out), "--no-progress", *SMALL, "--set", "objective.code_dim=16",
              "--set", "objective.proj_dim=12", "--set", "objective.n_entries=8"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out


def test_export_a_wav2vec2_run_as_wav2vec2_for_pretraining(w2v_run, tmp_path, capsys):
    """The run's encoder and heads: transformers' hidden states, projected context
    (project_hid) and quantized targets (weight_proj -> codevectors -> project_q, argmax in
    eval) equal ours; AutoModel reads the encoder out of it."""
    from selfsup.models import run_config, run_weights
    from selfsup.objectives import build_objective

    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", w2v_run, "--format", "hf", "--out", out)
    assert code == 0, err
    assert "Wav2Vec2ForPreTraining" in stdout
    cfg = run_config(w2v_run)
    ours = build_objective(cfg.objective, cfg.model)
    ours.load_state_dict(run_weights(w2v_run))
    ours.eval()
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(out).eval()
    hc = theirs.config
    assert (hc.num_codevector_groups, hc.num_codevectors_per_group, hc.codevector_dim,
            hc.proj_codevector_dim) == (2, 8, 16, 12)  # fmt: skip
    assert hc.num_negatives == 100 and hc.contrastive_logits_temperature == 0.1
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = theirs.wav2vec2(wave, output_hidden_states=True)
        o = ours.encoder(wave, return_all=True)
        for a, b in zip(o["all_hidden"], h.hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            ours.project(o["hidden"]), theirs.project_hid(h.last_hidden_state), rtol=0, atol=1e-5
        )
        z = o["extract_features"]  # (B, T', C)
        q = ours.quantizer(z.reshape(-1, z.shape[-1]))["quantized"].view(2, -1, 12)
        hq, _ = theirs.quantizer(h.extract_features)
        torch.testing.assert_close(q, theirs.project_q(hq), rtol=0, atol=1e-5)
        auto = transformers.AutoModel.from_pretrained(out).eval()
        torch.testing.assert_close(auto(wave).last_hidden_state, o["hidden"], rtol=0, atol=1e-5)
    fe = transformers.AutoFeatureExtractor.from_pretrained(out)
    assert fe.do_normalize is True  # WaveDataConfig normalises each utterance


def test_a_wav2vec2_run_is_an_upstream_and_an_init(w2v_run, clips, tmp_path, capsys, one_thread):
    """superb over the run (and its export: the same layers), embed, and finetune from it."""
    code, out, err = cli(capsys, "superb", w2v_run, "--tasks", "classify", "--data", clips,
                         "--pattern", PATTERN, "--seeds", "1", "--epochs", "2", "--lrs", "1e-2",
                         "--cache-dir", tmp_path / "c", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])[str(w2v_run)]
    assert report["n_layers"] == 3 and report["frame_stride_samples"] == 320
    assert report["frame_offset_samples"] == 200.0
    code, _, err = cli(capsys, "export", w2v_run, "--out", tmp_path / "hf")
    assert code == 0, err
    x = torch.randn(3, 5000, 1, generator=torch.Generator().manual_seed(2))
    pad = torch.arange(5000)[None] >= torch.tensor([5000, 3100, 4000])[:, None]
    with torch.no_grad():
        a = load_upstream(str(w2v_run))(x, pad)
        b = load_upstream(str(tmp_path / "hf"))(x, pad)
    assert torch.equal(a["padding_mask"], b["padding_mask"])
    for u, v in zip(a["all_hidden"], b["all_hidden"], strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    code, _, err = cli(capsys, "embed", w2v_run, "--input", clips, "--out", tmp_path / "v.npz",
                       "--pooling", "frames", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    z = np.load(tmp_path / "v.npz", allow_pickle=False)
    first = z["times"][z["offsets"][0] : z["offsets"][1]]
    np.testing.assert_allclose(first, (320 * np.arange(len(first)) + 200) / 16000)
    ft = tmp_path / "ft"
    code, out, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", clips,
                         "--init", w2v_run, "--out", ft, "--pattern", PATTERN, "--epochs", "1",
                         "--batch-size", "8", "--max-frames", "8000", "--cache-dir",
                         tmp_path / "c")  # fmt: skip
    assert code == 0, err
    config = json.loads((ft / "config.json").read_text())
    assert config["encoder"] == "wav2vec2" and config["max_frames"] == 8000


def test_export_a_hubert_run_as_hubert_model(clips, tmp_path, capsys, one_thread):
    from selfsup.cluster_audio import cluster_audio

    labels = tmp_path / "labels"
    cluster_audio("mfcc", [str(clips)], 8, labels, cache_dir=str(clips.parent / "cache"),
                  log=lambda _: None)  # fmt: skip
    run = pretrain_cli(capsys, "hubert", clips, tmp_path / "run", "--labels", labels,
                       "--set", "objective.final_dim=16")  # fmt: skip
    code, stdout, err = cli(capsys, "export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert code == 0, err
    assert "HubertModel" in stdout
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "HubertModel"
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_upstream(str(run))(wave[..., None], torch.zeros(1, 4000, dtype=torch.bool))
        hs = theirs(wave, output_hidden_states=True).hidden_states
    for a, b in zip(ours["all_hidden"], hs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("objective", ["cpc", "vq-wav2vec"])
def test_finetune_from_a_conv_context_run(objective, clips, tmp_path, capsys, one_thread):
    """CPC / vq-wav2vec runs (ConvContextEncoder) fine-tune too, and their folder is read back
    (evaluate)."""
    run = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", "--objective", objective, "--data", clips, "--steps",
                       "2", "--batch-size", "4", "--cache-dir", clips.parent / "cache", "--out",
                       run, "--no-progress", "--set", "model.conv_channels=16,16,16,16,16",
                       "--set", "model.dim=16", "--set", "data.max_frames=4000")  # fmt: skip
    assert code == 0, err
    ft = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", clips,
                       "--init", run, "--out", ft, "--pattern", PATTERN, "--epochs", "1",
                       "--batch-size", "8", "--max-frames", "8000", "--cache-dir",
                       clips.parent / "cache")  # fmt: skip
    assert code == 0, err
    config = json.loads((ft / "config.json").read_text())
    assert config["encoder"] == "conv_context" and config["max_frames"] == 8000
    code, out, err = cli(capsys, "evaluate", ft, "--task", "audio-classify", "--data", clips,
                         "--split", "test", "--cache-dir", clips.parent / "cache")  # fmt: skip
    assert code == 0, err
    assert 0 <= json.loads(out.strip().splitlines()[-1])["accuracy"] <= 1
