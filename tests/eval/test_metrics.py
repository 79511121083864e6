"""Fine-tuning metrics against independent references: sklearn and scipy for the GLUE metrics,
hand-computed official SQuAD v1.1 and CMRC 2018 scores for the QA metrics."""

import contextlib
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from selfsup.eval.metrics import (
    GLUE_MAIN,
    accuracy,
    cmrc_em,
    cmrc_evaluate,
    cmrc_f1,
    cmrc_segment,
    cmrc_strip,
    exact_match,
    f1,
    f1_binary,
    glue_metrics,
    glue_score,
    longest_common_substring,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    rank_average,
    spearman,
    squad_evaluate,
)

SEEDS = range(40)


@pytest.fixture(scope="module")
def skm():
    return pytest.importorskip("sklearn.metrics")


@pytest.fixture(scope="module")
def stats():
    return pytest.importorskip("scipy.stats")


def random_labels(seed: int, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions that agree more often than chance, of a random length."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    labels = rng.integers(0, n_classes, n)
    flip = rng.random(n) < rng.random()  # a random error rate per seed
    preds = np.where(flip, rng.integers(0, n_classes, n), labels)
    return preds, labels


def test_metrics_do_not_import_sklearn_or_scipy():
    code = (
        "import sys, selfsup.eval.metrics; "
        "bad = [m for m in ('sklearn', 'scipy', 'nltk') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_matches_sklearn(seed, skm):
    preds, labels = random_labels(seed)
    assert accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds))
    with _quiet():
        ref_f1 = skm.f1_score(labels, preds)
        ref_mcc = skm.matthews_corrcoef(labels, preds)
    assert f1_binary(preds, labels) == pytest.approx(ref_f1, abs=1e-12)
    assert matthews_corrcoef(preds, labels) == pytest.approx(ref_mcc, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_mcc_and_f1_positive_match_sklearn(seed, skm):
    preds, labels = random_labels(seed, n_classes=3)
    with _quiet():
        ref_mcc = skm.matthews_corrcoef(labels, preds)
        ref_f1 = skm.f1_score(labels, preds, labels=[2], average="macro")
    assert matthews_corrcoef(preds, labels) == pytest.approx(ref_mcc, abs=1e-12)
    assert f1_binary(preds, labels, positive=2) == pytest.approx(ref_f1, abs=1e-12)


@pytest.mark.parametrize(
    "preds,labels",
    [
        ([1, 1, 1, 1], [0, 1, 0, 1]),  # constant predictions
        ([0, 0, 0, 0], [0, 1, 0, 1]),
        ([0, 1, 0, 1], [1, 1, 1, 1]),  # constant labels
        ([1, 1, 1], [1, 1, 1]),  # both constant: one class only
        ([0], [1]),
        ([0, 0], [0, 0]),  # no positive anywhere: F1 undefined
    ],
)
def test_degenerate_cases_match_sklearn(preds, labels, skm):
    with _quiet():
        ref_mcc = skm.matthews_corrcoef(labels, preds)
        ref_f1 = skm.f1_score(labels, preds, labels=[1], average="macro")
    assert matthews_corrcoef(preds, labels) == ref_mcc
    assert f1_binary(preds, labels) == pytest.approx(ref_f1)


def test_mcc_undefined_is_zero_and_perfect_is_one():
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # TP=2 TN=1 FP=1 FN=0: (2*1 - 1*0) / sqrt(3*2*2*1)
    assert matthews_corrcoef([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(2 / math.sqrt(12))


def test_tensor_inputs_and_length_checks():
    p, y = torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1])
    assert accuracy(p, y) == pytest.approx(0.75)
    assert f1_binary(p, y) == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])


# --------------------------------------------------------------------------- correlation


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed, stats):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    if seed % 2:  # STS-B-like: scores on a coarse grid, so many ties
        x = rng.integers(0, 6, n).astype(float)
        y = np.clip(x + rng.integers(-2, 3, n), 0, 5)
    else:
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
    with _quiet():
        ref_r = stats.pearsonr(x, y)[0]
        ref_rho = stats.spearmanr(x, y)[0]
    _assert_same(pearson(x, y), ref_r)
    _assert_same(spearman(x, y), ref_rho)


