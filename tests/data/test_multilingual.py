"""Multilingual pretraining data (selfsup/data/multilingual.py): LANG=PATH parsing, the
language-balanced sampler's proportions against XLM's formula (a binomial tolerance from the
sample size), the tokenizer's [UNK] rate on Thai and Chinese, scripts kept intact (no accent
stripping), transformers reading the tokenizer unchanged, and a pretraining run end to end."""

from __future__ import annotations

import json
import math
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, cli, pretrain_straight_and_resumed, shared
from safetensors.torch import load_file

from selfsup.data.multilingual import (
    build_language_corpus,
    language_batches,
    language_paths,
    largest_remainder,
    train_multilingual_tokenizer,
    unk_rates,
    weighted_word_counts,
)
from selfsup.data.text import PairBuilder, TextDataConfig, make_chunks, split_chunks
from selfsup.data.tokenizer import load_tokenizer, train_tokenizer
from selfsup.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_cache")

# Words written for these tests, per language. Thai and Chinese are written without spaces
# between words (a Thai clause of 20 words is one run of over 100 characters).
WORDS = {
    "en": "the river city school student water today we and big beautiful language".split(),
    "zh": list("学生北京上海今天天气很好我们喜欢河流城市学校老师吃饭中国语言"),
    "th": (
        "ประเทศไทย ภาษาไทย สวัสดี ขอบคุณ โรงเรียน นักเรียน แม่น้ำ บ้าน ใหญ่ สวย เมือง "
        "กรุงเทพ อาหาร อร่อย มาก ที่ และ ไป มา วันนี้ เรา เขา กิน น้ำ ร้อน"
    ).split(),
    "hi": "भारत भाषा हिन्दी विद्यालय नदी शहर पानी बड़ा सुंदर छात्र आज हम है और".split(),
    "el": "Ελλάδα γλώσσα ποτάμι πόλη σχολείο μαθητής σήμερα καλός νερό και είναι".split(),
    "ar": "مدرسة مدينة نهر ماء طالب اليوم كبير جميل في اللغة العربية".split(),
    "vi": "tiếng Việt sông thành phố trường học sinh nước hôm nay đẹp lớn".split(),
}
JOIN = {"zh": "", "th": ""}  # no spaces between words


def sentences(lang: str, n: int, seed: int) -> list[str]:
    rng = random.Random(f"{lang}-{seed}")
    length = (20, 40) if lang == "th" else (6, 20)  # a Thai clause: 100-200 characters
    sep = JOIN.get(lang, " ")
    end = "。" if lang == "zh" else " " if lang == "th" else "."
    return [
        sep.join(rng.choice(WORDS[lang]) for _ in range(rng.randint(*length))) + end
        for _ in range(n)
    ]


def no_space(s: str) -> str:
    return "".join(s.split())


@pytest.fixture(scope="module")
def ml_tok():
    texts = {lang: sentences(lang, 120, seed=0) for lang in WORDS}
    return train_multilingual_tokenizer(texts, vocab_size=600, lowercase=False)


# --------------------------------------------------------------------------------------------
# The data option
# --------------------------------------------------------------------------------------------


def test_language_paths(tmp_path):
    assert language_paths(["books/", "x.txt"]) is None
    assert language_paths(["en=a.txt", "zh=b/", "en=c.jsonl"]) == {
        "en": ["a.txt", "c.jsonl"],
        "zh": ["b/"],
    }
    assert list(language_paths(["zh=b", "en=a", "cmn_hans=c"])) == ["zh", "en", "cmn_hans"]
    odd = tmp_path / "x=1.txt"  # a real file whose name looks tagged stays a plain path
    odd.write_text("hello")
    assert language_paths([str(odd)]) is None
    with pytest.raises(ConfigError, match="mixes LANG=PATH"):
        language_paths(["en=a.txt", "plain.txt"])


def test_word_count_weights_follow_alpha():
    counts = {"a": {"x": 900}, "b": {"y": 100}}
    total, factors = weighted_word_counts(counts, alpha=0.5)
    p = np.array([0.9, 0.1])
    q = p**0.5 / (p**0.5).sum()
    ratio = (q / p) / (q / p).min()
    assert factors == pytest.approx({"a": ratio[0], "b": ratio[1]})
    # the weighted counts are in the proportions q
    assert total["y"] / (total["x"] + total["y"]) == pytest.approx(q[1], abs=1e-3)


# --------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------

SIZES = {"en": 48, "zh": 12, "th": 4}  # documents per language: very unequal shares


