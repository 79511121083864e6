"""Fine-tuning task readers: row counts on the real data in ../shared/data (marked `data`,
skipped when absent) and every error path on tiny files."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from helpers import shared

from selfsup.data.tasks import (
    TASKS,
    UPOS,
    QAExample,
    TaggedSentence,
    TextExample,
    check_labels,
    label_vocab,
    load_task,
    read_conllu,
    read_squad,
    task_labels,
)
from selfsup.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Real data: the counts in ../shared/data/README.md and each folder's SOURCE.txt
# --------------------------------------------------------------------------------------------

GLUE_COUNTS = [
    ("sst2", "glue/SST-2", "train", 67_349, {"0", "1"}),
    ("sst2", "glue/SST-2", "dev", 872, {"0", "1"}),
    ("sst2", "glue/SST-2", "test-labeled", 1_821, {"0", "1"}),
    ("sst2", "glue/SST-2", "test", 1_821, {None}),
    ("cola", "glue/CoLA", "train", 8_551, {"0", "1"}),
    ("cola", "glue/CoLA", "dev", 527 + 516, {"0", "1"}),
    ("cola", "glue/CoLA", "dev_in_domain", 527, {"0", "1"}),
    ("cola", "glue/CoLA", "dev_out_of_domain", 516, {"0", "1"}),
    ("mrpc", "glue/MRPC", "train", 4_076, {"0", "1"}),
    ("mrpc", "glue/MRPC", "dev", 1_725, {"0", "1"}),  # msr_paraphrase_test.txt, no GLUE dev ids
    ("rte", "glue/RTE", "train", 2_490, {"entailment", "not_entailment"}),
    ("rte", "glue/RTE", "dev", 277, {"entailment", "not_entailment"}),
    ("rte", "glue/RTE", "test", 3_000, {None}),
    ("wnli", "glue/WNLI", "train", 635, {"0", "1"}),
    ("wnli", "glue/WNLI", "dev", 71, {"0", "1"}),
    ("wnli", "glue/WNLI", "test", 146, {None}),
    ("sick", "sick", "train", 4_439, {"ENTAILMENT", "NEUTRAL", "CONTRADICTION"}),
    ("sick", "sick", "dev", 495, {"ENTAILMENT", "NEUTRAL", "CONTRADICTION"}),
    ("sick", "sick", "test", 4_906, {"ENTAILMENT", "NEUTRAL", "CONTRADICTION"}),
]


@pytest.mark.data
@pytest.mark.parametrize("task,folder,split,n,labels", GLUE_COUNTS)
def test_classification_counts(task, folder, split, n, labels):
    ex = load_task(task, shared(folder), split)
    assert len(ex) == n
    assert {e.label for e in ex} == labels
    assert all(isinstance(e, TextExample) and e.text.strip() for e in ex)
    pair = TASKS[task].kind == "pair-classify"
    assert all((e.text_pair is not None) == pair for e in ex)


@pytest.mark.data
@pytest.mark.parametrize(
    "task,folder,split,n,lo,hi",
    [
        ("stsb", "glue/STS-B", "train", 5_749, 0.0, 5.0),
        ("stsb", "glue/STS-B", "dev", 1_500, 0.0, 5.0),
        ("stsb", "glue/STS-B", "test-labeled", 1_379, 0.0, 5.0),
        ("sick-r", "sick", "train", 4_439, 1.0, 5.0),
        ("sick-r", "sick", "dev", 495, 1.0, 5.0),
    ],
)
def test_regression_counts(task, folder, split, n, lo, hi):
    ex = load_task(task, shared(folder), split)
    assert len(ex) == n
    scores = [e.label for e in ex]
    assert all(isinstance(s, float) and lo <= s <= hi for s in scores)
    assert min(scores) == lo and max(scores) == hi
    assert all(e.text_pair for e in ex)


@pytest.mark.data
@pytest.mark.parametrize(
    "task,folder", [("rte", "glue/RTE"), ("cola", "glue/CoLA"), ("mrpc", "glue/MRPC")]
)
def test_glue_dev_labels_seen_in_train(task, folder):
    train = load_task(task, shared(folder), "train")
    check_labels(label_vocab(train), load_task(task, shared(folder), "dev"))
    assert task_labels(task, train) == list(TASKS[task].labels)


@pytest.mark.data
def test_mrpc_reads_original_msrp_files():
    first = load_task("mrpc", shared("glue/MRPC"), "train")[0]
    assert first.text.startswith("Amrozi accused")  # the UTF-8 BOM did not hide the header
    assert '"the witness"' in first.text  # quotes kept literally
    counts = Counter(e.label for e in load_task("mrpc", shared("glue/MRPC"), "dev"))
    assert counts == {"1": 1_147, "0": 578}


@pytest.mark.data
def test_sick_label_totals():
    counts = Counter(
        e.label for s in ("train", "dev", "test") for e in load_task("sick", shared("sick"), s)
    )
    assert counts == {"NEUTRAL": 5_595, "ENTAILMENT": 2_821, "CONTRADICTION": 1_424}


@pytest.mark.data
def test_chnsenticorp_holdout():
    folder = shared("chinese-sentiment")
    train, dev = (
        load_task("chnsenticorp", folder, "train"),
        load_task("chnsenticorp", folder, "dev"),
    )
    assert (len(train), len(dev)) == (7_766 - 777, 777)
    assert Counter(e.label for e in [*train, *dev]) == {"1": 5_322, "0": 2_444}
    every = load_task("chnsenticorp", folder, "train", holdout=None)
    assert Counter(e.text for e in every) == Counter(e.text for e in [*train, *dev])  # a partition
    assert load_task("chnsenticorp", folder, "dev") == dev  # seeded: the same rows every time


@pytest.mark.data
@pytest.mark.parametrize(
    "name,n,counts",
    [
        ("waimai_10k.csv", 11_987, {"1": 4_000, "0": 7_987}),
        ("online_shopping_10_cats.zip", 62_774, {"1": 31_728, "0": 31_046}),
    ],
)
def test_chinese_sentiment_generic(name, n, counts):
    ex = load_task("classify", shared("chinese-sentiment") / name, text_column="review")
    assert len(ex) == n
    assert Counter(e.label for e in ex) == counts


@pytest.mark.data
def test_pos_english_ewt():
    folder = shared("ud-english-ewt")
    train = load_task("pos", folder, "train")
    assert len(train) == 12_544
    assert sum(len(s.words) for s in train) == 204_577  # stats.xml: words, not 201,962 tokens
    assert set(label_vocab(train)) == set(UPOS) and len(UPOS) == 17
    assert all(len(s.words) == len(s.tags) for s in train)
    for split, n in [("dev", 2_001), ("test", 2_077)]:
        ex = load_task("pos", folder, split)
        assert len(ex) == n
        check_labels(UPOS, ex)
    xpos = load_task("pos", folder, "dev", tagset="xpos")
    assert "NN" in label_vocab(xpos) and len(task_labels("pos", xpos, tagset="xpos")) > 17


@pytest.mark.data
def test_pos_chinese_gsdsimp():
    folder = shared("ud-chinese-gsdsimp")
    dev, test = load_task("pos", folder, "dev"), load_task("pos", folder, "test")
    assert (len(dev), len(test)) == (500, 500)
    assert sum(len(s.words) for s in dev) == 12_663
    assert sum(len(s.words) for s in test) == 12_012
    assert set(label_vocab(dev)) <= set(UPOS)
    with pytest.raises(ConfigError, match="no train file"):
        load_task("pos", folder, "train")


@pytest.mark.data
@pytest.mark.parametrize(
    "lang", ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]
)
def test_xquad(lang):
    ex = load_task("xquad", shared("xquad"), "dev", lang=lang)
    assert len(ex) == 1_190 and ex.skipped == 0
    assert len({e.context for e in ex}) == 240
    assert all(isinstance(e, QAExample) and _aligned(e) for e in ex)


@pytest.mark.data
def test_cmrc2018():
    folder = shared("cmrc2018")
    dev, trial = load_task("cmrc2018", folder, "dev"), load_task("cmrc2018", folder, "trial")
    assert (len(dev), len(trial)) == (3_219, 1_002)
    assert (len({e.context for e in dev}), len({e.context for e in trial})) == (848, 256)
    # The 5 trial answers counted in UTF-16 units are repaired, so training keeps every question.
    as_train = load_task("cmrc2018", folder / "cmrc2018_trial.json", "train")
    assert len(as_train) == 1_002 and as_train.skipped == 0
    assert all(_aligned(e) for e in as_train)
    assert all(len(e.answers) == 3 for e in dev)


def _aligned(e: QAExample) -> bool:
    a = e.answers[0]
    return e.context[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]


# --------------------------------------------------------------------------------------------
# Tiny files: formats
# --------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_glue_tsv_keeps_quotes_and_mnli_splits(tmp_path):
    head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    write(tmp_path / "train.tsv", head + '0\t1\t1\tfic\tHe said "go.\tHe left.\tneutral\tneutral\n')
    write(tmp_path / "dev_matched.tsv", head + "0\t1\t1\tfic\tA\tB\tentailment\tentailment\n")
    write(tmp_path / "dev_mismatched.tsv", head + "0\t1\t1\tfic\tC\tD\tneutral\tcontradiction\n")
    assert load_task("mnli", tmp_path, "train") == [
        TextExample('He said "go.', "He left.", "neutral")
    ]
    assert load_task("mnli", tmp_path, "dev")[0].label == "entailment"
    assert load_task("mnli", tmp_path, "dev_mismatched")[0].label == "contradiction"


def test_cola_raw_and_test(tmp_path):
    write(tmp_path / "raw" / "in_domain_train.tsv", "gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one\n")
    write(tmp_path / "test.tsv", "index\tsentence\n0\tNo label here.\n")
    train = load_task("cola", tmp_path, "train")
    assert train == [TextExample("Good one.", None, "1"), TextExample("Bad one", None, "0")]
    assert load_task("cola", tmp_path, "test") == [TextExample("No label here.")]


def test_mrpc_glue_split_from_dev_ids(tmp_path):
    head = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = "1\t11\t12\tA\tB\n0\t21\t22\tC\tD\n1\t31\t32\tE\tF\n"
    write(tmp_path / "msr_paraphrase_train.txt", head + rows)
    write(tmp_path / "mrpc_dev_ids.tsv", "21\t22\n")
    assert [e.text for e in load_task("mrpc", tmp_path, "train")] == ["A", "E"]
    assert load_task("mrpc", tmp_path, "dev") == [TextExample("C", "D", "0")]


def test_generic_csv_jsonl_headerless_and_zip(tmp_path):
    csv_file = write(tmp_path / "train.csv", 'review,label\n"multi\nline, quoted",pos\nok,neg\n')
    ex = load_task("classify", csv_file, text_column="review")
    assert ex == [TextExample("multi\nline, quoted", None, "pos"), TextExample("ok", None, "neg")]
    assert load_task("classify", tmp_path, "train", text_column="review") == ex

    lines = [{"a": "x", "b": "y", "score": 1.5}, {"a": "z", "b": "w", "score": 3}]
    jsonl = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in lines))
    ex = load_task("regress", jsonl, text_column="a", text_pair_column="b", label_column="score")
    assert ex == [TextExample("x", "y", 1.5), TextExample("z", "w", 3.0)]

    raw = write(tmp_path / "raw.tsv", "s1\tt1\t1\ns2\tt2\t0\n")
    ex = load_task("pair-classify", raw, text_column=0, text_pair_column=1, label_column=2)
    assert [e.label for e in ex] == ["1", "0"]

    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("inner/data.csv", "text,label\nhello,1\n")
    assert load_task("classify", tmp_path / "data.zip") == [TextExample("hello", None, "1")]


def test_split_column_and_holdout(tmp_path):
    rows = "".join(f"t{i}\t{i % 2}\t{['TRAIN', 'TRIAL', 'TEST'][i % 3]}\n" for i in range(30))
    f = write(tmp_path / "all.tsv", "text\tlabel\tset\n" + rows)
    parts = {s: load_task("classify", f, s, split_column="set") for s in ("train", "dev", "test")}
    assert [len(p) for p in parts.values()] == [10, 10, 10]
    assert parts["dev"][0].text == "t1"  # TRIAL counts as dev
    train = load_task("classify", f, "train", holdout=0.2, seed=3)
    dev = load_task("classify", f, "dev", holdout=0.2, seed=3)
    assert (len(train), len(dev)) == (24, 6)
    assert {e.text for e in train} | {e.text for e in dev} == {f"t{i}" for i in range(30)}
    assert dev != load_task("classify", f, "dev", holdout=0.2, seed=4)


def test_hf_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    nli = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
            "idx": datasets.Value("int32"),
        }
    )
    rte = {
        "train": {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1], "idx": [0, 1]},
        "validation": {"sentence1": ["e"], "sentence2": ["f"], "label": [1], "idx": [0]},
        "test": {"sentence1": ["g"], "sentence2": ["h"], "label": [-1], "idx": [0]},
    }
    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(v, features=nli) for s, v in rte.items()}
    )
    dd.save_to_disk(str(tmp_path / "rte"))
    assert load_task("rte", tmp_path / "rte", "train") == [
        TextExample("a", "c", "entailment"),
        TextExample("b", "d", "not_entailment"),
    ]
    assert load_task("rte", tmp_path / "rte", "dev") == [TextExample("e", "f", "not_entailment")]
    assert load_task("rte", tmp_path / "rte", "test") == [TextExample("g", "h", None)]

    mnli = {"premise": ["p"], "hypothesis": ["h"], "label": [2]}
    datasets.DatasetDict({"validation_matched": datasets.Dataset.from_dict(mnli)}).save_to_disk(
        str(tmp_path / "mnli")
    )
    assert load_task("mnli", tmp_path / "mnli", "dev")[0].label == "contradiction"

    sst = datasets.Dataset.from_dict({"sentence": ["fine"], "label": [1], "idx": [0]})
    sst.save_to_disk(str(tmp_path / "sst2"))
    assert load_task("sst2", tmp_path / "sst2", "train") == [TextExample("fine", None, "1")]

    stsb = {"sentence1": ["a"], "sentence2": ["b"], "label": [3.2]}
    datasets.Dataset.from_dict(stsb).save_to_disk(str(tmp_path / "stsb"))
    assert load_task("stsb", tmp_path / "stsb", "train")[0].label == pytest.approx(3.2)
    with pytest.raises(ConfigError, match="its splits are: validation_matched"):
        load_task("mnli", tmp_path / "mnli", "train")


CONLLU = """# sent_id = 1
# text = I'm here.
1-2\tI'm\t_\t_\t_\t_\t_\t_\t_\t_
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2\t'm\tbe\tAUX\tVBP\t_\t3\tcop\t_\t_
3\there\there\tADV\tRB\t_\t0\troot\t_\t_
3.1\tis\tbe\tAUX\tVBZ\t_\t_\t_\t3:cop\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

