"""HuggingFace BART interop: our encoder-decoder's config and weight names <-> transformers'
`BartConfig` and `BartForConditionalGeneration` (arXiv:1910.13461).

The layouts are the same; the differences are names and packing: our self-attention keeps q, k
and v in one fused matrix (theirs: q_proj, k_proj, v_proj), our cross-attention fuses k and v;
their learned position tables hold two unused rows first (positions are offset by 2); their
token table appears four times (shared, the encoder's and decoder's embed_tokens, lm_head), all
one tensor when tied; final_logits_bias is (1, V).
"""

from __future__ import annotations

import torch

from selfsup.encoders.seq2seq import Seq2SeqConfig
from selfsup.errors import ConfigError

POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's offset
HF_NORM_EPS = 1e-5  # transformers' BART layers use nn.LayerNorm's default

REQUIRED = ("vocab_size", "d_model", "encoder_layers", "decoder_layers",
            "encoder_attention_heads", "encoder_ffn_dim", "max_position_embeddings")  # fmt: skip


def model_to_hf_config(cfg: Seq2SeqConfig, special: dict[str, int]) -> dict:
    """Our config -> a BartConfig dict. `special` gives the ids of pad, bos, eos and
    decoder_start (the token the decoder starts from)."""
    if abs(cfg.norm_eps - HF_NORM_EPS) > 1e-12:
        raise ConfigError(
            f"model.norm_eps {cfg.norm_eps} cannot be exported: transformers' BART uses 1e-5"
        )
    return {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.dim,
        "encoder_layers": cfg.n_layers,
        "decoder_layers": cfg.n_decoder_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.ffn_dim,
        "decoder_ffn_dim": cfg.ffn_dim,
        "max_position_embeddings": cfg.max_len,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": special["pad"],
        "bos_token_id": special["bos"],
        "eos_token_id": special["eos"],
        "decoder_start_token_id": special["decoder_start"],
        "forced_eos_token_id": special["eos"],
        "is_encoder_decoder": True,
    }


def hf_config_to_model(hf: dict, where: str = "config.json") -> Seq2SeqConfig:
    """A BartConfig dict -> ours; a one-line error for what we cannot represent."""
    if not isinstance(hf, dict) or hf.get("model_type") != "bart":
        raise ConfigError(f"{where} is not a BART config (model_type 'bart')")
    missing = [k for k in REQUIRED if k not in hf]
    if missing:
        raise ConfigError(f"{where} is not a BART config: it lacks {', '.join(missing)}")
    checks = {
        "activation_function": (hf.get("activation_function", "gelu"), "gelu"),
        "scale_embedding": (hf.get("scale_embedding", False), False),
        "decoder_attention_heads": (hf.get("decoder_attention_heads"),
                                    hf["encoder_attention_heads"]),
        "decoder_ffn_dim": (hf.get("decoder_ffn_dim"), hf["encoder_ffn_dim"]),
        "normalize_before": (hf.get("normalize_before", False), False),
        "add_final_layer_norm": (hf.get("add_final_layer_norm", False), False),
    }  # fmt: skip
    for key, (got, want) in checks.items():
        if got != want:
            raise ConfigError(f"{where}: {key} = {got!r} is not supported (only {want!r})")
    return Seq2SeqConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["d_model"],
        n_layers=hf["encoder_layers"],
        decoder_layers=hf["decoder_layers"],
        n_heads=hf["encoder_attention_heads"],
        ffn_dim=hf["encoder_ffn_dim"],
        max_len=hf["max_position_embeddings"],
        dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0),
        norm_eps=HF_NORM_EPS,
        pad_id=hf.get("pad_token_id", 1),
    )


def _attn_to_hf(ours: dict, pre: str, hf_pre: str, out: dict, fused: str = "qkv") -> None:
    names = ["q_proj", "k_proj", "v_proj"]
    for kind in ("weight", "bias"):
        if fused == "qkv":
            parts = ours[f"{pre}.qkv.{kind}"].chunk(3, 0)
        else:  # cross-attention: q alone, k and v fused
            parts = (ours[f"{pre}.q.{kind}"], *ours[f"{pre}.kv.{kind}"].chunk(2, 0))
        for name, t in zip(names, parts, strict=True):
            out[f"{hf_pre}.{name}.{kind}"] = t.clone()
        out[f"{hf_pre}.out_proj.{kind}"] = ours[f"{pre}.out.{kind}"].clone()


def _copy(ours: dict, pre: str, hf_pre: str, out: dict) -> None:
    for kind in ("weight", "bias"):
        out[f"{hf_pre}.{kind}"] = ours[f"{pre}.{kind}"].clone()


def _positions_to_hf(table: torch.Tensor) -> torch.Tensor:
    return torch.cat([table.new_zeros(POSITION_OFFSET, table.shape[1]), table])


