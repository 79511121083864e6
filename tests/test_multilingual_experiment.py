"""experiments/multilingual.py: the committed XQuAD article split is what the script writes and
is disjoint, the pretraining corpus holds none of the held-out articles' contexts (nor a
paragraph sharing a 13-gram with one), and the confidence intervals use Student's t."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from helpers import shared

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ml():
    sys.path.insert(0, str(REPO / "experiments"))  # as `python experiments/...` has it: ledger
    spec = importlib.util.spec_from_file_location(
        "multilingual_exp", REPO / "experiments" / "multilingual.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_is_disjoint_and_sized(ml):
    split = json.loads(ml.SPLIT.read_text())
    parts = [set(split[k]) for k in ("train", "dev", "test")]
    assert [len(p) for p in parts] == [32, 4, 12]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    titles = [f"t{i}" for i in range(48)]
    again = ml.make_split(titles)
    assert again == ml.make_split(list(reversed(titles)))  # order of the input does not matter
    assert ml.make_split(titles, seed=1) != again


@pytest.mark.data
def test_split_file_is_what_the_script_writes(ml):
    root = shared("xquad")
    split = json.loads(ml.SPLIT.read_text())
    for lang in ml.LANGS:
        titles = [a["title"] for a in json.loads((root / f"xquad.{lang}.json").read_text())["data"]]
        assert sorted(titles) == sorted(split["train"] + split["dev"] + split["test"]), lang
    en = [a["title"] for a in json.loads((root / "xquad.en.json").read_text())["data"]]
    assert {k: v for k, v in ml.make_split(en).items()} == {
        k: split[k] for k in ("train", "dev", "test")
    }


def test_ngrams_and_contamination(ml):
    text = " ".join(f"w{i}" for i in range(20))
    held = ml.ngrams(text)
    assert len(held) == 20 - ml.NGRAM + 1
    assert ml.contaminated("before " + " ".join(f"w{i}" for i in range(3, 16)) + " after", held)
    assert not ml.contaminated(" ".join(f"w{i}" for i in range(3, 15)), held)  # 12 words only
    # Chinese counts characters; Thai characters count in 52-grams
    zh = "黑豹队的防守只丢了分在联赛中排名第六"
    assert ml.contaminated("前言" + zh[2:16] + "后记", ml.ngrams(zh))
    th = "ทีมรับของแพนเธอร์สถอดใจที่คะแนนได้อันดับที่หกของลีกในขณะที่เป็นผู้นำในเอ็นเอฟแอล"
    assert ml.window(ml.units(th)) == ml.NGRAM_LETTERS
    assert not ml.contaminated(th[:20], ml.ngrams(th + "ครับ"))


@pytest.mark.data
def test_corpus_holds_no_heldout_context(ml, tmp_path, monkeypatch):
    shared("xquad")
    shared("udhr")
    monkeypatch.setattr(ml, "LANGS", ["en", "th", "zh"])
    monkeypatch.setattr(ml, "CAP", 40)
    split = json.loads(ml.SPLIT.read_text())
    heldout = {
        lang: [
            p["context"]
            for a in ml.xquad(lang)
            if a["title"] not in split["train"]
            for p in a["paragraphs"]
        ]
        for lang in ml.LANGS
    }
    planted = heldout["en"][3]
    real_sources = ml.sources

    def sources(lang, split):  # a paragraph quoting a held-out context, and a clean one
        out = real_sources(lang, split)
        if lang == "en":
            out["planted"] = [["Quoted: " + planted[:400] + " (end)", "a clean paragraph"]]
        return out

    monkeypatch.setattr(ml, "sources", sources)
    stats = ml.build_corpus(split, tmp_path, log=lambda s: None)
    assert stats["en"]["planted"]["dropped_paragraphs"] == 1
    for lang in ml.LANGS:
        text = (tmp_path / "corpus" / f"{lang}.jsonl").read_text()
        docs = [json.loads(x)["text"] for x in text.splitlines()]
        paras = [p for d in docs for p in d.split("\n\n")]
        if lang == "en":
            assert "a clean paragraph" in paras
        for ctx in heldout[lang]:
            assert ctx not in text
        held = set().union(*(ml.ngrams(c) for c in heldout[lang]))
        assert not any(ml.contaminated(p, held) for p in paras), lang
        train = [
            p["context"]
            for a in ml.xquad(lang)
            if a["title"] in split["train"]
            for p in a["paragraphs"]
        ][:5]
        assert any(c in paras for c in train), lang  # the training articles are there
    th_stats = stats["th"]["xquad"]
    assert th_stats["dropped_paragraphs"] <= 2, th_stats  # letters are not words


def test_confidence_interval_uses_student_t(ml):
    stats = pytest.importorskip("scipy.stats")
    for df, t in ml.T975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    m, half = ml.mean_ci([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3), rel=1e-3)
    assert math.isnan(ml.mean_ci([1.0])[1])


def test_table_keeps_random_init_rows_apart(ml, tmp_path, monkeypatch):
    """The random-init QA rows get their own column and never enter the pretrained figures."""
    evals = []
    for seed, (en, zh) in enumerate([(10.0, 5.0), (12.0, 6.0), (14.0, 7.0)]):
        evals += [{"kind": "eval", "seed": seed, "lang": lang, "f1": f1, "exact_match": 0.0}
                  for lang, f1 in (("en", en), ("zh", zh))]  # fmt: skip
        evals += [{"kind": "eval", "init": "scratch", "seed": seed, "lang": lang, "f1": 1.0 + seed,
                   "exact_match": 0.0} for lang in ("en", "zh")]  # fmt: skip
    recorded = []
    monkeypatch.setattr(ml, "rows", lambda: evals)
    monkeypatch.setattr(ml, "record", recorded.append)
    monkeypatch.setattr(ml, "RESULTS", tmp_path / "results.jsonl")
    text = ml.table()
    langs = recorded[-1]["languages"]
    assert langs["en"]["f1"] == pytest.approx(12.0)  # the scratch rows (1, 2, 3) left out
    assert langs["zh"]["ratio_to_en"] == pytest.approx(0.5)
    assert langs["en"]["scratch_f1"] == pytest.approx(2.0)
    assert "| en | 12.0 +- " in text and "| 2.0 +- " in text
    assert (tmp_path / "table.md").read_text().strip() == text.strip()