1\tOk\tok\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_skips_multiword_and_empty_nodes(tmp_path):
    f = write(tmp_path / "x-ud-train.conllu", CONLLU)
    sents = load_task("pos", tmp_path, "train")
    assert sents == [
        TaggedSentence(["I", "'m", "here", "."], ["PRON", "AUX", "ADV", "PUNCT"]),
        TaggedSentence(["Ok"], ["INTJ"]),  # no blank line at the end of the file
    ]
    assert read_conllu(f, "xpos")[0].tags == ["PRP", "VBP", "RB", "."]
    assert load_task("tag", f, tagset="deprel")[1].tags == ["root"]


def test_token_per_line_tag_file(tmp_path):
    f = write(tmp_path / "ner.txt", "-DOCSTART- O\n\n当 O\n希 B-LOC\n\n望 O\n")
    assert load_task("tag", f) == [
        TaggedSentence(["当", "希"], ["O", "B-LOC"]),
        TaggedSentence(["望"], ["O"]),
    ]


def squad_file(path: Path, context: str, answers: list[tuple[str, int]]) -> Path:
    qas = [
        {"id": f"q{i}", "question": "?", "answers": [{"text": t, "answer_start": s}]}
        for i, (t, s) in enumerate(answers)
    ]
    data = {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}],
    }
    return write(path, json.dumps(data, ensure_ascii=False))


