"""Text pretraining data: read documents, split sentences, tokenize into an on-disk cache, and
build BERT's `[CLS] A [SEP] B [SEP]` segment pairs with NSP/SOP labels, batch by batch.

Pipeline: files/datasets -> documents -> paragraphs -> sentences -> token ids (memory-mapped cache,
so a corpus larger than RAM works and a second run starts at once) -> chunks of consecutive
sentences filling `max_len` -> pairs -> padded batches -> masking (corrupt/tokens.py).

Every example and every batch is a pure function of (seed, index): resuming at step k reproduces
exactly the batches an uninterrupted run would have seen, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.data.packing import pack_batch
from selfsup.data.padding import pad_sequences
from selfsup.data.readers import (
    JSON_SUFFIXES,
    TABLE_SUFFIXES,
    EncodingError,
    MissingColumn,
    data_suffix,
    file_paragraphs,
    is_dataset,
    paragraphs,
    read_lines,
    read_records,
)
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.keys import ATTENTION_MASK, INPUT_IDS, PAIR_LABELS, TOKEN_TYPE_IDS
from selfsup.seeds import Stream, seed_for

TEXT_SUFFIXES = {".txt", ".text", ".md", ".jsonl", ".json", ".csv", ".tsv", ""}
DEFAULT_CORPUS = "gutenberg.jsonl.gz"


@dataclass
class TextDataConfig:
    """Text pretraining data: files, sequence length, tokenizer, packing, held-out share."""

    paths: list[str] = field(default_factory=list)  # empty = the packaged default corpus
    max_len: int = 128
    lowercase: bool = True
    tokenizer: str | None = None  # a tokenizer folder, run or HF model folder (else trained);
    # "units": one token per unit of `selfsup units` files (data/tokenizer.py unit_tokenizer)
    text_field: str = "text"  # column of .jsonl/.csv/datasets inputs
    pack: bool = False  # pack each batch's examples into full rows (no padding FLOPs)
    # LANG=PATH data: language i drawn with p_i^lang_alpha, renormalised (data/multilingual.py)
    lang_alpha: float = 0.7
    heldout_every: int = 50  # every Nth chunk is held out for evaluation
    heldout_max: int = 512
    num_workers: int = 0
    cache_dir: str | None = None

    def validate(self, model) -> None:
        if self.max_len > model.max_len:
            raise ConfigError(
                f"max_len {self.max_len} is beyond the model's position table ({model.max_len})"
            )
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8, got {self.max_len}")
        if not self.tokenizer and model.vocab_size < 16:
            raise ConfigError(f"vocab size {model.vocab_size} is too small")
        if not 0.0 <= self.lang_alpha <= 1.0:
            raise ConfigError(f"data.lang_alpha must be in [0, 1], got {self.lang_alpha}")
        lowest = {"heldout_every": 1, "heldout_max": 0, "num_workers": 0}
        for name, low in lowest.items():
            if getattr(self, name) < low:
                raise ConfigError(f"data.{name} must be >= {low}, got {getattr(self, name)}")


@dataclass(frozen=True)
class TextNeeds:
    """What an objective asks of the text pipeline (its `text_needs(tokenizer, max_len)`):
    segment pairs with a pair task's labels ("nsp", "sop" or None), and a corruption applied to
    each collated batch with the batch's generator, (batch, generator) -> batch.

    An objective that builds its own examples (an encoder-decoder's source and target) gives
    `examples` instead: (the segment's sentences as token-id arrays, the example's generator)
    -> one example, and `collate`: examples -> batch; `segment_len` is then the most tokens
    of text in one segment (default max_len - 3), and `pack` packs a collated batch (--pack;
    None: the objective cannot pack). Segments hold whole sentences, or with `cut_sentences`
    exactly segment_len tokens of a document's running text (make_token_chunks)."""

    pair_task: str | None = None
    corrupt: Callable[[dict, torch.Generator], dict] | None = None
    examples: Callable[[list[np.ndarray], np.random.Generator], Any] | None = None
    collate: Callable[[list], dict] | None = None
    segment_len: int | None = None
    pack: Callable[[dict], dict] | None = None  # its batches packed (--pack), if it can
    cut_sentences: bool = False  # segments of exactly segment_len tokens, across sentence ends


# --------------------------------------------------------------------------------------------
# Reading documents (the files themselves are read by selfsup.data.readers)
# --------------------------------------------------------------------------------------------


def default_corpus() -> str:
    return str(resources.files("selfsup") / "corpora" / DEFAULT_CORPUS)


def resolve_files(paths: list[str]) -> list[Path]:
    """Expand folders into their text files (sorted). A missing path is an error."""
    files: list[Path] = []
    for raw in paths or [default_corpus()]:
        if is_dataset(raw):  # hf:NAME or a datasets.save_to_disk folder
            files.append(Path(raw))
            continue
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"no such file or folder: {raw}")
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not f.name.startswith(".")
                and f.suffix.lower() != ".zip"
                and data_suffix(f) in TEXT_SUFFIXES
            )
            if not found:
                raise ConfigError(f"folder {raw} holds no text files (.txt .jsonl .csv .gz ...)")
            files.extend(found)
        else:
            files.append(p)
    return files


