"""An image as a sequence of colour ids (iGPT, Chen et al. 2020, "Generative Pretraining from
Pixels"): the image downsampled to side x side, each pixel replaced by its nearest colour in a
k-means palette, the ids read in raster order and embedded, plus learned positions, through the
shared pre-LN Transformer stack. `causal` makes position t see only pixels 0..t (the
next-pixel model); otherwise every pixel sees all (the masked-pixel model, BERT on pixels).

The palette is a buffer (k, 3), fitted from the training images by the objective before
training and saved with the weights. Ids k and k + 1 are the mask and start tokens.

forward(images) follows the image encoder contract (the probes and embed use it): "hidden"
(B, T, D), "pooled" (B, D) the mean of the tokens (iGPT probes average-pooled features),
"padding_mask" (B, T) all False; `forward_ids` runs on ids (training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.corrupt.pixels import quantize
from selfsup.encoders.text import init_bert_weights
from selfsup.encoders.transformer import PreLNBlock, Transformer


def downsample(images: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, side, side), area-averaged (antialiased) when smaller."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="area")


class PixelSequenceEncoder(nn.Module):
    def __init__(
        self,
        palette_size: int,
        side: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.dim, self.side, self.causal, self.palette_size = dim, side, causal, palette_size
        self.mask_id, self.start_id = palette_size, palette_size + 1
        self.register_buffer("palette", torch.zeros(palette_size, 3))
        self.embed = nn.Embedding(palette_size + 2, dim)
        self.positions = nn.Parameter(torch.zeros(1, side * side, dim))
        self.transformer = Transformer(dim, n_layers, n_heads, ffn_dim, dropout, dropout,
                                       norm_eps, block=PreLNBlock, final_norm=True)  # fmt: skip
        init_bert_weights(self)
        nn.init.normal_(self.positions, std=0.02)

    @property
    def image_size(self) -> int:
        return self.side

    def ids(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, side * side) colour ids."""
        return quantize(downsample(images.float(), self.side), self.palette)

    def forward_ids(self, ids: torch.Tensor, return_all: bool = False) -> dict:
        B, T = ids.shape
        x = self.embed(ids) + self.positions[:, :T]  # (B, T, D)
        out = self.transformer(x, None, return_all=return_all, causal=self.causal)
        h = out[-1] if return_all else out
        pad = torch.zeros(B, T, dtype=torch.bool, device=ids.device)
        result = {"hidden": h, "pooled": h.mean(1), "padding_mask": pad}
        if return_all:
            result["all_hidden"] = out
        return result

    def forward(self, images: torch.Tensor, return_all: bool = False) -> dict:
        ids = self.ids(images)
        if self.causal:  # the next-pixel model reads [start, x_0 .. x_{T-2}], as in training
            ids = torch.cat([torch.full_like(ids[:, :1], self.start_id), ids[:, :-1]], 1)
        return self.forward_ids(ids, return_all)
