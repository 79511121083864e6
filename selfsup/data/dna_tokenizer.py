"""Tokenizers of biological sequences: single nucleotides, overlapping k-mers (DNABERT,
arXiv:2008.07200 / Ji et al. 2021), non-overlapping k-mers, and amino acids.

Chosen by name, as `data.tokenizer` (`--tokenizer`) of a `--modality dna` run:

    dna-base                 one token per base: A C G T N
    dna-kmer{k}              overlapping k-mers, k = 3..6 (DNABERT): ACGTAC -> ACG CGT GTA TAC
    dna-kmer{k}-nonoverlap   k-mers side by side, k = 3..6, a shorter last piece: ACGTAC G
    protein                  one token per residue: the 20 amino acids, X, and B Z U O

Ids are selfsup's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK], ids 0-4, the order of
DNABERT's vocabulary too) and then the alphabet's tokens: k-mers in lexicographic order of
A C G T (AAA, AAC, ...), for non-overlapping k-mers followed by the shorter pieces (k-1 down to
1). Input text is upper-cased; any other character (ambiguity codes, digits, punctuation) reads
as N (protein: X), and a k-mer holding an N is [UNK] (dna-base keeps N as a token). Whitespace
separates sequences: no k-mer spans it. A sequence shorter than k is one [UNK] under
overlapping k-mers. Decoding gives back the sequence (k-mers overlapping by k-1 joined), so
encode then decode is the identity on A/C/G/T sequences of at least k bases (any sequence
for the others); a base only [UNK] or [MASK] tokens cover decodes as N (protein: X).

The run saves the tokenizer as HF files (vocab.txt, tokenizer.json, tokenizer_config.json);
`load_tokenizer` restores it from the `selfsup_sequence` name in tokenizer_config.json. The
tokenizer.json of overlapping k-mers reads k-mers separated by spaces (DNABERT's input format,
for transformers' PreTrainedTokenizerFast); selfsup cuts raw sequences into k-mers itself (a
Python pre-tokenizer, which HF files cannot store). The others are whole HF pipelines.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from pathlib import Path

import numpy as np
from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models as hf_models

from selfsup.data.tokenizer import (
    CONFIG_LOADERS,
    SPECIAL_NAMES,
    SPECIALS,
    Tokenizer,
    add_cls_sep,
    write_config,
)
from selfsup.errors import ConfigError

SEQUENCE_KEY = "selfsup_sequence"  # tokenizer_config.json: the name of a sequence tokenizer
K_RANGE = (3, 6)  # the k-mer sizes DNABERT released (k = 3, 4, 5, 6)
NAMES_HELP = (
    "dna-base, dna-kmer3 .. dna-kmer6, dna-kmer3-nonoverlap .. dna-kmer6-nonoverlap, protein"
)
N_SPECIALS = len(SPECIALS)
UNK_ID = SPECIALS.index("[UNK]")


@dataclass(frozen=True)
class Alphabet:
    """The letters of a kind of sequence. `letters` in code order (code i = letters[i]);
    `unknown` is the letter everything outside the alphabet reads as (its code is the last);
    `kmer_letters` the letters k-mers are made of (unknown excluded: a k-mer holding it is
    [UNK]); `ambiguous` the letters a corpus may hold that read as `unknown` (counted)."""

    name: str
    letters: str
    unknown: str
    kmer_letters: str
    ambiguous: str

    @property
    def unknown_code(self) -> int:
        return self.letters.index(self.unknown)


# IUPAC nucleotide codes: A C G T, N (any) and the ambiguity codes R Y S W K M B D H V.
DNA = Alphabet("dna", "ACGTN", "N", "ACGT", "RYSWKMBDHV")
# The 20 standard amino acids, X (unknown), B (D or N), Z (E or Q), U (selenocysteine),
# O (pyrrolysine).
PROTEIN = Alphabet("protein", "ACDEFGHIKLMNPQRSTVWYXBZUO", "X", "ACDEFGHIKLMNPQRSTVWYXBZUO", "")
ALPHABETS = {a.name: a for a in (DNA, PROTEIN)}


@dataclass(frozen=True)
class SequenceSpec:
    """What a sequence tokenizer's name says: the alphabet, k, and whether k-mers overlap."""

    name: str
    alphabet: Alphabet
    k: int
    overlap: bool

    @property
    def shift(self) -> int:
        """Tokens that share a base with a token on one side (k - 1 for overlapping k-mers, 0
        otherwise): the masking needs it (selfsup/corrupt/dna.py)."""
        return self.k - 1 if self.overlap else 0

    def tokens(self) -> list[str]:
        """The vocabulary after the special tokens, in id order."""
        if self.k == 1:
            return list(self.alphabet.letters)
        sizes = [self.k] if self.overlap else range(self.k, 0, -1)
        return ["".join(p) for m in sizes for p in product(self.alphabet.kmer_letters, repeat=m)]

    def max_bases(self, tokens: int) -> int:
        """The most bases `tokens` tokens of sequence hold."""
        if self.overlap:
            return tokens + self.k - 1
        return tokens * self.k


