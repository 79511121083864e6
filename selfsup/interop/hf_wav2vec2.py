"""HuggingFace wav2vec 2.0 / HuBERT interop: transformers' Wav2Vec2Config / HubertConfig and
weight names <-> our Wav2Vec2Encoder, reading HF folders offline (config.json, model.safetensors
(sharded or not) or pytorch_model.bin, preprocessor_config.json) and exporting ours as folders
that `Wav2Vec2Model` / `HubertModel` / `AutoModel.from_pretrained` load without remote code
(with wav2vec 2.0's quantizer and projections: `Wav2Vec2ForPreTraining`). A
Wav2Vec2ForPreTraining folder, quantizer included, also starts a wav2vec2 pretraining run
(`pretrain --init`: pretraining_init below).

The variants folders come in: group or layer conv norm, conv biases, post-LN or "stable" pre-LN
layout, HuBERT with or without the feature projection's LayerNorm (`feat_proj_layer_norm`), the
positional conv's weight norm under the old names (`weight_g`, `weight_v`) or the
parametrization names of newer PyTorch (`parametrizations.weight.original0/1`), task models
(Wav2Vec2ForCTC, ForPreTraining, HubertForCTC, ...) whose encoder weights carry a `wav2vec2.`
or `hubert.` prefix; their heads are left out. Unsupported variants (adapters, a batch-normed
positional conv, other activations) are one-line ConfigErrors, never a silent mismatch.

What transformers does outside the weights, and this encoder does not: `activation_dropout`
(dropout inside the FFN) and `layerdrop` are training-time only and not read; SpecAugment
(`mask_time_prob`) is the objective's job here. An export writes activation_dropout and
layerdrop 0 so transformers trains the same network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from selfsup.checkpoint import read_safetensors, save_safetensors, verify_manifest
from selfsup.encoders.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder, build_wav2vec2
from selfsup.errors import ConfigError
from selfsup.interop.hf_bert import write_export

MODEL_TYPES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel"}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "conv_dim", "conv_kernel", "conv_stride")  # fmt: skip
# The encoder's weights in a base model's state dict; task models prefix them.
_BASE = ("feature_extractor.", "feature_projection.", "encoder.", "masked_spec_embed")
_PREFIXES = ("wav2vec2.", "hubert.")
_POS = "encoder.pos_conv_embed.conv."
_OLD_WEIGHT_NORM = {f"{_POS}weight_g": f"{_POS}parametrizations.weight.original0",
                    f"{_POS}weight_v": f"{_POS}parametrizations.weight.original1"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def hf_config_to_wav2vec2(hf: dict, where: str = "config.json") -> tuple[Wav2Vec2Config, str]:
    """A transformers Wav2Vec2Config / HubertConfig dict -> (ours, model_type); a one-line
    ConfigError for what is missing or not supported."""
    if not isinstance(hf, dict):
        raise ConfigError(f"{where} is not a JSON object")
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} in {where} is not supported "
                          f"(wav2vec2 and hubert only)")  # fmt: skip
    for key in ("hidden_act", "feat_extract_activation"):
        if hf.get(key, "gelu") != "gelu":
            raise ConfigError(f"{key} {hf[key]!r} in {where} is not supported (exact 'gelu' only)")
    if hf.get("conv_pos_batch_norm", False):
        raise ConfigError(f"conv_pos_batch_norm in {where} is not supported (a weight-normed "
                          f"positional conv only)")  # fmt: skip
    if hf.get("add_adapter", False) or hf.get("adapter_attn_dim") is not None:
        raise ConfigError(f"{where} has adapter layers (add_adapter, adapter_attn_dim), which "
                          f"are not supported")  # fmt: skip
    norm = hf.get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise ConfigError(f"feat_extract_norm {norm!r} in {where} is not supported (group or "
                          f"layer)")  # fmt: skip
    missing = [k for k in REQUIRED if k not in hf]
    if missing:
        raise ConfigError(f"{where} is not a {model_type} config: it lacks {', '.join(missing)}")
    cfg = Wav2Vec2Config(
        conv_channels=tuple(hf["conv_dim"]),
        conv_kernels=tuple(hf["conv_kernel"]),
        conv_strides=tuple(hf["conv_stride"]),
        conv_norm=norm,
        conv_bias=bool(hf.get("conv_bias", False)),
        # Wav2Vec2FeatureProjection always has the LayerNorm; HuBERT's may not
        feature_norm=bool(hf.get("feat_proj_layer_norm", True)) if model_type == "hubert" else True,
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"],
        stable_layer_norm=bool(hf.get("do_stable_layer_norm", False)),
        pos_conv_kernel=hf.get("num_conv_pos_embeddings", 128),
        pos_conv_groups=hf.get("num_conv_pos_embedding_groups", 16),
        dropout=hf.get("hidden_dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.1),
        proj_dropout=hf.get("feat_proj_dropout", 0.0),
        norm_eps=hf.get("layer_norm_eps", 1e-5),
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg, model_type


def wav2vec2_to_hf_config(cfg: Wav2Vec2Config, model_type: str = "wav2vec2") -> dict:
    """Ours -> the config.json of transformers' Wav2Vec2Model or HubertModel."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r}: use {' or '.join(MODEL_TYPES)}")
    if model_type == "wav2vec2" and not cfg.feature_norm:
        raise ConfigError("transformers' Wav2Vec2Model always has the feature LayerNorm: export "
                          "an encoder with model.feature_norm=false as hubert")  # fmt: skip
    hf = {
        "architectures": [MODEL_TYPES[model_type]],
        "model_type": model_type,
        "conv_dim": list(cfg.conv_channels),
        "conv_kernel": list(cfg.conv_kernels),
        "conv_stride": list(cfg.conv_strides),
        "num_feat_extract_layers": len(cfg.conv_channels),
        "feat_extract_norm": cfg.conv_norm,
        "feat_extract_activation": "gelu",
        "conv_bias": cfg.conv_bias,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": 0.0,  # our FFN has none
        "feat_proj_dropout": cfg.proj_dropout,
        "layerdrop": 0.0,  # nor layer drop
        "layer_norm_eps": cfg.norm_eps,
        "do_stable_layer_norm": cfg.stable_layer_norm,
        "num_conv_pos_embeddings": cfg.pos_conv_kernel,
        "num_conv_pos_embedding_groups": cfg.pos_conv_groups,
        # > 0 so the model has masked_spec_embed (where our mask embedding goes); transformers'
        # SpecAugment default, applied only when it trains
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
        "torch_dtype": "float32",
    }
    if model_type == "hubert":
        hf["feat_proj_layer_norm"] = cfg.feature_norm
        hf["conv_pos_batch_norm"] = False
    return hf


