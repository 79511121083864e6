"""The Python API: the README's example runs as written (on small files made here), and the
functions go through the command's own checks."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

import selfsup

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def workdir(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    words = "the cat dog sat ran on a mat river stone house quickly slowly red".split()
    docs = [". ".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(6)) + "."
            for _ in range(60)]  # fmt: skip
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    rows = ["review,stars"] + [
        f"{' '.join(rng.choice(words) for _ in range(5))} {'great' if s == 5 else 'dirty'},{s}"
        for s in (rng.choice([1, 5]) for _ in range(80))
    ]
    Path("reviews.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_the_readme_example_runs(workdir, capsys):
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'kept'" not in out  # printed values, not a traceback
    model = selfsup.load("runs/api-demo")
    masks = model.fill_mask("the [MASK] sat on the mat .", top_k=3)
    assert len(masks) == 1 and len(masks[0]) == 3
    assert abs(sum(m["prob"] for m in masks[0])) <= 1.0
    vectors = model.embed(["a first sentence", "and a second one"])
    assert vectors.shape == (2, model.config.dim) and vectors.dtype == np.float32
    clf = selfsup.load("ft/api-demo")
    assert clf.kind == "classify"
    preds = clf.predict(["great rooms", "dirty and loud", ""])
    assert len(preds) == 3 and {p["label"] for p in preds} <= {"1", "5"}
    for p in preds:
        assert abs(sum(t["score"] for t in p["top"]) - 1) < 1e-4
    results = json.loads(Path("ft/api-demo/results.json").read_text())
    assert results["dev"] and results["kept"] in ("best", "last")


def test_api_errors_are_the_commands_errors(workdir):
    with pytest.raises(selfsup.ConfigError, match="no such file or folder"):
        selfsup.pretrain(data=["missing.txt"], out="runs/x")
    with pytest.raises(selfsup.ConfigError, match="unrecognized arguments|--no-such"):
        selfsup.pretrain(no_such=1)
    assert not Path("runs/x").exists()
    with pytest.raises(selfsup.ConfigError, match="no such model folder"):
        selfsup.load("nowhere")


def test_predict_needs_a_fine_tuned_folder(tiny_run):
    with pytest.raises(selfsup.ConfigError, match="not a fine-tuned folder"):
        selfsup.load(tiny_run).predict(["a text"])
    assert selfsup.load(tiny_run).kind is None
