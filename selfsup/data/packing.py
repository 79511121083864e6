"""Sequence packing: several short examples share one row, so no FLOPs go to padding.

A packed batch is a normal batch plus three keys:
- `position_ids` (R, T): positions restart at 0 for every example in a row;
- `seq_ids` (R, T): which example of its row each token belongs to (0, 1, ...), -1 on padding;
  attention stays inside each example (the encoder turns it into a block-diagonal mask);
- `cls_index` (E,): flat index (row * T + column) of each example's first token, where the
  [CLS] vector of example e is read for the sentence-pair head; `pair_labels` is (E,) as usual.
Rows are filled first-fit by decreasing length (a deterministic function of the lengths), the
idea of Krell et al., "Efficient Sequence Packing without Cross-contamination" (arXiv:2107.02027).

Pretraining batches are masked padded and packed afterwards (`pack_batch`): the masks are then
those of the padded batch, whatever the layout, and a share of a batch's examples can be packed
on its own (each process of a run packs its own examples).
"""

from __future__ import annotations

import torch

from selfsup.data.padding import pad_sequences
from selfsup.keys import IGNORE


def pack_rows(lengths: list[int], max_len: int, second: list[int] | None = None) -> list[list[int]]:
    """First-fit decreasing: a list of rows, each the indices of the examples it holds, in
    decreasing length; every row's total length is <= max_len. With `second` (an
    encoder-decoder's target lengths beside its source `lengths`), an example goes into a row
    only where both fit: each row's totals of both are <= max_len."""
    second = second if second is not None else [0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-max(lengths[i], second[i]), i))
    rows: list[list[int]] = []
    room: list[list[int]] = []  # per row: what is left of each side
    for i in order:
        n, m = lengths[i], second[i]
        if max(n, m) > max_len:
            raise ValueError(f"example of {max(n, m)} tokens does not fit a row of {max_len}")
        for r, (left, left2) in enumerate(room):
            if n <= left and m <= left2:
                rows[r].append(i)
                room[r] = [left - n, left2 - m]
                break
        else:
            rows.append([i])
            room.append([max_len - n, max_len - m])
    return rows


def collate_packed(
    examples: list[tuple[list[int], list[int], int]],
    pad_id: int,
    max_len: int,
    labels: list[list[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Pack (ids, token_type_ids, pair_label) examples into rows of up to `max_len` tokens; the
    row length is the fullest row's, so a batch of short examples is not padded to max_len.
    `labels`, one list per example (MLM targets, IGNORE elsewhere), are packed with the tokens."""
    rows = pack_rows([len(ids) for ids, _, _ in examples], max_len)
    ids, types, positions, seqs, labs = [], [], [], [], []
    for row in rows:  # each row: its examples one after the other
        ids.append([t for i in row for t in examples[i][0]])
        types.append([t for i in row for t in examples[i][1]])
        positions.append([p for i in row for p in range(len(examples[i][0]))])
        seqs.append([j for j, i in enumerate(row) for _ in examples[i][0]])
        if labels is not None:
            labs.append([t for i in row for t in labels[i]])
    input_ids, mask = pad_sequences(ids, pad_id)  # (R, T), T = the fullest row
    T = input_ids.shape[1]
    cls_index = torch.empty(len(examples), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            cls_index[i] = r * T + at
            at += len(examples[i][0])
    pair_labels = torch.tensor([lab for _, _, lab in examples], dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "token_type_ids": pad_sequences(types, 0)[0],
        "attention_mask": mask.long(),
        "position_ids": pad_sequences(positions, 0)[0],
        "seq_ids": pad_sequences(seqs, -1)[0],
        "cls_index": cls_index,
        "pair_labels": pair_labels,
    }
    return batch if labels is None else {**batch, "labels": pad_sequences(labs, IGNORE)[0]}


class RowLayout:
    """Where each example of a padded batch goes in packed rows: built from its real-token mask
    (B, T), real tokens each row's prefix, and `rows` (pack_rows' answer). `scatter` moves a
    (B, T) tensor's real entries to their places in (R, width) rows."""

    def __init__(self, mask: torch.Tensor, rows: list[list[int]]):
        B, T = mask.shape
        lengths = mask.sum(1)  # (B,)
        self.mask, self.R = mask, len(rows)
        self.width = max(int(lengths[row].sum()) for row in rows)
        self.row_of = torch.empty(B, dtype=torch.long)  # the row each example goes to
        self.rank_in_row = torch.empty(B, dtype=torch.long)  # 0, 1, ... within its row
        start = torch.empty(B, dtype=torch.long)  # its first column
        for r, row in enumerate(rows):
            idx = torch.tensor(row)
            self.row_of[idx] = r
            self.rank_in_row[idx] = torch.arange(len(row))
            start[idx] = torch.cumsum(lengths[idx], 0) - lengths[idx]
        self.first = self.row_of * self.width + start  # (B,) flat index of each first token
        self.dest = (self.first[:, None] + torch.arange(T))[mask]  # (N,) flat places

    def scatter(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((self.R * self.width,), fill, dtype=values.dtype)
        out[self.dest] = values[self.mask]
        return out.view(self.R, self.width)

    def positions(self) -> torch.Tensor:
        """(R, width): positions restarting at 0 for every example, 0 on padding."""
        B, T = self.mask.shape
        return self.scatter(torch.arange(T).expand(B, T), 0)

    def seq_ids(self) -> torch.Tensor:
        """(R, width): each token's example within its row, -1 on padding."""
        B, T = self.mask.shape
        return self.scatter(self.rank_in_row[:, None].expand(B, T), -1)


def pack_batch(
    batch: dict[str, torch.Tensor], pad_id: int, max_len: int
) -> dict[str, torch.Tensor]:
    """The examples of a padded, masked batch (B, T) packed into rows: the same result as
    `collate_packed` on its unpadded examples (with their labels), built by one scatter per key
    instead of a Python loop over tokens."""
    mask = batch["attention_mask"].bool()  # (B, T): real tokens are each row's prefix
    layout = RowLayout(mask, pack_rows(mask.sum(1).tolist(), max_len))
    return {
        "input_ids": layout.scatter(batch["input_ids"], pad_id),
        "token_type_ids": layout.scatter(batch["token_type_ids"], 0),
        "attention_mask": layout.scatter(torch.ones_like(batch["input_ids"]), 0),
        "position_ids": layout.positions(),
        "seq_ids": layout.seq_ids(),
        "cls_index": layout.first,
        "pair_labels": batch["pair_labels"],
        "labels": layout.scatter(batch["labels"], IGNORE),
    }


def unpack(hidden: torch.Tensor, seq_ids: torch.Tensor, cls_index: torch.Tensor) -> list:
    """Per-example (n_e, D) slices of packed hidden states (B, T, D), in example order."""
    B, T, D = hidden.shape
    flat = hidden.reshape(B * T, D)
    ids = seq_ids.reshape(-1)
    out = []
    for start in cls_index.tolist():
        r = start // T
        n = int((seq_ids[r] == ids[start]).sum())
        out.append(flat[start : start + n])
    return out