def preprocessor_config(
    cfg: Wav2Vec2Config, do_normalize: bool, sampling_rate: int = 16000
) -> dict:
    """preprocessor_config.json of a Wav2Vec2FeatureExtractor: mono at `sampling_rate` (16 kHz),
    zero padding on the right, per-utterance normalisation as the model was trained, and
    attention masks returned for "layer" front ends only (transformers' convention: the
    group-norm base models were trained on unmasked, zero-padded batches)."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": sampling_rate,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": do_normalize,
        "return_attention_mask": cfg.conv_norm == "layer",
    }


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

# (ours, HF) name stems for one Transformer layer; q/k/v are fused in ours and handled apart.
_LAYER = [
    ("attn.out", "attention.out_proj"),
    ("attn_norm", "layer_norm"),
    ("mlp.up", "feed_forward.intermediate_dense"),
    ("mlp.down", "feed_forward.output_dense"),
    ("mlp_norm", "final_layer_norm"),
]


def _pairs(cfg: Wav2Vec2Config) -> list[tuple[str, str]]:
    """(ours, HF) names of every weight but the fused q/k/v and the mask embedding."""
    pairs = []
    for i in range(len(cfg.conv_channels)):
        ours, hf = f"frontend.layers.{i}.", f"feature_extractor.conv_layers.{i}."
        kinds = ("weight", "bias") if cfg.conv_bias else ("weight",)
        pairs += [(f"{ours}conv.{k}", f"{hf}conv.{k}") for k in kinds]
        if cfg.conv_norm == "layer" or i == 0:
            pairs += [(f"{ours}norm.{k}", f"{hf}layer_norm.{k}") for k in ("weight", "bias")]
    for k in ("weight", "bias"):
        if cfg.feature_norm:
            pairs.append((f"projection.norm.{k}", f"feature_projection.layer_norm.{k}"))
        pairs.append((f"projection.proj.{k}", f"feature_projection.projection.{k}"))
    pairs += [
        ("pos_conv.weight_g", f"{_POS}parametrizations.weight.original0"),
        ("pos_conv.weight_v", f"{_POS}parametrizations.weight.original1"),
        ("pos_conv.bias", f"{_POS}bias"),
        ("norm.weight", "encoder.layer_norm.weight"),
        ("norm.bias", "encoder.layer_norm.bias"),
    ]
    for i in range(cfg.n_layers):
        ours, hf = f"transformer.blocks.{i}.", f"encoder.layers.{i}."
        pairs += [(f"{ours}{o}.{k}", f"{hf}{h}.{k}") for o, h in _LAYER for k in ("weight", "bias")]
    return pairs


def _base_state(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's weights of any HF wav2vec2 / HuBERT state dict, under a base model's names
    (task-model prefix removed, weight norm under the parametrization names)."""
    sd = {}
    for k, v in hf_sd.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        if k.startswith(_BASE):
            sd[_OLD_WEIGHT_NORM.get(k, k)] = v
    return sd


