"""Collapse monitors on constructed collapse (a codebook forced onto one entry, constant or
rank-one embeddings, one cluster taking the frames, a trivial contrastive task) and on a healthy
random case, which must raise no warning."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.keys import IGNORE
from selfsup.monitors import (
    cluster_usage,
    codebook_usage,
    collapse_warnings,
    effective_rank,
    embedding_stats,
    embedding_std,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def healthy():
    g = gen()
    return {
        **codebook_usage(torch.randint(0, 320, (4096, 2), generator=g), 320),
        **embedding_stats(torch.randn(512, 64, generator=g)),
        **cluster_usage(torch.randint(0, 100, (5000,), generator=g), 100),
        "contrastive_acc": 0.55,
        "contrastive_loss": 1.8,
        "initial_embedding_std": 1.0,
    }


def test_a_healthy_random_case_raises_no_warning():
    m = healthy()
    assert (m["code_perplexity"] > 250).all() and (m["codes_in_use"] > 300).all()
    assert 0.9 < float(m["embedding_std"]) < 1.1 and float(m["effective_rank"]) > 40
    assert collapse_warnings(m) == []


def test_codebook_usage_equals_histogram_entropy():
    codes = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 2]])
    u = codebook_usage(codes, 4)
    p0, p1 = [0.75, 0.25], [0.25, 0.75]
    for got, p in zip(u["code_perplexity"].tolist(), (p0, p1), strict=True):
        assert got == pytest.approx(math.exp(-sum(v * math.log(v) for v in p)), rel=1e-6)
    assert u["codes_in_use"].tolist() == [2, 2]


def test_a_codebook_forced_onto_one_entry_warns_per_group():
    codes = torch.randint(0, 320, (4096, 2), generator=gen(1))
    codes[:, 1] = 7  # group 1 collapsed
    m = {**healthy(), **codebook_usage(codes, 320)}
    assert m["code_perplexity"][1] == pytest.approx(1.0) and m["codes_in_use"][1] == 1
    w = collapse_warnings(m)
    assert len(w) == 2 and all(line.startswith("codebook group 1") for line in w)
    assert "perplexity 1.0 of 320" in w[0] and "1 of 320 entries in use" in w[1]


def test_constant_embeddings_warn_std_and_rank():
    x = torch.randn(64, generator=gen(2)).expand(256, 64)  # every row the same vector
    assert float(embedding_std(x)) == pytest.approx(0.0, abs=1e-6)
    assert float(effective_rank(x)) == pytest.approx(1.0, abs=1e-6)
    w = collapse_warnings({**healthy(), **embedding_stats(x)})
    assert len(w) == 2 and "embedding std" in w[0] and "effective rank 1.00 of 64" in w[1]
    assert float(effective_rank(torch.zeros(5, 3))) == 0.0


def test_effective_rank_counts_equal_directions():
    assert float(effective_rank(torch.eye(8) * 3)) == pytest.approx(8.0)
    # Four equal directions among 256 dims: rank 4 is below 2% of 256 (5.12).
    x = torch.randn(300, 4, generator=gen(3)) @ torch.randn(4, 256, generator=gen(4))
    rank = float(effective_rank(x))
    assert 2 < rank < 4.5
    w = collapse_warnings({"effective_rank": rank, "dim": 256})
    assert len(w) == 1 and "dimensional collapse" in w[0]
    assert collapse_warnings({"effective_rank": rank, "dim": 64}) == []  # 2% of 64 < 2 < 4


def test_a_shrinking_std_warns_relative_to_its_initial_value():
    m = {"embedding_std": 0.05, "initial_embedding_std": 1.0}
    assert len(collapse_warnings(m)) == 1 and "5.0% of its initial" in collapse_warnings(m)[0]
    assert collapse_warnings({"embedding_std": 0.05}) == []


def test_one_cluster_taking_the_frames_warns():
    labels = torch.randint(0, 100, (1000,), generator=gen(5))
    labels[:600] = 3
    labels[-50:] = IGNORE  # skipped
    u = cluster_usage(labels, 100)
    assert float(u["cluster_max_share"]) > 0.6
    w = collapse_warnings(u)
    assert len(w) == 1 and "one cluster holds" in w[0]
    few = cluster_usage(torch.tensor([0, 1, 2, 3] * 10), 100)
    assert float(few["cluster_used_fraction"]) == 0.04
    assert any("4.0% of the clusters" in line for line in collapse_warnings(few))


def test_a_trivial_contrastive_task_warns():
    assert len(collapse_warnings({"contrastive_acc": 1.0, "contrastive_loss": 0.001})) == 1
    assert collapse_warnings({"contrastive_acc": 1.0, "contrastive_loss": 0.2}) == []
    assert collapse_warnings({"contrastive_acc": 0.5, "contrastive_loss": 0.001}) == []


def test_few_frames_are_judged_against_what_they_can_use():
    # 100 frames spread over 320 entries: healthy, though under 10% of 320 in perplexity
    healthy = {"code_perplexity": [25.0], "codes_in_use": [60], "n_entries": 320}
    assert collapse_warnings(healthy)  # without the frame count: judged against all 320
    assert collapse_warnings({**healthy, "code_frames": 100}) == []
    collapsed = {"code_perplexity": [1.0], "codes_in_use": [1], "n_entries": 320,
                 "code_frames": 100}  # fmt: skip
    assert len(collapse_warnings(collapsed)) == 2
