"""Vector quantizers for speech self-supervision: wav2vec 2.0's Gumbel-softmax product quantizer
and vq-wav2vec's k-means quantizer, both with G groups of V entries each.

Legend: N rows (frames), G groups, V entries per group, D quantized width (D / G per group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.layers.linear import Linear


def code_perplexity(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(G,) exp of the entropy of each group's distribution averaged over the rows of probs
    (N, G, V) (soft-max probabilities, or one-hot codes for the usage of a batch), or over the
    rows `mask` (N,) bool selects: V when every entry is used equally, 1 with a single one."""
    probs = probs.float()
    if mask is not None:
        probs = probs[mask]
    mean = probs.sum(0) / max(probs.shape[0], 1)  # (G, V); no rows: perplexity 1, not NaN
    return torch.exp(-torch.special.xlogy(mean, mean).sum(-1))


def gumbel_temperature(
    step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995
) -> float:
    """The Gumbel-softmax temperature at optimizer step `step`: max(end, start * decay**step),
    wav2vec 2.0's schedule (arXiv:2006.11477, 4.2: from 2 to 0.5 by 0.999995 a step)."""
    return max(end, start * decay**step)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise -log(E), E ~ Exp(1), drawn from `generator` (float32)."""
    e = torch.empty(shape, device=generator.device).exponential_(generator=generator)
    return -e.log()


class GumbelQuantizer(nn.Module):
    """wav2vec 2.0's product quantizer (arXiv:2006.11477, 3.1; G = 2, V = 320): a linear layer
    maps each row (N, in_dim) to logits (N, G, V); in training a Gumbel-softmax with temperature
    `self.temperature` (set it each step from `gumbel_temperature`) picks one entry per group,
    hard in the forward pass with the soft-max's gradient (straight-through); in eval the argmax.
    The G chosen entries, each D / G wide, are concatenated to (N, D) and, with `out_dim`,
    projected by a linear layer.

    forward(x, generator=None, noise=None) returns a dict: "quantized" (N, D or out_dim),
    "codes" (N, G) long, "probs" (N, G, V) the soft-max without noise (for `diversity_loss`),
    "perplexity" (G,) of the batch's mean soft distribution in training, of its codes in eval.
    Training needs the noise: a `generator` to draw it from, or `noise` (N, G, V) itself.
    Initialised as the paper's implementation: logit weights N(0, 1), zero bias, codebook
    entries U(0, 1).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        n_groups: int = 2,
        n_entries: int = 320,
        out_dim: int | None = None,
        temperature: float = 2.0,
    ):
        super().__init__()
        if dim % n_groups:
            raise ValueError(f"dim {dim} must be divisible by n_groups {n_groups}")
        self.n_groups, self.n_entries, self.temperature = n_groups, n_entries, temperature
        self.logits = Linear(in_dim, n_groups * n_entries)
        self.codebooks = nn.Parameter(torch.empty(n_groups, n_entries, dim // n_groups))
        self.out = None if out_dim is None else Linear(dim, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.logits.weight, std=1.0)
        nn.init.zeros_(self.logits.bias)
        nn.init.uniform_(self.codebooks)

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        N, G, V = x.shape[0], self.n_groups, self.n_entries
        logits = self.logits(x).float().view(N, G, V)  # (N, G, V)
        probs = logits.softmax(-1)
        if self.training:
            if noise is None:
                if generator is None:
                    raise ValueError("GumbelQuantizer in training needs a generator or noise")
                noise = gumbel_noise((N, G, V), generator)
            soft = ((logits + noise.to(logits)) / self.temperature).softmax(-1)
            codes = soft.argmax(-1)  # (N, G)
            hard = F.one_hot(codes, V).to(soft)
            choice = hard - soft.detach() + soft  # straight-through: hard value, soft gradient
            perplexity = code_perplexity(probs)
        else:
            codes = logits.argmax(-1)
            choice = F.one_hot(codes, V).to(logits)
            perplexity = code_perplexity(choice)
        quantized = torch.einsum("ngv,gvd->ngd", choice, self.codebooks).flatten(1)  # (N, D)
        if self.out is not None:
            quantized = self.out(quantized)
        return {"quantized": quantized, "codes": codes, "probs": probs, "perplexity": perplexity}


class KMeansQuantizer(nn.Module):
    """vq-wav2vec's k-means quantizer (arXiv:1910.05453, 3.1-3.2; G = 2 groups of V = 320 in
    the paper): each row z (N, dim) is cut into G parts of dim / G, each replaced by the nearest
    (Euclidean) entry e of its group's codebook. The forward pass outputs e, the backward pass
    gives z the gradient of e (straight-through).

    forward(z) returns a dict: "quantized" (N, dim), "codes" (N, G) long, "perplexity" (G,) of
    the codes, and, summed over rows of the squared norms over the dim values,
    "codebook_loss" ||sg(z) - e||^2 (moves the entries), "commitment_loss" ||z - sg(e)||^2
    (moves the encoder) and "loss" = codebook_loss + commitment_weight * commitment_loss
    (gamma = 0.25). The count they are sums over is N. (fairseq averages over the N * dim
    values, i.e. 1 / dim of these.) Entries start N(0, 0.01^2), as its implementation.
    """

    def __init__(
        self, dim: int, n_groups: int = 2, n_entries: int = 320, commitment_weight: float = 0.25
    ):
        super().__init__()
        if dim % n_groups:
            raise ValueError(f"dim {dim} must be divisible by n_groups {n_groups}")
        self.n_groups, self.n_entries = n_groups, n_entries
        self.commitment_weight = commitment_weight
        self.codebooks = nn.Parameter(torch.empty(n_groups, n_entries, dim // n_groups))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.codebooks, std=0.01)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        N, G = z.shape[0], self.n_groups
        zg = z.float().view(N, G, z.shape[-1] // G)  # (N, G, D/G)
        books = self.codebooks.float()  # (G, V, D/G)
        with torch.no_grad():
            dist = (
                zg.pow(2).sum(-1, keepdim=True)
                - 2 * torch.einsum("ngd,gvd->ngv", zg, books)
                + books.pow(2).sum(-1)[None]
            )  # (N, G, V)
            codes = dist.argmin(-1)  # (N, G)
        e = books[torch.arange(G, device=z.device), codes]  # (N, G, D/G)
        codebook_loss = (zg.detach() - e).pow(2).sum()
        commitment_loss = (zg - e.detach()).pow(2).sum()
        quantized = (zg + (e - zg).detach()).flatten(1).to(z.dtype)  # (N, D)
        return {
            "quantized": quantized,
            "codes": codes,
            "perplexity": code_perplexity(F.one_hot(codes, self.n_entries)),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "loss": codebook_loss + self.commitment_weight * commitment_loss,
        }