def from_hf_state(hf_sd: dict[str, torch.Tensor], cfg: Wav2Vec2Config) -> dict[str, torch.Tensor]:
    """HF Wav2Vec2Model / HubertModel weights (or a task model's: its heads are left out) ->
    our Wav2Vec2Encoder names. The mask embedding is absent when the HF model has none
    (mask_time_prob and mask_feature_prob 0). A missing weight, or an encoder weight with no
    place here (an adapter, say), is a one-line ConfigError."""
    sd = _base_state(hf_sd)
    used = set()

    def take(name: str) -> torch.Tensor:
        if name not in sd:
            raise ConfigError(f"the HF weights lack {name}, which the config implies")
        used.add(name)
        return sd[name]

    out = {ours: take(hf) for ours, hf in _pairs(cfg)}
    for i in range(cfg.n_layers):
        hf = f"encoder.layers.{i}.attention."
        for kind in ("weight", "bias"):
            q, k, v = (take(f"{hf}{n}_proj.{kind}") for n in ("q", "k", "v"))
            out[f"transformer.blocks.{i}.attn.qkv.{kind}"] = torch.cat([q, k, v], dim=0)
    if "masked_spec_embed" in sd:
        out["mask_embed"] = take("masked_spec_embed")
    left = sorted(set(sd) - used)
    if left:
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise ConfigError(f"the HF weights hold {left[0]}{more}, which this encoder has no "
                          f"place for (an unsupported variant)")  # fmt: skip
    return out


def to_hf_state(
    sd: dict[str, torch.Tensor], cfg: Wav2Vec2Config, model_type: str = "wav2vec2"
) -> dict[str, torch.Tensor]:
    """Our Wav2Vec2Encoder's state dict -> Wav2Vec2Model / HubertModel names (the same for
    both: transformers' HuBERT reuses wav2vec 2.0's module names)."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r}: use {' or '.join(MODEL_TYPES)}")
    out = {hf: sd[ours] for ours, hf in _pairs(cfg)}
    for i in range(cfg.n_layers):
        hf = f"encoder.layers.{i}.attention."
        for kind in ("weight", "bias"):
            q, k, v = sd[f"transformer.blocks.{i}.attn.qkv.{kind}"].chunk(3, dim=0)
            out.update({f"{hf}q_proj.{kind}": q, f"{hf}k_proj.{kind}": k,
                        f"{hf}v_proj.{kind}": v})  # fmt: skip
    out["masked_spec_embed"] = sd["mask_embed"]
    return {k: v.detach().contiguous() for k, v in out.items()}


def read_hf_weights(p: Path) -> dict[str, torch.Tensor]:
    """The weights of an HF folder: model.safetensors, its shards (model.safetensors.index.json)
    or pytorch_model.bin (read with weights_only=True: tensors, never code)."""
    if (p / "model.safetensors").exists():
        return read_safetensors(p / "model.safetensors")
    index = p / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{index} is not a valid safetensors index") from None
        sd = {}
        for shard in shards:
            sd.update(read_safetensors(p / shard))
        return sd
    if (p / "pytorch_model.bin").exists():
        try:
            return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign pickle: one line, not a trace
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{p / 'pytorch_model.bin'} cannot be read ({first})") from None
    raise ConfigError(f"{p} has config.json but no model.safetensors or pytorch_model.bin")


def read_preprocessor(p: Path, cfg: Wav2Vec2Config) -> dict:
    """do_normalize, sampling_rate and return_attention_mask of a folder's
    preprocessor_config.json; Wav2Vec2FeatureExtractor's defaults where it has none."""
    d = {}
    f = p / "preprocessor_config.json"
    if f.exists():
        try:
            d = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{f} is not valid JSON") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{f} is not a JSON object")
    return {
        "do_normalize": bool(d.get("do_normalize", True)),
        "sampling_rate": int(d.get("sampling_rate", 16000)),
        "return_attention_mask": bool(d.get("return_attention_mask", cfg.conv_norm == "layer")),
    }


