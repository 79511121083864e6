"""An encoder-decoder on the shared Transformer stack, in BART's layout (arXiv:1910.13461):
one token table shared by the encoder's input, the decoder's input and the output projection
(tied); learned positions and a LayerNorm on each side's embeddings; post-LN blocks (the
decoder's with causal self-attention and cross-attention to the encoder's output); GELU.
The weights map one to one onto `transformers.BartForConditionalGeneration`
(selfsup.interop.hf_bart).

Legend: B batch, S source tokens, T target tokens, D model width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.encoders.text import check_shape, init_bert_weights
from selfsup.encoders.transformer import (
    PostLNDecoderBlock,
    Transformer,
    block_attn_mask,
    encoder_states,
    pool_first,
)
from selfsup.errors import ConfigError
from selfsup.layers.linear import Linear, linear


@dataclass
class Seq2SeqConfig:
    """The shape of an encoder-decoder; the defaults are BART-base's (6 + 6 layers of 768),
    with LayerNorm eps 1e-5 and no dropout inside attention, as BART."""

    vocab_size: int = 8192
    dim: int = 768
    n_layers: int = 6  # encoder layers
    decoder_layers: int = 0  # 0: as many as the encoder
    n_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 1024  # positions on each side
    dropout: float = 0.1
    attn_dropout: float = 0.0
    norm_eps: float = 1e-5
    pad_id: int = 0

    def validate(self) -> None:
        check_shape(self)
        if self.decoder_layers < 0:
            raise ConfigError(f"model.decoder_layers must be >= 0, got {self.decoder_layers}")

    @property
    def n_decoder_layers(self) -> int:
        return self.decoder_layers or self.n_layers


class PositionedEmbedding(nn.Module):
    """Token vectors (B, T, D) + learned positions, then LayerNorm and dropout (BART's input
    embedding, without segments). The token table itself belongs to the model (shared)."""

    def __init__(self, max_len: int, dim: int, dropout: float = 0.1, norm_eps: float = 1e-5):
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, tokens: torch.Tensor, offset: int = 0, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
        return self.drop(self.norm(tokens + self.positions(position_ids)))


def encode_half(tokens, embed, encoder, input_ids, attention_mask=None, return_all=False,
                position_ids=None, seq_ids=None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The encoder side's contract: {"hidden", "padding_mask"[, "all_hidden"]}."""
    x = embed(tokens(input_ids), position_ids=position_ids)  # (B, S, D)
    return encoder_states(encoder, x, input_ids, attention_mask, seq_ids, return_all)


