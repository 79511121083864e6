"""The frozen-feature probe core: the weighted layer sum learns which layer carries the label,
CTC decoding and the error rate match hand-checked examples, extracted states do not depend on
the batch they were computed in, and training is a function of its seed alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import write_speech

from selfsup.errors import ConfigError
from selfsup.eval.probe import (
    CTCHead,
    FrameHead,
    ProbeSet,
    Sweep,
    UtteranceHead,
    WeightedLayerSum,
    accuracy,
    error_rate,
    evaluate,
    extract,
    greedy_decode,
    levenshtein,
    sweep,
    sweeps,
    train_probe,
)
from selfsup.eval.upstream import load_upstream
from selfsup.keys import IGNORE


def layered(n: int, carrier: int, n_layers: int = 4, dim: int = 8, T: int = 3, seed: int = 0):
    """`n` examples of (L, T, D) states where only layer `carrier` holds the label (2 classes:
    a shifted mean in the first dimensions), every other layer noise of the same scale."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    states = torch.randn(n, n_layers, T, dim, generator=g)
    states[:, carrier, :, :2] += 1.5 * (2.0 * labels[:, None, None] - 1.0)
    return ProbeSet(list(states), labels.tolist())


def test_weighted_layer_sum_starts_uniform_and_takes_lists():
    w = WeightedLayerSum(3)
    assert torch.allclose(w.weights(), torch.full((3,), 1 / 3))
    layers = [torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    expected = sum(layers) / 3
    assert torch.allclose(w(layers), expected, atol=1e-6)
    assert torch.allclose(w(torch.stack(layers, 1)), expected, atol=1e-6)
    with torch.no_grad():
        w.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    assert math.isclose(w.weights().sum().item(), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="layers"):
        w(layers[:2])


def test_weighted_layer_sum_learns_the_layer_that_carries_the_label(one_thread):
    train, test = layered(256, carrier=2), layered(128, carrier=2, seed=1)
    r = train_probe("utterance", train, 2, lr=1e-2, test=test, epochs=15, batch_size=32)
    w = r["layer_weights"]
    assert len(w) == 4 and math.isclose(sum(w), 1.0, rel_tol=1e-5)
    assert int(np.argmax(w)) == 2 and w[2] > 0.5, w
    assert r["test"] > 0.9


def test_training_is_a_function_of_the_seed_and_leaves_the_global_rng_alone(one_thread):
    data = layered(64, carrier=1)
    before = torch.random.get_rng_state()
    a = train_probe("utterance", data, 2, lr=1e-2, epochs=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = train_probe("utterance", data, 2, lr=1e-2, epochs=2, seed=3)
    c = train_probe("utterance", data, 2, lr=1e-2, epochs=2, seed=4)
    assert a["losses"] == b["losses"] and a["layer_weights"] == b["layer_weights"]
    assert a["losses"] != c["losses"]


def test_sweep_picks_the_best_dev_lr_and_summarises_the_seeds(one_thread):
    train, dev, test = layered(96, 0), layered(48, 0, seed=1), layered(48, 0, seed=2)
    r = sweep("utterance", train, dev, test, 2, lrs=(1e-5, 1e-2), seeds=2, epochs=4)
    assert r["lr"] == 1e-2 and r["dev"]["0.01"] == max(r["dev"].values())
    assert len(r["values"]) == 2 and len(r["layer_weights_all"]) == 2
    assert r["spread"] == max(r["values"]) - min(r["values"])
    assert r["median"] == sorted(r["values"])[0] + r["spread"] / 2  # two seeds: the midpoint
    assert set(r["sweep_layer_weights"]) == {"1e-05", "0.01"}


def test_sweeps_at_once_equal_sweeps_one_after_another(one_thread):
    """Two problems, one refitted and one not (seed 0 is then its sweep's own probe, scored on
    test in the first round): the same results as two calls to sweep, and as the probes
    train_probe trains directly."""
    train, dev, test = layered(48, 0), layered(24, 0, seed=1), layered(24, 0, seed=2)
    refit = layered(64, 0, seed=3)
    args = dict(lrs=(1e-3, 1e-2), seeds=2, epochs=2)
    alone = [sweep("utterance", train, dev, test, 2, **args),
             sweep("utterance", train, dev, test, 2, refit=refit, **args)]  # fmt: skip
    problems = [
        Sweep("utterance", train, dev, test, 2, (1e-3, 1e-2), 2, epochs=2),
        Sweep("utterance", train, dev, test, 2, (1e-3, 1e-2), 2, refit, epochs=2),
    ]
    assert sweeps(problems) == alone
    lr = alone[0]["lr"]
    own = train_probe("utterance", train, 2, lr, dev=dev, test=test, epochs=2, seed=0)
    assert alone[0]["values"][0] == own["test"] and alone[0]["dev"][f"{lr:g}"] == own["dev"]
    seed1 = train_probe("utterance", refit, 2, alone[1]["lr"], test=test, epochs=2, seed=1)
    assert alone[1]["values"][1] == seed1["test"]
    assert alone[1]["layer_weights_all"][1] == seed1["layer_weights"]


def one_hot_path(path: list[int], V: int = 5) -> torch.Tensor:
    """(T, V) log-probabilities whose argmax follows `path`."""
    x = torch.full((len(path), V), -5.0)
    x[torch.arange(len(path)), torch.tensor(path)] = 0.0
    return x.log_softmax(-1)


def test_greedy_decoding_collapses_repeats_then_drops_blanks():
    paths = [[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 0, 0, 0, 0, 0], [0] * 8, [4, 0, 4, 4, 1, 1, 0, 2]]
    lp = torch.stack([one_hot_path(p) for p in paths])  # (4, 8, 5)
    full = greedy_decode(lp, torch.tensor([8, 8, 8, 8]))
    assert full == [[1, 1, 2], [3], [], [4, 4, 1, 2]]
    cut = greedy_decode(lp, torch.tensor([5, 2, 8, 3]))  # padding frames are never read
    assert cut == [[1, 1], [3], [], [4, 4]]


@pytest.mark.parametrize(
    "a, b, d",
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("", "abc", 3),
        ("abc", "", 3),
        ("same", "same", 0),
        ([1, 2, 3, 4], [1, 3, 4, 5], 2),
    ],
)
def test_levenshtein_known_distances(a, b, d):
    assert levenshtein(a, b) == d and levenshtein(b, a) == d


def test_phone_error_rate_is_pooled_over_utterances():
    assert error_rate([[1, 2, 3]], [[1, 3]]) == 0.5  # one insertion / 2 reference phones
    # (1 deletion + 2 deletions) / (3 + 2) reference phones, not the mean of 1/3 and 1
    assert error_rate([[1, 2], []], [[1, 2, 3], [4, 5]]) == pytest.approx(0.6)
    assert error_rate([[7, 7]], [[7]]) == 1.0
    with pytest.raises(ValueError):
        error_rate([[1]], [[]])


def test_frame_accuracy_skips_ignored_frames():
    preds = torch.tensor([1, 2, 3, 4])
    assert accuracy(preds, torch.tensor([1, IGNORE, 0, 4])) == pytest.approx(2 / 3)


def test_ctc_probe_learns_a_toy_sequence_task(one_thread):
    """Frames of token k hold a bump in dimension k (runs of 3 frames): a linear CTC head
    learns to read the sequence."""
    g = torch.Generator().manual_seed(0)
    states, targets = [], []
    for _ in range(48):
        seq = (torch.randint(1, 4, (4,), generator=g)).tolist()
        frames = torch.zeros(len(seq) * 4, 4)
        for i, tok in enumerate(seq):
            frames[4 * i : 4 * i + 3, tok] = 3.0  # a blank-like gap after each token
        frames += 0.1 * torch.randn(frames.shape, generator=g)
        states.append(frames[None])  # (1, T, D)
        targets.append(seq)
    data = ProbeSet(states, targets)
    r = train_probe("ctc", data, 4, lr=3e-2, test=data, epochs=30, batch_size=8)
    assert r["test"] < 0.2, r["test"]


def test_lstm_ctc_and_frame_heads_ignore_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 6, generator=g)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        heads = (CTCHead(6, 5, lstm_dim=4), FrameHead(6, 5), UtteranceHead(6, 3, hidden=8))
    for head in heads:
        both = head(x, pad)
        alone = head(x[1:, :4], pad[1:, :4])
        key = "logits" if "logits" in both else "log_probs"
        got = both[key][1, :4] if both[key].ndim == 3 else both[key][1]
        assert torch.allclose(got, alone[key][0], atol=1e-5), type(head).__name__