def test_squad_skips_misaligned_on_train_only(tmp_path):
    f = squad_file(tmp_path / "train-v1.1.json", "The cat sat.", [("cat", 4), ("dog", 4)])
    train = load_task("squad", tmp_path, "train")
    assert [e.qid for e in train] == ["q0"] and train.skipped == 1
    assert train[0] == QAExample(
        "q0", "The cat sat.", "?", [{"text": "cat", "answer_start": 4}], "T"
    )
    dev = load_task("squad", f, "dev")
    assert len(dev) == 2 and dev.skipped == 0
    assert len(load_task("squad", f, "dev", skip_misaligned=True)) == 1


def test_squad_repairs_utf16_offsets(tmp_path):
    # CMRC 2018 trial: a character outside the BMP counts twice in answer_start.
    f = squad_file(tmp_path / "t.json", "𫚭，俗名龙尖", [("俗名龙尖", 3)])
    ex = read_squad(f, skip_misaligned=True)
    assert ex.skipped == 0 and ex[0].answers[0]["answer_start"] == 2


def test_label_helpers():
    ex = [TextExample("a", label=lab) for lab in ["10", "2", "1"]]
    assert label_vocab(ex) == ["1", "2", "10"]
    assert label_vocab([TextExample("a", label="neg"), TextExample("b", label="pos")]) == [
        "neg",
        "pos",
    ]
    check_labels(["1", "2", "10"], ex)
    with pytest.raises(ConfigError, match=r"never saw: '3' \(1x\)"):
        check_labels(["1", "2"], [TextExample("a", label="3")])
    with pytest.raises(ConfigError, match="'X'"):
        check_labels(["NOUN"], [TaggedSentence(["a", "b"], ["NOUN", "X"])])
    assert task_labels("mnli", []) == ["entailment", "neutral", "contradiction"]
    assert task_labels("stsb", []) is None
    with pytest.raises(ConfigError, match="no label vocabulary"):
        label_vocab([TextExample("a", label=1.0)])


