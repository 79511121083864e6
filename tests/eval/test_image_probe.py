"""Frozen-feature image evaluation: the kNN equals a brute-force weighted vote written here, the
linear probe separates what is separable, learns nothing from shuffled labels and never looks at
the test set to pick its lr, feature extraction runs the backbone in eval mode without moving
its BatchNorm statistics or its modes, and the plots are PNG files."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError
from selfsup.eval import image_probe
from selfsup.eval.image_probe import (
    collapse_plot,
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_probe,
    pixel_features,
    probe,
    tsne_plot,
)

PNG = b"\x89PNG\r\n\x1a\n"


def clusters(n: int, n_classes: int, dim: int, spread: float, seed: int = 0):
    """`n` features around `n_classes` random unit centres (scaled by 3) with Gaussian noise of
    std `spread`, and their labels."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=1) * 3
    y = torch.randint(0, n_classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


# ---------------------------------------------------------------------------------------------
# kNN


def brute_force_knn(train_f, train_y, test_f, k, temperature):
    """Wu et al.'s weighted kNN, one test row at a time: cosine similarity to every training
    row (float64), all sorted, the k best vote exp(s / temperature) into a dict, the largest
    sum wins, a tie to the lower class."""
    train = [np.asarray(r, dtype=np.float64) for r in train_f.tolist()]
    train = [r / np.linalg.norm(r) for r in train]
    labels = train_y.tolist()
    out = []
    for q in test_f.tolist():
        q = np.asarray(q, dtype=np.float64)
        q = q / np.linalg.norm(q)
        sims = sorted(((float(q @ r), i) for i, r in enumerate(train)), key=lambda t: -t[0])
        votes: dict[int, float] = {}
        for s, i in sims[:k]:
            votes[labels[i]] = votes.get(labels[i], 0.0) + math.exp(s / temperature)
        out.append(min(votes, key=lambda c: (-votes[c], c)))
    return out


@pytest.mark.parametrize(
    "k, temperature, chunk", [(1, 0.1, 1024), (20, 0.1, 7), (20, 1.0, 64), (200, 0.07, 33)]
)
def test_knn_matches_brute_force(k, temperature, chunk):
    g = torch.Generator().manual_seed(k)
    train_f, test_f = torch.randn(150, 12, generator=g), torch.randn(40, 12, generator=g)
    train_y = torch.randint(0, 5, (150,), generator=g)
    pred = knn_predict(train_f, train_y, test_f, k=k, temperature=temperature, chunk=chunk)
    assert pred.dtype == torch.long and pred.shape == (40,)
    assert pred.tolist() == brute_force_knn(train_f, train_y, test_f, k, temperature)


def test_knn_tie_goes_to_the_lower_class():
    a = 0.3  # two neighbours at exactly the same similarity cos(a) to the query, one per class
    train_f = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(a), -math.sin(a)], [-1.0, 0]])
    query = torch.tensor([[1.0, 0.0]])
    for labels in ([2, 1, 0], [1, 2, 0]):
        y = torch.tensor(labels)
        assert knn_predict(train_f, y, query, k=2).item() == 1
        assert brute_force_knn(train_f, y, query, 2, 0.1) == [1]


def test_temperature_weights_the_vote():
    """Two close neighbours of class 0 against three farther ones of class 1: the weighted vote
    at temperature 0.1 picks 0, a near-uniform one (temperature 100) the majority, 1."""
    angles = [0.05, -0.05, 0.6, -0.6, 0.65]
    train_f = torch.tensor([[math.cos(t), math.sin(t)] for t in angles])
    y = torch.tensor([0, 0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train_f, y, query, k=5, temperature=0.1).item() == 0
    assert knn_predict(train_f, y, query, k=5, temperature=100.0).item() == 1
    assert brute_force_knn(train_f, y, query, 5, 0.1) == [0]
    assert brute_force_knn(train_f, y, query, 5, 100.0) == [1]


def test_knn_small_temperature_does_not_overflow():
    train_f, y = clusters(60, 3, 8, 0.5)
    pred = knn_predict(train_f, y, train_f, k=10, temperature=1e-3)  # exp(1 / 1e-3) = inf
    assert (pred == y).float().mean() > 0.9


def test_k_larger_than_the_training_set_is_clamped():
    train_f, y = clusters(50, 3, 8, 2.0)
    test_f, _ = clusters(30, 3, 8, 2.0, seed=1)
    everyone = knn_predict(train_f, y, test_f, k=50)
    assert torch.equal(knn_predict(train_f, y, test_f, k=10_000), everyone)
    assert probe(train_f, y, test_f, y[:30], "knn", k=10_000)["runs"][0]["k"] == 50


def test_knn_accuracy_and_bad_settings():
    f, y = clusters(300, 4, 16, 0.3)
    assert knn_accuracy(f[:200], y[:200], f[200:], y[200:]) == 1.0
    with pytest.raises(ConfigError):
        knn_predict(f, y, f, k=0)
    with pytest.raises(ConfigError):
        knn_predict(f, y, f, temperature=0.0)


# ---------------------------------------------------------------------------------------------
# linear probe

FAST = {"epochs": 15, "batch_size": 64}


def test_softmax_regression_grads_equal_autograd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 6, generator=g), torch.randint(0, 4, (9,), generator=g)
    w = torch.randn(4, 6, generator=g, requires_grad=True)
    b = torch.randn(4, generator=g, requires_grad=True)
    loss = F.cross_entropy(F.linear(x, w, b), y)
    loss.backward()
    mine, gw, gb = image_probe._softmax_regression_grads(x, y, w.detach(), b.detach())
    torch.testing.assert_close(mine, loss.detach())
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)