@pytest.fixture(scope="module")
def joined(tmp_path_factory, ml_tok):
    """(languages, corpus, doc_langs, chunks, train_ids) of three languages' files."""
    folder = tmp_path_factory.mktemp("ml")
    langs = {}
    for i, (lang, n_docs) in enumerate(SIZES.items()):
        f = folder / f"{lang}.jsonl"
        docs = [" ".join(sentences(lang, 4, seed=100 * i + d)) for d in range(n_docs)]
        f.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
        langs[lang] = [str(f)]
    cfg = TextDataConfig(max_len=32, cache_dir=str(folder / "cache"))
    corpus, doc_langs = build_language_corpus(langs, ml_tok, cfg, log=lambda s: None)
    chunks = make_chunks(corpus, 32)
    train_ids, _ = split_chunks(len(chunks), 50, 512)
    return langs, corpus, doc_langs, chunks, train_ids


def make_batches(joined, tok, alpha: float, seed: int = 0, batch_size: int = 16):
    langs, corpus, doc_langs, chunks, train_ids = joined
    builder = PairBuilder(corpus, chunks, tok, 32, None)
    batches, stats = language_batches(
        list(langs),
        doc_langs,
        chunks,
        train_ids,
        builder,
        None,
        batch_size,
        seed,
        alpha,
        log=lambda s: None,
    )
    return batches, stats


def language_of(tok, ids) -> str:
    """The language of an example, read off its characters."""
    text = "".join(tok.decode_token(i) for i in ids if i not in tok.special_ids)
    if any("\u0e00" <= c <= "\u0e7f" for c in text):
        return "th"
    if any("\u4e00" <= c <= "\u9fff" for c in text):
        return "zh"
    return "en"


def test_joined_corpus_keeps_each_documents_language(joined, ml_tok):
    langs, corpus, doc_langs, _, _ = joined
    assert np.bincount(doc_langs).tolist() == list(SIZES.values())
    for d in range(len(doc_langs)):
        a, b = corpus.doc_sents[d], corpus.doc_sents[d + 1]
        ids = corpus.tokens[corpus.sent_offsets[a] : corpus.sent_offsets[b]]
        assert language_of(ml_tok, ids) == list(langs)[doc_langs[d]]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_sampled_proportions_match_alpha(joined, ml_tok, alpha):
    langs, _, doc_langs, chunks, train_ids = joined
    # XLM's q_i, computed here from the training sequences of each language
    n = np.bincount(doc_langs[chunks[train_ids, 2]], minlength=len(langs)).astype(float)
    p = n / n.sum()
    q = p**alpha / (p**alpha).sum()
    batches, stats = make_batches(joined, ml_tok, alpha)
    assert [stats[lang]["sampled"] for lang in langs] == pytest.approx(q, abs=1e-5)
    n_batches = 125  # 2,000 examples, several epochs of the training set
    seen = [language_of(ml_tok, ids) for k in range(n_batches) for ids, _, _ in batches.examples(k)]
    total = len(seen)
    assert total > 3 * len(train_ids)
    for lang, qi in zip(langs, q, strict=True):
        share = seen.count(lang) / total
        # 4 binomial standard deviations (the per-epoch quota draws vary less than binomial)
        tol = 4 * math.sqrt(qi * (1 - qi) / total) + 1 / len(train_ids)
        assert abs(share - qi) < tol, (lang, share, qi, tol)


def test_small_languages_are_upsampled_at_low_alpha(joined, ml_tok):
    low, _ = make_batches(joined, ml_tok, 0.3)
    natural, _ = make_batches(joined, ml_tok, 1.0)
    uniform, _ = make_batches(joined, ml_tok, 0.0)
    en, th = list(SIZES).index("en"), list(SIZES).index("th")
    assert natural.probs[th] < low.probs[th] < uniform.probs[th]  # the smallest gains
    assert natural.probs[en] > low.probs[en] > uniform.probs[en]  # the largest loses
    assert natural.probs == pytest.approx(natural.natural)
    assert uniform.probs == pytest.approx(1 / 3)


def test_each_epoch_holds_its_quota_spread_evenly(joined, ml_tok):
    langs, _, doc_langs, chunks, train_ids = joined
    batches, _ = make_batches(joined, ml_tok, 0.3)
    assert batches.per_epoch.sum() == len(train_ids)
    chunk_lang = dict(
        zip(train_ids.tolist(), doc_langs[chunks[train_ids, 2]].tolist(), strict=True)
    )
    for epoch in (0, 1):
        order = batches._order(epoch)
        assert len(order) == len(train_ids)
        drawn = np.bincount([chunk_lang[c] for c in order.tolist()], minlength=len(langs))
        assert drawn.tolist() == batches.per_epoch.tolist()
        for i, group in enumerate(batches.groups):  # repeats differ by at most one
            reps = np.bincount(
                np.searchsorted(np.sort(group), order[np.isin(order, group)]), minlength=len(group)
            )
            assert reps.max() - reps.min() <= 1, (langs, i)
    assert not np.array_equal(batches._order(0), batches._order(1))
    again, _ = make_batches(joined, ml_tok, 0.3)
    assert np.array_equal(again._order(1), batches._order(1))  # a pure function of (seed, epoch)
    other, _ = make_batches(joined, ml_tok, 0.3, seed=1)
    assert not np.array_equal(other._order(0), batches._order(0))