class Seq2SeqModel(nn.Module):
    """encode(source) -> the encoder contract ({"hidden", "padding_mask"[, "all_hidden"]});
    decode(target input, memory) -> decoder states (B, T, D); logits(states) -> (B, T, V) with
    the tied token table. Incremental decoding passes a `decoder.new_cache()` to decode."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        max_len: int = 1024,
        decoder_layers: int = 0,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        norm_eps: float = 1e-5,
        pad_id: int = 0,
    ):
        super().__init__()
        self.dim, self.max_len, self.pad_id = dim, max_len, pad_id
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.enc_embed = PositionedEmbedding(max_len, dim, dropout, norm_eps)
        self.dec_embed = PositionedEmbedding(max_len, dim, dropout, norm_eps)
        self.encoder = Transformer(dim, n_layers, n_heads, ffn_dim, dropout, attn_dropout,
                                   norm_eps)  # fmt: skip
        self.decoder = Transformer(dim, decoder_layers or n_layers, n_heads, ffn_dim, dropout,
                                   attn_dropout, norm_eps, block=PostLNDecoderBlock)  # fmt: skip
        self.logits_bias = nn.Parameter(torch.zeros(vocab_size))  # BART's final_logits_bias

    def _check_len(self, n: int, side: str, position_ids: torch.Tensor | None = None) -> None:
        """The positions in use fit the table (packed rows may be wider: positions restart)."""
        if position_ids is not None and position_ids.numel():
            n = int(position_ids.max()) + 1
        if n > self.max_len:
            raise ValueError(f"{side} length {n} > max_len {self.max_len}")

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_all: bool = False,
        position_ids: torch.Tensor | None = None,
        seq_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The encoder's contract. Packed rows pass `position_ids` restarting per example and
        `seq_ids` (attention stays inside each example; -1 marks padding)."""
        self._check_len(input_ids.shape[1], "source", position_ids)
        return encode_half(self.tokens, self.enc_embed, self.encoder, input_ids, attention_mask,
                           return_all, position_ids, seq_ids)  # fmt: skip

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_padding: torch.Tensor | None = None,
        cache: list[dict] | None = None,
        offset: int = 0,
        attn_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder states (B, T, D) for `decoder_input_ids` (B, T) that follow `offset` tokens
        already decoded (their keys and values in `cache`). `memory_padding` (B, S) is True on
        the memory's padding; `memory_mask` (B, 1, T, S) replaces it for packed rows, with
        `attn_mask` (B, 1, T, T) keeping each target inside its example."""
        self._check_len(offset + decoder_input_ids.shape[1], "target", position_ids)
        x = self.dec_embed(self.tokens(decoder_input_ids), offset, position_ids)  # (B, T, D)
        if memory_mask is None and memory_padding is not None and bool(memory_padding.any()):
            memory_mask = ~memory_padding[:, None, None, :]  # (B, 1, 1, S)
        return self.decoder(x, attn_mask, memory=memory, memory_mask=memory_mask, cache=cache)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V): the tied token table as the output projection, plus a bias."""
        return linear(states, self.tokens.weight, self.logits_bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) of every target position (for tests and interop: an objective
        scores only the positions it needs)."""
        enc = self.encode(input_ids, attention_mask)
        return self.logits(self.decode(decoder_input_ids, enc["hidden"], enc["padding_mask"]))


def packed_decoder_masks(
    seq_ids: torch.Tensor, decoder_seq_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's masks for packed rows, from the sources' and the targets' example ids
    (R, S) and (R, T), -1 on padding: self-attention (R, 1, T, T) inside each target (the
    decoder adds causality), cross-attention (R, 1, T, S) from each target to its own source
    only. A padding query sees every key, so no softmax row is empty (its output is never
    scored; an empty row would put NaN into the gradients)."""
    q = decoder_seq_ids[:, :, None]  # (R, T, 1)
    cross = (q == seq_ids[:, None, :]) | (q < 0)  # (R, T, S)
    return block_attn_mask(decoder_seq_ids), cross[:, None]


def build_seq2seq(cfg: Seq2SeqConfig) -> Seq2SeqModel:
    model = Seq2SeqModel(
        cfg.vocab_size, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.max_len,
        cfg.decoder_layers, cfg.dropout, cfg.attn_dropout, cfg.norm_eps, cfg.pad_id,
    )  # fmt: skip
    init_bert_weights(model)  # BART's initialisation too: N(0, 0.02), zero biases
    return model


class Seq2SeqEncoder(nn.Module):
    """The encoder half of an encoder-decoder with BERT's encoder contract, so classification,
    tagging, QA and embeddings run on it as on a BERT: {"hidden", "pooled", "padding_mask"
    [, "all_hidden"]}; "pooled" is tanh(Linear) of the first token ([CLS]), a pooler the
    encoder-decoder never had (newly initialised, trained by the fine-tuning).
    `token_type_ids` are accepted and ignored (BART has no segments)."""

    def __init__(self, tokens: nn.Embedding, embed: PositionedEmbedding, encoder: Transformer,
                 max_len: int):  # fmt: skip
        super().__init__()
        self.tokens, self.enc_embed, self.encoder = tokens, embed, encoder
        self.dim, self.max_len = tokens.embedding_dim, max_len
        self.pooler = Linear(self.dim, self.dim)
        init_bert_weights(self.pooler)

    @classmethod
    def of(cls, model: Seq2SeqModel) -> Seq2SeqEncoder:
        """The encoder of `model` (its modules, shared, not copied)."""
        return cls(model.tokens, model.enc_embed, model.encoder, model.max_len)

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
        r = encode_half(self.tokens, self.enc_embed, self.encoder, input_ids, attention_mask,
                        return_all, position_ids, seq_ids)  # fmt: skip
        return {"hidden": r["hidden"], "pooled": pool_first(self.pooler, r["hidden"], cls_index),
                **r}  # fmt: skip


def build_seq2seq_encoder(cfg: Seq2SeqConfig) -> Seq2SeqEncoder:
    """A fresh encoder half (to load a fine-tuned folder's weights into)."""
    return Seq2SeqEncoder.of(build_seq2seq(cfg))
