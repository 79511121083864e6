"""The committed speech splits (selfsup/eval/splits/*.json): shipped with the package, disjoint
where they must be, what experiments/make_speech_splits.py writes, and every path real."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from helpers import shared

REPO = Path(__file__).resolve().parents[1]
NAMES = {"fsdd.json": "fsdd", "timit_sample.json": "timit-sample", "yesno.json": "yesno"}


def load(name: str) -> dict:
    return json.loads(files("selfsup").joinpath("eval/splits", name).read_text())


def paths(split: dict):
    """Every path listed anywhere in a split file (lists of strings at any depth)."""
    for key, value in split.items():
        if key in ("fold39", "sex", "region", "counts"):
            continue
        if isinstance(value, list) and value and isinstance(value[0], str):
            if key not in ("speakers",) and not key.endswith("_speakers"):
                yield from value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from paths(item)
        elif isinstance(value, dict):
            yield from paths(value)


def test_files_in_package():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "eval/splits/*.json" in package_data["package-data"]["selfsup"]
    for name in NAMES:
        assert files("selfsup").joinpath("eval/splits", name).is_file()
        assert load(name)["note"]


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(NAMES))
def test_listed_paths_exist(name):
    root = shared(NAMES[name])
    listed = set(paths(load(name)))
    assert listed
    missing = [p for p in listed if not (root / p).is_file()]
    assert not missing, missing[:5]


@pytest.mark.data
def test_script_writes_the_committed_files():
    data = shared("")
    spec = importlib.util.spec_from_file_location(
        "make", REPO / "experiments/make_speech_splits.py"
    )
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for name, text in make.build(data).items():
        assert text == files("selfsup").joinpath("eval/splits", name).read_text(), name


def no_dupes(xs):
    assert len(xs) == len(set(xs)), [x for x, c in Counter(xs).items() if c > 1][:5]
    return set(xs)


def test_fsdd():
    s = load("fsdd.json")
    assert len(s["speakers"]) == 6
    official = s["official"]
    train, test = no_dupes(official["train"]), no_dupes(official["test"])
    assert len(train) == 2700 and len(test) == 300 and not train & test
    assert all(int(Path(p).stem.split("_")[2]) < 5 for p in test)
    assert [f["test_speaker"] for f in s["folds"]] == s["speakers"]  # each speaker once
    assert Counter(f["dev_speaker"] for f in s["folds"]) == Counter(s["speakers"])
    tests = set(test)
    for fold in s["folds"]:
        tr, dev, te = (no_dupes(fold[k]) for k in ("train", "dev", "test"))
        assert not tr & te and not dev & te and not tr & dev
        speaker = lambda p: Path(p).stem.split("_")[1]  # noqa: E731
        assert {speaker(p) for p in te} == {fold["test_speaker"]}
        assert {speaker(p) for p in dev} == {fold["dev_speaker"]}
        assert fold["test_speaker"] not in {speaker(p) for p in tr}
        assert len(te) == 50 and len(dev) == 450 and len(tr) == 1800
        tests |= te
    assert not no_dupes(s["pretrain"]) & tests  # pretraining sees no test file of any task


def test_timit_sid():
    s = load("timit_sample.json")
    assert len(s["speakers"]) == 16
    train, test = no_dupes(s["sid"]["train"]), no_dupes(s["sid"]["test"])
    assert not train & test
    spk = lambda p: p.split("/")[0]  # noqa: E731
    assert Counter(map(spk, train)) == {x: 7 for x in s["speakers"]}
    assert Counter(map(spk, test)) == {x: 3 for x in s["speakers"]}
    assert not any(Path(p).stem.startswith("sa") for p in test)  # the shared sentences train


def test_timit_pr():
    s = load("timit_sample.json")
    pr = s["pr"]
    tr, te, dev = set(pr["train_speakers"]), set(pr["test_speakers"]), set(pr["dev_speakers"])
    assert len(tr) == 12 and len(te) == 4 and not tr & te and tr | te == set(s["speakers"])
    assert dev <= tr and len(dev) == 2
    assert Counter(s["sex"][x] for x in te) == {"f": 2, "m": 2}
    assert Counter(s["sex"][x] for x in dev) == {"f": 1, "m": 1}
    assert len({s["region"][x] for x in te}) == 4
    assert {s["region"][x] for x in tr} == set(s["region"].values())
    spk = lambda p: p.split("/")[0]  # noqa: E731
    for key, group in (("train", tr), ("test", te), ("dev", dev)):
        assert {spk(p) for p in no_dupes(pr[key])} == group
        assert len(pr[key]) == 8 * len(group)
    assert not set(pr["train"]) & set(pr["test"])


def test_pretrain_disjoint_from_every_test():
    t = load("timit_sample.json")
    tests = set(t["sid"]["test"]) | set(t["pr"]["test"])
    pretrain = no_dupes(t["pretrain"])
    assert not pretrain & tests
    assert len(pretrain) == t["counts"]["pretrain"] == 160 - len(tests)  # all the rest
    y = load("yesno.json")
    assert not set(y["pretrain"]) & set(y["test"])
    f = load("fsdd.json")
    fsdd_tests = set(f["official"]["test"]).union(*(x["test"] for x in f["folds"]))
    assert not set(f["pretrain"]) & fsdd_tests


def test_yesno():
    s = load("yesno.json")
    train, test = no_dupes(s["train"]), no_dupes(s["test"])
    assert len(train) == 31 and len(test) == 29 and not train & test
    assert all(Path(p).name.startswith("0") for p in train)


def test_fold39_table():
    fold = load("timit_sample.json")["fold39"]
    assert len(fold) == 61
    assert fold["q"] is None
    assert len({v for v in fold.values() if v is not None}) == 39  # silence counted once
    for closure in ("bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "h#", "pau", "epi"):
        assert fold[closure] == "sil"
    assert fold["ao"] == "aa" and fold["zh"] == "sh" and fold["ix"] == "ih" and fold["iy"] == "iy"


@pytest.mark.data
def test_fold39_maps_every_phone_in_the_alignments():
    root = shared("timit-sample")
    fold = load("timit_sample.json")["fold39"]
    phones = {line.split()[2] for p in root.glob("*/*.phn") for line in p.read_text().splitlines()}
    assert len(phones) == 61
    assert phones <= fold.keys()
    assert len({fold[p] for p in phones} - {None}) == 39
