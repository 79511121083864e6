"""Multilingual text pretraining: a corpus given per language, one WordPiece tokenizer for all
their scripts, and language-balanced sampling (mBERT, arXiv:1810.04805 and google-research/bert
multilingual.md; XLM, arXiv:1901.07291).

    selfsup pretrain --data en=books/ --data zh=zh.jsonl --data th=th.txt --lang-alpha 0.7

Data: every --data entry is LANG=PATH, PATH anything --data reads (a file, a folder, hf:NAME),
LANG a code of letters, digits, `_` or `-` (en, zh, cmn_hans); a language may be named several
times. The entries are all tagged or none (a mix is a one-line error). Each language is tokenized
into its own cached corpus; they are joined in the order the languages first appear, and every
document keeps its language (`doc_langs.npy` beside the joined corpus).

Sampling (`LanguageBatches`): language i, with n_i of the N training sequences (p_i = n_i / N),
is drawn with probability q_i = p_i^alpha / sum_j p_j^alpha (XLM's smoothing, section 3.1).
alpha = 1 keeps the corpus's proportions, alpha = 0 makes the languages equal. The default is
0.7, mBERT's exponent (multilingual.md: "S=0.7"; XLM used 0.5 and XLM-R 0.3): mBERT is the model
the cross-lingual results are compared with, and the small languages at hand (XQuAD contexts and
UDHR, ~0.13 M characters each, 1% of experiments/multilingual.py's corpus) would be drawn 2.4
times as often at 0.3 (6% of the draws each, against 2.5% at 0.7), so repeated that much
more. An epoch holds N sequences: round(q_i N) of language i (largest remainders), drawn in
whole shuffled passes over the language's sequences (an over-sampled language repeats each
sequence as evenly as it can), then shuffled together; each epoch is a pure function of (seed,
epoch), so a resumed run sees exactly the batches an uninterrupted one would.

Tokenizer (`train_multilingual_tokenizer`): the same deterministic WordPiece as
data/tokenizer.py, with another normalizer and pre-tokenizer, and each language's word counts
weighted by q_i / p_i (multilingual.md: "the word counts are weighted the same way as the data"):
- never strips accents. The English pipeline (BertNormalizer with strip_accents unset, which
  follows lowercase) decomposes text and drops every combining mark: Hindi loses its vowel signs
  and virama (पैंथर्स -> पथरस), Thai its vowels and tone marks, Vietnamese and Greek their
  diacritics. Here text is NFC-composed, cleaned, CJK ideographs are split one per token (as
  BERT does), and lower-cased only when the data asks for it (`lowercase`; mBERT's recommended
  model is cased).
- splits scripts written without spaces (Thai, Lao, Myanmar, Khmer) into character clusters (a
  base character and the combining marks after it), each its own word, as BERT splits CJK. A
  WordPiece word longer than 100 characters is one [UNK] (HF's max_input_chars_per_word):
  XQuAD-th holds runs of over 100 characters between spaces, 5% of its text. Clusters make every
  such run encodable; the cost is length (about one token per 1.3 Thai characters).
The pipeline is saved in tokenizer.json (tokenizer_config.json names PreTrainedTokenizerFast,
not BertTokenizer, which would rebuild BERT's pipeline from vocab.txt), so `transformers` and
`load_tokenizer` read it exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.data.text import (
    Corpus,
    PretrainBatches,
    TextDataConfig,
    build_corpus,
    open_corpus,
    read_paragraphs,
    resolve_files,
)
from selfsup.data.tokenizer import (
    PREFIX,
    SPECIALS,
    Tokenizer,
    add_cls_sep,
    count_words,
    learn_vocab,
    load_tokenizer,
    wordpiece_tokenizer,
)
from selfsup.errors import ConfigError
from selfsup.seeds import Stream, seed_for

DEFAULT_ALPHA = 0.7  # mBERT's exponent (see the module docstring)
_LANG_PATH = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,15})=(.+)")
# Scripts written without spaces between words (beyond CJK, which BertNormalizer splits):
# Thai, Lao, Myanmar, Khmer. A cluster is one of their characters and the marks after it.
NO_SPACE_SCRIPTS = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
CLUSTER = rf"[{NO_SPACE_SCRIPTS}][\p{{Mn}}\p{{Mc}}]*"


# --------------------------------------------------------------------------------------------
# The data option: LANG=PATH
# --------------------------------------------------------------------------------------------


def language_paths(paths: Iterable[str]) -> dict[str, list[str]] | None:
    """{language: [paths]} of LANG=PATH entries (in the order the languages first appear), or
    None when no entry is tagged (ordinary data). A path that exists as written is never read
    as tagged; a mix of tagged and plain entries is a one-line error."""
    paths = list(paths or [])
    tagged = [None if Path(p).exists() else _LANG_PATH.fullmatch(p) for p in paths]
    if not any(tagged):
        return None
    plain = [p for p, m in zip(paths, tagged, strict=True) if m is None]
    if plain:
        raise ConfigError(
            f"--data mixes LANG=PATH entries with a plain path ({plain[0]}): give every path a "
            "language, e.g. --data en=books/ zh=zh.txt"
        )
    out: dict[str, list[str]] = {}
    for m in tagged:
        out.setdefault(m.group(1), []).append(m.group(2))
    return out


def check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the language-sampling exponent alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def sampling_probs(sizes, alpha: float) -> np.ndarray:
    """XLM's q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum_k n_k (arXiv:1901.07291,
    section 3.1), for the sizes n_i (all positive)."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or not len(n) or (n <= 0).any():
        raise ConfigError("every language needs some text to sample from")
    q = (n / n.sum()) ** check_alpha(alpha)
    return q / q.sum()