def read_documents(
    paths: list[str], text_field: str = "text", encoding: str = "utf-8"
) -> Iterator[Iterator[str]]:
    """Yield documents, each an iterator of paragraphs (strings).

    .txt: one document per file, paragraphs separated by blank lines, wrapped lines joined.
    .jsonl/.json lines, .csv/.tsv, `datasets` folders (`load_from_disk`) or `hf:NAME` hub names:
    one document per row, taken from `text_field`.
    """
    for f in resolve_files(paths):
        if is_dataset(f) or data_suffix(f) in (*JSON_SUFFIXES, *TABLE_SUFFIXES):
            with _hints(text_field):
                yield from _row_documents(f, text_field, encoding)
        else:
            # The caller reads this document lazily, outside this frame: it gets the hints too.
            yield _hinted(file_paragraphs(f, encoding), text_field)


def _row_documents(f: Path, text_field: str, encoding: str) -> Iterator[Iterator[str]]:
    # TSV with CSV quoting: a cell may hold a whole multi-line document.
    rows = read_records(f, encoding, require=(text_field,), quoted_tsv=True)
    for _, row in rows:
        text = row[text_field]  # None: a JSON null, or a CSV row short of that column
        yield paragraphs(("" if text is None else str(text)).splitlines())


@contextlib.contextmanager
def _hints(text_field: str):
    """Name the command-line option that fixes a reading error."""
    try:
        yield
    except EncodingError as e:
        raise ConfigError(f"{e}; convert it or pass --encoding latin-1") from None
    except MissingColumn as e:
        where, what = (f"{e.path}:{e.line}", "field") if e.line else (e.path, "column")
        raise ConfigError(f"{where} has no {text_field!r} {what} (set --text-field)") from None


def _hinted(paras: Iterator[str], text_field: str) -> Iterator[str]:
    with _hints(text_field):
        yield from paras


def read_paragraphs(
    paths: list[str], text_field: str = "text", encoding: str = "utf-8"
) -> Iterator[str]:
    """Every paragraph of every document; an error at the end if there was none."""
    empty = True
    for doc in read_documents(paths, text_field, encoding):
        for para in doc:
            empty = False
            yield para
    if empty:
        names = ", ".join(map(str, resolve_files(paths)))
        raise ConfigError(f"the corpus is empty: no text found in {names}")


UNIT_SUFFIXES = {".txt", ".text", ""}  # unit files are plain text (optionally .gz)


def unit_lines(paths: list[str], encoding: str = "utf-8") -> Iterator[str]:
    """The non-blank lines of the unit files of `paths` (`selfsup units` writes them: each line
    an utterance's units), plain text; their .json companions are skipped, any other kind of
    file is a one-line error."""
    for f in resolve_files(paths):
        if data_suffix(f) == ".json":  # units.txt's companion (selfsup/units.py)
            continue
        if data_suffix(f) not in UNIT_SUFFIXES:
            raise ConfigError(f"{f} is not a unit file (plain text, one utterance a line)")
        for line in read_lines(f, encoding):
            if line.strip():
                yield line


