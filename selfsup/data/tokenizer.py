"""WordPiece tokenizer (BERT, arXiv:1810.04805): trained here, run with HF `tokenizers`.

Saved as vocab.txt + tokenizer.json + tokenizer_config.json, which
`transformers.BertTokenizerFast.from_pretrained(folder)` loads unchanged. CJK characters are
split one per token (BERT's Chinese handling), so Chinese text works.

The vocabulary is learned by `learn_vocab`, not by HF's WordPieceTrainer: that trainer breaks
ties between equally frequent pairs in hash-map order (huggingface/tokenizers#1794), so two runs
on the same corpus gave different vocabularies and different models. `learn_vocab` is the same
algorithm (BPE-style merges of the most frequent adjacent pair, `##` continuation pieces, the
whole character alphabet first) with ties broken by a total order, so a corpus and a vocab size
fix the vocabulary byte for byte. Encoding still runs in Rust (HF's WordPiece model).
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from selfsup.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"  # marks a piece that continues a word
MAX_WORD_CHARS = 100  # longer words encode as [UNK] (HF WordPiece's max_input_chars_per_word)
UNITS = "units"  # data.tokenizer naming the unit tokenizer (`unit_tokenizer`), built from the data
# tokenizer_config.json key -> loader (folder, config) -> Tokenizer, for the tokenizers other
# modules define: data/dna_tokenizer.py registers its sequence tokenizers (selfsup.data imports it)
CONFIG_LOADERS: dict = {}


# transformers' names of the special tokens, in every saved tokenizer_config.json
SPECIAL_NAMES = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                 "cls_token": "[CLS]", "mask_token": "[MASK]"}  # fmt: skip


def write_config(folder: Path, config: dict) -> None:
    """tokenizer_config.json, and special_tokens_map.json of its special tokens."""
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    specials = {k: v for k, v in config.items() if k.endswith("_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def add_cls_sep(tok: HFTokenizer) -> None:
    """BERT's template on `tok`: [CLS] A [SEP], and [CLS] A [SEP] B [SEP] with B's segment id 1
    (none on a tokenizer without the two, such as the empty one that counts words)."""
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is not None and sep is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )


def _pipeline(tok: HFTokenizer, lowercase: bool) -> HFTokenizer:
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    add_cls_sep(tok)
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True
) -> Tokenizer:
    """Train a WordPiece vocabulary on an iterator of texts; the same texts give the same
    vocabulary in any process."""
    if vocab_size <= len(SPECIALS):
        raise ConfigError(f"vocab_size {vocab_size} leaves no room beside {len(SPECIALS)} specials")
    empty = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    vocab = learn_vocab(count_words(texts, _pipeline(empty, lowercase)), vocab_size)
    return wordpiece_tokenizer(vocab, _pipeline, lowercase)


def wordpiece_tokenizer(vocab: list[str], pipeline, lowercase: bool) -> Tokenizer:
    """The Tokenizer of a learned WordPiece `vocab` (SPECIALS first), its normalizer and
    pre-tokenizer set by `pipeline(tok, lowercase)`."""
    if len(vocab) <= len(SPECIALS):
        raise ConfigError("the corpus is too small to train a tokenizer")
    ids = {t: i for i, t in enumerate(vocab)}
    tok = HFTokenizer(
        models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    )
    tok.add_special_tokens(SPECIALS)
    return Tokenizer(pipeline(tok, lowercase), lowercase)


def unit_tokenizer(lines: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """A tokenizer of discrete units (`selfsup units` files: one utterance a line): every
    whitespace-separated unit is one token, ids SPECIALS then the units by decreasing count
    (ties: string order), at most `vocab_size` tokens (the rarest units left out encode as
    [UNK]). No normalizer (no lower-casing, no accent stripping), no punctuation splitting, no
    WordPiece merges (the vocabulary has no ## pieces, so an unknown unit is one [UNK]); [CLS]
    and [SEP] frame an input as BERT's. The same lines give the same vocabulary."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(line.split())
    if not counts:
        raise ConfigError("the unit files hold no units")
    specials = sorted(set(SPECIALS) & set(counts))
    if specials:
        raise ConfigError(f"the unit files hold the special token {specials[0]} as a unit")
    units = sorted(counts, key=lambda u: (-counts[u], u))
    if vocab_size is not None:
        if vocab_size <= len(SPECIALS):
            raise ConfigError(f"vocab_size {vocab_size} leaves no room beside "
                              f"{len(SPECIALS)} specials")  # fmt: skip
        units = units[: vocab_size - len(SPECIALS)]
    ids = {t: i for i, t in enumerate(SPECIALS + units)}
    tok = HFTokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=10**6))
    tok.add_special_tokens(SPECIALS)
    return Tokenizer(_unit_pipeline(tok), lowercase=False, units=True)