def state_dict_to_hf(ours: dict[str, torch.Tensor], cfg: Seq2SeqConfig) -> dict:
    """Our Seq2SeqModel state dict -> BartForConditionalGeneration's (tied tensors repeated)."""
    out: dict[str, torch.Tensor] = {}
    tok = ours["tokens.weight"]
    for key in ("model.shared.weight", "model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight", "lm_head.weight"):  # fmt: skip
        out[key] = tok.clone()
    out["final_logits_bias"] = ours["logits_bias"][None].clone()
    for side, n in (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers)):
        emb = "enc_embed" if side == "encoder" else "dec_embed"
        out[f"model.{side}.embed_positions.weight"] = _positions_to_hf(
            ours[f"{emb}.positions.weight"]
        )
        _copy(ours, f"{emb}.norm", f"model.{side}.layernorm_embedding", out)
        for i in range(n):
            pre, hf = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
            _attn_to_hf(ours, f"{pre}.attn", f"{hf}.self_attn", out)
            _copy(ours, f"{pre}.attn_norm", f"{hf}.self_attn_layer_norm", out)
            if side == "decoder":
                _attn_to_hf(ours, f"{pre}.cross_attn", f"{hf}.encoder_attn", out, fused="q+kv")
                _copy(ours, f"{pre}.cross_norm", f"{hf}.encoder_attn_layer_norm", out)
            _copy(ours, f"{pre}.mlp.up", f"{hf}.fc1", out)
            _copy(ours, f"{pre}.mlp.down", f"{hf}.fc2", out)
            _copy(ours, f"{pre}.mlp_norm", f"{hf}.final_layer_norm", out)
    return out


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: Seq2SeqConfig) -> dict:
    """BartForConditionalGeneration's state dict (or BartModel's, without the `model.` prefix)
    -> ours. A missing tensor is a one-line error naming it."""
    if not any(k.startswith("model.") for k in hf):
        hf = {f"model.{k}": v for k, v in hf.items()}

    def get(key: str) -> torch.Tensor:
        for k in (key, key.replace("model.encoder.embed_tokens", "model.shared")):
            if k in hf:
                return hf[k]
        raise ConfigError(f"the BART weights lack {key}")

    out: dict[str, torch.Tensor] = {"tokens.weight": get("model.shared.weight").clone()}
    bias = hf.get("final_logits_bias")
    out["logits_bias"] = (bias.reshape(-1).clone() if bias is not None
                          else torch.zeros(cfg.vocab_size))  # fmt: skip
    for side, n in (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers)):
        emb = "enc_embed" if side == "encoder" else "dec_embed"
        out[f"{emb}.positions.weight"] = get(f"model.{side}.embed_positions.weight")[
            POSITION_OFFSET:
        ].clone()
        for kind in ("weight", "bias"):
            out[f"{emb}.norm.{kind}"] = get(f"model.{side}.layernorm_embedding.{kind}").clone()
        for i in range(n):
            pre, h = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
            attn = [("attn", "self_attn", "attn_norm", "self_attn_layer_norm")]
            if side == "decoder":
                attn.append(("cross_attn", "encoder_attn", "cross_norm", "encoder_attn_layer_norm"))
            for a, ha, norm, hnorm in attn:
                for kind in ("weight", "bias"):
                    q, k, v = (get(f"{h}.{ha}.{x}_proj.{kind}") for x in "qkv")
                    if a == "attn":
                        out[f"{pre}.attn.qkv.{kind}"] = torch.cat([q, k, v])
                    else:
                        out[f"{pre}.cross_attn.q.{kind}"] = q.clone()
                        out[f"{pre}.cross_attn.kv.{kind}"] = torch.cat([k, v])
                    out[f"{pre}.{a}.out.{kind}"] = get(f"{h}.{ha}.out_proj.{kind}").clone()
                    out[f"{pre}.{norm}.{kind}"] = get(f"{h}.{hnorm}.{kind}").clone()
            for ours_name, hf_name in (("mlp.up", "fc1"), ("mlp.down", "fc2"),
                                       ("mlp_norm", "final_layer_norm")):  # fmt: skip
                for kind in ("weight", "bias"):
                    out[f"{pre}.{ours_name}.{kind}"] = get(f"{h}.{hf_name}.{kind}").clone()
    return out


def special_ids(tok) -> dict[str, int]:
    """Our tokens in BART's roles: [CLS] begins (and starts the decoder), [SEP] ends."""
    return {"pad": tok.pad_id, "bos": tok.cls_id, "eos": tok.sep_id, "decoder_start": tok.cls_id}


def export_bart(model, cfg: Seq2SeqConfig, tokenizer, out) -> None:
    """Write a folder that `transformers.BartForConditionalGeneration.from_pretrained` loads
    without remote code: config.json, model.safetensors, the tokenizer (AutoTokenizer reads it)
    and generation_config.json (decoder start and forced EOS, so `generate` decodes as
    selfsup's greedy search does). `model` is a Seq2SeqModel."""
    import json
    from pathlib import Path

    from selfsup.checkpoint import save_safetensors
    from selfsup.interop.hf_bert import write_export

    special = special_ids(tokenizer)
    hf_cfg = model_to_hf_config(cfg, special)
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict_to_hf(model.state_dict(),
                                                                       cfg).items()}  # fmt: skip
    generation = {
        "decoder_start_token_id": special["decoder_start"], "bos_token_id": special["bos"],
        "eos_token_id": special["eos"], "forced_eos_token_id": special["eos"],
        "pad_token_id": special["pad"], "max_length": cfg.max_len,
    }  # fmt: skip

    def fill(tmp: Path) -> None:
        save_safetensors(sd, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        tokenizer.save(tmp, cfg.max_len)

    write_export(Path(out), fill)


def load_bart(p) -> tuple:
    """(Seq2SeqModel, Seq2SeqConfig) of a transformers BART folder (config.json with
    model_type bart and its weights)."""
    import json
    from pathlib import Path

    from selfsup.checkpoint import verify_manifest
    from selfsup.encoders.seq2seq import build_seq2seq
    from selfsup.interop.hf_bert import _read_hf_weights

    p = Path(p)
    verify_manifest(p)
    hf = json.loads((p / "config.json").read_text())
    cfg = hf_config_to_model(hf, str(p / "config.json"))
    model = build_seq2seq(cfg)
    model.load_state_dict(state_dict_from_hf(_read_hf_weights(p), cfg))
    return model.eval(), cfg
