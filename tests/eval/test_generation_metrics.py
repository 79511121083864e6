"""The generation metrics on hand-checked examples and against the packages they wrap."""

import pytest

from selfsup.eval.generation import RougeTokenizer, generation_metrics

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
sacrebleu = pytest.importorskip("sacrebleu")


def test_english_rouge_equals_rouge_score_itself():
    preds = ["The cat sat on the mat.", "a dog barked", "Hello, world!"]
    refs = ["the cat was sitting on the mat", "the dog barked loudly", "hello there world"]
    got = generation_metrics(preds, refs)
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for k in ("rouge1", "rouge2", "rougeL"):
        want = (
            100 * sum(plain.score(r, p)[k].fmeasure for p, r in zip(preds, refs, strict=True)) / 3
        )
        assert got[k] == pytest.approx(want, abs=1e-9)


def test_rouge_by_hand():
    # "the cat sat" vs "the cat sat down": unigram P 3/4, R 3/3 -> F 6/7; bigram P 2/3, R 1
    got = generation_metrics(["the cat sat down"], ["the cat sat"])
    assert got["rouge1"] == pytest.approx(100 * 6 / 7)
    assert got["rouge2"] == pytest.approx(100 * 0.8)
    assert got["rougeL"] == pytest.approx(100 * 6 / 7)


def test_chinese_is_scored_by_character_not_dropped():
    assert RougeTokenizer().tokenize("我爱北京, OK 2024") == ["我", "爱", "北", "京", "ok", "2024"]
    # rouge-score's own tokenizer sees nothing in Chinese: every score 0
    plain = rouge_scorer.RougeScorer(["rouge1"]).score("我爱北京", "我爱北京天安门")
    assert plain["rouge1"].fmeasure == 0.0
    got = generation_metrics(["我爱北京天安门"], ["我爱北京"])
    # 4 of 7 predicted characters in the reference, all 4 reference characters found
    assert got["rouge1"] == pytest.approx(100 * 2 * (4 / 7) * 1 / (4 / 7 + 1))
    want = sacrebleu.corpus_bleu(["我爱北京天安门"], [["我爱北京"]], tokenize="zh").score
    assert got["bleu"] == pytest.approx(want) and got["bleu"] > 0


def test_bleu_is_corpus_bleu_not_the_mean_of_sentences():
    preds = ["the cat sat on the mat", "a quick brown fox", "yes"]
    refs = ["the cat sat on a mat", "the quick brown fox jumps", "yes indeed"]
    got = generation_metrics(preds, refs)["bleu"]
    assert got == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    mean = sum(sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(preds, refs, strict=True)) / 3
    assert abs(got - mean) > 1.0


def test_empty_outputs_and_exact_match():
    got = generation_metrics(["", "Same  Text", ""], ["something", "same text", ""])
    assert got["exact_match"] == pytest.approx(200 / 3)  # "Same  Text" and the empty pair
    assert got["rouge1"] == pytest.approx(200 / 3)  # 0 for the empty prediction, 1 and 1
    assert generation_metrics([], []) == {"examples": 0}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        generation_metrics(["a", "b"], ["a"])