# A sentence ends at . ! ? (with closing quotes/brackets) followed by space and an upper-case
# letter, a quote or a digit, unless the word before the full stop is an abbreviation ("Mr.",
# "e.g.", an initial as in "J. R. R. Tolkien"); and after 。！？ (with closing quotes), space or
# not: Chinese and Japanese put none between sentences. Good enough for pair construction; no
# model depends on it. Closing quotes/brackets stay with their sentence: only the space between
# is a separator.
_LATIN_END = re.compile(r"[.!?]([\"'”’)\]]{0,2})(\s+)(?=[\"'“‘(\[]?[A-Z0-9])")
_CJK_END = re.compile(r"[。！？]+[\"'”’」』）)\]]*(\s*)")
ABBREVIATIONS = frozenset("mr mrs ms dr prof st sr jr vs etc cf".split())
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # e.g, i.e, U.S, a.m (the last dot is the end)


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the word ending at the full stop text[dot] is an abbreviation."""
    word = text[:dot].rsplit(None, 1)[-1].lstrip("\"'“‘([") if text[:dot].strip() else ""
    if word.lower() in ABBREVIATIONS or _DOTTED.fullmatch(word):
        return True
    return len(word) == 1 and word.isupper() and word != "I"  # an initial, not the pronoun


def split_sentences(paragraph: str) -> list[str]:
    cuts = [m.span(2) for m in _LATIN_END.finditer(paragraph)
            if not (paragraph[m.start()] == "." and not m.group(1)
                    and _is_abbreviation(paragraph, m.start()))]  # fmt: skip
    cuts += [m.span(1) for m in _CJK_END.finditer(paragraph)]
    pieces, start = [], 0
    for a, b in sorted(cuts):
        pieces.append(paragraph[start:a])
        start = b
    pieces.append(paragraph[start:])
    return [s for s in (x.strip() for x in pieces) if s]


# --------------------------------------------------------------------------------------------
# Tokenized cache
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Memory-mapped token ids of a tokenized corpus.

    tokens: (N,) ids; sent_offsets: (S+1,) start of each sentence in tokens; doc_sents: (D+1,)
    first sentence of each document.
    """

    folder: Path
    tokens: np.ndarray
    sent_offsets: np.ndarray
    doc_sents: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.sent_offsets[-1])


def corpus_key(files: list[Path], tok: Tokenizer, cfg: TextDataConfig, encoding: str) -> str:
    # v4: special tokens' text in the corpus is plain text (Tokenizer.encode_plain)
    return cache_key(files, tok.fingerprint(), cfg.max_len, cfg.text_field, encoding, "v4")


def build_corpus(
    paths: list[str],
    tok: Tokenizer,
    cfg: TextDataConfig,
    encoding: str = "utf-8",
    cache_dir: str | None = None,
    log=print,
) -> Corpus:
    """Tokenize the corpus into a cache folder (or open the existing one)."""
    files = resolve_files(paths)
    root = Path(cache_dir or cfg.cache_dir or default_cache_dir()) / "corpus"
    folder = root / corpus_key(files, tok, cfg, encoding)

    def build(tmp: Path) -> None:
        _write_corpus(files, tok, cfg, encoding, tmp, log)

    if build_once(folder, build, "meta.json"):
        log(f"data: using cached tokens in {folder}")
    return open_corpus(folder)