@pytest.mark.parametrize("seed", range(10))
def test_rank_average_matches_scipy_rankdata(seed, stats):
    x = np.random.default_rng(seed).integers(0, 5, 50)
    np.testing.assert_array_equal(rank_average(x), stats.rankdata(x))
    np.testing.assert_array_equal(rank_average([10, 20, 20, 30]), [1, 2.5, 2.5, 4])


def test_tied_spearman_is_not_the_no_ties_shortcut(stats):
    x, y = [1, 2, 2, 2, 3], [1, 2, 3, 4, 5]
    d2 = np.sum((rank_average(x) - rank_average(y)) ** 2)
    shortcut = 1 - 6 * d2 / (5 * (25 - 1))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert spearman(x, y) != pytest.approx(shortcut)


def test_correlation_edge_cases(stats):
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant: undefined, as scipy
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson([1, float("nan"), 3], [1, 2, 3]))
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(
        stats.pearsonr([1, 2, 3], [2, 4, 6.5])[0]
    )
    # far from zero the centred values must not lose precision
    x = 1e9 + np.arange(10.0)
    y = 1e9 + np.arange(10.0) ** 2
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert pearson([1, 2], [1, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pearson([1.0], [2.0])


# --------------------------------------------------------------------------- GLUE


def test_glue_metric_sets(skm, stats):
    preds, labels = random_labels(3)
    expected_keys = {
        "cola": {"mcc"},
        "sst2": {"accuracy"},
        "mrpc": {"accuracy", "f1", "acc_and_f1"},
        "qqp": {"accuracy", "f1", "acc_and_f1"},
        "mnli": {"accuracy"},
        "qnli": {"accuracy"},
        "rte": {"accuracy"},
        "wnli": {"accuracy"},
    }
    for task, keys in expected_keys.items():
        m = glue_metrics(task, preds, labels)
        assert set(m) == keys
        assert GLUE_MAIN[task] in m
    m = glue_metrics("mrpc", preds, labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, preds))
    assert m["acc_and_f1"] == pytest.approx((m["accuracy"] + m["f1"]) / 2)
    assert glue_metrics("cola", preds, labels)["mcc"] == pytest.approx(
        skm.matthews_corrcoef(labels, preds)
    )

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 100)
    pred = gold + rng.normal(size=100)
    s = glue_metrics("stsb", pred, gold)
    assert set(s) == {"pearson", "spearmanr", "corr"}
    assert s["pearson"] == pytest.approx(stats.pearsonr(pred, gold)[0])
    assert s["spearmanr"] == pytest.approx(stats.spearmanr(pred, gold)[0])
    assert s["corr"] == pytest.approx((s["pearson"] + s["spearmanr"]) / 2)
    with pytest.raises(ValueError):
        glue_metrics("sts-b", pred, gold)


def test_glue_score_averages_like_the_leaderboard():
    results = {
        "cola": {"mcc": 0.5},
        "mrpc": {"accuracy": 0.8, "f1": 0.9, "acc_and_f1": 0.85},
        "stsb": {"pearson": 0.88, "spearmanr": 0.86, "corr": 0.87},
        "mnli_m": {"accuracy": 0.84},
        "mnli_mm": {"accuracy": 0.82},
    }
    scores = glue_score(results)
    assert scores["mrpc"] == pytest.approx(0.85)
    assert scores["mnli"] == pytest.approx(0.83)
    assert scores["mnli_m"] == pytest.approx(0.84)  # kept for reporting
    # MNLI counts once: (0.5 + 0.85 + 0.87 + 0.83) / 4
    assert scores["glue"] == pytest.approx((0.5 + 0.85 + 0.87 + 0.83) / 4)
    with pytest.raises(ValueError):
        glue_score({"mnli_m": {"accuracy": 0.8}})


# --------------------------------------------------------------------------- SQuAD v1.1