# --------------------------------------------------------------------------------------------
# Tiny files: errors
# --------------------------------------------------------------------------------------------


def test_unknown_task_and_option(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'glue'; known tasks: cola, sst2"):
        load_task("glue", tmp_path)
    with pytest.raises(ConfigError, match="unknown option.*text_colum.*it takes"):
        load_task("classify", tmp_path, text_colum="x")
    with pytest.raises(ConfigError, match="no split 'dev_matched'.*train, dev, test"):
        load_task("rte", tmp_path, "dev_matched")


def test_missing_path_and_split_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_task("sst2", tmp_path / "nope")
    write(tmp_path / "train.tsv", "sentence\tlabel\na\t1\n")
    with pytest.raises(ConfigError, match=r"no dev file.*looked for dev\.tsv.*holds: train\.tsv"):
        load_task("sst2", tmp_path, "dev")


def test_empty_files(tmp_path):
    for name, task in [("e.tsv", "sst2"), ("e.conllu", "pos"), ("e.json", "squad")]:
        with pytest.raises(ConfigError, match="is empty"):
            load_task(task, write(tmp_path / name, "\n"))
    with pytest.raises(ConfigError, match="header but no rows"):
        load_task("sst2", write(tmp_path / "h.tsv", "sentence\tlabel\n"))


def test_missing_columns(tmp_path):
    f = write(tmp_path / "t.csv", "review,label\nx,1\n")
    with pytest.raises(ConfigError, match="no column 'text'; its columns are: review, label"):
        load_task("classify", f)
    with pytest.raises(ConfigError, match="no column 'stars'; its columns are: review, label"):
        load_task("classify", f, "train", text_column="review", label_column="stars")
    j = write(tmp_path / "t.jsonl", '{"review": "x"}\n')
    with pytest.raises(ConfigError, match="no column 'text'; its columns are: review"):
        load_task("classify", j)
    # A test split may lack labels; a training split may not.
    assert load_task("classify", j, "test", text_column="review") == [TextExample("x")]
    with pytest.raises(ConfigError, match="no column 'label'"):
        load_task("classify", j, "train", text_column="review")


def test_bad_rows_and_labels(tmp_path):
    with pytest.raises(ConfigError, match="line 3 .* has 1 fields, expected at least 2"):
        load_task("sst2", write(tmp_path / "a.tsv", "sentence\tlabel\na\t1\nb\n"))
    with pytest.raises(ConfigError, match="label 'maybe' is not one of entailment"):
        load_task(
            "rte", write(tmp_path / "b.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
        )
    with pytest.raises(ConfigError, match="row 2 .* has no label"):
        load_task("classify", write(tmp_path / "c.csv", "text,label\na,\n"))
    with pytest.raises(ConfigError, match="'high' is not a number"):
        load_task("regress", write(tmp_path / "d.csv", "text,label\na,high\n"))
    with pytest.raises(ConfigError, match="has 3 fields, CoNLL-U has 10"):
        load_task("pos", write(tmp_path / "e.conllu", "1\tx\ty\n"))
    no_xpos = write(tmp_path / "f.conllu", "1\tx\tx\tNOUN\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(ConfigError, match="no XPOS tags"):
        load_task("pos", no_xpos, tagset="xpos")
    with pytest.raises(ConfigError, match="not SQuAD-format"):
        load_task("squad", write(tmp_path / "g.json", "[1, 2]"))
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.csv", "text,label\na,1\n")
        z.writestr("b.csv", "text,label\nb,1\n")
    with pytest.raises(ConfigError, match="exactly one data file, it holds 2"):
        load_task("classify", tmp_path / "two.zip")


# --------------------------------------------------------------------------------------------
# CLUE: OCNLI and TNEWS' (FewCLUE), real files and tiny ones in the same JSON-lines format
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split,options,n,skipped",
    [
        ("train", {}, 10_000 - 15, 15),
        ("train", {"train_size": "3k"}, 3_000 - 6, 6),
        ("dev", {}, 2_950, 50),
        ("test", {}, 3_000, 0),
    ],
)
def test_ocnli_counts(split, options, n, skipped):
    ex = load_task("ocnli", shared("clue/ocnli"), split, **options)
    assert (len(ex), ex.skipped) == (n, skipped)
    labels = Counter(e.label for e in ex)
    if split == "test":
        assert set(labels) == {None}
    else:
        assert set(labels) == {"entailment", "neutral", "contradiction"}
    if split == "dev":  # ../shared/data/clue/ocnli/SOURCE.txt
        assert labels == {"entailment": 947, "neutral": 1_103, "contradiction": 900}
    assert all(e.text and e.text_pair for e in ex)


def test_tnews_fewclue_folds_and_tests():
    folder = shared("clue/tnews-fewclue")
    for fold in range(5):
        for split in ("train", "dev"):
            ex = load_task("tnews", folder, split, fold=fold)
            # 240 titles, 16 of each of the 15 classes
            assert Counter(Counter(e.label for e in ex).values()) == {16: 15}
    assert len(load_task("tnews", folder, "train", fold="all")) == 1_185
    assert len(load_task("tnews", folder, "dev", fold="all")) == 1_098
    test = load_task("tnews", folder, "test")
    assert Counter(Counter(e.label for e in test).values()) == {134: 15}  # 2,010 labelled
    private = load_task("tnews", folder, "test_private")
    assert len(private) == 1_500 and {e.label for e in private} == {None}
    assert task_labels("tnews", test) == list(TASKS["tnews"].labels)
    assert {e.label for e in test} == set(TASKS["tnews"].labels)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))  # no final \n
    return path


