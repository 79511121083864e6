"""Parity with transformers' Wav2Vec2Model and HubertModel: the same weights give the same
hidden states at every layer (fp32, eval mode), through our import (HF-written folders, old
weight-norm names, task-model prefixes) and our export (transformers' from_pretrained loads it).

Tiny random models built here: three conv layers of 32 channels (kernels 10, 3, 3; strides
5, 2, 2: 20 samples a frame), width 32, 2 layers, 2 heads, a positional conv of kernel 16 in
4 groups. Their weights are perturbed so zero biases and unit norms hide no mapping bug.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import perturb

from selfsup.encoders.wav2vec2 import build_wav2vec2
from selfsup.errors import ConfigError
from selfsup.interop.hf_wav2vec2 import (
    export_hf_wav2vec2,
    from_hf_state,
    hf_config_to_wav2vec2,
    load_hf_wav2vec2,
    to_hf_state,
    wav2vec2_to_hf_config,
)
from selfsup.layers.conv_frontend import (
    WAV2VEC2_CONV_LAYERS,
    conv_output_lengths,
    downsample_padding_mask,
    receptive_field,
)

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
TINY = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
# name -> (transformers class, config class, config changes)
LAYOUTS = {
    # wav2vec 2.0 base: group norm on the first conv, no conv bias, post-LN
    "base": ("Wav2Vec2Model", "Wav2Vec2Config", {}),
    # wav2vec2-large-lv60: layer norm after every conv, conv bias, pre-LN ("stable")
    "stable": ("Wav2Vec2Model", "Wav2Vec2Config",
               {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True}),
    "hubert": ("HubertModel", "HubertConfig", {}),
    # HuBERT without the feature projection's LayerNorm, pre-LN, an odd positional kernel
    "hubert-stable": ("HubertModel", "HubertConfig",
                      {"feat_extract_norm": "layer", "do_stable_layer_norm": True,
                       "feat_proj_layer_norm": False, "num_conv_pos_embeddings": 15}),
}  # fmt: skip


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs difference {err:.3g} > {atol}"


def hf_model(layout: str, seed: int = 0):
    model_cls, cfg_cls, changes = LAYOUTS[layout]
    cfg = getattr(transformers, cfg_cls)(**{**TINY, **changes})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    perturb(model, seed)
    return model.eval()


def waves(lengths=(1000, 1000), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) zero-padded waveforms and the (B, T) 1/0 attention mask HF takes."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    keep = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return torch.randn(len(lengths), T, generator=g) * keep, keep


def ours_from(hf) -> tuple:
    cfg, model_type = hf_config_to_wav2vec2(hf.config.to_dict())
    enc = build_wav2vec2(cfg)
    enc.load_state_dict(from_hf_state(hf.state_dict(), cfg))
    return enc.eval(), cfg, model_type


def assert_same_states(ours: dict, theirs, keep: torch.Tensor | None = None) -> None:
    """Every hidden state, the last one and the features, on the real frames."""
    hs = theirs.hidden_states
    assert len(ours["all_hidden"]) == len(hs) == 3
    real = slice(None) if keep is None else keep
    for a, b in zip(ours["all_hidden"], hs, strict=True):
        close(a[real], b[real])
    close(ours["hidden"][real], theirs.last_hidden_state[real])
    if getattr(theirs, "extract_features", None) is not None:
        close(ours["extract_features"][real], theirs.extract_features[real])


@pytest.mark.parametrize("layers", [[(32, 10, 5), (32, 3, 2), (32, 3, 2)], WAV2VEC2_CONV_LAYERS])
def test_output_lengths_and_frame_mask_equal_transformers(layers):
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel as Pre

    class Lengths:  # transformers' two methods, without building a model
        _get_feat_extract_output_lengths = Pre._get_feat_extract_output_lengths
        _get_feature_vector_attention_mask = Pre._get_feature_vector_attention_mask
        config = transformers.Wav2Vec2Config(
            conv_dim=[c for c, _, _ in layers], conv_kernel=[k for _, k, _ in layers],
            conv_stride=[s for _, _, s in layers])  # fmt: skip

    hf = Lengths()
    lengths = torch.tensor([receptive_field(layers) + i for i in range(0, 2000, 7)])
    assert torch.equal(conv_output_lengths(lengths, layers),
                       hf._get_feat_extract_output_lengths(lengths))  # fmt: skip
    for n in (0, 5, 9, 20):  # shorter than the receptive field: no frame (never negative)
        assert conv_output_lengths(n, layers) == 0
    T = int(lengths.max())
    keep = torch.arange(T)[None] < lengths[:, None]  # (B, T)
    frames = int(conv_output_lengths(T, layers))
    theirs = hf._get_feature_vector_attention_mask(frames, keep.long())
    assert torch.equal(~downsample_padding_mask(~keep, layers, frames), theirs)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hidden_states_equal_transformers(layout):
    hf = hf_model(layout)
    enc, cfg, model_type = ours_from(hf)
    assert model_type == ("hubert" if layout.startswith("hubert") else "wav2vec2")
    assert cfg.stable_layer_norm == ("stable" in layout)
    wave, _ = waves()
    with torch.no_grad():
        theirs = hf(wave, output_hidden_states=True)
        ours = enc(wave, return_all=True)
    assert_same_states(ours, theirs)


@pytest.mark.parametrize("layout", ["base", "stable"])
def test_gradients_equal_transformers(layout):
    """The same gradients for every weight and for the waveform (transformers scales no
    front-end gradient: feature_grad_mult=1 here). Eval mode: no dropout, no SpecAugment."""
    hf = hf_model(layout)
    enc, cfg, model_type = ours_from(hf)
    enc.feature_grad_mult = 1.0
    wave, _ = waves()
    weights = torch.randn(2, 49, 32, generator=torch.Generator().manual_seed(5))
    w1, w2 = wave.clone().requires_grad_(), wave.clone().requires_grad_()
    (hf(w1).last_hidden_state * weights).sum().backward()
    (enc(w2)["hidden"] * weights).sum().backward()
    close(w2.grad, w1.grad, 1e-4 * w1.grad.abs().max().item())
    # no mask here: mask_embed has no gradient
    grads = {
        n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in enc.named_parameters()
    }
    ours = to_hf_state(grads, cfg, model_type)
    theirs = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    assert theirs.keys() == ours.keys() - {"masked_spec_embed"}
    for n, g in theirs.items():
        close(ours[n], g, 1e-4 * max(g.abs().max().item(), 1e-3))


@pytest.mark.parametrize("layout", ["base", "stable"])
def test_padded_batch_equals_transformers_on_real_frames(layout):
    hf = hf_model(layout)
    enc, _, _ = ours_from(hf)
    wave, keep = waves((1000, 777, 420))
    with torch.no_grad():
        theirs = hf(wave, attention_mask=keep, output_hidden_states=True)
        ours = enc(wave, keep == 0, return_all=True)
    frame_keep = hf._get_feature_vector_attention_mask(ours["hidden"].shape[1], keep)
    assert torch.equal(~ours["padding_mask"], frame_keep)
    assert not frame_keep.all()
    assert_same_states(ours, theirs, frame_keep)


@pytest.mark.parametrize("layout", ["base", "hubert"])
def test_mask_embedding_equals_transformers_mask_time_indices(layout):
    hf = hf_model(layout)
    enc, _, _ = ours_from(hf)
    wave, _ = waves()
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, 5:15] = True
    mask[1, 30:42] = True
    with torch.no_grad():
        theirs = hf(wave, mask_time_indices=mask, output_hidden_states=True)
        ours = enc(wave, mask=mask, return_all=True)
        plain = enc(wave)
    assert_same_states(ours, theirs)
    assert not torch.allclose(ours["hidden"], plain["hidden"], atol=1e-3)
    close(enc.mask_embed, hf.masked_spec_embed)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_export_loads_in_transformers_with_the_same_states(layout, tmp_path):
    hf = hf_model(layout)
    enc, cfg, model_type = ours_from(hf)
    export_hf_wav2vec2(enc, cfg, tmp_path / "out", model_type=model_type, do_normalize=False)
    folder = tmp_path / "out"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    model_cls = getattr(transformers, LAYOUTS[layout][0])
    back = model_cls.from_pretrained(folder).eval()
    auto = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(auto) is model_cls
    fe = transformers.AutoFeatureExtractor.from_pretrained(folder)
    assert fe.do_normalize is False and fe.sampling_rate == 16000
    wave, _ = waves(seed=3)
    with torch.no_grad():
        ours = enc(wave, return_all=True)
        assert_same_states(ours, back(wave, output_hidden_states=True))
        assert_same_states(ours, hf(wave, output_hidden_states=True))
    # and back into selfsup
    enc2, cfg2, info = load_hf_wav2vec2(folder)
    assert cfg2 == cfg and info["model_type"] == model_type and info["do_normalize"] is False
    with torch.no_grad():
        close(enc2(wave)["hidden"], ours["hidden"], 0.0)


def test_state_dict_round_trip_is_exact():
    hf = hf_model("stable")
    enc, cfg, model_type = ours_from(hf)
    back = to_hf_state(enc.state_dict(), cfg, model_type)
    theirs = hf.state_dict()
    assert back.keys() == theirs.keys()
    for k in theirs:
        assert torch.equal(back[k], theirs[k]), k


def test_hf_folder_with_old_weight_norm_names_and_task_prefix(tmp_path):
    """A Wav2Vec2ForCTC folder saved as pytorch_model.bin with `wav2vec2.` prefixes and the
    pre-parametrization weight_g / weight_v names of older transformers versions."""
    hf = hf_model("base")
    ctc_cfg = transformers.Wav2Vec2Config(**TINY, vocab_size=8)
    ctc = transformers.Wav2Vec2ForCTC(ctc_cfg)
    ctc.wav2vec2.load_state_dict(hf.state_dict())
    sd = {}
    for k, v in ctc.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        sd[k.replace("parametrizations.weight.original1", "weight_v")] = v
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in sd
    folder = tmp_path / "ctc"
    folder.mkdir()
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(ctc_cfg.to_dict()))
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    enc, _, info = load_hf_wav2vec2(folder)
    assert info == {"model_type": "wav2vec2", "do_normalize": True, "sampling_rate": 16000,
                    "return_attention_mask": False}  # fmt: skip
    wave, _ = waves()
    with torch.no_grad():
        assert_same_states(enc(wave, return_all=True), hf(wave, output_hidden_states=True))


def test_hf_save_pretrained_folder_loads(tmp_path):
    hf = hf_model("hubert")
    hf.save_pretrained(tmp_path / "h")
    enc, cfg, info = load_hf_wav2vec2(tmp_path / "h")
    assert info["model_type"] == "hubert" and info["do_normalize"] is True  # HF's default
    wave, _ = waves()
    with torch.no_grad():
        assert_same_states(enc(wave, return_all=True), hf(wave, output_hidden_states=True))


def test_config_round_trip():
    for layout in LAYOUTS:
        hf = hf_model(layout)
        cfg, model_type = hf_config_to_wav2vec2(hf.config.to_dict())
        again, t2 = hf_config_to_wav2vec2(wav2vec2_to_hf_config(cfg, model_type))
        assert (again, t2) == (cfg, model_type)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "wavlm"}, "model_type"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"feat_extract_activation": "relu"}, "feat_extract_activation"),
        ({"conv_pos_batch_norm": True}, "conv_pos_batch_norm"),
        ({"add_adapter": True}, "adapter"),
        ({"adapter_attn_dim": 16}, "adapter"),
        ({"feat_extract_norm": "batch"}, "feat_extract_norm"),
        ({"conv_kernel": [10, 3]}, "same length"),
        ({"hidden_size": None}, "hidden_size"),
    ],
)
def test_bad_hf_configs_are_one_line_errors(change, message):
    d = transformers.Wav2Vec2Config(**TINY).to_dict()
    d.update(change)
    if d["hidden_size"] is None:
        del d["hidden_size"]
    with pytest.raises(ConfigError, match=message) as e:
        hf_config_to_wav2vec2(d)
    assert "\n" not in str(e.value)


def test_wav2vec2_layout_needs_the_feature_layer_norm(tmp_path):
    hf = hf_model("hubert-stable")  # feat_proj_layer_norm=False
    enc, cfg, _ = ours_from(hf)
    with pytest.raises(ConfigError, match="feature_norm"):
        export_hf_wav2vec2(enc, cfg, tmp_path / "out", model_type="wav2vec2", do_normalize=True)
    assert not (tmp_path / "out").exists()


def test_missing_or_unknown_weights_are_one_line_errors():
    hf = hf_model("base")
    cfg, _ = hf_config_to_wav2vec2(hf.config.to_dict())
    sd = dict(hf.state_dict())
    sd.pop("encoder.layers.1.attention.q_proj.weight")
    with pytest.raises(ConfigError, match="q_proj") as e:
        from_hf_state(sd, cfg)
    assert "\n" not in str(e.value)
    sd = dict(hf.state_dict())
    sd["encoder.layers.0.adapter_layer.linear_1.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="adapter_layer"):
        from_hf_state(sd, cfg)
    # a task model's head is not the encoder's: left out without a word
    sd = {**hf.state_dict(), "lm_head.weight": torch.zeros(8, 32), "project_q.bias": torch.zeros(4)}
    assert from_hf_state(sd, cfg).keys() == from_hf_state(hf.state_dict(), cfg).keys()