@pytest.mark.parametrize(
    "text,normal",
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("the-end", "theend"),  # punctuation goes first, so "the" is no longer a word
        ("Theatre", "theatre"),  # articles only as whole words
        ("A.M.", "am"),
        ("It's 5 o'clock.", "its 5 oclock"),
        ("  \tthe\n", ""),
        ("Café “quoted”", "café “quoted”"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_squad_exact_match_and_f1_by_hand():
    assert exact_match("The Eiffel Tower.", ["Paris", "eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # [big red dog] vs [red dog barked]: 2 shared, P = R = 2/3
    assert f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # max over answers: [dog] -> P 1/2 R 1 F1 2/3; [big red dog] -> P 1 R 2/3 F1 0.8
    assert f1("red dog", ["the dog", "big red dog"]) == pytest.approx(0.8)
    # a bag of tokens: a repeated token counts as often as it occurs in both
    assert f1("dog dog dog", "dog") == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert f1("cat", ["dog", "the mouse"]) == 0.0
    # the official quirk: both sides normalise to empty -> EM 1, F1 0
    assert exact_match("the", "a") == 1.0
    assert f1("the", "a") == 0.0
    with pytest.raises(ValueError):
        f1("x", [])


def squad_data():
    return {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "...",
                        "qas": [
                            {"id": "q1", "answers": [{"text": "Denver Broncos"}] * 2},
                            {"id": "q2", "answers": [{"text": "the big red dog"}]},
                        ],
                    }
                ],
            },
            {
                "title": "u",
                "paragraphs": [
                    {"context": "", "qas": [{"id": "q3", "answers": [{"text": "1990"}]}]}
                ],
            },
        ],
    }


def test_squad_evaluate_in_percent_with_unanswered():
    preds = {"q1": "the Denver Broncos!", "q2": "big dog"}  # q3 unanswered
    with pytest.warns(UserWarning, match="1 unanswered"):
        out = squad_evaluate(squad_data(), preds)
    # q1: EM 1 F1 1; q2: [big dog] vs [big red dog]: P 1, R 2/3, F1 0.8; q3: 0
    assert out["exact_match"] == pytest.approx(100 * 1 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0.8) / 3)
    with pytest.warns(UserWarning):
        assert squad_evaluate(squad_data()["data"], preds) == out  # the "data" list works too
    full = squad_evaluate(squad_data(), {**preds, "q3": "1990"})
    assert full["exact_match"] == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize("seed", range(20))
def test_squad_f1_at_least_em(seed):
    rng = np.random.default_rng(seed)
    vocab = ["the", "a", "an", "Dog", "dog", "red", "big", ",", ".", "!", "cat's", "1990", "-"]

    def text():
        return "".join(
            f"{rng.choice(vocab)}{rng.choice([' ', '', '  '])}" for _ in range(rng.integers(0, 6))
        )

    for _ in range(100):
        pred, gts = text(), [text() for _ in range(rng.integers(1, 4))]
        em, f = exact_match(pred, gts), f1(pred, gts)
        assert 0.0 <= em <= f <= 1.0 or normalize_answer(pred) == ""
        if em and normalize_answer(pred):
            assert f == pytest.approx(1.0)
        assert f1(pred, gts[0]) == pytest.approx(f1(gts[0], pred))  # F1 is symmetric


# --------------------------------------------------------------------------- CMRC 2018


@pytest.mark.parametrize(
    "text,units",
    [
        ("北京大学", ["北", "京", "大", "学"]),
        ("2018年世界杯", ["2018", "年", "世", "界", "杯"]),
        ("iPhone 11发布", ["iphone", "11", "发", "布"]),
        ("《红楼梦》", ["红", "楼", "梦"]),
        ("e-mail地址", ["email", "地", "址"]),  # a dropped mark does not end the English run
        ("约3.14米", ["约", "3.14", "米"]),
        ("Don't stop。", ["do", "n't", "stop"]),
        ("红楼梦.", ["红", "楼", "梦", "."]),  # ASCII "." is not on the official list
        ("  ", []),
    ],
)
def test_cmrc_segment(text, units):
    assert cmrc_segment(text) == units


def test_cmrc_segment_keeps_marks_without_remove_punc():
    assert cmrc_segment("《红楼梦》", remove_punc=False) == ["《", "红", "楼", "梦", "》"]
    assert cmrc_segment("e-mail地址", remove_punc=False) == ["e", "-", "mail", "地", "址"]


