"""Fine-tuned models exported for transformers: BertForSequenceClassification /
TokenClassification / QuestionAnswering give our logits, losses and gradients on the same
weights (fp32, 1e-5), and transformers' pipelines on the exported folder predict what
selfsup.finetuning.predict predicts.

The task models carry perturbed random weights (zero biases and unit norms would hide a mapping
bug) and are saved as `selfsup finetune` saves them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_clean_error, cli, pair_batch

from selfsup.checkpoint import save_final
from selfsup.data.tasks import QAExample, TaggedSentence, TextExample
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.export import export_model
from selfsup.finetuning import (
    build_task_model,
    load_finetuned,
    make_features,
    pad_batch,
    predict,
)
from selfsup.interop.hf_bert import TASK_ARCH, task_to_hf_state
from selfsup.keys import END_POSITIONS, IGNORE, LABELS, START_POSITIONS
from selfsup.models import FINETUNE_FORMAT

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
LABELS_OF = {
    "classify": ["negative", "positive", "neutral"],
    "pair-classify": ["entailment", "neutral", "contradiction"],
    "regress": None,
    "tag": ["DET", "NOUN", "VERB", "ADJ", "O"],
    "qa": None,
}
AUTO = {
    "classify": "AutoModelForSequenceClassification",
    "pair-classify": "AutoModelForSequenceClassification",
    "regress": "AutoModelForSequenceClassification",
    "tag": "AutoModelForTokenClassification",
    "qa": "AutoModelForQuestionAnswering",
}


def make_finetuned(folder: Path, tok, kind: str, perturb, seed: int = 0) -> Path:
    """A fine-tuned folder laid out as selfsup.finetuning writes it, with perturbed weights."""
    cfg = BertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, ffn_dim=64,
                     max_len=160, dropout=0.0, attn_dropout=0.0, pad_id=tok.pad_id)  # fmt: skip
    labels = LABELS_OF[kind]
    torch.manual_seed(seed)
    model = build_task_model(kind, build_encoder(cfg), len(labels) if labels else None, 0.0)
    perturb(model, std=0.1, seed=seed)
    folder.mkdir(parents=True)
    tok.save(folder / "tokenizer")
    save_final(folder, model)
    config = {"format": FINETUNE_FORMAT, "task": f"toy-{kind}", "kind": kind, "labels": labels,
              "model": cfg.__dict__, "max_len": 128, "init": "scratch",
              "finetune": {"doc_stride": 16, "max_answer_len": 30}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_tokenizer, perturb):
    """kind -> (fine-tuned folder, its hf export), built once per kind."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in made:
            root = tmp_path_factory.mktemp(kind)
            ft = make_finetuned(root / "ft", tiny_tokenizer, kind, perturb)
            export_model(ft, root / "hf", "hf")
            made[kind] = (ft, root / "hf")
        return made[kind]

    return get


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL, what: str = "") -> None:
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= atol, f"{what}: max abs difference {err:.3g} > {atol}"


def labelled_batch(kind: str, vocab_size: int, n_labels: int, seed: int = 0) -> dict:
    """Padded pairs ([CLS] A [SEP] B [SEP], segment B type 1) with labels for `kind`."""
    g = torch.Generator().manual_seed(seed)
    lengths = [14, 9, 6, 11]
    B, T = len(lengths), max(lengths)
    batch = pair_batch(lengths, vocab_size, g)
    mask = batch["attention_mask"]
    if kind == "qa":
        batch[START_POSITIONS] = torch.tensor([3, 0, 2, 5])
        batch[END_POSITIONS] = torch.tensor([5, 0, 4, 9])
    elif kind == "tag":
        tags = torch.randint(0, n_labels, (B, T), generator=g)
        keep = mask.bool() & (torch.rand(B, T, generator=g) < 0.7)
        keep[:, 0] = False  # [CLS] is never a word
        batch[LABELS] = torch.where(keep, tags, torch.full_like(tags, IGNORE))
    elif kind == "regress":
        batch[LABELS] = torch.randn(B, generator=g)
    else:
        batch[LABELS] = torch.randint(0, n_labels, (B,), generator=g)
    return batch


def hf_model(kind: str, folder: Path):
    """The exported folder through transformers' Auto class (no remote code), eager attention."""
    auto = getattr(transformers, AUTO[kind])
    model = auto.from_pretrained(folder, attn_implementation="eager")
    assert type(model).__name__ == TASK_ARCH[kind][0]
    return model.eval()


