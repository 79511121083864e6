"""Plots of text vectors (matplotlib's Agg canvas on a Figure: no pyplot, no global backend):
the similarity heatmap of `selfsup contextual` and the t-SNE map of `selfsup embed --plot`.

Chinese (or any script) needs a font that has it: a CJK font matplotlib finds is used; without
one, characters the default font lacks are drawn as "?" rather than as missing-glyph boxes with
a warning each (the commands' JSON outputs keep the text whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

MAX_ROW_LABELS = 80  # more rows than this: the heatmap shows no row labels
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC",
             "Droid Sans Fallback", "AR PL UMing CN")  # fmt: skip


def _fonts() -> tuple[list[str], set[int] | None]:
    """The font families to draw text with, and the code points they cover (None: a CJK font
    was found, assume it covers everything)."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in CJK_FONTS if f in names]
    if cjk:
        return [*cjk[:1], "DejaVu Sans"], None
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont("DejaVu Sans")
    return ["DejaVu Sans"], set(FT2Font(path).get_charmap())


def _drawable(text: str, covered: set[int] | None) -> str:
    if covered is None:
        return text
    return "".join(c if ord(c) in covered or c.isspace() else "?" for c in text)


def similarity_heatmap(sim: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """A PNG heatmap of the (N, N) similarity matrix, row i labelled `labels[i]`."""
    from matplotlib.figure import Figure

    from selfsup.eval.image_probe import _save_png

    n = len(sim)
    family, covered = _fonts()
    show = n <= MAX_ROW_LABELS
    height = max(3.5, 0.22 * n + 1.5) if show else 9.0
    longest = max((len(t) for t in labels), default=0) if show else 0
    fig = Figure(figsize=(max(4.0, 0.25 * n + 2.0) + 0.065 * longest, height))
    ax = fig.add_subplot()
    im = ax.imshow(sim, cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="cosine similarity")
    if show:
        ax.set_yticks(range(n))
        ax.set_yticklabels([_drawable(t, covered) for t in labels], fontsize=7, family=family)
        ax.set_xticks(range(n))
        ax.set_xticklabels([str(i) for i in range(n)], fontsize=6)
    ax.set_title(_drawable(title, covered), fontsize=9, family=family)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_sentence_map(
    vectors: np.ndarray, labels: list[str] | None, path: str | os.PathLike, title: str = ""
) -> Path:
    """`selfsup embed --plot`: a t-SNE map of sentence vectors (sklearn, PCA init, seed 0; at
    most 2,000 sentences, a seeded sample beyond), coloured by label."""
    from selfsup.eval.image_probe import tsne_plot

    names = sorted(set(labels)) if labels is not None else ["sentences"]
    index = {name: i for i, name in enumerate(names)}
    ids = torch.tensor([index[x] for x in labels] if labels is not None else [0] * len(vectors))
    _, covered = _fonts()
    return tsne_plot(torch.as_tensor(np.asarray(vectors)), ids,
                     [_drawable(x or "(none)", covered) for x in names], path,
                     title=title)  # fmt: skip