def test_longest_common_substring():
    assert longest_common_substring("abcde", "xbcdy") == 3
    assert longest_common_substring("abc", "") == 0
    assert longest_common_substring(["new", "york"], ["in", "new", "york", "city"]) == 2
    assert longest_common_substring("abab", "baba") == 3


def test_cmrc_f1_by_hand():
    # pred 4 units, answer 2, lcs 2: P 1/2 R 1
    assert cmrc_f1("北京大学", "北京") == pytest.approx(2 / 3)
    # all four characters shared but in another order: the LCS is 1, so P = R = 1/4
    assert cmrc_f1("京北学大", "北京大学") == pytest.approx(0.25)
    # [中 国 科 学 技 术 大 学] vs [中 国 科 学 院]: lcs 4, P 4/8, R 4/5
    assert cmrc_f1("中国科学技术大学", "中国科学院") == pytest.approx(2 * 0.5 * 0.8 / 1.3)
    # mixed: [2019 年 nba 总 决 赛] vs [nba 总 决 赛]: lcs 4, P 4/6, R 1
    assert cmrc_f1("2019年NBA总决赛", "NBA总决赛") == pytest.approx(0.8)
    assert cmrc_f1("new york city", "New York") == pytest.approx(0.8)
    # [红 楼 梦 .] vs [红 楼 梦]: P 3/4 R 1
    assert cmrc_f1("红楼梦.", "红楼梦") == pytest.approx(6 / 7)
    assert cmrc_f1("上海", ["北京", "京城"]) == 0.0
    assert cmrc_f1("北京", ["上海", "北京市"]) == pytest.approx(0.8)  # max over answers


def test_cmrc_em_by_hand():
    assert cmrc_em("红楼梦。", "《红楼梦》") == 1.0
    assert cmrc_em("New York", "new york") == 1.0
    assert cmrc_em("new york city", "New York") == 0.0
    assert cmrc_em("红楼梦.", "红楼梦") == 0.0  # ASCII "." is kept
    # official order: strip whitespace, then drop marks, so a space before "。" survives
    assert cmrc_strip("红楼梦 。") == "红楼梦 "
    assert cmrc_em("红楼梦 。", "红楼梦") == 0.0
    assert cmrc_f1("红楼梦 。", "红楼梦") == 1.0


def test_cmrc_evaluate():
    data = {
        "data": [
            {
                "paragraphs": [
                    {
                        "qas": [
                            {"id": "c1 ", "answers": [{"text": "北京大学"}, {"text": "北大"}]},
                            {"id": "c2", "answers": [{"text": "北京"}]},
                            {"id": "c3", "answers": [{"text": "1990年"}]},
                        ]
                    }
                ]
            }
        ]
    }
    preds = {"c1": "北大。", "c2": "北京大学"}  # c1 id is stripped; c3 unanswered
    with pytest.warns(UserWarning, match="1 unanswered"):
        out = cmrc_evaluate(data, preds)
    assert out["em"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert out["average"] == pytest.approx((out["em"] + out["f1"]) / 2)


NLTK_AGREES = [
    "hello world",
    "3.14 and 1,000 people",
    "don't stop, it's fine",
    "u.s.",
    "e.g. this",
    "dr. smith (born 1950)",
    "50% of $5",
    "why? ok!",
    "o'clock",
    "x...y",
    "they're we'll i'm you've he'd",
    "v2.0 release",
    "1.5m",
]


@pytest.mark.parametrize("text", NLTK_AGREES)
def test_english_runs_tokenised_like_nltk(text):
    nltk_tokenize = pytest.importorskip("nltk.tokenize")
    # the Treebank word tokenizer that nltk.word_tokenize applies to each sentence
    assert cmrc_segment(text, remove_punc=False) == nltk_tokenize.NLTKWordTokenizer().tokenize(text)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet():
    """Silence the references' undefined-metric warnings (their values are asserted instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _assert_same(ours: float, ref: float) -> None:
    if math.isnan(ref):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(ref, abs=1e-10)