def test_linear_probe_separates_clusters_and_learns_nothing_from_shuffled_labels():
    f, y = clusters(1200, 5, 32, 0.5)
    r = linear_probe(f[:1000], y[:1000], f[1000:], y[1000:], seed=0, **FAST)
    assert r["accuracy"] >= 0.99 and r["train_accuracy"] >= 0.99
    assert set(r["sweep"]) == set(image_probe.LRS) and r["lr"] in r["sweep"]
    shuffled = y[:1000][torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    chance = linear_probe(f[:1000], shuffled, f[1000:], y[1000:], seed=0, **FAST)
    assert chance["accuracy"] < 0.2 + 0.1  # chance is 1 / 5
    assert max(chance["sweep"].values()) < 0.35


def test_the_lr_is_picked_without_the_test_set():
    """The sweep and the lr are the same whatever the test features and labels are (even
    garbage); only the reported test accuracy changes. And every fit sees training rows only."""
    f, y = clusters(600, 4, 16, 2.5)
    test_f, test_y = clusters(200, 4, 16, 2.5, seed=1)
    real = linear_probe(f, y, test_f, test_y, seed=3, **FAST)
    g = torch.Generator().manual_seed(9)
    junk = linear_probe(f, y, 100 * torch.randn(50, 16, generator=g), torch.zeros(50).long(),
                        seed=3, **FAST)  # fmt: skip
    assert junk["sweep"] == real["sweep"] and junk["lr"] == real["lr"]
    assert real["lr"] == max(real["sweep"], key=real["sweep"].get)  # the best held-out lr
    assert len(set(real["sweep"].values())) > 1  # the lrs differ on held-out data: a real choice
    assert junk["accuracy"] != real["accuracy"]


def test_the_sweep_picks_the_lr_that_learns():
    f, y = clusters(400, 3, 8, 1.0)
    r = linear_probe(f[:300], y[:300], f[300:], y[300:], seed=0, lrs=(1e-7, 3e-2), **FAST)
    assert r["lr"] == 3e-2 and r["sweep"][3e-2] > r["sweep"][1e-7] and r["accuracy"] > 0.9


def test_every_fit_sees_training_rows_only(monkeypatch):
    fits = []
    real_fit = image_probe._fit_linear

    def recording_fit(x, y, *args):
        fits.append(len(x))
        return real_fit(x, y, *args)

    monkeypatch.setattr(image_probe, "_fit_linear", recording_fit)
    f, y = clusters(500, 3, 8, 1.0)
    test_f, test_y = clusters(77, 3, 8, 1.0, seed=1)
    r = linear_probe(f, y, test_f, test_y, seed=0, lrs=(1e-3, 1e-2), heldout_fraction=0.2, **FAST)
    assert fits == [400, 400, 500]  # the sweep on 80% of train, the refit on all of train
    assert r["lr"] in (1e-3, 1e-2)


def test_linear_probe_is_a_function_of_its_seed():
    f, y = clusters(500, 4, 16, 2.5)
    test_f, test_y = clusters(200, 4, 16, 2.5, seed=1)
    a, b, c = (linear_probe(f, y, test_f, test_y, seed=s, **FAST) for s in (5, 5, 6))
    for r in (a, b, c):
        r.pop("seconds")
    assert a == b
    assert a["sweep"] != c["sweep"]  # another seed: another held-out split


def test_linear_probe_bad_settings():
    f, y = clusters(20, 2, 4, 1.0)
    for kw in ({"heldout_fraction": 0.0}, {"heldout_fraction": 1.0}, {"lrs": ()},
               {"epochs": 0}, {"lrs": (-1.0,)}):  # fmt: skip
        with pytest.raises(ConfigError):
            linear_probe(f, y, f, y, seed=0, **kw)


def test_probe_summaries():
    f, y = clusters(400, 3, 8, 2.0)
    knn = probe(f[:300], y[:300], f[300:], y[300:], "knn", seeds=(0, 1, 2), k=20)
    assert knn["method"] == "knn" and knn["deterministic"] and len(knn["runs"]) == 1
    assert knn["std"] == 0.0 and knn["spread"] == 0.0
    assert knn["mean"] == knn_accuracy(f[:300], y[:300], f[300:], y[300:], k=20)
    lin = probe(f[:300], y[:300], f[300:], y[300:], "linear", seeds=(0, 1), **FAST)
    assert [r["seed"] for r in lin["runs"]] == [0, 1] and not lin["deterministic"]
    accs = [r["accuracy"] for r in lin["runs"]]
    assert lin["mean"] == pytest.approx(sum(accs) / 2)
    assert lin["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    with pytest.raises(ConfigError):
        probe(f, y, f, y, "ridge")


# ---------------------------------------------------------------------------------------------
# features


class TinyEncoder(nn.Module):
    """conv + BatchNorm + dropout + pool: its outputs in train mode depend on the batch and on
    dropout, and a train-mode forward moves the BatchNorm running statistics."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> dict:
        h = self.drop(torch.relu(self.bn(self.conv(images))))  # (B, 8, H, W)
        return {"pooled": h.mean((2, 3)), "hidden": h}


def tiny_images(n: int = 12, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 6, 6, 3), generator=g, dtype=torch.uint8).numpy()


def test_extract_features_runs_the_encoder_in_eval_mode():
    torch.manual_seed(0)
    encoder = TinyEncoder().train()
    images = tiny_images()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        encoder(x)  # move the running statistics off their initial values
    buffers = copy.deepcopy(dict(encoder.named_buffers()))
    f = extract_features(encoder, images, batch_size=5)
    assert f.shape == (12, 8) and f.dtype == torch.float32 and not f.requires_grad
    for name, value in encoder.named_buffers():
        assert torch.equal(value, buffers[name]), name  # num_batches_tracked included
    assert encoder.training and all(m.training for m in encoder.modules())
    assert all(p.grad is None for p in encoder.parameters())
    with torch.no_grad():
        eval_mode = copy.deepcopy(encoder).eval()(x)["pooled"]
        train_mode = encoder(x)["pooled"]  # (and it moves the running statistics)
    assert not torch.allclose(train_mode, eval_mode, atol=1e-3)  # the mode matters here
    torch.testing.assert_close(f, eval_mode)


def test_features_do_not_depend_on_the_batch():
    encoder = TinyEncoder().train()
    images = tiny_images()
    one_at_a_time = extract_features(encoder, images, batch_size=1)
    torch.testing.assert_close(extract_features(encoder, images, batch_size=7), one_at_a_time)
    order = np.random.default_rng(0).permutation(12)
    shuffled = extract_features(encoder, images[order], batch_size=4)
    torch.testing.assert_close(shuffled, one_at_a_time[order])


def test_extract_features_restores_mixed_modes_and_survives_errors():
    encoder = TinyEncoder().train()
    encoder.bn.eval()  # a deliberately frozen norm layer stays frozen, the rest in train mode
    modes = {name: m.training for name, m in encoder.named_modules()}
    extract_features(encoder, tiny_images(), key="hidden")
    assert {name: m.training for name, m in encoder.named_modules()} == modes
    with pytest.raises(KeyError):
        extract_features(encoder, tiny_images(), key="features")
    assert {name: m.training for name, m in encoder.named_modules()} == modes
    with pytest.raises(ValueError):
        extract_features(encoder, tiny_images().astype(np.float32))


def test_extract_features_takes_any_callable():
    f = extract_features(lambda x: {"pooled": x.mean((2, 3))}, tiny_images(), batch_size=3)
    expected = torch.from_numpy(tiny_images()).float().div(255).mean((1, 2))
    torch.testing.assert_close(f, expected)


def test_pixel_features():
    images = tiny_images(4)
    f = pixel_features(images)
    assert f.shape == (4, 6 * 6 * 3) and f.dtype == torch.float32
    assert 0 <= float(f.min()) and float(f.max()) <= 1
    torch.testing.assert_close(f[1, :3], torch.from_numpy(images[1, 0, 0]).float() / 255)


# ---------------------------------------------------------------------------------------------
# plots


def test_tsne_plot_writes_a_png(tmp_path):
    f, y = clusters(260, 3, 10, 0.5)
    path = tsne_plot(f, y, ["cat", "dog", "ship"], tmp_path / "sub" / "tsne.png", max_points=200,
                     title="test", max_iter=250)  # fmt: skip
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["tsne.png"]  # no temporary file left


def test_collapse_plot_writes_a_png(tmp_path):
    healthy = [{"step": s, "embed_std": 0.04, "embed_rank": 60.0} for s in range(0, 100, 10)]
    collapsed = [{"step": s, "embed_std": 0.04 / (1 + s), "embed_rank": 60.0 / (1 + s)}
                 for s in range(0, 100, 10)]  # fmt: skip
    collapsed.append({"step": 100, "eval_embed_std": 0.0})  # an eval row: skipped
    path = collapse_plot({"byol": healthy, "positives only": collapsed}, tmp_path / "c.png",
                         labels=("per-dim std", "effective rank"))  # fmt: skip
    assert path.read_bytes()[:8] == PNG
    assert collapse_plot(healthy, tmp_path / "one.png").read_bytes()[:8] == PNG
    with pytest.raises(ConfigError):
        collapse_plot(healthy, tmp_path / "none.png", keys=("feature_rank",))
