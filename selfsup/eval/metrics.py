"""Fine-tuning metrics as pure functions: GLUE classification/regression, SQuAD v1.1, CMRC 2018.

Each function re-implements an official definition (cited in its docstring) with numpy and the
standard library only; sklearn/scipy and the official scripts are test references, never imported
here. Inputs may be lists, numpy arrays or torch tensors (moved to the CPU).

Scales follow the sources: the classification/correlation metrics and the GLUE dicts are
fractions in [0, 1] (sklearn/scipy, HF `glue_compute_metrics`); SQuAD and CMRC return percents,
as their official scripts print them.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- classification


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1)


def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _as_array(preds), _as_array(labels)
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    if p.size == 0:
        raise ValueError("preds and labels are empty")
    return p, y


def accuracy(preds: Any, labels: Any) -> float:
    """Share of positions where `preds == labels` (sklearn.metrics.accuracy_score)."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_binary(preds: Any, labels: Any, positive: int = 1) -> float:
    """F1 of the `positive` class, 2TP / (2TP + FP + FN) (sklearn f1_score, average="binary").

    GLUE scores MRPC and QQP with it, positive = 1 = "paraphrase" (Wang et al., arXiv:1804.07461).
    When there is no positive in either preds or labels F1 is undefined; like sklearn's default
    `zero_division` it is then 0.0.
    """
    p, y = _pair(preds, labels)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews_corrcoef(preds: Any, labels: Any) -> float:
    """Matthews correlation coefficient, the CoLA metric (Matthews 1975; Warstadt et al. 2019).

    Written in the multiclass confusion-matrix form R_K (Gorodkin 2004), as sklearn does; for two
    classes it is (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). When a marginal is
    constant (e.g. the model predicts one class for everything) the denominator is 0 and MCC is
    undefined: it is 0.0 then, exactly as sklearn.metrics.matthews_corrcoef returns.
    """
    p, y = _pair(preds, labels)
    classes, idx = np.unique(np.concatenate([y, p]), return_inverse=True)
    yi, pi = idx[: y.size], idx[y.size :]
    t = np.bincount(yi, minlength=classes.size).astype(np.float64)  # true count per class
    q = np.bincount(pi, minlength=classes.size).astype(np.float64)  # predicted count per class
    c = float(np.sum(yi == pi))  # correctly predicted
    s = float(y.size)
    cov_yp = c * s - t @ q
    cov_pp = s * s - q @ q
    cov_yy = s * s - t @ t
    if cov_pp * cov_yy == 0:
        return 0.0
    return float(cov_yp / math.sqrt(cov_yy * cov_pp))


# --------------------------------------------------------------------------- correlation


def _xy(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(x).astype(np.float64), _as_array(y).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size < 2:
        raise ValueError("correlation needs at least 2 points")
    return a, b


def pearson(x: Any, y: Any) -> float:
    """Pearson's r, the STS-B metric with Spearman's rho (Cer et al., arXiv:1708.00055).

    Same value as scipy.stats.pearsonr(x, y).statistic. Undefined when x or y is constant, or
    holds a NaN: NaN then, as scipy returns (scipy also warns; we stay quiet).
    """
    a, b = _xy(x, y)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return math.nan
    # normalise before the dot product (as scipy does) so large values cannot overflow
    return float(np.clip((a / na) @ (b / nb), -1.0, 1.0))


def rank_average(x: Any) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata default).

    [10, 20, 20, 30] -> [1, 2.5, 2.5, 4].
    """
    a = _as_array(x)
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]  # first position of each run of equal values
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], a.size]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(first) - 1]
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr(x, y).statistic).

    Ties get the mean of the ranks they span, so this is the tie-corrected rho, not the
    1 - 6 sum d^2 / (n (n^2 - 1)) shortcut that holds only without ties. NaN when undefined
    (a constant input, or a NaN in the input), as scipy.
    """
    a, b = _xy(x, y)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    return pearson(rank_average(a), rank_average(b))