@pytest.mark.parametrize("kind", list(LABELS_OF))
def test_task_export_matches_transformers(kind, finetuned, tiny_tokenizer, one_thread):
    """Logits, the mean loss and every parameter's gradient equal transformers' on the same
    weights and batch (padding and both segments included)."""
    ft, hf = finetuned(kind)
    ours, _, config = load_finetuned(ft)
    theirs = hf_model(kind, hf)
    cfg = json.loads((hf / "config.json").read_text())
    labels = LABELS_OF[kind]
    if labels:
        assert [cfg["id2label"][str(i)] for i in range(len(labels))] == labels
        assert cfg["label2id"] == {lab: i for i, lab in enumerate(labels)}
    batch = labelled_batch(kind, tiny_tokenizer.vocab_size, len(labels or [0]))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    # Logits
    got = ours.predict(inputs)
    with torch.no_grad():
        ref = theirs(**inputs)
    if kind == "qa":
        close(got["start_logits"], ref.start_logits, what="start")
        close(got["end_logits"], ref.end_logits, what="end")
    elif kind == "regress":
        close(got["logits"], ref.logits.squeeze(-1), what="logits")
    else:
        close(got["logits"], ref.logits, what="logits")

    # Loss: our sums over the counts they are over == transformers' means
    sums = ours(batch)
    counts = ours.counts(batch)
    term = ours.loss_terms[0]
    loss = sums[term] / counts[ours.terms[term]]
    hf_labels = {k: batch[k] for k in (LABELS, START_POSITIONS, END_POSITIONS) if k in batch}
    ref = theirs(**inputs, **hf_labels)
    close(loss.detach(), ref.loss.detach(), what="loss")

    # Gradients, mapped to transformers' names
    loss.backward()
    ref.loss.backward()
    grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    mapped = task_to_hf_state(grads, config["model"]["n_layers"], kind)
    hf_grads = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    assert set(mapped) == set(hf_grads)
    for name, g in hf_grads.items():
        close(mapped[name], g, atol=1e-5, what=name)


def text_examples(kind: str) -> list[TextExample]:
    texts = ["the river runs quickly .", "a stone house in Paris !", "Café naïve résumé ?",
             "Alpha jumped over the garden", "music light runner"]  # fmt: skip
    if kind == "pair-classify":
        return [TextExample(a, b) for a, b in zip(texts, texts[1:] + texts[:1], strict=True)]
    return [TextExample(t) for t in texts]


@pytest.mark.parametrize("kind", ["classify", "pair-classify", "regress"])
def test_text_classification_pipeline_agrees(kind, finetuned, tiny_tokenizer, one_thread):
    """The pipeline's label is selfsup's prediction and its scores are the softmax of our logits
    (regression: the raw score)."""
    ft, hf = finetuned(kind)
    model, tok, config = load_finetuned(ft)
    examples = text_examples(kind)
    feats = make_features(kind, tok, examples, config["max_len"], config["labels"], None)
    preds = predict(model, feats, kind, tok.pad_id)
    pipe = transformers.pipeline("text-classification", model=str(hf), device="cpu")
    for i, (e, p) in enumerate(zip(examples, preds, strict=True)):
        one = pad_batch(feats, [i], tok.pad_id, kind)
        with torch.no_grad():
            logits = model.predict(one)["logits"][0]
        res = pipe({"text": e.text, "text_pair": e.text_pair} if e.text_pair else e.text,
                   top_k=None)  # fmt: skip
        if kind == "regress":  # problem_type regression: the raw score
            assert res[0]["score"] == pytest.approx(p, abs=1e-5)
            continue
        assert res[0]["label"] == config["labels"][p]
        probs = logits.softmax(-1).tolist()
        for r in res:
            assert r["score"] == pytest.approx(probs[config["labels"].index(r["label"])], abs=1e-5)


def test_token_classification_pipeline_agrees(finetuned, tiny_tokenizer, one_thread):
    """aggregation 'none', each word's first sub-token: the tags selfsup predicts per word."""
    ft, hf = finetuned("tag")
    model, tok, config = load_finetuned(ft)
    sentences = [s.split() for s in ("the runner jumped over a riverstone house",
                                     "Alphabeta runs quickly", "naïve résumé Straße gardenmusic",
                                     "music")]  # fmt: skip
    examples = [TaggedSentence(w, ["O"] * len(w)) for w in sentences]
    feats = make_features("tag", tok, examples, config["model"]["max_len"], config["labels"], None)
    preds = predict(model, feats, "tag", tok.pad_id)
    pipe = transformers.pipeline("token-classification", model=str(hf), device="cpu")
    multi_piece = 0
    for words, p in zip(sentences, preds, strict=True):
        text = " ".join(words)
        starts = {len(" ".join(words[:i])) + (1 if i else 0) for i in range(len(words))}
        ents = pipe(text, aggregation_strategy="none", ignore_labels=[])
        first = [e["entity"] for e in ents if e["start"] in starts]
        multi_piece += len(ents) - len(first)
        assert first == [config["labels"][t] for t in p]
    assert multi_piece > 0  # some words have more than one sub-token