def test_largest_remainder():
    counts = largest_remainder(np.array([0.5, 0.3, 0.2]), 7)
    assert counts.tolist() == [4, 2, 1] and counts.sum() == 7  # 3.5 2.1 1.4 -> the .5 gets one
    assert largest_remainder(np.array([1 / 3] * 3), 10).tolist() == [4, 3, 3]


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


def test_unk_rate_is_low_on_thai_and_chinese(ml_tok):
    heldout = {lang: sentences(lang, 40, seed=1) for lang in ("th", "zh")}
    assert max(len(s) for s in heldout["th"]) > 100  # runs WordPiece alone cannot encode
    rates = unk_rates(ml_tok, heldout)
    for lang in ("th", "zh"):
        assert rates[lang]["unk_char_rate"] < 0.005, (lang, rates[lang])
        assert rates[lang]["tokens"] > 0
    # BERT's pipeline, cased, on the same text: Thai runs over 100 characters are [UNK]s
    cased = train_tokenizer(
        [s for lang in WORDS for s in sentences(lang, 120, seed=0)], vocab_size=600, lowercase=False
    )
    assert unk_rates(cased, heldout)["th"]["unk_char_rate"] > 0.3


def test_scripts_survive_normalisation(ml_tok):
    """No accent stripping: every character of Hindi, Thai, Greek, Arabic and Vietnamese text
    comes back from the tokens (spaces aside)."""
    for lang in ("hi", "th", "el", "ar", "vi", "zh"):
        for text in sentences(lang, 5, seed=2):
            ids = ml_tok.encode_plain([text])[0]
            assert ml_tok.unk_id not in ids, (lang, text)
            assert no_space(ml_tok.decode(ids)) == no_space(text), lang
    lower = train_multilingual_tokenizer({"hi": sentences("hi", 50, 0)}, 200, lowercase=True)
    text = sentences("hi", 1, seed=3)[0]
    assert no_space(lower.decode(lower.encode_plain([text])[0])) == no_space(text)
    # BERT's (English) pipeline, lower-casing and so stripping accents, loses the marks
    english = train_tokenizer(sentences("hi", 50, 0) + sentences("th", 50, 0), 300)
    for lang in ("hi", "th"):
        text = sentences(lang, 1, seed=3)[0]
        assert no_space(english.decode(english.encode_plain([text])[0])) != no_space(text)


def test_no_space_scripts_are_cut_into_clusters(ml_tok):
    words = ml_tok.tok.pre_tokenizer.pre_tokenize_str("แม่น้ำกรุงเทพ")
    pieces = [w for w, _ in words]
    assert "".join(pieces) == "แม่น้ำกรุงเทพ"
    for piece in pieces:  # a base character, then only combining marks
        assert not unicodedata.category(piece[0]).startswith("M")
        assert all(unicodedata.category(c).startswith("M") for c in piece[1:])
    assert len(pieces) > 5


def test_transformers_reads_it_unchanged(tmp_path, ml_tok):
    transformers = pytest.importorskip("transformers")
    ml_tok.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["strip_accents"] is False and config["do_lower_case"] is False
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    mine = load_tokenizer(tmp_path / "tok")
    texts = [s for lang in WORDS for s in sentences(lang, 3, seed=4)]
    for text in texts:
        ours = mine([text], max_len=512)["input_ids"][0].tolist()
        assert ours == hf(text)["input_ids"], text


@pytest.mark.data
def test_unk_rate_on_xquad_thai_and_chinese():
    """Trained on half of XQuAD's Thai and Chinese paragraphs (and UDHR, CMRC 2018), scored on
    the other half: under 1% of characters in [UNK]; BERT's cased pipeline puts 2-5% of the
    Thai in [UNK] (its runs of over 100 characters)."""
    root = shared("xquad")
    udhr = shared("udhr/txt")
    paras = {}
    for lang in ("th", "zh"):
        data = json.loads((root / f"xquad.{lang}.json").read_text())["data"]
        paras[lang] = [p["context"] for a in data for p in a["paragraphs"]]
    train = {lang: ps[::2] for lang, ps in paras.items()}
    train["th"] += (udhr / "tha.txt").read_text().splitlines()
    train["zh"] += (udhr / "cmn_hans.txt").read_text().splitlines()
    cmrc = json.loads((shared("cmrc2018") / "cmrc2018_dev.json").read_text())["data"]
    train["zh"] += [p["context"] for a in cmrc for p in a["paragraphs"]]  # more characters
    tok = train_multilingual_tokenizer(train, vocab_size=12000, lowercase=False)
    rates = unk_rates(tok, {lang: ps[1::2] for lang, ps in paras.items()})
    assert rates["th"]["unk_char_rate"] < 0.01, rates
    assert rates["zh"]["unk_char_rate"] < 0.01, rates
    # BERT's pipeline, cased (no accent stripping, as mBERT-cased): long Thai runs are [UNK]
    cased = train_tokenizer([p for ps in train.values() for p in ps], 12000, lowercase=False)
    assert unk_rates(cased, {"th": paras["th"][1::2]})["th"]["unk_char_rate"] > 0.02