# --------------------------------------------------------------------------- GLUE

# Main metric per task: the single number GLUE's leaderboard averages into the GLUE score
# (Wang et al., arXiv:1804.07461, sec. 4: tasks with two metrics count as their unweighted mean).
# BERT (arXiv:1810.04805, Table 1) prints F1 for QQP/MRPC and Spearman for STS-B instead; both
# are in the glue_metrics dict too.
GLUE_MAIN: dict[str, str] = {
    "cola": "mcc",
    "sst2": "accuracy",
    "mrpc": "acc_and_f1",
    "qqp": "acc_and_f1",
    "stsb": "corr",
    "mnli": "accuracy",
    "mnli_m": "accuracy",
    "mnli_mm": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}


def glue_metrics(task: str, preds: Any, labels: Any) -> dict[str, float]:
    """The metric set GLUE reports for `task` (Wang et al., arXiv:1804.07461, Table 1).

    cola -> {"mcc"}; mrpc, qqp -> {"accuracy", "f1", "acc_and_f1"}; stsb -> {"pearson",
    "spearmanr", "corr"} (preds are the regressed scores); sst2, mnli, qnli, rte, wnli ->
    {"accuracy"}. MNLI is scored once per dev set: call it for matched and for mismatched and
    store the results as "mnli_m" and "mnli_mm" (both are accepted here as task names).
    Values are fractions in [0, 1].
    """
    if task not in GLUE_MAIN:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE_MAIN)}")
    if task == "cola":
        return {"mcc": matthews_corrcoef(preds, labels)}
    if task in ("mrpc", "qqp"):
        acc, f1 = accuracy(preds, labels), f1_binary(preds, labels)
        return {"accuracy": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}
    if task == "stsb":
        r, rho = pearson(preds, labels), spearman(preds, labels)
        return {"pearson": r, "spearmanr": rho, "corr": (r + rho) / 2}
    return {"accuracy": accuracy(preds, labels)}