def parse_name(name: str) -> SequenceSpec:
    """The spec of a sequence tokenizer name (a one-line error naming the choices otherwise)."""
    if name == "dna-base":
        return SequenceSpec(name, DNA, 1, False)
    if name == "protein":
        return SequenceSpec(name, PROTEIN, 1, False)
    m = re.fullmatch(r"dna-kmer(\d+)(-nonoverlap)?", name or "")
    if m is None:
        raise ConfigError(f"unknown sequence tokenizer {name!r}; choose from {NAMES_HELP}")
    k = int(m.group(1))
    if not K_RANGE[0] <= k <= K_RANGE[1]:
        raise ConfigError(
            f"k-mer size {k} of tokenizer {name!r} is not supported: k must be "
            f"{K_RANGE[0]} to {K_RANGE[1]}"
        )
    return SequenceSpec(name, DNA, k, m.group(2) is None)


def is_sequence_name(name: str | None) -> bool:
    """Whether `name` asks for a sequence tokenizer (dna-*, protein), valid or not."""
    return isinstance(name, str) and (name.startswith("dna-") or name == "protein")


class _OverlappingKmers:
    """HF custom pre-tokenizer: each word (whitespace-separated) -> its overlapping k-mers, with
    their offsets in the text; a word shorter than k stays whole (and encodes as [UNK])."""

    def __init__(self, k: int):
        self.k = k

    def _split(self, i, word):
        n = len(str(word))
        if n <= self.k:
            return [word]
        return [word[j : j + self.k] for j in range(n - self.k + 1)]

    def pre_tokenize(self, pretok) -> None:
        pretok.split(self._split)


def _normalizer(alphabet: Alphabet):
    """Upper-case the alphabet's letters, and read every other character but whitespace as the
    unknown letter (serializable: plain HF normalizers)."""
    steps = [normalizers.Replace(c.lower(), c) for c in alphabet.letters if c.lower() != c]
    steps.append(normalizers.Replace(Regex(f"[^{alphabet.letters}\\s]"), alphabet.unknown))
    return normalizers.Sequence(steps)


