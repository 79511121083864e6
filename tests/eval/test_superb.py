"""SUPERB-style evaluation: a user's labelled folder end to end, the split of a user's files,
phone-recognition frame labels and targets against hand computations, one-line errors, the
Markdown table, and (with the shared data) keyword spotting on one FSDD fold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import shared, write_speech

from selfsup.data.audio import AudioItem
from selfsup.errors import ConfigError
from selfsup.eval.superb import (
    SPLITS,
    format_table,
    frame_labels,
    phone_sequence,
    read_phn,
    run_superb,
    split_items,
)
from selfsup.keys import IGNORE

FOLD39 = json.loads((SPLITS / "timit_sample.json").read_text())["fold39"]
PHONES = sorted({p for p in FOLD39.values() if p is not None})


def quiet(_):
    pass


def test_classify_on_a_labelled_folder_beats_chance(tmp_path, one_thread):
    """The label is the speaker's pitch (3 classes, chance 1/3): an easy target for fbank."""
    clips = write_speech(tmp_path / "clips", n=60)
    out = tmp_path / "out"
    report = run_superb(
        "fbank",
        ["classify"],
        out=out,
        seeds=2,
        lrs=(1e-3, 1e-2),
        epochs=15,
        cache_dir=tmp_path / "cache",
        log=quiet,
        data=clips,
        pattern="{label}_{speaker}_{index}",
        label_column="speaker",
    )
    r = report["tasks"]["classify"]
    assert r["split"] == "file"  # the label is the speaker: every speaker must be in train
    assert r["classes"] == ["s0", "s1", "s2"] and r["n_test"] == 6 and r["n_dev"] == 6
    assert r["median"] > 0.8 and len(r["values"]) == 2 and r["lr"] in (1e-3, 1e-2)
    assert r["layer_weights"] == [1.0]  # fbank is one layer
    saved = json.loads((out / "superb.json").read_text())
    assert saved["tasks"]["classify"]["median"] == r["median"] and saved["upstream"] == "fbank"
    assert (out / "layer_weights.png").stat().st_size > 1000
    table = format_table({"fbank": report})
    assert "| fbank |" in table and "classify acc %" in table
    assert f"{100 * r['median']:.1f} ({100 * r['spread']:.1f})" in table


def items(n_speakers=10, per=6, label_is_speaker=False):
    return [
        AudioItem(
            f"{s}_{k}.wav", label=f"spk{s}" if label_is_speaker else str(k % 2), speaker=f"spk{s}"
        )
        for s in range(n_speakers)
        for k in range(per)
    ]


def test_split_by_speaker_keeps_each_speaker_in_one_part():
    data = items()
    train, dev, test, how = split_items(data, seed=1)
    assert how == "speaker"
    parts = [{data[i].speaker for i in p} for p in (train, dev, test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(train + dev + test) == list(range(len(data)))
    assert len(test) >= 6 and len(dev) >= 6 and len(train) >= 36  # 10% each, whole speakers
    assert split_items(data, seed=1) == (train, dev, test, how)
    assert split_items(data, seed=2) != (train, dev, test, how)


def test_split_by_file_when_the_label_is_the_speaker_or_speakers_are_unknown():
    train, dev, test, how = split_items(items(label_is_speaker=True))
    assert how == "file" and (len(train), len(dev), len(test)) == (48, 6, 6)
    unknown = [AudioItem(f"{k}.wav", label=str(k % 3)) for k in range(20)]
    assert split_items(unknown)[3] == "file"
    with pytest.raises(ConfigError, match="cannot be split"):
        split_items(unknown[:5])


PHN = "0 800 h#\n800 1500 s\n1500 2000 q\n2000 3200 iy\n"


def labelled(path):
    idx = {p: i for i, p in enumerate(PHONES)}
    return [(a, b, IGNORE if FOLD39[p] is None else idx[FOLD39[p]]) for a, b, p in read_phn(path)]


def test_frame_labels_at_stack_1_and_3(tmp_path):
    (tmp_path / "u.phn").write_text(PHN)
    segs = labelled(tmp_path / "u.phn")
    sil, s, iy = (PHONES.index(p) for p in ("sil", "s", "iy"))
    # frame t is centred on sample 160 t: 0..640 h#, 800..1440 s, 1600..1920 q, 2080..3040 iy,
    # 3200 past the last segment (ends are exclusive)
    want1 = [sil] * 5 + [s] * 5 + [IGNORE] * 3 + [iy] * 7 + [IGNORE]
    assert frame_labels(segs, 21, 160, 16000).tolist() == want1
    # stacked steps of 3 take their centre frame 3j + 1: frames 1, 4, 7, 10, 13, 16, 19
    want3 = [sil, sil, s, IGNORE, iy, iy, iy]
    assert frame_labels(segs, 21, 160, 16000, stack=3).tolist() == want3
    # 19 frames: 7 steps, the last one's centre (19) is padding: its last real frame (18)
    assert frame_labels(segs, 19, 160, 16000, stack=3).tolist() == want3
    # an 8 kHz upstream (hop 80) sees the same times: .phn offsets stay 16 kHz samples
    assert frame_labels(segs, 21, 80, 8000).tolist() == want1


def test_phone_sequence_folds_drops_q_and_merges_repeats(tmp_path):
    text = "h# sh iy q iy hv pcl p epi h#".split()
    segs = [(10 * i, 10 * i + 10, p) for i, p in enumerate(text)]
    assert phone_sequence(segs, FOLD39) == ["sil", "sh", "iy", "hh", "sil", "p", "sil"]
    with pytest.raises(ConfigError, match="61-phone"):
        phone_sequence([(0, 1, "xx")], FOLD39)


def test_bad_requests_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown SUPERB task 'asr'"):
        run_superb("fbank", ["asr"], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        run_superb("fbank", ["ks"], tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="needs data"):
        run_superb("fbank", ["classify"])
    with pytest.raises(ConfigError, match="neither"):
        run_superb("nonsense", ["classify"], data=tmp_path)


def test_format_table_rows_upstreams_columns_tasks():
    def rep(**tasks):
        return {
            "tasks": {t: {"metric": m, "median": v, "spread": 0.02} for t, (m, v) in tasks.items()}
        }

    table = format_table(
        {"fbank": rep(ks=("acc", 0.5), pr=("per", 0.8)), "run": rep(ks=("acc", 0.75))}
    )
    lines = table.splitlines()
    assert lines[0] == "| upstream | ks acc % | pr PER % (lower is better) |"
    assert lines[2] == "| fbank | 50.0 (2.0) | 80.0 (2.0) |"
    assert lines[3] == "| run | 75.0 (2.0) | - |"


@pytest.mark.data
def test_ks_one_fold_with_fbank_beats_chance(tmp_path, one_thread):
    root = shared("fsdd").parent
    report = run_superb(
        "fbank",
        ["ks"],
        root,
        seeds=1,
        lrs=(1e-3, 1e-2),
        epochs=10,
        folds=[4],
        cache_dir=tmp_path / "cache",
        log=quiet,
    )
    r = report["tasks"]["ks"]
    assert r["folds"] == [4] and r["test_speakers"] == ["theo"] and r["n_test"] == 50
    assert r["median"] > 0.3, r  # 10 digits: chance is 0.1
    assert np.isclose(sum(r["layer_weights"]), 1.0)
