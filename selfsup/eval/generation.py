"""Scores of generated text against references: ROUGE-1/2/L (rouge-score), BLEU (sacrebleu)
and exact match, as one call over a corpus of predictions.

- ROUGE is the F-measure of each prediction against its reference, averaged over examples (as
  rouge-score reports it), x100. rouge-score's own tokenizer keeps only [a-z0-9] and so scores
  Chinese (or any non-Latin) text as empty; here English is tokenized exactly as rouge-score
  does, and every other letter is kept: a CJK character is one token, other scripts' words
  whole.
- BLEU is corpus BLEU (sacrebleu's corpus_bleu: n-gram counts summed over the corpus, one
  brevity penalty), not the mean of sentence BLEUs, which is lower and unstable on short
  outputs; sacrebleu's "13a" tokenizer, or "zh" when the references hold CJK text.
- Exact match compares whitespace-normalised, lower-cased strings.
An empty prediction scores 0 against a non-empty reference; an empty prediction of an empty
reference scores 100 (rouge-score would give it 0).
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_LATIN = re.compile(r"[^a-z0-9]+")


def has_cjk(texts: list[str]) -> bool:
    return any(CJK.search(t) for t in texts)


class RougeTokenizer:
    """rouge-score's tokenization for [a-z0-9] text (lower-case, anything else a separator),
    extended to keep other letters: each CJK character a token, other words whole."""

    def tokenize(self, text: str) -> list[str]:
        out = []
        for word in re.findall(r"\w+", text.lower()):
            if CJK.search(word):
                out += [piece for piece in re.split(f"({CJK.pattern})", word) if piece]
            elif word.isascii():
                out += _LATIN.sub(" ", word).split()
            else:
                out.append(word)
        return [t for t in out if t != "_"]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """{"rouge1", "rouge2", "rougeL", "bleu", "exact_match", "examples"} over the corpus."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(predictions)
    if n == 0:
        return {"examples": 0}
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), tokenizer=RougeTokenizer())
    sums = dict.fromkeys(kinds, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        if not ref.strip() and not pred.strip():
            for k in kinds:
                sums[k] += 1.0
            continue
        scores = scorer.score(ref, pred)  # (target, prediction)
        for k in kinds:
            sums[k] += scores[k].fmeasure
    tokenize = "zh" if has_cjk(references) else "13a"
    bleu = sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score
    em = sum(normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True))
    return {
        **{k: 100 * v / n for k, v in sums.items()},
        "bleu": float(bleu),
        "exact_match": 100 * em / n,
        "examples": n,
    }