def _hf_tokenizer(spec: SequenceSpec, saved_form: bool = False) -> HFTokenizer:
    """The HF tokenizer of `spec`. `saved_form`: what tokenizer.json stores, for overlapping
    k-mers whitespace-separated k-mers instead of raw sequence (a Python pre-tokenizer cannot be
    saved)."""
    vocab = {t: i for i, t in enumerate(SPECIALS + spec.tokens())}
    tok = HFTokenizer(hf_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.add_special_tokens(SPECIALS)
    tok.normalizer = _normalizer(spec.alphabet)
    split = pre_tokenizers.WhitespaceSplit()
    if spec.overlap and not saved_form:
        kmers = pre_tokenizers.PreTokenizer.custom(_OverlappingKmers(spec.k))
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, kmers])
    elif spec.overlap:
        tok.pre_tokenizer = split
    else:  # pieces of k letters (the last one shorter): a regex split, saved as it is
        piece = pre_tokenizers.Split(Regex(f"[^\\s]{{1,{spec.k}}}"), "isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, piece])
    add_cls_sep(tok)
    return tok


class SequenceTokenizer(Tokenizer):
    """A sequence tokenizer (see the module docstring): selfsup's Tokenizer over an HF
    tokenizer that reads raw sequences, plus `encode_codes`, the same ids from the integer
    codes of a corpus (numpy, for pretraining windows)."""

    def __init__(self, name: str):
        self.spec = parse_name(name)
        self.name = name
        super().__init__(_hf_tokenizer(self.spec), lowercase=False)
        self.alphabet = self.spec.alphabet
        self.k, self.overlap = self.spec.k, self.spec.overlap
        self._tokens = SPECIALS + self.spec.tokens()

    def __reduce__(self):  # pickled by name (the HF tokenizer holds a Python pre-tokenizer)
        return (SequenceTokenizer, (self.name,))

    def __repr__(self) -> str:
        return f"SequenceTokenizer({self.name!r}, vocab_size={self.vocab_size})"

    # -- numpy encoding of a corpus's codes ---------------------------------------------------
    @cached_property
    def _powers(self) -> np.ndarray:
        base = len(self.alphabet.kmer_letters)
        return base ** np.arange(self.k - 1, -1, -1, dtype=np.int64)  # (k,)

    def encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Token ids (int64, no [CLS]/[SEP]) of one sequence given as alphabet codes (uint8,
        code i = alphabet.letters[i]): the ids `tok.encode_plain([text])` gives its text."""
        c = np.asarray(codes, dtype=np.int64)
        n, k, unknown = len(c), self.k, self.alphabet.unknown_code
        if k == 1:
            return c + N_SPECIALS
        if self.overlap:
            if n < k:
                return np.full(min(n, 1), UNK_ID, dtype=np.int64)
            windows = np.lib.stride_tricks.sliding_window_view(c, k)  # (n - k + 1, k)
            ids = windows @ self._powers + N_SPECIALS
            ids[(windows == unknown).any(1)] = UNK_ID
            return ids
        base = len(self.alphabet.kmer_letters)
        full, rest = divmod(n, k)
        pieces = c[: full * k].reshape(full, k)
        ids = pieces @ self._powers + N_SPECIALS
        ids[(pieces == unknown).any(1)] = UNK_ID
        if rest:  # the shorter last piece: after the k-mers, the (k-1)-mers, ...
            offset = N_SPECIALS + sum(base**m for m in range(rest + 1, k + 1))
            tail = c[full * k :]
            tail_id = (
                UNK_ID if (tail == unknown).any() else offset + int(tail @ self._powers[-rest:])
            )
            ids = np.append(ids, tail_id)
        return ids

    # -- text -----------------------------------------------------------------------------------
    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Token ids of raw sequences, without [CLS]/[SEP]; text that looks like a special
        token is sequence too (it reads as unknown letters), never the token."""
        out = []
        for text in texts:  # whitespace separates sequences, as in the HF pipeline
            parts = [self.encode_codes(self.codes_of(w)) for w in text.split()]
            out.append(np.concatenate(parts).tolist() if parts else [])
        return out

    def codes_of(self, sequence: str) -> np.ndarray:
        """The alphabet codes of one sequence (no whitespace): case ignored, any other
        character read as the unknown letter."""
        raw = sequence.encode("ascii", errors="replace")  # non-ASCII: "?", an unknown letter
        return _CODE_TABLES[self.alphabet.name][np.frombuffer(raw, dtype=np.uint8)]

    def decode(self, ids: list[int]) -> str:
        """The sequence of token ids ([PAD], [CLS], [SEP] left out). A base that only [UNK] or
        [MASK] tokens cover decodes as the unknown letter (N, X)."""
        frame = (self.pad_id, self.cls_id, self.sep_id)
        pieces = [self._tokens[i] if i >= N_SPECIALS else None for i in ids if i not in frame]
        unknown = self.alphabet.unknown
        if not self.overlap:
            return "".join(p if p is not None else unknown * self.k for p in pieces)
        if not pieces:
            return ""
        # token i covers bases i .. i+k-1: each base from the first known token covering it
        # (for the tokens of a sequence, the first k-mer and then each one's last base)
        out: list[str | None] = [None] * (len(pieces) + self.k - 1)
        for i, p in enumerate(pieces):
            for j, ch in enumerate(p or ""):
                if out[i + j] is None:
                    out[i + j] = ch
        return "".join(ch or unknown for ch in out)

    def with_specials(self, tokens: list[str]) -> Tokenizer:
        missing = [t for t in tokens if self.tok.token_to_id(t) is None]
        if missing:
            raise ConfigError(
                f"the sequence tokenizer {self.name} has no {missing[0]}: its objective needs "
                "special tokens a sequence tokenizer does not add"
            )
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.saved_form().to_str()}".encode()).hexdigest()[:16]

    def saved_form(self) -> HFTokenizer:
        """The HF tokenizer tokenizer.json holds (see the module docstring)."""
        return _hf_tokenizer(self.spec, saved_form=True)

    # -- saving -------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, max_len: int = 512) -> None:
        """vocab.txt, tokenizer.json (the saved form), tokenizer_config.json naming the tokenizer
        (`selfsup_sequence`) and special_tokens_map.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in self._tokens), encoding="utf-8")
        self.saved_form().save(str(folder / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            SEQUENCE_KEY: self.name,
            "do_lower_case": False,
            **SPECIAL_NAMES,
            "model_max_length": max_len,
        }
        write_config(folder, config)


def _code_tables() -> dict[str, np.ndarray]:
    """Per alphabet, (256,) uint8: the code of each byte, the unknown letter's code for every
    byte outside the alphabet (both cases)."""
    tables = {}
    for a in ALPHABETS.values():
        t = np.full(256, a.unknown_code, dtype=np.uint8)
        for i, c in enumerate(a.letters):
            t[ord(c)] = t[ord(c.lower())] = i
        tables[a.name] = t
    return tables


_CODE_TABLES = _code_tables()


def sequence_tokenizer(name: str) -> SequenceTokenizer:
    """The sequence tokenizer `name` (dna-base, dna-kmer{k}, dna-kmer{k}-nonoverlap, protein)."""
    return SequenceTokenizer(name)


def load_sequence_tokenizer(folder: Path, config: dict) -> SequenceTokenizer:
    """The sequence tokenizer a folder's tokenizer_config.json names, checked against the
    vocabulary of its tokenizer.json."""
    name = config.get(SEQUENCE_KEY)
    if not isinstance(name, str):
        raise ConfigError(f"{folder / 'tokenizer_config.json'}: {SEQUENCE_KEY} is not a name")
    tok = sequence_tokenizer(name)
    saved = folder / "tokenizer.json"
    if saved.exists():
        vocab = HFTokenizer.from_file(str(saved)).get_vocab()
        if vocab != tok.tok.get_vocab():
            raise ConfigError(f"{saved} does not hold the vocabulary of tokenizer {name}")
    return tok


CONFIG_LOADERS[SEQUENCE_KEY] = load_sequence_tokenizer  # load_tokenizer restores them by name