def _write_corpus(
    files, tok: Tokenizer, cfg: TextDataConfig, encoding: str, out: Path, log
) -> None:
    dtype = np.uint16 if tok.vocab_size <= 65535 else np.int32
    piece = cfg.max_len - 3  # longest sentence piece that fits a sequence alone
    sent_lens: list[int] = []
    doc_sents = [0]
    n_tokens = 0
    with open(out / "tokens.bin", "wb") as tf:

        def flush(batch: list[str]) -> None:
            nonlocal n_tokens
            for ids in tok.encode_plain(batch):
                for s in range(0, len(ids), piece):
                    part = ids[s : s + piece]
                    if part:
                        tf.write(np.asarray(part, dtype=dtype).tobytes())
                        sent_lens.append(len(part))
                        n_tokens += len(part)

        batch: list[str] = []
        if tok.units:  # one utterance a line, each its own document; no sentence splitting
            docs = ([line] for line in unit_lines([str(f) for f in files], encoding))
        else:
            docs = read_documents([str(f) for f in files], cfg.text_field, encoding)
        for doc in docs:
            for para in doc:
                batch.extend([para] if tok.units else split_sentences(para))
                if len(batch) >= 4096:
                    flush(batch)
                    batch = []
            flush(batch)
            batch = []
            if len(sent_lens) > doc_sents[-1]:
                doc_sents.append(len(sent_lens))
    if n_tokens == 0:
        raise ConfigError("the corpus is empty: no text found in " + ", ".join(map(str, files)))
    offsets = np.zeros(len(sent_lens) + 1, dtype=np.int64)
    np.cumsum(np.asarray(sent_lens, dtype=np.int64), out=offsets[1:])
    np.save(out / "sent_offsets.npy", offsets)
    np.save(out / "doc_sents.npy", np.asarray(doc_sents, dtype=np.int64))
    meta = {
        "dtype": np.dtype(dtype).name,
        "n_tokens": n_tokens,
        "n_sentences": len(sent_lens),
        "n_documents": len(doc_sents) - 1,
        "files": [str(f) for f in files],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log(
        f"data: tokenized {meta['n_documents']} documents, {meta['n_sentences']} sentences, "
        f"{n_tokens} tokens"
    )


def open_corpus(folder: Path) -> Corpus:
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r")
    return Corpus(
        folder,
        tokens,
        np.load(folder / "sent_offsets.npy", mmap_mode="r"),
        np.load(folder / "doc_sents.npy"),
    )


def make_chunks(corpus: Corpus, max_len: int, budget: int | None = None) -> np.ndarray:
    """Greedily group consecutive sentences of a document into chunks of up to `budget` tokens
    (default max_len - 3: room for [CLS] A [SEP] B [SEP]). Returns (C, 3) int64 rows: first
    sentence, end sentence (exclusive), document."""
    budget = budget or max_len - 3
    lens = np.diff(corpus.sent_offsets)
    rows = []
    for d in range(len(corpus.doc_sents) - 1):
        s, e = int(corpus.doc_sents[d]), int(corpus.doc_sents[d + 1])
        start, total = s, 0
        for i in range(s, e):
            n = int(lens[i])
            if total and total + n > budget:
                rows.append((start, i, d))
                start, total = i, 0
            total += n
        if total:
            rows.append((start, e, d))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def make_token_chunks(corpus: Corpus, budget: int) -> np.ndarray:
    """Cut each document's running text into pieces of exactly `budget` tokens, across
    sentence ends (its last piece shorter): T5's segments, whose corrupted length is computed
    to fill the model's input. Returns (C, 3) int64 rows: first token, end token (exclusive),
    document; `token_chunk_sentences` gives a row's sentences, cut at the row's ends."""
    off, rows = corpus.sent_offsets, []
    for d in range(len(corpus.doc_sents) - 1):
        t0, t1 = int(off[corpus.doc_sents[d]]), int(off[corpus.doc_sents[d + 1]])
        rows += [(s, min(s + budget, t1), d) for s in range(t0, t1, budget)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def token_chunk_sentences(corpus: Corpus, row) -> list[np.ndarray]:
    """The sentences of a `make_token_chunks` row (first token, end token, document), the first
    and last cut to the row, as int64 token-id arrays."""
    off, t0, t1 = corpus.sent_offsets, int(row[0]), int(row[1])
    first = int(np.searchsorted(off, t0, side="right")) - 1  # the sentence holding token t0
    out = []
    for i in range(first, len(off) - 1):
        a, b = max(int(off[i]), t0), min(int(off[i + 1]), t1)
        if a >= t1:
            break
        out.append(np.asarray(corpus.tokens[a:b], dtype=np.int64))
    return out


# --------------------------------------------------------------------------------------------
# Examples and batches
# --------------------------------------------------------------------------------------------


class PairBuilder:
    """Builds `[CLS] A [SEP] B [SEP]` examples from chunks (BERT's create_pretraining_data idea).

    pair_task None: A and B are consecutive (label unused). "nsp": half the time B comes from
    another document (label 1). "sop": half the time A and B are swapped (label 1).
    """

    def __init__(
        self,
        corpus: Corpus,
        chunks: np.ndarray,
        tok: Tokenizer,
        max_len: int,
        pair_task: str | None,
    ):
        self.corpus, self.chunks, self.tok = corpus, chunks, tok
        self.max_len, self.pair_task = max_len, pair_task
        self.n_docs = len(corpus.doc_sents) - 1

    def sentences(self, row) -> list[np.ndarray]:
        return chunk_sentences(self.corpus, row)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return collate(examples, self.tok.pad_id)

    def pack(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return pack_batch(batch, self.tok.pad_id, self.max_len)

    def example(self, chunk: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        sents = self.sentences(self.chunks[chunk])
        if len(sents) >= 2:
            cut = int(rng.integers(1, len(sents)))
            a, b = np.concatenate(sents[:cut]), np.concatenate(sents[cut:])
        else:
            ids = sents[0]
            cut = int(rng.integers(1, len(ids))) if len(ids) >= 2 else len(ids)
            a, b = ids[:cut], ids[cut:]
        label = 0
        if self.pair_task == "nsp" and rng.random() < 0.5:
            b = self._random_segment(chunk, rng, max(1, len(b)))
            label = 1
        elif self.pair_task == "sop" and len(b) and rng.random() < 0.5:
            a, b = b, a
            label = 1
        a, b = _truncate_pair(a, b, self.max_len - 3)
        cls, sep = self.tok.cls_id, self.tok.sep_id
        ids = [cls, *a.tolist(), sep]
        types = [0] * len(ids)
        if len(b):
            ids += [*b.tolist(), sep]
            types += [1] * (len(b) + 1)
        return ids, types, label

    def _random_segment(self, chunk: int, rng: np.random.Generator, length: int) -> np.ndarray:
        doc = self.chunks[chunk, 2]
        other = chunk
        for _ in range(10):  # prefer another document; fall back to a distant chunk
            other = int(rng.integers(0, len(self.chunks)))
            if self.chunks[other, 2] != doc or (self.n_docs == 1 and abs(other - chunk) > 2):
                break
        sents = self.sentences(self.chunks[other])
        start = int(rng.integers(0, len(sents)))
        return np.concatenate(sents[start:] + sents[:start])[:length]


def chunk_sentences(corpus: Corpus, row) -> list[np.ndarray]:
    """The sentences of chunk `row` (first, end, document) as int64 token-id arrays."""
    off, tok = corpus.sent_offsets, corpus.tokens
    return [np.asarray(tok[off[i] : off[i + 1]], dtype=np.int64) for i in range(row[0], row[1])]


class SegmentBuilder:
    """Examples an objective builds itself from each chunk's sentences (TextNeeds.examples and
    .collate): an encoder-decoder's corrupted source and its target, for instance."""

    pair_task = None

    def __init__(self, corpus: Corpus, chunks: np.ndarray, tok: Tokenizer, max_len: int,
                 examples: Callable, collate: Callable, pack: Callable | None = None,
                 sentences: Callable = chunk_sentences):  # fmt: skip
        self.corpus, self.chunks, self.tok, self.max_len = corpus, chunks, tok, max_len
        self._examples, self._collate, self._pack = examples, collate, pack
        self._sentences = sentences  # chunk_sentences, or token_chunk_sentences for token rows

    def example(self, chunk: int, rng: np.random.Generator):
        return self._examples(self._sentences(self.corpus, self.chunks[chunk]), rng)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return self._collate(examples)

    def pack(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._pack(batch)


def _truncate_pair(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


def collate(
    examples: list[tuple[list[int], list[int], int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad to the longest example in the batch (dynamic padding)."""
    input_ids, mask = pad_sequences([ids for ids, _, _ in examples], pad_id)  # (B, T)
    token_type_ids, _ = pad_sequences([types for _, types, _ in examples], 0)
    return {
        INPUT_IDS: input_ids,
        TOKEN_TYPE_IDS: token_type_ids,
        ATTENTION_MASK: mask.long(),
        PAIR_LABELS: torch.tensor([lab for _, _, lab in examples], dtype=torch.long),
    }


class PretrainBatches(torch.utils.data.Dataset):
    """Batch number k (a micro-batch) is a pure function of (seed, k): epoch permutations,
    pair building and masking are all seeded from it, so resuming is exact.

    With `pack`, the batch's `batch_size` examples are packed into as few rows as they fit
    (selfsup.data.packing): the same examples with the same masks, no padding between them.
    `shard` gives one process's share of a batch (distributed.RankShard). `corrupt` (the
    objective's, e.g. MLM masking) is applied to each collated batch with the batch's generator."""

    def __init__(
        self,
        builder: PairBuilder | SegmentBuilder,
        corrupt: Callable[[dict, torch.Generator], dict] | None,
        chunk_ids: np.ndarray,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        pack: bool = False,
    ):
        self.builder, self.corrupt = builder, corrupt
        self.chunk_ids, self.batch_size = chunk_ids, batch_size
        self.seed, self.shuffle, self.pack = seed, shuffle, pack
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # batches per epoch (the sampler decides how many are drawn)
        return max(1, len(self.chunk_ids) // self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.chunk_ids
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.EPOCH_ORDER, epoch))
            self._perm = (epoch, self.chunk_ids[rng.permutation(len(self.chunk_ids))])
        return self._perm[1]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.shard(k, 0, 1)

    def examples(self, k: int) -> list:
        """The examples of batch k, before collating (and before the batch's corruption)."""
        B, n = self.batch_size, len(self.chunk_ids)
        out = []
        for j in range(B):
            pos = k * B + j
            chunk = int(self._order(pos // n)[pos % n])
            rng = np.random.default_rng(seed_for(self.seed, Stream.EXAMPLE, pos))
            out.append(self.builder.example(chunk, rng))
        return out

    def shard(self, k: int, rank: int, world_size: int) -> dict[str, torch.Tensor]:
        """Examples [rank B/W, (rank+1) B/W) of batch k, for process `rank` of `world_size`.

        The whole batch is built and masked padded, with its one generator, before this share is
        cut out (padded rows keep the whole batch's length) and, with `pack`, packed on its own:
        so W processes hold exactly the examples and masks of one, packed or not."""
        B = self.batch_size
        if B % world_size:
            raise ConfigError(f"batch size {B} is not divisible by the {world_size} processes")
        examples = self.examples(k)
        g = torch.Generator().manual_seed(seed_for(self.seed, Stream.CORRUPT, k))
        batch = self.builder.collate(examples)  # (B, T)
        if self.corrupt is not None:
            batch = self.corrupt(batch, g)
        share = B // world_size
        mine = slice(rank * share, (rank + 1) * share)
        batch = {key: v[mine] for key, v in batch.items()}  # (B/W, T)
        return self.builder.pack(batch) if self.pack else batch


def split_chunks(n_chunks: int, every: int, at_most: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out every `every`-th chunk (at most `at_most`) for evaluation."""
    idx = np.arange(n_chunks)
    held = idx[::every][:at_most] if n_chunks >= 2 * every else idx[:0]
    train = np.setdiff1d(idx, held)
    return train, held


def unigram_baseline(
    corpus: Corpus,
    train_chunks: np.ndarray,
    chunks: np.ndarray,
    vocab_size: int,
    special_ids: list[int],
    token_rows: bool = False,
) -> np.ndarray:
    """Token counts over the training chunks (for the most-frequent-token baseline); chunks of
    sentences (make_chunks) or, with `token_rows`, of tokens (make_token_chunks)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    off = corpus.sent_offsets
    for s, e, _ in chunks[train_chunks]:
        a, b = (s, e) if token_rows else (off[s], off[e])
        counts += np.bincount(np.asarray(corpus.tokens[a:b]), minlength=vocab_size)
    counts[special_ids] = 0
    return counts