def _ocnli_row(i: int, label: str) -> dict:
    votes = {f"label{k}": label for k in range(5)}
    return {"level": "easy", "sentence1": f"前提{i}", "sentence2": f"假设{i}", "label": label,
            **votes, "genre": "news", "prem_id": f"news_{i}", "id": i}  # fmt: skip


def test_ocnli_drops_and_counts_dash_labels(tmp_path, caplog):
    folder = tmp_path / "ocnli"
    labels = ["entailment", "-", "neutral", "contradiction", "-"]
    _jsonl(folder / "train.10k.json", [_ocnli_row(i, y) for i, y in enumerate(labels)])
    _jsonl(folder / "train.3k.json", [_ocnli_row(i, y) for i, y in enumerate(labels[:2])])
    _jsonl(folder / "dev.json", [_ocnli_row(i, y) for i, y in enumerate(["-", "neutral"])])
    _jsonl(folder / "test.json", [{"sentence1": "甲", "sentence2": "乙", "id": 0}])
    with caplog.at_level("INFO", logger="selfsup.data.tasks"):
        train = load_task("ocnli", folder, "train")
    assert [e.label for e in train] == ["entailment", "neutral", "contradiction"]
    assert [e.text for e in train] == ["前提0", "前提2", "前提3"]
    assert train.skipped == 2 and "'-'" in train.skipped_what
    assert "skipped 2 rows labelled '-'" in caplog.text
    small = load_task("ocnli", folder, "train", train_size="3k")
    assert (len(small), small.skipped) == (1, 1)
    dev = load_task("ocnli", folder, "dev")
    assert [(e.text_pair, e.label) for e in dev] == [("假设1", "neutral")] and dev.skipped == 1
    test = load_task("ocnli", folder, "test")
    assert [(e.text, e.text_pair, e.label) for e in test] == [("甲", "乙", None)]
    with pytest.raises(ConfigError, match="train_size '50k'.*10k, 3k"):
        load_task("ocnli", folder, "train", train_size="50k")
    _jsonl(folder / "dev.json", [_ocnli_row(0, "maybe")])
    with pytest.raises(ConfigError, match="label 'maybe' is not one of"):
        load_task("ocnli", folder, "dev")