def read_hf_wav2vec2_config(path: str | Path) -> tuple[Wav2Vec2Config, dict]:
    """(config, info) of a local HF Wav2Vec2 / HuBERT folder without reading its weights (what
    a random-init upstream of its architecture needs); info as load_hf_wav2vec2's."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"{p} is not a HuggingFace model folder (no config.json)")
    try:
        hf = json.loads((p / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{p / 'config.json'} is not valid JSON") from None
    cfg, model_type = hf_config_to_wav2vec2(hf, str(p / "config.json"))
    return cfg, {"model_type": model_type, **read_preprocessor(p, cfg)}


def load_hf_wav2vec2(path: str | Path) -> tuple[Wav2Vec2Encoder, Wav2Vec2Config, dict]:
    """(encoder in eval mode, config, info) of a local HF Wav2Vec2 / HuBERT folder (a base or
    task model). info: "model_type", "do_normalize" (normalise each waveform to zero mean and
    unit variance before the encoder, as the model was trained), "sampling_rate" and
    "return_attention_mask" (whether the model was meant to see padding masks). A model
    without a mask embedding keeps a freshly initialised one."""
    p = Path(path)
    cfg, info = read_hf_wav2vec2_config(p)
    verify_manifest(p)  # folders we exported carry one; a one-line error names a changed file
    sd = from_hf_state(read_hf_weights(p), cfg)
    encoder = build_wav2vec2(cfg)
    own = encoder.state_dict()
    sd.setdefault("mask_embed", own["mask_embed"])
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise ConfigError(f"{p}: weight {k} has shape {tuple(v.shape)}, the config implies "
                              f"{tuple(own[k].shape)}")  # fmt: skip
    encoder.load_state_dict(sd)
    return encoder.eval(), cfg, info


@dataclass
class PretrainingHeads:
    """wav2vec 2.0's pretraining heads as transformers' Wav2Vec2ForPreTraining holds them: the
    product quantizer (a GumbelQuantizer over the conv features: its `logits` layer is
    quantizer.weight_proj, its codebooks (G, V, D / G) quantizer.codevectors (1, G V, D / G),
    its output projection project_q) and `project` (the context vectors' projection,
    project_hid), with the numbers of the task the config records."""

    quantizer: nn.Module
    project: nn.Module
    temperature: float = 0.1  # contrastive_logits_temperature (kappa)
    n_negatives: int = 100
    diversity_weight: float = 0.1
    mask_prob: float = 0.065  # of the frames starting a span (transformers': times span)
    span: int = 10
    min_spans: int = 2

    def hf_config(self) -> dict:
        q = self.quantizer
        if q.out is None:
            raise ConfigError("Wav2Vec2ForPreTraining projects the quantized vectors (project_q)"
                              ": the quantizer needs an output projection")  # fmt: skip
        return {
            "num_codevector_groups": q.n_groups,
            "num_codevectors_per_group": q.n_entries,
            "codevector_dim": q.codebooks.shape[-1] * q.n_groups,
            "proj_codevector_dim": q.out.out_features,
            "contrastive_logits_temperature": self.temperature,
            "num_negatives": self.n_negatives,
            "diversity_loss_weight": self.diversity_weight,
            "feat_quantizer_dropout": 0.0,
            "mask_time_prob": min(1.0, self.mask_prob * self.span),
            "mask_time_length": self.span,
            "mask_time_min_masks": self.min_spans,
        }

    def hf_state(self) -> dict[str, torch.Tensor]:
        q = self.quantizer
        G, V, d = q.codebooks.shape
        ours = {**{f"quantizer.{k}": v for k, v in q.state_dict().items()},
                **{f"project.{k}": v for k, v in self.project.state_dict().items()}}  # fmt: skip
        sd = {hf: ours[name] for name, hf in HEAD_NAMES}
        sd["quantizer.codevectors"] = q.codebooks.reshape(1, G * V, d)
        return {k: v.detach().contiguous() for k, v in sd.items()}


# (the Wav2Vec2 objective's, Wav2Vec2ForPreTraining's) names of the pretraining heads; the
# codebooks are (G, V, D / G) in ours, (1, G V, D / G) in transformers'.
HEAD_NAMES = [
    ("quantizer.logits.weight", "quantizer.weight_proj.weight"),
    ("quantizer.logits.bias", "quantizer.weight_proj.bias"),
    ("quantizer.codebooks", "quantizer.codevectors"),
    ("quantizer.out.weight", "project_q.weight"),
    ("quantizer.out.bias", "project_q.bias"),
    ("project.weight", "project_hid.weight"),
    ("project.bias", "project_hid.bias"),
]
# Wav2Vec2ObjectiveConfig's settings <- transformers' Wav2Vec2Config key and its default there
# (HubertConfig has none of them: the defaults, which are also ours).
PRETRAINING_KEYS = {
    "n_groups": ("num_codevector_groups", 2),
    "n_entries": ("num_codevectors_per_group", 320),
    "code_dim": ("codevector_dim", 256),
    "proj_dim": ("proj_codevector_dim", 256),
    "temperature": ("contrastive_logits_temperature", 0.1),
    "n_negatives": ("num_negatives", 100),
    "diversity_weight": ("diversity_loss_weight", 0.1),
}


def hf_pretraining_settings(hf: dict) -> dict:
    """The wav2vec2 objective's settings a transformers config fixes: the quantizer's shape
    (G groups of V entries, codevector_dim, proj_codevector_dim) and the contrastive task's
    numbers (temperature, distractors, diversity weight). Not the masking: a folder's
    mask_time_prob is, in most published configs, fine-tuning's SpecAugment (0.05), not the
    pretraining mask (0.65 = 0.065 x 10), so the objective keeps its own."""
    return {ours: hf.get(key, default) for ours, (key, default) in PRETRAINING_KEYS.items()}


def from_hf_heads(hf_sd: dict[str, torch.Tensor], n_groups: int, n_entries: int) -> dict:
    """Wav2Vec2ForPreTraining's quantizer (weight_proj, codevectors), project_q and project_hid
    -> the Wav2Vec2 objective's names; {} when the weights hold none of them (Wav2Vec2Model,
    ForCTC, HuBERT); a one-line ConfigError when they hold only some."""
    present = [hf for _, hf in HEAD_NAMES if hf in hf_sd]
    if not present:
        return {}
    missing = [hf for _, hf in HEAD_NAMES if hf not in hf_sd]
    if missing:
        raise ConfigError(f"the HF weights hold {present[0]} but lack {missing[0]}: an "
                          f"incomplete quantizer")  # fmt: skip
    out = {ours: hf_sd[hf] for ours, hf in HEAD_NAMES}
    codes = out["quantizer.codebooks"]
    if codes.dim() != 3 or codes.shape[:2] != (1, n_groups * n_entries):
        raise ConfigError(f"quantizer.codevectors has shape {tuple(codes.shape)}, the config "
                          f"implies (1, {n_groups * n_entries}, ...)")  # fmt: skip
    out["quantizer.codebooks"] = codes.reshape(n_groups, n_entries, -1)
    return out


def pretraining_init(path: str | Path):
    """`selfsup pretrain --objective wav2vec2 --init FOLDER`: a local HF wav2vec 2.0 folder as a
    FolderInit (selfsup/pretraining_init.py): the encoder's config, the objective's settings
    of hf_pretraining_settings, the data's features as its preprocessor reads the waveform,
    and its weights: the encoder, and a Wav2Vec2ForPreTraining's quantizer and projections.
    A folder without them (Wav2Vec2Model, Wav2Vec2ForCTC, a HuBERT folder) gives the encoder;
    the quantizer and the projections keep the run's seeded random initialisation, with a
    warning in the log (the contrastive targets then start from scratch)."""
    from selfsup.checkpoint import is_run
    from selfsup.objectives.base import FolderInit

    p = Path(path)
    if p.is_dir() and is_run(p):
        raise ConfigError(f"--init {p} is a selfsup run: continue it with --resume, or start "
                          f"from its weights through `selfsup export {p} --format hf`")  # fmt: skip
    cfg, info = read_hf_wav2vec2_config(p)
    hf = json.loads((p / "config.json").read_text())
    settings = hf_pretraining_settings(hf)
    arch = (hf.get("architectures") or [MODEL_TYPES[info["model_type"]]])[0]

    def weights() -> tuple[dict, str | None]:
        verify_manifest(p)
        hf_sd = read_hf_weights(p)
        state = {f"encoder.{k}": v for k, v in from_hf_state(hf_sd, cfg).items()}
        heads = from_hf_heads(hf_sd, settings["n_groups"], settings["n_entries"])
        warning = None
        if not heads:
            warning = (f"{p} ({arch}) has no quantizer: the quantizer and the projections "
                       "(project_q, project_hid) start from random weights, the encoder "
                       "from the folder")  # fmt: skip
        return {**state, **heads}, warning

    features = {"kind": "wave", "sample_rate": info["sampling_rate"],
                "cmvn": "utterance" if info["do_normalize"] else "none"}  # fmt: skip
    return FolderInit(cfg, settings, features, weights, f"HuggingFace {arch}")


def export_hf_wav2vec2(
    encoder: Wav2Vec2Encoder,
    cfg: Wav2Vec2Config,
    out: str | Path,
    *,
    model_type: str = "wav2vec2",
    do_normalize: bool,
    sampling_rate: int = 16000,
    heads: PretrainingHeads | None = None,
) -> str:
    """Write `encoder` as a folder transformers' Wav2Vec2Model (model_type "wav2vec2") or
    HubertModel ("hubert") loads, or with `heads` as a Wav2Vec2ForPreTraining (the encoder
    under `wav2vec2.`, the quantizer and projections beside it): config.json,
    model.safetensors, preprocessor_config.json (a Wav2Vec2FeatureExtractor; `do_normalize`
    says whether the encoder was trained on per-utterance normalised waveforms, at
    `sampling_rate`) and our manifest. Atomic: complete or absent. Returns the class name."""
    hf_cfg = wav2vec2_to_hf_config(cfg, model_type)  # refuses what transformers cannot load
    hf_sd = to_hf_state(encoder.state_dict(), cfg, model_type)
    name = MODEL_TYPES[model_type]
    if heads is not None:
        if model_type != "wav2vec2":
            raise ConfigError(f"pretraining heads export as Wav2Vec2ForPreTraining, not {name}")
        if heads.quantizer.logits.in_features != cfg.conv_channels[-1]:
            raise ConfigError("Wav2Vec2ForPreTraining quantizes the conv features: the "
                              "quantizer must read conv_channels[-1] values")  # fmt: skip
        name = "Wav2Vec2ForPreTraining"
        hf_cfg.update(heads.hf_config(), architectures=[name])
        hf_sd = {**{f"wav2vec2.{k}": v for k, v in hf_sd.items()}, **heads.hf_state()}
    pre = preprocessor_config(cfg, do_normalize, sampling_rate)

    def fill(tmp: Path) -> None:
        save_safetensors(hf_sd, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))

    write_export(Path(out), fill)
    return name