def test_bad_kind_and_bad_targets():
    data = layered(8, 0)
    with pytest.raises(ConfigError, match="unknown probe kind"):
        train_probe("regress", data, 2, lr=1e-3)
    with pytest.raises(ValueError, match="frame labels"):
        train_probe("frame", ProbeSet(data.states, [torch.zeros(2)] * 8), 2, lr=1e-3)
    with pytest.raises(ValueError, match="blank"):
        train_probe("ctc", ProbeSet(data.states, [[0, 1]] * 8), 3, lr=1e-3)


# ---------------------------------------------------------------------------------------------
# extract: a padded batch gives each example what it gets alone


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from selfsup.presets import preset
    from selfsup.pretraining import pretrain

    root = tmp_path_factory.mktemp("probe")
    speech = write_speech(root / "clips", n=8)
    cfg = preset("tiny", "audio")
    cfg.model.dim, cfg.model.n_heads, cfg.model.ffn_dim = 32, 2, 64
    cfg.data.paths, cfg.data.cache_dir, cfg.data.max_frames = [str(speech)], str(root / "c"), 40
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = 2, 4, 1
    cfg.train.eval_every = cfg.train.save_every = cfg.train.log_every = 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(cfg, root / "run", progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def ragged_frames(lengths, dim=80, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]


LENGTHS = [13, 5, 30, 8, 21, 1, 16]


def test_extract_features_are_the_frames_themselves():
    frames = ragged_frames(LENGTHS)
    states = extract(load_upstream("fbank"), frames, batch_size=3)
    assert [s.shape for s in states] == [(1, n, 80) for n in LENGTHS]
    assert all(torch.equal(s[0], torch.from_numpy(f)) for s, f in zip(states, frames, strict=True))


@pytest.mark.parametrize("spec", ["run", "random:run"])
def test_extract_padded_batches_equal_one_example_at_a_time(tiny_run, spec, one_thread):
    name = str(tiny_run) if spec == "run" else f"random:{tiny_run}"
    upstream = load_upstream(name)
    frames = ragged_frames(LENGTHS)
    batched = extract(upstream, frames, batch_size=4)
    alone = extract(upstream, frames, batch_size=1)
    stack, L = upstream.stack, upstream.n_layers
    assert stack == 3 and L == 3  # the input projection and 2 layers
    for b, a, n in zip(batched, alone, LENGTHS, strict=True):
        assert b.shape == (L, -(-n // stack), 32) and b.dtype == torch.float32
        assert torch.allclose(b, a, atol=1e-5), (n, float((b - a).abs().max()))
    pooled = extract(upstream, frames, batch_size=4, pool=True)
    for p, b in zip(pooled, batched, strict=True):
        assert torch.allclose(p[:, 0], b.mean(1), atol=1e-6)


def test_evaluate_reads_only_real_frames():
    """A frame probe scores the same whether its examples are padded together or not."""
    data = ProbeSet(
        [torch.randn(1, n, 3, generator=torch.Generator().manual_seed(n)) for n in (2, 9, 5)],
        [torch.tensor([0] * n) for n in (2, 9, 5)],
    )
    r = train_probe("frame", data, 2, lr=1e-2, epochs=3, batch_size=3)
    probe = r["probe"]
    assert evaluate("frame", probe, data, batch_size=3) == evaluate("frame", probe, data, 1)