def _unit_pipeline(tok: HFTokenizer) -> HFTokenizer:
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix=PREFIX, cleanup=False)  # units joined by spaces
    add_cls_sep(tok)
    return tok


def count_words(texts: Iterable[str], tok: HFTokenizer) -> Counter[str]:
    """How often each word occurs, words as `tok`'s normalizer and pre-tokenizer cut them
    (what HF's trainers count too)."""
    normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(
            [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        )
    return counts


def learn_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """A WordPiece vocabulary of at most `vocab_size` tokens, in id order: SPECIALS, the
    alphabet, then one token per merge.

    The algorithm of HF's WordPieceTrainer (which is its BPE trainer with a `##` prefix): a word
    starts as its first character followed by `##`-prefixed characters; the alphabet is every
    character (alone, and with `##` where it occurs inside a word); then, until the vocabulary
    is full or no pair occurs `min_frequency` times, the most frequent adjacent pair (counted
    over all words, weighted by word count) is merged everywhere, left to right, into a new
    token (`a` + `##b` -> `ab`, `##a` + `##b` -> `##ab`).

    Unlike HF, every choice follows a total order, so the result depends only on the counts:
    pairs by count, then the smaller (left token, right token) strings; the alphabet by code
    point, single characters before `##` ones. (HF orders ties by token id, and ids of `##`
    characters by hash-map order; it also merges a pair only in the words its heap entry
    recorded, leaving newer occurrences for a later pop.) When the alphabet alone would
    overflow `vocab_size`, its rarest symbols (ties: larger string) are left out, and words
    holding them (which encode as [UNK]) are not trained on.
    """
    room = vocab_size - len(SPECIALS)
    # -- the alphabet -------------------------------------------------------------------------
    symbol_counts: Counter[str] = Counter()
    for word, n in word_counts.items():
        if len(word) > MAX_WORD_CHARS:
            continue  # encodes as [UNK] whatever the vocabulary
        for i, ch in enumerate(word):
            symbol_counts[ch] += n
            if i:
                symbol_counts[PREFIX + ch] += n
    symbols = sorted(symbol_counts)
    if len(symbols) > room:
        kept = set(sorted(symbols, key=lambda s: (-symbol_counts[s], s))[:room])
        symbols = [s for s in symbols if s in kept]
    tokens = [s for s in symbols if not s.startswith(PREFIX)]
    tokens += [s for s in symbols if s.startswith(PREFIX)]
    ids = {t: i for i, t in enumerate(tokens)}

    # -- words as symbol ids, adjacent pair counts, which words hold each pair ------------------
    words: list[list[int]] = []
    counts: list[int] = []
    for word in sorted(word_counts):
        pieces = [word[0], *(PREFIX + ch for ch in word[1:])] if word else []
        if len(pieces) < 2 or len(word) > MAX_WORD_CHARS or any(p not in ids for p in pieces):
            continue
        words.append([ids[p] for p in pieces])
        counts.append(word_counts[word])
    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for i, (word, n) in enumerate(zip(words, counts, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] = pair_counts.get(pair, 0) + n
            where.setdefault(pair, set()).add(i)

    # A max-heap by (count, then smallest strings) with lazy deletion: an entry whose count is
    # no longer the pair's count is stale; a fresh one was pushed when the count changed.
    heap = [(-n, tokens[a], tokens[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)

    # -- merges -------------------------------------------------------------------------------
    while heap and len(tokens) < room:
        neg, _, _, a, b = heapq.heappop(heap)
        n = pair_counts.get((a, b), 0)
        if n != -neg:
            continue
        if n < min_frequency:
            break
        merged = tokens[a] + tokens[b][len(PREFIX) :]  # b never starts a word: always ##
        new = ids.get(merged)  # a token rebuilt from other parts keeps its id
        if new is None:
            new = ids[merged] = len(tokens)
            tokens.append(merged)
        delta: dict[tuple[int, int], int] = {}
        for i in sorted(where.pop((a, b))):
            word, out = words[i], _merge(words[i], a, b, new)
            if len(out) == len(word):
                continue
            c = counts[i]
            for pair in pairwise(word):
                delta[pair] = delta.get(pair, 0) - c
            for pair in pairwise(out):
                delta[pair] = delta.get(pair, 0) + c
                where.setdefault(pair, set()).add(i)
            words[i] = out
        for pair, d in delta.items():
            if d == 0:
                continue
            c = pair_counts[pair] = pair_counts.get(pair, 0) + d
            if c > 0:
                heapq.heappush(heap, (-c, tokens[pair[0]], tokens[pair[1]], *pair))
            else:
                del pair_counts[pair]
    return SPECIALS + tokens


def _merge(word: list[int], a: int, b: int, new: int) -> list[int]:
    """`word` with every (a, b), left to right and not overlapping, replaced by `new`."""
    out: list[int] = []
    i, last = 0, len(word) - 1
    while i <= last:
        if i < last and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class Tokenizer:
    """A thin wrapper that knows BERT's special tokens and saves in BERT's formats."""

    def __init__(self, tok: HFTokenizer, lowercase: bool, units: bool = False):
        self.tok = tok
        self.lowercase = lowercase
        self.units = units  # a unit tokenizer: one utterance a line, no sentence splitting
        vocab = tok.get_vocab()
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise ConfigError(f"tokenizer lacks special tokens: {', '.join(missing)}")
        self.vocab_size = tok.get_vocab_size()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[s] for s in SPECIALS
        )
        added = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        self.special_ids = sorted({vocab[s] for s in SPECIALS} | _other_specials(vocab) | added)
        self._plain: HFTokenizer | None = None  # the same without special-token matching
        self._random_ids: torch.Tensor | None = None

    def with_specials(self, tokens: list[str]) -> Tokenizer:
        """This tokenizer with `tokens` added as special tokens at the end of the vocabulary
        (those it has already keep their ids), e.g. T5's sentinels."""
        if all(self.tok.token_to_id(t) is not None for t in tokens):
            return self
        tok = HFTokenizer.from_str(self.tok.to_str())
        tok.add_special_tokens(tokens)
        return Tokenizer(tok, self.lowercase, self.units)

    def ids_of(self, tokens: list[str]) -> list[int]:
        """The ids of tokens of the vocabulary (a one-line error naming a missing one)."""
        ids = [self.tok.token_to_id(t) for t in tokens]
        missing = [t for t, i in zip(tokens, ids, strict=True) if i is None]
        if missing:
            raise ConfigError(f"the tokenizer has no {missing[0]} ({len(missing)} missing)")
        return ids

    # -- encoding ---------------------------------------------------------------------------
    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Token ids of raw text, without [CLS]/[SEP]. A special token's text inside it (a
        corpus that mentions "[MASK]") is read as plain text, never as the special token: a
        pretraining corruption must be the only source of [MASK] in a model's input."""
        if self._plain is None:
            spec = json.loads(self.tok.to_str())
            spec["added_tokens"], spec["post_processor"] = [], None
            self._plain = HFTokenizer.from_str(json.dumps(spec))
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def __call__(
        self, texts: list[str], pairs: list[str] | None = None, max_len: int = 512
    ) -> dict[str, torch.Tensor]:
        """Encode a batch as [CLS] A [SEP] (B [SEP]), truncated to max_len and padded."""
        self.tok.enable_truncation(max_len)
        self.tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")
        try:
            inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else texts
            enc = self.tok.encode_batch(inputs)
        finally:
            self.tok.no_truncation()
            self.tok.no_padding()
        return {
            "input_ids": torch.tensor([e.ids for e in enc]),
            "attention_mask": torch.tensor([e.attention_mask for e in enc]),
            "token_type_ids": torch.tensor([e.type_ids for e in enc]),
        }

    def decode_token(self, i: int) -> str:
        return self.tok.id_to_token(i)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (## pieces joined; [PAD], [CLS] and [SEP] left out)."""
        frame = (self.pad_id, self.cls_id, self.sep_id)
        return self.tok.decode([i for i in ids if i not in frame], skip_special_tokens=False)

    def continuation_table(self) -> torch.Tensor:
        """(V,) bool: True for `##` word-continuation pieces."""
        table = torch.zeros(self.vocab_size, dtype=torch.bool)
        for token, i in self.tok.get_vocab().items():
            if token.startswith("##") and i < self.vocab_size:
                table[i] = True
        return table

    def random_ids(self) -> torch.Tensor:
        """Ids a random MLM replacement may take: everything but the special tokens. Computed
        once (corruptions ask for it per example); callers only read it."""
        if self._random_ids is None:
            keep = torch.ones(self.vocab_size, dtype=torch.bool)
            keep[self.special_ids] = False
            self._random_ids = keep.nonzero().squeeze(1)
        return self._random_ids

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.tok.to_str().encode()).hexdigest()[:16]

    # -- saving -----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, max_len: int = 512) -> None:
        """Write vocab.txt, tokenizer.json and tokenizer_config.json. `max_len` is the model's
        position table: transformers truncates to it, so it must not exceed the model's."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = self.tok.get_vocab()
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
        self.tok.save(str(folder / "tokenizer.json"))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            **SPECIAL_NAMES,
            "model_max_length": max_len,
        }
        if self.units:  # transformers: take tokenizer.json's pipeline, not BERT's
            config |= {"tokenizer_class": "PreTrainedTokenizerFast", "selfsup_units": True}
        elif not _bert_pipeline(self.tok):  # e.g. multilingual (data/multilingual.py): the same
            config |= {"tokenizer_class": "PreTrainedTokenizerFast", "strip_accents": False}
        write_config(folder, config)


def _bert_pipeline(tok: HFTokenizer) -> bool:
    """Whether `tok` normalises and pre-tokenizes as BERT does: transformers' BertTokenizer
    rebuilds that pipeline from the vocabulary, ignoring tokenizer.json's."""
    spec = json.loads(tok.to_str())
    kinds = [(spec.get(k) or {}).get("type") for k in ("normalizer", "pre_tokenizer")]
    return kinds == ["BertNormalizer", "BertPreTokenizer"]


def _other_specials(vocab: dict[str, int]) -> set[int]:
    # HF BERT vocabularies carry [unusedN] slots; never use them as random replacements.
    return {i for t, i in vocab.items() if t.startswith("[unused")}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load from a folder with tokenizer.json and/or vocab.txt (a selfsup run's tokenizer/
    folder, an exported model, or a HuggingFace BERT folder)."""
    p = Path(path)
    if (p / "tokenizer").is_dir():
        p = p / "tokenizer"
    if not p.is_dir():
        raise ConfigError(f"tokenizer folder not found: {path}")
    lowercase, units = True, False
    cfg = p / "tokenizer_config.json"
    if cfg.exists():
        lowercase = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        units = bool(json.loads(cfg.read_text()).get("selfsup_units", False))
        config = json.loads(cfg.read_text())
        for key, load in CONFIG_LOADERS.items():  # another kind of tokenizer (DNA, protein)
            if key in config:
                return load(p, config)
    if (p / "tokenizer.json").exists():
        tok = HFTokenizer.from_file(str(p / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        if not isinstance(tok.model, models.WordPiece):
            raise ConfigError(f"{p / 'tokenizer.json'} is not a WordPiece tokenizer")
        return Tokenizer(tok, lowercase, units)
    if (p / "vocab.txt").exists():
        vocab = {}
        for i, line in enumerate((p / "vocab.txt").read_text(encoding="utf-8").splitlines()):
            vocab.setdefault(line.strip(), i)
        tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        return Tokenizer(_pipeline(tok, lowercase), lowercase)
    raise ConfigError(f"no tokenizer.json or vocab.txt in {p}")


def iter_texts(docs: Iterator) -> Iterator[str]:
    for doc in docs:
        yield from doc
