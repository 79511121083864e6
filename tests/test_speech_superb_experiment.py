"""experiments/speech_superb.py's cluster_quality: HuBERT's phone purity, cluster purity and
PNMI of a labels folder against TIMIT alignments, checked against the definitions computed
directly (arXiv:2106.07447): a frame's phone is the segment holding its centre, q and frames
outside every segment are left out, and only timit-sample files count."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ss():
    sys.path.insert(0, str(REPO / "experiments"))
    spec = importlib.util.spec_from_file_location(
        "speech_superb_exp", REPO / "experiments" / "speech_superb.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_labels(folder: Path, rows: dict[Path, list[int]], k: int, hop: int, offset: float):
    folder.mkdir(parents=True)
    meta = {"k": k, "hop": hop, "offset": offset, "sample_rate": 16000, "source": "mfcc",
            "layer": None}  # fmt: skip
    (folder / "labels.json").write_text(json.dumps(meta))
    lines = [f"{p}\t{' '.join(map(str, ids))}" for p, ids in rows.items()]
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n")


def reference(phones: list[str], clusters: list[int]) -> dict:
    """The three measures straight from their definitions, in plain Python."""
    n = len(phones)
    joint = Counter(zip(phones, clusters, strict=True))
    py, pz = Counter(phones), Counter(clusters)
    mi = sum(c / n * math.log(c * n / (py[y] * pz[z])) for (y, z), c in joint.items())
    hy = -sum(c / n * math.log(c / n) for c in py.values())
    phone_purity = sum(max(c for (y, z2), c in joint.items() if z2 == z) for z in pz) / n
    cluster_purity = sum(max(c for (y2, z), c in joint.items() if y2 == y) for y in py) / n
    return {"pnmi": mi / hy, "phone_purity": phone_purity, "cluster_purity": cluster_purity}


@pytest.fixture
def timit(tmp_path):
    """One utterance: aa, iy, s (ao folds to aa), then q (left out) over 16 kHz samples."""
    wav = tmp_path / "timit-sample" / "dr1-x" / "sa1.wav"
    wav.parent.mkdir(parents=True)
    wav.with_suffix(".phn").write_text("0 1600 aa\n1600 3200 iy\n3200 4000 s\n4000 4800 ao\n"
                                       "4800 6400 q\n")  # fmt: skip
    return wav


def test_perfect_labelling_scores_one(ss, timit, tmp_path):
    # 100 Hz frames centred at 160 t: 0-9 aa, 10-19 iy, 20-24 s, 25-29 aa (ao), 30-39 q
    ids = [0] * 10 + [1] * 10 + [2] * 5 + [0] * 5 + [7] * 10
    other = tmp_path / "fsdd" / "0_a_1.wav"  # not timit-sample: ignored
    write_labels(tmp_path / "labels", {timit: ids, other: [5] * 20}, k=8, hop=160, offset=0.0)
    r = ss.cluster_quality("x", tmp_path / "labels")
    assert r["frames"] == 30 and r["files"] == 1
    assert r["pnmi"] == pytest.approx(1.0) and r["phone_purity"] == pytest.approx(1.0)
    assert r["cluster_purity"] == pytest.approx(1.0)


def test_matches_the_definitions(ss, timit, tmp_path):
    # 50 Hz frames at 320 t + 200 (a conv front end's grid): 20 frames, centres 200 .. 6280
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 20).tolist()
    write_labels(tmp_path / "labels", {timit: ids}, k=4, hop=320, offset=200.0)
    r = ss.cluster_quality("x", tmp_path / "labels")
    segments = [(0, 1600, "aa"), (1600, 3200, "iy"), (3200, 4000, "s"), (4000, 4800, "aa")]
    phones, clusters = [], []
    for t, z in enumerate(ids):
        c = 320 * t + 200
        hit = [p for a, b, p in segments if a <= c < b]
        if hit:
            phones.append(hit[0])
            clusters.append(z)
    want = reference(phones, clusters)
    assert r["frames"] == len(phones) == 15
    assert r["pnmi"] == pytest.approx(want["pnmi"], abs=1e-4)
    assert r["phone_purity"] == pytest.approx(want["phone_purity"], abs=1e-4)
    assert r["cluster_purity"] == pytest.approx(want["cluster_purity"], abs=1e-4)
    assert 0 < r["pnmi"] < 1
