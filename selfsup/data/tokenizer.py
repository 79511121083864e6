"""WordPiece tokenizer (BERT, arXiv:1810.04805) trained and run with HF `tokenizers`.

Saved as vocab.txt + tokenizer.json + tokenizer_config.json, which
`transformers.BertTokenizerFast.from_pretrained(folder)` loads unchanged. CJK characters are
split one per token (BERT's Chinese handling), so Chinese text works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from selfsup.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _pipeline(tok: HFTokenizer, lowercase: bool) -> HFTokenizer:
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is not None and sep is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True
) -> Tokenizer:
    """Train a WordPiece vocabulary on an iterator of texts."""
    tok = HFTokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    _pipeline(tok, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        min_frequency=2,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIALS):
        raise ConfigError("the corpus is too small to train a tokenizer")
    return Tokenizer(_pipeline(tok, lowercase), lowercase)


class Tokenizer:
    """A thin wrapper that knows BERT's special tokens and saves in BERT's formats."""

    def __init__(self, tok: HFTokenizer, lowercase: bool):
        self.tok = tok
        self.lowercase = lowercase
        vocab = tok.get_vocab()
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise ConfigError(f"tokenizer lacks special tokens: {', '.join(missing)}")
        self.vocab_size = tok.get_vocab_size()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[s] for s in SPECIALS
        )
        self.special_ids = sorted({vocab[s] for s in SPECIALS} | _other_specials(vocab))

    # -- encoding ---------------------------------------------------------------------------
    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Token ids without [CLS]/[SEP]."""
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

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

    def continuation_table(self) -> torch.Tensor:
        """(V,) bool: True for `##` word-continuation pieces."""
        table = torch.zeros(self.vocab_size, dtype=torch.bool)
        for token, i in self.tok.get_vocab().items():
            if token.startswith("##") and i < self.vocab_size:
                table[i] = True
        return table

    def random_ids(self) -> torch.Tensor:
        """Ids a random MLM replacement may take: everything but the special tokens."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[self.special_ids] = False
        return keep.nonzero().squeeze(1)

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
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_max_length": max_len,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        specials = {k: v for k, v in config.items() if k.endswith("_token")}
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


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
    lowercase = True
    cfg = p / "tokenizer_config.json"
    if cfg.exists():
        lowercase = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
    if (p / "tokenizer.json").exists():
        tok = HFTokenizer.from_file(str(p / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        if not isinstance(tok.model, models.WordPiece):
            raise ConfigError(f"{p / 'tokenizer.json'} is not a WordPiece tokenizer")
        return Tokenizer(tok, lowercase)
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
