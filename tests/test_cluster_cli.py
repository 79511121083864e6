"""`selfsup cluster`: HuBERT's two iterations end to end (k-means on MFCCs, pretraining on those
labels, k-means on a layer of that run, pretraining on those), the labels folder's format, the
fit's two paths, and one-line errors for bad input."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from helpers import assert_clean_error, cli, write_speech

from selfsup.cluster import assign, load_centroids
from selfsup.cluster_audio import MFCC_FEATURES, fit_centroids
from selfsup.data.audio import read_audio
from selfsup.data.features import compute_features
from selfsup.data.frame_labels import read_labels
from selfsup.errors import ConfigError
from selfsup.layers.conv_frontend import conv_output_lengths

TINY = ["model.conv_channels=16,16,16,16,16,16,16", "model.dim=32", "model.n_heads=2",
        "model.ffn_dim=64", "model.pos_conv_kernel=16", "model.pos_conv_groups=4",
        "objective.final_dim=16", "data.max_frames=9600", "data.heldout_every=6"]  # fmt: skip
CONV = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_speech(tmp_path_factory.mktemp("cluster") / "clips", n=12)


class Output:
    """capsys for module fixtures (capsys itself is per test): what `main` printed."""

    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self):
        out, err = self.out.getvalue(), self.err.getvalue()
        self.out, self.err = io.StringIO(), io.StringIO()
        return SimpleNamespace(out=out, err=err)


def run(capsys, *argv):
    if not isinstance(capsys, Output):
        return cli(capsys, *argv)
    with redirect_stdout(capsys.out), redirect_stderr(capsys.err):
        return cli(capsys, *argv)


def cluster(capsys, clips, source, out, *extra):
    return run(capsys, "cluster", source, "--data", clips, "--out", out, "--cache-dir",
               clips.parent / "cache", *extra)  # fmt: skip


def pretrain(capsys, clips, labels, out):
    return run(capsys, "pretrain", "--objective", "hubert", "--labels", labels, "--data", clips,
               "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--out", out,
               "--cache-dir", clips.parent / "cache", "--no-progress", "--set", *TINY)  # fmt: skip


@pytest.fixture(scope="module")
def iteration1(clips) -> tuple[Path, Path]:
    """(labels of MFCCs, k = 8; a HuBERT run trained two steps on them)."""
    labels, run_dir = clips.parent / "labels1", clips.parent / "run1"
    code, out, err = cluster(Output(), clips, "mfcc", labels, "--k", "8")
    assert code == 0, err
    assert "clustered" in out and "clusters used" in out
    code, out, err = pretrain(Output(), clips, labels, run_dir)
    assert code == 0, err
    assert "labels: k=8 from mfcc at 100 Hz, for the model's 50 Hz frames" in out
    return labels, run_dir


def test_mfcc_labels_are_one_line_per_file_at_100_hz(clips, iteration1):
    labels, _ = iteration1
    found = read_labels(labels)
    info = found.info
    assert (info["k"], info["source"], info["layer"], info["dim"]) == (8, "mfcc", None, 39)
    assert (info["hop"], info["offset"], info["frame_rate"], info["sample_rate"]) == (
        160, 0.0, 100.0, 16000,
    )  # fmt: skip
    files = sorted(clips.glob("*.wav"))
    assert len((labels / "labels.tsv").read_text().splitlines()) == len(files) == info["files"]
    centroids, note = load_centroids(labels / "centroids.npy", dim=39)  # never pickled
    assert centroids.shape == (8, 39) and note["k"] == 8
    np.load(labels / "centroids.npy", allow_pickle=False)
    for f in files:
        wave = read_audio(f, 16000)  # the 8 kHz files resampled as the pipeline does
        lab = found.of(str(f))
        assert len(lab) == 1 + len(wave) // 160  # centred 10 ms frames
        want = assign(compute_features(wave, MFCC_FEATURES), centroids)
        assert lab.tolist() == want.tolist()  # the nearest centroid of each MFCC frame
    assert info["usage"]["clusters_used"] <= 8 and 0 < info["usage"]["max_share"] <= 1


def test_iteration_two_clusters_a_layer_of_the_run_at_its_frame_rate(clips, iteration1, capsys,
                                                                      tmp_path):  # fmt: skip
    from selfsup.eval.upstream import load_upstream

    _, run = iteration1
    labels = tmp_path / "labels2"
    code, out, err = cluster(
        capsys, clips, run, labels, "--layer", "1", "--k", "6", "--sample", "150"
    )  # fmt: skip  (fewer frames: the streaming fit)
    assert code == 0, err
    assert "layer 1, 50 Hz" in out and "mini-batch k-means" in out
    found = read_labels(labels)
    assert (found.info["hop"], found.info["layer"], found.k) == (320, 1, 6)
    assert found.info["dim"] == 32 and found.info["source"] == str(run.resolve())
    upstream = load_upstream(str(run))
    centroids, _ = load_centroids(labels / "centroids.npy")
    for f in sorted(clips.glob("*.wav"))[:3]:
        wave = read_audio(f, 16000)
        lab = found.of(str(f))
        assert len(lab) == conv_output_lengths(len(wave), CONV)
        x = torch.from_numpy(compute_features(wave, upstream.features))[None]
        with torch.no_grad():
            h = upstream(x, torch.zeros(x.shape[:2], dtype=torch.bool))["all_hidden"][1][0]
        assert lab.tolist() == assign(h, centroids).tolist()
    # and HuBERT's second iteration trains on them (labels at the model's own frames)
    code, out, err = pretrain(capsys, clips, labels, tmp_path / "run2")
    assert code == 0, err
    assert f"labels: k=6 from {run.resolve()} layer 1 at 50 Hz" in out


def test_fit_recovers_separated_clusters_on_both_paths():
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(6).repeat_interleave(500)  # (3000,)
    centres = torch.randn(6, 4, generator=g) * 20
    x = centres[truth] + torch.randn(3000, 4, generator=g)
    for sample, how in ((5000, "Lloyd's"), (300, "mini-batch")):
        c, said = fit_centroids(x, 6, sample, torch.Generator().manual_seed(1))
        assert how in said
        lab = assign(x, c)
        # one cluster per true group: the labels are a relabelling of the truth
        pairs = set(zip(truth.tolist(), lab.tolist(), strict=True))
        assert len(pairs) == 6 and len({b for _, b in pairs}) == 6
        again, _ = fit_centroids(x, 6, sample, torch.Generator().manual_seed(1))
        assert torch.equal(c, again)  # seeded


def test_k_beyond_the_frames_is_refused():
    with pytest.raises(ConfigError, match="--k 11 is larger than the 10 frames"):
        fit_centroids(torch.randn(10, 3), 11, 100, torch.Generator())
    with pytest.raises(ConfigError, match="--sample 5 frames cannot seed 8 clusters"):
        fit_centroids(torch.randn(100, 3), 8, 5, torch.Generator())


@pytest.mark.parametrize(
    "args, says",
    [
        (["mfcc", "--k", "100000"], "--k 100000 is larger than the"),
        (["mfcc", "--k", "1"], "--k must be at least 2"),
        (["mfcc", "--k", "8", "--layer", "3"], "--layer is for a run SOURCE, not mfcc"),
        (["RUN", "--k", "8"], "give --layer L"),
        (["RUN", "--k", "8", "--layer", "7"], "--layer 7: "),
        (["NOT_A_RUN", "--k", "8", "--layer", "1"], "is neither a selfsup audio run"),
        (["mfcc+cmvn", "--k", "8", "--layer", "0"], "a feature SOURCE is mfcc or fbank"),
        (["mfcc"], "the following arguments are required: --k"),
    ],
)
def test_bad_cluster_input_is_a_one_line_error(clips, iteration1, capsys, tmp_path, args, says):
    _, run = iteration1
    args = [str(run) if a == "RUN" else str(tmp_path / "nothing") if a == "NOT_A_RUN" else a
            for a in args]  # fmt: skip
    out = tmp_path / "labels"
    code, _, err = cluster(capsys, clips, args[0], out, *args[1:])
    assert_clean_error(code, err, out, says)


def test_fbank_frames_cluster_the_same_way(clips, capsys, tmp_path):
    code, out, err = cluster(capsys, clips, "fbank", tmp_path / "fb", "--k", "4")
    assert code == 0, err
    info = read_labels(tmp_path / "fb").info
    assert (info["source"], info["dim"], info["frame_rate"]) == ("fbank", 80, 100.0)


def test_an_existing_labels_folder_is_never_overwritten(clips, iteration1, capsys):
    labels, _ = iteration1
    before = (labels / "labels.tsv").read_text()
    code, _, err = cluster(capsys, clips, "mfcc", labels, "--k", "4")
    assert_clean_error(code, err, None, "exists and is not empty")
    assert (labels / "labels.tsv").read_text() == before


def test_malformed_labels_files_are_one_line_errors(iteration1, tmp_path):
    import shutil

    labels, _ = iteration1
    for bad, says in [
        ("no tab here", "expected a path, a tab and the labels"),
        ("/a.wav\t1 two 3", "the labels are not integers"),
        ("/a.wav\t1 9 3", "labels must be in [0, 8)"),
        ("/a.wav\t1 2\n/a.wav\t3 4", "is listed twice"),
    ]:
        folder = tmp_path / f"bad{len(says)}"
        shutil.copytree(labels, folder)
        (folder / "labels.tsv").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=re.escape(says)):
            read_labels(folder)
    info = json.loads((labels / "labels.json").read_text())
    assert info["format"] == "selfsup-frame-labels-v1"


def test_labels_match_files_by_resolved_path(iteration1, clips, monkeypatch):
    labels, _ = iteration1
    found = read_labels(labels)
    first = sorted(clips.glob("*.wav"))[0]
    monkeypatch.chdir(clips)
    assert found.of(first.name).tolist() == found.of(str(first)).tolist()  # relative, from here
    soundfile.info(first)  # still the same file
