"""BERT text encoder: embeddings -> shared Transformer stack -> (hidden states, pooled [CLS])."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.encoders.transformer import Transformer, encoder_states, pool_first
from selfsup.errors import ConfigError
from selfsup.layers.embed import TextEmbedding
from selfsup.layers.linear import Linear


@dataclass
class BertConfig:
    """A BERT encoder (Devlin et al., arXiv:1810.04805); defaults are BERT-base's shape with the
    vocabulary size of a WordPiece vocabulary trained for the run."""

    vocab_size: int = 8192  # a trained tokenizer's target size; else the tokenizer's own size
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 512  # size of the learned position table
    type_vocab_size: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    norm_eps: float = 1e-12
    pad_id: int = 0

    def validate(self) -> None:
        check_shape(self)


def check_shape(cfg) -> None:
    """The checks every Transformer shape needs (BERT's and an encoder-decoder's config)."""
    if cfg.dim % cfg.n_heads:
        raise ConfigError(f"dim {cfg.dim} is not divisible by n_heads {cfg.n_heads}")
    for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_len"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(cfg, name)}")


class BertEncoder(nn.Module):
    """BERT (arXiv:1810.04805). Returns the encoder contract every head, probe, embedding and
    fine-tuning reads: {"hidden": (B, T, D) last hidden states, "padding_mask": (B, T) True on
    padding, "all_hidden": the embeddings and every layer's output (with `return_all`)}, plus
    "pooled": (B, D), BERT's pooled [CLS].

    Packed rows (selfsup.data.packing) pass `position_ids` restarting per example, `seq_ids`
    (attention stays inside each example) and `cls_index` (E,): then "pooled" is (E, D), one
    vector per example.

    The pooler (dense + tanh on [CLS]) is kept here, as in BERT, so pretrained checkpoints carry it.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        max_len: int = 512,
        type_vocab_size: int = 2,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
        pad_id: int = 0,
    ):
        super().__init__()
        self.dim = dim
        self.max_len = max_len
        self.embed = TextEmbedding(
            vocab_size, dim, max_len, type_vocab_size, dropout, norm_eps, pad_id
        )
        self.transformer = Transformer(
            dim, n_layers, n_heads, ffn_dim, dropout, attn_dropout, norm_eps
        )
        self.pooler = Linear(dim, dim)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_all: bool = False,
        seq_ids: torch.Tensor | None = None,
        cls_index: torch.Tensor | None = None,
        sparse_grad: bool = False,
    ) -> dict[str, torch.Tensor]:
        if input_ids.shape[1] > self.max_len:
            raise ValueError(f"sequence length {input_ids.shape[1]} > max_len {self.max_len}")
        x = self.embed(input_ids, token_type_ids, position_ids, sparse_grad)  # (B, T, D)
        r = encoder_states(self.transformer, x, input_ids, attention_mask, seq_ids, return_all)
        return {"hidden": r["hidden"], "pooled": pool_first(self.pooler, r["hidden"], cls_index),
                **r}  # fmt: skip


def build_encoder(cfg: BertConfig) -> BertEncoder:
    enc = BertEncoder(
        cfg.vocab_size,
        cfg.dim,
        cfg.n_layers,
        cfg.n_heads,
        cfg.ffn_dim,
        cfg.max_len,
        cfg.type_vocab_size,
        cfg.dropout,
        cfg.attn_dropout,
        cfg.norm_eps,
        cfg.pad_id,
    )
    init_bert_weights(enc)
    return enc


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
