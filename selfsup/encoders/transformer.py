"""The shared Transformer stack: takes embeddings (B, T, D), not token ids, so text, audio, image
and DNA front ends all reuse it. The block and the norm are passed in as classes:

    # BERT: post-LN, LayerNorm
    Transformer(768, 12, 12, 3072)
    # GPT-2 (with causal=True in forward) and ViT: pre-LN and a final norm
    Transformer(768, 12, 12, 3072, block=PreLNBlock, final_norm=True)
    # a T5-style decoder (the relative-position bias goes in as forward's `bias`)
    Transformer(512, 6, 8, 2048, block=PreLNDecoderBlock, norm=RMSNorm, final_norm=True)

A block with extra arguments goes in through functools.partial, e.g.
`block=partial(PreLNDecoderBlock, kv_dim=1024)` for a memory of another width.

Legend: B batch, T tokens, S memory tokens, D model width.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.attention import CrossAttention, SelfAttention, causal_attn_mask
from selfsup.layers.mlp import MLP

__all__ = [
    "PostLNBlock",
    "PreLNBlock",
    "PostLNDecoderBlock",
    "PreLNDecoderBlock",
    "Transformer",
    "causal_attn_mask",
    "causal_padding_attn_mask",
    "padding_attn_mask",
    "padding_of",
    "encoder_states",
    "pool_first",
    "block_attn_mask",
    "reorder_cache",
]


class PostLNBlock(nn.Module):
    """The original Transformer and BERT block: sublayer, dropout, residual, then the norm
    (arXiv:1706.03762; BERT arXiv:1810.04805, LayerNorm eps 1e-12, GELU)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
        norm: type[nn.Module] = nn.LayerNorm,
        act: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, attn_dropout)
        self.attn_norm = norm(dim, eps=norm_eps)
        self.mlp = MLP(dim, ffn_dim, act=act)
        self.mlp_norm = norm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, attn_mask, causal, bias)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class PreLNBlock(PostLNBlock):
    """The pre-norm block: x + sublayer(norm(x)), so the residual path is never normalised and
    deep stacks train without warm-up (Xiong et al., arXiv:2002.04745). GPT-2, ViT and
    wav2vec 2.0 large use it; the stack needs a final norm (Transformer(final_norm=True)).
    The same submodules as PostLNBlock (its constructor); only the forward pass differs."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), attn_mask, causal, bias))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class PostLNDecoderBlock(nn.Module):
    """The original Transformer and BART decoder block: causal self-attention, cross-attention
    to the encoder's output (`memory`), then the FFN, each followed by dropout, residual and norm
    (arXiv:1706.03762; BART arXiv:1910.13461). Self-attention is always causal; `attn_mask`
    adds padding or packing on top. kv_dim is the memory's width (default dim)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
        norm: type[nn.Module] = nn.LayerNorm,
        act: type[nn.Module] = nn.GELU,
        kv_dim: int | None = None,
    ):
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, attn_dropout)
        self.attn_norm = norm(dim, eps=norm_eps)
        self.cross_attn = CrossAttention(dim, n_heads, attn_dropout, kv_dim)
        self.cross_norm = norm(dim, eps=norm_eps)
        self.mlp = MLP(dim, ffn_dim, act=act)
        self.mlp_norm = norm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        cache: dict | None = None,
    ) -> torch.Tensor:
        if memory is None:
            raise ValueError("a decoder block needs the encoder's output as `memory`")
        c_self, c_cross = (None, None) if cache is None else (cache["self"], cache["cross"])
        x = self.attn_norm(x + self.drop(self.attn(x, attn_mask, True, bias, c_self)))
        x = self.cross_norm(x + self.drop(self.cross_attn(x, memory, memory_mask, c_cross)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class PreLNDecoderBlock(PostLNDecoderBlock):
    """The pre-norm decoder block: x + sublayer(norm(x)) for causal self-attention,
    cross-attention to `memory` and the FFN (arXiv:2002.04745; the T5 decoder's layout,
    arXiv:1910.10683, with norm=RMSNorm). The same submodules as PostLNDecoderBlock (its
    constructor); only the forward pass differs."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        cache: dict | None = None,
    ) -> torch.Tensor:
        if memory is None:
            raise ValueError("a decoder block needs the encoder's output as `memory`")
        c_self, c_cross = (None, None) if cache is None else (cache["self"], cache["cross"])
        x = x + self.drop(self.attn(self.attn_norm(x), attn_mask, True, bias, c_self))
        x = x + self.drop(self.cross_attn(self.cross_norm(x), memory, memory_mask, c_cross))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """n_layers blocks of one class over embeddings (B, T, D). The defaults are BERT's
    (post-LN, LayerNorm eps 1e-12, GELU, dropout 0.1; arXiv:1810.04805). Pre-LN stacks need
    final_norm=True, which adds `final_norm` after the last block (GPT-2, ViT; arXiv:2002.04745).

    forward: `attn_mask`, `causal` and `bias` go to every block's self-attention (see
    selfsup.layers.attention); decoder blocks are always causal and get `memory` (B, S, kv_dim)
    and `memory_mask` instead of `causal`, and `cache` for incremental decoding: one
    `new_cache()` entry per block, holding the keys and values of the tokens decoded so far
    (the next call's x follows them). return_all gives the input and every block's output,
    the last one after the final norm, so its last entry is what forward returns otherwise.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
        block: type[nn.Module] = PostLNBlock,
        norm: type[nn.Module] = nn.LayerNorm,
        final_norm: bool = False,
        act: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            block(dim, n_heads, ffn_dim, dropout, attn_dropout, norm_eps, norm=norm, act=act)
            for _ in range(n_layers)
        )
        # None, not nn.Identity, when absent: the default (BERT) state dict and forward stay
        # exactly what they were.
        self.final_norm = norm(dim, eps=norm_eps) if final_norm else None

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        return_all: bool = False,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: list[dict] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        states = [x]
        for i, block in enumerate(self.blocks):
            if memory is None:
                x = block(x, attn_mask, causal=causal, bias=bias)  # (B, T, D)
            else:
                c = None if cache is None else cache[i]
                x = block(x, attn_mask, memory=memory, memory_mask=memory_mask, bias=bias, cache=c)
            if return_all:
                states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if return_all:
                states[-1] = x
        return states if return_all else x

    def new_cache(self) -> list[dict]:
        """An empty incremental-decoding cache for a decoder stack: per block, the
        self-attention's keys and values so far and the memory's (computed once)."""
        return [{"self": {}, "cross": {}} for _ in self.blocks]


def reorder_cache(
    cache: list[dict], index: torch.Tensor, parts: tuple[str, ...] = ("self", "cross")
) -> None:
    """Keep and reorder a decoding cache's rows in place, `index` (B',) into the batch: the
    beams a beam search keeps at each step. `parts=("self",)` leaves the memory's keys and
    values as they are, which is right when every row keeps a row of its own source (beams
    of one source share its memory)."""
    for layer in cache:
        for name in parts:
            part = layer[name]
            for key in part:
                part[key] = part[key].index_select(0, index)


def padding_of(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    seq_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) bool, True on padding: the encoder contract's "padding_mask", from packed rows'
    `seq_ids` (-1 on padding), else the 1/0 attention mask, else nothing padded."""
    if seq_ids is not None:
        return seq_ids < 0
    if attention_mask is not None:
        return attention_mask == 0
    return torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)


def encoder_states(
    transformer: Transformer,
    x: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    seq_ids: torch.Tensor | None = None,
    return_all: bool = False,
) -> dict[str, torch.Tensor]:
    """An encoder's contract without the pooled vector, for embeddings x (B, T, D) of
    `input_ids`: {"hidden", "padding_mask"[, "all_hidden"]}; attention masks padding, or keeps
    packed rows' examples apart (`seq_ids`)."""
    mask = padding_attn_mask(attention_mask) if seq_ids is None else block_attn_mask(seq_ids)
    out = transformer(x, mask, return_all=return_all)
    result = {"hidden": out[-1] if return_all else out,
              "padding_mask": padding_of(input_ids, attention_mask, seq_ids)}  # fmt: skip
    if return_all:
        result["all_hidden"] = out
    return result


def pool_first(pooler: nn.Module, h: torch.Tensor, cls_index: torch.Tensor | None = None):
    """tanh(pooler(first token)) of (B, T, D) states: each row's [CLS], or of packed rows the
    flat positions `cls_index` (E,) of each example's first token. (B|E, D)."""
    cls = h[:, 0] if cls_index is None else h.reshape(-1, h.shape[-1])[cls_index]
    return torch.tanh(pooler(cls))


def padding_attn_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean keys mask; None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def causal_padding_attn_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1/0 padding mask -> (B, 1, T, T) boolean mask, causal and padding in one: query t
    sees the real keys 0..t. Every query also sees itself, which keeps the softmax rows of
    left padding finite and changes no real position (a real query sees itself anyway)."""
    T = attention_mask.shape[1]
    keep = causal_attn_mask(T, attention_mask.device) & attention_mask.bool()[:, None, :]
    keep |= torch.eye(T, dtype=torch.bool, device=attention_mask.device)  # (B, T, T)
    return keep[:, None]  # (B, 1, T, T)


def block_attn_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) ids of packed examples -> (B, 1, T, T) boolean mask: a token attends only to the
    tokens of its own example. Padding (-1) attends to padding, which keeps every softmax row
    finite."""
    return (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