def glue_score(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per-task scores and their mean "glue", as the GLUE leaderboard averages them.

    `results` maps task -> glue_metrics dict, e.g. {"cola": {"mcc": .5}, "mnli_m": {...}, ...}.
    Each task scores its GLUE_MAIN metric, which for MRPC/QQP and STS-B is already the mean of
    their two metrics. MNLI counts as one task whose score is the mean of matched and mismatched
    accuracy (given as "mnli_m" and "mnli_mm"; a lone "mnli" is used as is); "mnli_m" and
    "mnli_mm" stay in the output for reporting but only "mnli" enters the average. "glue" is the
    unweighted mean over the tasks given, so it matches the leaderboard only when all nine are
    there (many papers drop WNLI: pass only the tasks you want averaged).
    """
    scores = {task: float(m[GLUE_MAIN[task]]) for task, m in results.items()}
    if "mnli_m" in scores and "mnli_mm" in scores and "mnli" not in scores:
        scores["mnli"] = (scores["mnli_m"] + scores["mnli_mm"]) / 2
    elif ("mnli_m" in scores) != ("mnli_mm" in scores):
        raise ValueError("give both mnli_m and mnli_mm (or a single 'mnli') to score MNLI")
    tasks = [t for t in scores if t not in ("mnli_m", "mnli_mm")]
    if not tasks:
        raise ValueError("no GLUE task results given")
    scores["glue"] = sum(scores[t] for t in tasks) / len(tasks)
    return scores


# --------------------------------------------------------------------------- SQuAD v1.1

_PUNCT = frozenset(string.punctuation)  # ASCII punctuation only, as the official script
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Official SQuAD v1.1 normalisation (evaluate-v1.1.py, Rajpurkar et al., arXiv:1606.05250).

    In this order: lower-case, drop ASCII punctuation, replace the words a/an/the by a space,
    collapse whitespace. Punctuation goes before articles, so "the-end" -> "theend" keeps "the".
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _answers(ground_truths: str | Iterable[str]) -> list[str]:
    gts = [ground_truths] if isinstance(ground_truths, str) else list(ground_truths)
    if not gts:
        raise ValueError("a question needs at least one ground-truth answer")
    return gts


def exact_match(prediction: str, ground_truths: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised ground truth, else 0.0 (SQuAD)."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gt) for gt in _answers(ground_truths)))


def _f1_tokens(pred: list[str], gt: list[str]) -> float:
    same = sum((Counter(pred) & Counter(gt)).values())  # bag-of-tokens overlap
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gt)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, ground_truths: str | Iterable[str]) -> float:
    """SQuAD v1.1 token F1: max over ground truths of the bag-of-words F1 of normalised tokens.

    As in evaluate-v1.1.py, no overlap gives 0 -- including an empty normalised prediction
    against an empty normalised answer (e.g. "the" vs "a"), where exact_match is 1. So
    f1 >= exact_match holds for every question whose answers normalise to something non-empty.
    """
    pred = normalize_answer(prediction).split()
    return max(_f1_tokens(pred, normalize_answer(gt).split()) for gt in _answers(ground_truths))


def _questions(dataset: Mapping[str, Any] | Sequence[Mapping[str, Any]]):
    """Yield (id, [answer texts]) from a SQuAD-format json (the dict or its "data" list)."""
    articles = dataset["data"] if isinstance(dataset, Mapping) else dataset
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa["id"], [a["text"] for a in qa["answers"]]


def _warn_unanswered(missing: list[str], name: str) -> None:
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{name}: {len(missing)} unanswered question(s) score 0: {shown}", stacklevel=3
        )


def squad_evaluate(
    dataset: Mapping[str, Any] | Sequence[Mapping[str, Any]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """Official SQuAD v1.1 scores, in percent: {"exact_match": EM, "f1": F1}.

    `dataset` is the loaded dev-v1.1.json (or its "data" list); `predictions` maps question id to
    answer text. Every question counts in the denominator; one without a prediction scores 0 and
    is reported in a single warning (the official script prints one line per question).
    """
    em_sum = f1_sum = 0.0
    total = 0
    missing = []
    for qid, gts in _questions(dataset):
        total += 1
        if qid not in predictions:
            missing.append(qid)
            continue
        em_sum += exact_match(predictions[qid], gts)
        f1_sum += f1(predictions[qid], gts)
    if total == 0:
        raise ValueError("the dataset holds no questions")
    _warn_unanswered(missing, "squad_evaluate")
    return {"exact_match": 100.0 * em_sum / total, "f1": 100.0 * f1_sum / total}


# --------------------------------------------------------------------------- CMRC 2018

# The official cmrc2018_evaluate.py punctuation list (Cui et al., arXiv:1810.07366), kept as is:
# a few ASCII symbols plus full-width Chinese marks. Not removed there, so not here: ASCII . , ! ?
# ( ) " ' and the left quote U+2018. Its entry "……" is two characters and never equals the single
# character it is compared with, so "…" is not removed either.
CMRC_PUNCT = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")

_HANZI = re.compile("[\u4e00-\u9fa5]")  # the official script's CJK range, not all of CJK
# Stand-in for nltk.word_tokenize (Penn Treebank rules) on the non-Chinese runs, one alternative
# per rule, first match wins: "..."; a word whose period is not the run's last character keeps
# it (e.g. this); numbers keep inner . and , (3.14, 1,000, 1.5m) and words inner periods (u.s);
# clitics split off (do n't, it 's) but inner apostrophes stay (o'clock); any other symbol
# stands alone.
_NON_HANZI_TOKEN = re.compile(
    r"\.\.\.|\w+(?:\.\w+)*\.(?=\s+\S)|\d+(?:[.,]\d+)+\w*|\w+(?:\.\w+)+"
    r"|\w+(?=n't\b)|n't\b|\w+(?='(?:s|m|d|ll|re|ve)\b)|'(?:s|m|d|ll|re|ve)\b"
    r"|\w+(?:'\w+)*|[^\w\s]"
)


def cmrc_segment(text: str, remove_punc: bool = True) -> list[str]:
    """Split lower-cased, stripped text into CMRC 2018 scoring units (official mixed_segmentation).

    Each Chinese character (U+4E00..U+9FA5) is one unit and so is each CMRC_PUNCT mark; the
    stretches between them (English words, digits, spaces) are word-tokenised. With
    `remove_punc` the marks are dropped without ending a stretch, so "e-mail" -> ["email"], as in
    the official script. The official script word-tokenises with nltk.word_tokenize; this uses
    a regex following the same Penn Treebank rules for words, numbers, periods, contractions
    and symbols (tests/eval compares it with nltk's tokenizer where nltk is installed). Known
    differences: nltk rewrites double quotes as `` and '', keeps some symbols inside a word
    ("a|b", "【a】"), and splits sentences first; they can only move F1 on answers with English.
    """
    units: list[str] = []
    run: list[str] = []

    def flush() -> None:
        units.extend(_NON_HANZI_TOKEN.findall("".join(run)))
        run.clear()

    for ch in text.lower().strip():
        if remove_punc and ch in CMRC_PUNCT:
            continue
        if _HANZI.match(ch) or ch in CMRC_PUNCT:
            flush()
            units.append(ch)
        else:
            run.append(ch)
    flush()
    return units


def cmrc_strip(text: str) -> str:
    """Lower-case, strip outer whitespace, then drop CMRC_PUNCT (official remove_punctuation).

    Inner whitespace stays, and stripping comes first, so "北京 。" -> "北京 " keeps its space.
    """
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC_PUNCT)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run shared by sequences `a` and `b` (O(len a * len b))."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def cmrc_f1(prediction: str, answers: str | Iterable[str]) -> float:
    """CMRC 2018 F1: max over answers of the F1 whose overlap is the longest common substring.

    Unlike SQuAD's bag of words, the overlap is the longest contiguous run of shared units
    (cmrc_segment, punctuation removed): precision = lcs / len(prediction units), recall =
    lcs / len(answer units) (Cui et al., arXiv:1810.07366, official cmrc2018_evaluate.py).
    """
    pred = cmrc_segment(prediction)
    best = 0.0
    for ans in _answers(answers):
        gold = cmrc_segment(ans)
        lcs = longest_common_substring(gold, pred)
        if lcs:
            precision, recall = lcs / len(pred), lcs / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def cmrc_em(prediction: str, answers: str | Iterable[str]) -> float:
    """CMRC 2018 EM: 1.0 if cmrc_strip(prediction) equals cmrc_strip of any answer, else 0.0."""
    pred = cmrc_strip(prediction)
    return float(any(pred == cmrc_strip(ans) for ans in _answers(answers)))


def cmrc_evaluate(
    dataset: Mapping[str, Any] | Sequence[Mapping[str, Any]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """Official CMRC 2018 scores in percent: {"em": EM, "f1": F1, "average": (EM + F1) / 2}.

    `dataset` is the SQuAD-format CMRC json (or its "data" list); `predictions` maps question id
    to answer text. Ids are whitespace-stripped and predictions str()-ed as the official script
    does; unanswered questions score 0 and are reported in one warning.
    """
    em_sum = f1_sum = 0.0
    total = 0
    missing = []
    for qid, answers in _questions(dataset):
        total += 1
        qid = str(qid).strip()
        if qid not in predictions:
            missing.append(qid)
            continue
        pred = str(predictions[qid])
        em_sum += cmrc_em(pred, answers)
        f1_sum += cmrc_f1(pred, answers)
    if total == 0:
        raise ValueError("the dataset holds no questions")
    _warn_unanswered(missing, "cmrc_evaluate")
    em, f1_ = 100.0 * em_sum / total, 100.0 * f1_sum / total
    return {"em": em, "f1": f1_, "average": (em + f1_) / 2}