def largest_remainder(probs: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to `total`, each floor(p_i total) or one more (the largest
    fractional parts get the extra ones; ties to the lower index)."""
    exact = np.asarray(probs, dtype=np.float64) * total
    counts = np.floor(exact).astype(np.int64)
    extra = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:extra]] += 1
    return counts


class LanguageBatches(PretrainBatches):
    """PretrainBatches whose epochs draw each language with XLM's q_i (module docstring).

    chunk_langs: (len(chunk_ids),) the language index of each training chunk."""

    def __init__(self, builder, corrupt, chunk_ids: np.ndarray, chunk_langs: np.ndarray,
                 batch_size: int, seed: int, alpha: float = DEFAULT_ALPHA,
                 pack: bool = False):  # fmt: skip
        super().__init__(builder, corrupt, chunk_ids, batch_size, seed, pack=pack)
        chunk_langs = np.asarray(chunk_langs)
        if chunk_langs.shape != (len(chunk_ids),):
            raise ValueError("chunk_langs must give one language per training chunk")
        present = np.unique(chunk_langs)
        self.langs = present  # language indices with training chunks, ascending
        self.groups = [np.asarray(chunk_ids)[chunk_langs == i] for i in present]
        self.natural = np.array([len(g) for g in self.groups], dtype=np.float64)
        self.natural /= self.natural.sum()
        self.probs = sampling_probs([len(g) for g in self.groups], alpha)
        self.per_epoch = largest_remainder(self.probs, len(chunk_ids))

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.LANGUAGE_SAMPLE, epoch))
            picks = [_passes(group, int(m), rng)
                     for group, m in zip(self.groups, self.per_epoch, strict=True)]  # fmt: skip
            order = np.concatenate(picks)
            self._perm = (epoch, order[rng.permutation(len(order))])
        return self._perm[1]


def _passes(group: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """`m` chunks of `group`: whole shuffled passes over it, the last one cut short."""
    reps = -(-m // len(group)) if m else 0
    drawn = [group[rng.permutation(len(group))] for _ in range(reps)]
    return np.concatenate(drawn)[:m] if drawn else group[:0]


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


def multilingual_pipeline(tok: HFTokenizer, lowercase: bool) -> HFTokenizer:
    """NFC, BERT's cleaning and CJK splitting without accent stripping, BERT's whitespace and
    punctuation split, then the no-space scripts cut into clusters (module docstring)."""
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                   strip_accents=False, lowercase=lowercase),
    ])  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(CLUSTER), behavior="isolated"),
    ])  # fmt: skip
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    add_cls_sep(tok)
    return tok


def weighted_word_counts(
    counts: dict[str, Counter], alpha: float
) -> tuple[Counter, dict[str, float]]:
    """The languages' word counts summed, each language's scaled by q_i / p_i (p_i its share of
    all words, q_i the smoothed share), normalised so the smallest factor is 1 and rounded (a
    word never drops to 0). Returns (counts, {language: factor})."""
    sizes = [sum(c.values()) for c in counts.values()]
    if any(s == 0 for s in sizes):
        empty = [lang for lang, s in zip(counts, sizes, strict=True) if s == 0]
        raise ConfigError(f"language {empty[0]} has no text")
    p = np.asarray(sizes, dtype=np.float64) / sum(sizes)
    ratio = sampling_probs(sizes, alpha) / p
    ratio /= ratio.min()
    total: Counter = Counter()
    for factor, c in zip(ratio, counts.values(), strict=True):
        for word, n in c.items():
            total[word] += max(1, round(n * factor))
    return total, {lang: float(f) for lang, f in zip(counts, ratio, strict=True)}


def train_multilingual_tokenizer(
    texts: dict[str, Iterable[str]],
    vocab_size: int = 32000,
    lowercase: bool = False,
    alpha: float = DEFAULT_ALPHA,
) -> Tokenizer:
    """A WordPiece vocabulary over several languages' texts ({language: texts}), each language's
    word counts weighted as the data is sampled; the same texts give the same vocabulary."""
    if vocab_size <= len(SPECIALS):
        raise ConfigError(f"vocab_size {vocab_size} leaves no room beside {len(SPECIALS)} specials")
    check_alpha(alpha)
    empty = multilingual_pipeline(HFTokenizer(models.WordPiece(unk_token="[UNK]")), lowercase)
    per_lang = {}
    for lang, lang_texts in texts.items():
        try:
            per_lang[lang] = count_words(lang_texts, empty)
        except ConfigError as e:
            raise ConfigError(f"language {lang}: {e}") from None
    counts, _ = weighted_word_counts(per_lang, alpha)
    return wordpiece_tokenizer(learn_vocab(counts, vocab_size), multilingual_pipeline, lowercase)


def language_texts(
    langs: dict[str, list[str]], text_field: str = "text", encoding: str = "utf-8"
) -> dict[str, Iterable[str]]:
    """{language: its paragraphs, read lazily}."""
    return {lang: read_paragraphs(paths, text_field, encoding) for lang, paths in langs.items()}


def cached_multilingual_tokenizer(
    langs: dict[str, list[str]], vocab_size: int, d: TextDataConfig, encoding: str, log=print
) -> Tokenizer:
    """The tokenizer a multilingual run trains (cached by files, languages and settings)."""
    files = [f for paths in langs.values() for f in resolve_files(paths)]
    key = cache_key(files, list(langs), [len(p) for p in langs.values()], vocab_size,
                    d.lowercase, d.lang_alpha, d.text_field, encoding, "ml-v1")  # fmt: skip
    folder = Path(d.cache_dir or default_cache_dir()) / "tokenizer" / key

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        texts = language_texts(langs, d.text_field, encoding)
        tok = train_multilingual_tokenizer(texts, vocab_size, d.lowercase, d.lang_alpha)
        tok.save(tmp)
        log(f"tokenizer: trained a multilingual WordPiece over {len(langs)} languages, "
            f"{tok.vocab_size} tokens, in {time.perf_counter() - t0:.1f}s")  # fmt: skip

    if build_once(folder, build, "tokenizer.json"):
        log(f"tokenizer: using cached {folder}")
    return load_tokenizer(folder)


def unk_rates(tok: Tokenizer, texts: dict[str, Iterable[str]]) -> dict[str, dict]:
    """Per language: tokens, [UNK] tokens, their share, the share of characters (not spaces)
    that fall inside an [UNK], and characters per token."""
    out = {}
    for lang, lang_texts in texts.items():
        lang_texts = [t for t in lang_texts if t]
        encs = tok.tok.encode_batch(lang_texts, add_special_tokens=False)
        n_tok = n_unk = unk_chars = 0
        chars = sum(len(t) - sum(c.isspace() for c in t) for t in lang_texts)
        for text, e in zip(lang_texts, encs, strict=True):
            n_tok += len(e.ids)
            for i, (a, b) in zip(e.ids, e.offsets, strict=True):
                if i == tok.unk_id:
                    n_unk += 1
                    unk_chars += sum(not c.isspace() for c in text[a:b])
        out[lang] = {
            "tokens": n_tok,
            "unk_tokens": n_unk,
            "unk_token_rate": n_unk / max(1, n_tok),
            "unk_char_rate": unk_chars / max(1, chars),
            "chars_per_token": chars / max(1, n_tok),
        }
    return out


# --------------------------------------------------------------------------------------------
# The corpus: one cached corpus per language, joined
# --------------------------------------------------------------------------------------------


def build_language_corpus(
    langs: dict[str, list[str]],
    tok: Tokenizer,
    cfg: TextDataConfig,
    encoding: str = "utf-8",
    cache_dir: str | None = None,
    log=print,
) -> tuple[Corpus, np.ndarray]:
    """(the joined corpus, (D,) language index of each document, into list(langs))."""
    parts = []
    for lang, paths in langs.items():
        try:
            parts.append(build_corpus(paths, tok, cfg, encoding, cache_dir, log))
        except ConfigError as e:
            raise ConfigError(f"language {lang}: {e}") from None
    root = Path(cache_dir or cfg.cache_dir or default_cache_dir()) / "corpus"
    names = [f"{lang}:{p.folder.name}" for lang, p in zip(langs, parts, strict=True)]
    folder = root / cache_key([], *names, "ml-v1")
    build_once(folder, lambda tmp: _join(list(langs), parts, tmp), "meta.json")
    return open_corpus(folder), np.load(folder / "doc_langs.npy")


def _join(names: list[str], parts: list[Corpus], out: Path) -> None:
    metas = [json.loads((p.folder / "meta.json").read_text()) for p in parts]
    dtypes = {m["dtype"] for m in metas}
    if len(dtypes) != 1:
        raise ValueError(f"language corpora of different token types: {dtypes}")
    with open(out / "tokens.bin", "wb") as f:
        for p in parts:
            with open(p.folder / "tokens.bin", "rb") as src:
                shutil.copyfileobj(src, f)
    offsets, doc_sents, doc_langs = [np.zeros(1, dtype=np.int64)], [np.zeros(1, np.int64)], []
    n_tok = n_sent = 0
    for i, p in enumerate(parts):
        offsets.append(np.asarray(p.sent_offsets[1:], dtype=np.int64) + n_tok)
        doc_sents.append(np.asarray(p.doc_sents[1:], dtype=np.int64) + n_sent)
        doc_langs.append(np.full(len(p.doc_sents) - 1, i, dtype=np.int64))
        n_tok += p.n_tokens
        n_sent += len(p.sent_offsets) - 1
    np.save(out / "sent_offsets.npy", np.concatenate(offsets))
    np.save(out / "doc_sents.npy", np.concatenate(doc_sents))
    np.save(out / "doc_langs.npy", np.concatenate(doc_langs))
    meta = {
        "dtype": dtypes.pop(),
        "n_tokens": n_tok,
        "n_sentences": n_sent,
        "n_documents": int(sum(m["n_documents"] for m in metas)),
        "files": [f for m in metas for f in m["files"]],
        "languages": {
            n: {k: m[k] for k in ("n_tokens", "n_sentences", "n_documents")}
            for n, m in zip(names, metas, strict=True)
        },  # fmt: skip
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def language_stats(names: list[str], batches: LanguageBatches) -> dict[str, dict]:
    """Per language: training sequences, its natural share p_i and sampled share q_i."""
    return {
        names[int(i)]: {"sequences": len(g), "share": round(float(p), 5),
                        "sampled": round(float(q), 5)}
        for i, g, p, q in zip(batches.langs, batches.groups, batches.natural, batches.probs,
                              strict=True)
    }  # fmt: skip


def describe(stats: dict[str, dict]) -> str:
    return ", ".join(f"{lang} {100 * s['share']:.1f}% -> {100 * s['sampled']:.1f}%"
                     for lang, s in stats.items())  # fmt: skip


def language_batches(
    names: list[str], doc_langs: np.ndarray, chunks: np.ndarray, train_ids: np.ndarray,
    builder, corrupt, batch_size: int, seed: int, alpha: float, pack: bool = False, log=print,
) -> tuple[LanguageBatches, dict]:  # fmt: skip
    """The training batches of a joined corpus (`build_language_corpus`) and their
    per-language stats; a language without a training sequence is a one-line error."""
    chunk_langs = doc_langs[chunks[train_ids, 2]]
    batches = LanguageBatches(builder, corrupt, train_ids, chunk_langs, batch_size, seed,
                              check_alpha(alpha), pack)  # fmt: skip
    stats = language_stats(names, batches)
    missing = [lang for lang in names if lang not in stats]
    if missing:
        raise ConfigError(f"language {missing[0]} has too little text for a training sequence")
    log(f"data: languages (share of sequences -> sampled, alpha {alpha}): {describe(stats)}")
    return batches, stats


class Languages:
    """LANG=PATH data as a text source (data/text_source.py): the tokenizer, joined corpus and
    language-balanced batches of this module."""

    def __init__(self, langs: dict[str, list[str]]):
        self.langs = langs
        self.doc_langs: np.ndarray | None = None  # set by corpus()

    def train_tokenizer(
        self, vocab_size: int, lowercase: bool, text_field: str, encoding: str, alpha: float
    ) -> Tokenizer:
        texts = language_texts(self.langs, text_field, encoding)
        return train_multilingual_tokenizer(texts, vocab_size, lowercase, alpha)

    def cached_tokenizer(
        self, d: TextDataConfig, vocab_size: int, encoding: str, log=print
    ) -> Tokenizer:
        return cached_multilingual_tokenizer(self.langs, vocab_size, d, encoding, log)

    def corpus(self, tok: Tokenizer, d: TextDataConfig, encoding: str, log=print) -> Corpus:
        corpus, self.doc_langs = build_language_corpus(self.langs, tok, d, encoding, log=log)
        return corpus

    def batches(
        self, builder, corrupt, chunks: np.ndarray, train_ids: np.ndarray, batch_size: int,
        seed: int, d: TextDataConfig, log=print,
    ) -> tuple[LanguageBatches, dict]:  # fmt: skip
        """Each language drawn with XLM's smoothed probability; the stats add `languages`."""
        if self.doc_langs is None:
            raise RuntimeError("Languages.batches needs corpus() first")
        batches, stats = language_batches(list(self.langs), self.doc_langs, chunks, train_ids,
                                          builder, corrupt, batch_size, seed, d.lang_alpha,
                                          d.pack, log)  # fmt: skip
        return batches, {"languages": stats}