def qa_examples() -> list[QAExample]:
    words = (
        "the capital of France is Paris and the river runs quickly over a stone house in "
        "the garden while the runner jumped over the light music of London"
    ).split()
    long = " ".join(words * 3)
    out = [
        QAExample("short", "the capital of France is Paris .", "where is the capital ?", []),
        QAExample("accents", "Café naïve résumé la capitale est Paris .", "où ?", []),
        QAExample("long", long, "what runs quickly ?", []),
    ]
    return out


class HFSpans(torch.nn.Module):
    """transformers' QA model behind selfsup's `predict` interface."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def predict(self, batch):
        keys = ("input_ids", "attention_mask", "token_type_ids")
        out = self.model(**{k: batch[k] for k in keys})
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}


def test_question_answering_export_gives_selfsup_answers(finetuned, tiny_tokenizer, one_thread):
    """The exported BertForQuestionAnswering's logits, read by selfsup's span search on the
    same windows (stride 16, max_answer_len 30), give the same answers."""
    ft, hf = finetuned("qa")
    model, tok, config = load_finetuned(ft)
    examples = qa_examples()
    stride = config["finetune"]["doc_stride"]
    feats = make_features("qa", tok, examples, 48, None, SimpleNamespace(doc_stride=stride))
    assert feats.extra["example"].count(2) > 1  # the long context takes several windows
    ours = predict(model, feats, "qa", tok.pad_id, max_answer_len=30)
    theirs = predict(HFSpans(hf_model("qa", hf)), feats, "qa", tok.pad_id, max_answer_len=30)
    assert len(ours) == len(examples)
    assert {i: v[1:] for i, v in ours.items()} == {i: v[1:] for i, v in theirs.items()}
    for i in ours:
        assert ours[i][0] == pytest.approx(theirs[i][0], abs=1e-4)


def test_question_answering_pipeline_agrees(finetuned, tiny_tokenizer, one_thread):
    """transformers' question-answering pipeline (where it exists: transformers 5 removed it)
    gives selfsup's answer on one-window contexts, with the same max_answer_len and stride."""
    ft, hf = finetuned("qa")
    model, tok, config = load_finetuned(ft)
    examples = qa_examples()[:2]
    stride = config["finetune"]["doc_stride"]
    feats = make_features("qa", tok, examples, 128, None, SimpleNamespace(doc_stride=stride))
    ours = predict(model, feats, "qa", tok.pad_id, max_answer_len=30)
    try:
        pipe = transformers.pipeline("question-answering", model=str(hf), device="cpu")
    except (KeyError, ValueError, RuntimeError) as e:
        pytest.skip(f"transformers {transformers.__version__} has no QA pipeline ({e})")
    for i, e in enumerate(examples):
        res = pipe(question=e.question, context=e.context, max_answer_len=30, doc_stride=stride,
                   max_seq_len=128)  # fmt: skip
        assert res["answer"] == e.context[ours[i][1] : ours[i][2]]


def test_cli_export_hf_of_a_finetuned_folder(finetuned, tmp_path, capsys):
    ft, _ = finetuned("tag")
    code, out, err = cli(capsys, "export", ft, "--format", "hf", "--out", tmp_path / "x")
    assert code == 0, err
    assert "BertForTokenClassification" in out
    cfg = json.loads((tmp_path / "x" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"]
    assert (tmp_path / "x" / "manifest.json").exists()
    assert (tmp_path / "x" / "vocab.txt").exists()
    # An existing output folder or an unknown format: one line, exit 2
    code, _, err = cli(capsys, "export", ft, "--format", "hf", "--out", tmp_path / "x")
    assert_clean_error(code, err, says="not empty")
    code, _, err = cli(capsys, "export", ft, "--format", "tflite", "--out", tmp_path / "y")
    assert_clean_error(code, err, tmp_path / "y", says="tflite")


def test_a_real_finetune_exports(tiny_run, tmp_path, capsys, one_thread):
    """The folder `selfsup finetune` writes (not one built here) exports, and the pipeline
    predicts what selfsup predicts."""
    data = tmp_path / "rows.csv"
    rows = [(f"river {i} runs", ["low", "high"][i % 2]) for i in range(40)]
    data.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    ft = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--init",
                       tiny_run, "--text-column", "text", "--label-column", "label",
                       "--epochs", "1", "--device", "cpu", "--out", ft)  # fmt: skip
    assert code == 0, err
    code, _, err = cli(capsys, "export", ft, "--out", tmp_path / "hf")
    assert code == 0, err
    model, tok, config = load_finetuned(ft)
    examples = [TextExample(t) for t, _ in rows[:6]]
    feats = make_features("classify", tok, examples, config["max_len"], config["labels"], None)
    preds = predict(model, feats, "classify", tok.pad_id)
    pipe = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
    assert [r["label"] for r in pipe([e.text for e in examples])] == [
        config["labels"][p] for p in preds
    ]