# --------------------------------------------------------------------------------------------
# Pretraining end to end, and bad input
# --------------------------------------------------------------------------------------------

FAST = ["--preset", "tiny", "--max-len", "32", "--vocab-size", "400", "--batch-size", "8"]
FAST += ["--threads", "1", "--no-progress", "--objective", "mlm"]


@pytest.fixture(scope="module")
def lang_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("langs")
    files = {}
    for lang, n in (("en", 60), ("zh", 30), ("th", 10)):
        files[lang] = folder / f"{lang}.txt"
        files[lang].write_text("\n\n".join(sentences(lang, n, seed=7)) + "\n")
    return files


def test_pretrain_on_languages(tmp_path, capsys, lang_files):
    out = tmp_path / "run"
    data = [f"{lang}={f}" for lang, f in lang_files.items()]
    args = ["--steps", "3", "--lang-alpha", "0.5", "--data", *data, "--out", out]
    code, stdout, err = cli(capsys, "pretrain", *FAST, *args)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    shares = summary["languages"]
    assert list(shares) == ["en", "zh", "th"]
    n = np.array([shares[lang]["sequences"] for lang in shares], dtype=float)
    q = (n / n.sum()) ** 0.5 / ((n / n.sum()) ** 0.5).sum()
    assert [shares[lang]["sampled"] for lang in shares] == pytest.approx(q, abs=1e-5)
    assert json.loads((out / "config.json").read_text())["data"]["lang_alpha"] == 0.5
    assert "languages (share of sequences -> sampled, alpha 0.5): en" in stdout
    tok_cfg = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["strip_accents"] is False
    tok = load_tokenizer(out)
    assert tok.unk_id not in tok.encode_plain([sentences("th", 1, seed=8)[0]])[0]


def test_kill_and_resume_is_exact(tmp_path, lang_files):
    """A multilingual run stopped after step 3 and resumed ends with the weights of one run
    straight through: the language draws are a function of (seed, epoch)."""
    from selfsup.presets import preset

    def make():
        cfg = preset("tiny")
        cfg.set_objective("mlm")
        cfg.data.paths = [f"{lang}={f}" for lang, f in lang_files.items()]
        cfg.data.max_len, cfg.data.lang_alpha, cfg.data.lowercase = 32, 0.3, False
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.model.vocab_size = 400
        cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = 6, 8, 1
        cfg.train.save_every, cfg.train.eval_every, cfg.train.log_every = 1, 3, 1
        return cfg

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain_straight_and_resumed(make, tmp_path / "a", tmp_path / "b", 3)
    finally:
        torch.set_num_threads(threads)
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--data", "en={en}", "{zh}"], "mixes LANG=PATH"),
        (["--data", "en={en}", "zh={zh}", "--lang-alpha", "1.5"], "lang_alpha must be in [0, 1]"),
        (["--data", "en={en}", "th={empty}"], "language th: the corpus is empty"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, lang_files, argv, says):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    out = tmp_path / "run"
    argv = [a.format(en=lang_files["en"], zh=lang_files["zh"], empty=empty) for a in argv]
    code, _, err = cli(capsys, "pretrain", *FAST, "--steps", "1", *argv, "--out", out)
    assert_clean_error(code, err, out, says)


def test_tokenizer_command_trains_the_multilingual_one(tmp_path, capsys, lang_files):
    out = tmp_path / "tok"
    data = [f"{lang}={f}" for lang, f in lang_files.items()]
    code, _, err = cli(
        capsys, "tokenizer", "--input", *data, "--vocab-size", "300", "--cased", "--out", out
    )
    assert code == 0, err
    tok = load_tokenizer(out)
    text = sentences("th", 1, seed=9)[0]
    assert tok.unk_id not in tok.encode_plain([text])[0]
    assert json.loads((out / "tokenizer_config.json").read_text())["strip_accents"] is False