def test_tnews_int_labels_and_folds(tmp_path):
    folder = tmp_path / "tnews-fewclue"

    def rows(fold: int, labels: list[int]) -> list[dict]:
        return [{"label": y, "label_desc": "news_x", "sentence": f"标题{fold}-{i}",
                 "keywords": "", "id": i} for i, y in enumerate(labels)]  # fmt: skip

    for fold in (0, 1):
        _jsonl(folder / f"train_{fold}.json", rows(fold, [100, 116 - fold]))
        _jsonl(folder / f"dev_{fold}.json", rows(fold, [102]))
    _jsonl(folder / "train_few_all.json", rows(9, [100, 115, 116]))
    _jsonl(folder / "test_public.json", rows(7, [104, 110]))
    _jsonl(folder / "test.json", [{"id": "0", "sentence": "无标签"}])
    assert [e.label for e in load_task("tnews", folder, "train")] == ["100", "116"]
    train1 = load_task("tnews", folder, "train", fold=1)
    assert [(e.text, e.label) for e in train1] == [("标题1-0", "100"), ("标题1-1", "115")]
    assert len(load_task("tnews", folder, "train", fold="all")) == 3
    assert [e.label for e in load_task("tnews", folder, "test")] == ["104", "110"]
    assert [e.label for e in load_task("tnews", folder, "test_public")] == ["104", "110"]
    assert [e.label for e in load_task("tnews", folder, "test_private")] == [None]
    with pytest.raises(ConfigError, match="fold 5 for task 'tnews' is not one of 0, 1, 2, 3, 4"):
        load_task("tnews", folder, "train", fold=5)
    with pytest.raises(ConfigError, match="no dev file for task 'tnews'.*dev_few_all"):
        load_task("tnews", folder, "dev", fold="all")
    _jsonl(folder / "dev_0.json", rows(0, [105]))  # not a TNEWS' class
    with pytest.raises(ConfigError, match="label id 105 is out of range"):
        load_task("tnews", folder, "dev")
