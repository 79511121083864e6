"""Weights on a log-spaced schedule (`pretrain --save-schedule log`, selfsup/snapshots.py): the
steps asked, kept whatever the checkpoints' retention, each with a manifest that matches, the
same after an interrupted and resumed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_clean_error, cli

from selfsup.checkpoint import verify_manifest
from selfsup.config import TrainConfig
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.keys import ATTENTION_MASK, INPUT_IDS, LABELS
from selfsup.objectives import MLM
from selfsup.snapshots import SNAPSHOTS, is_scheduled, log_steps, saved_weights
from selfsup.train import train


def plain_log_steps(total: int) -> set[int]:
    """The schedule as the issue words it: step 0, every 2^k and 3 * 2^k, and the last step."""
    steps = {0, total}
    for k in range(64):
        steps |= {s for s in (2**k, 3 * 2**k) if s <= total}
    return steps


@pytest.mark.parametrize("total", [0, 1, 2, 5, 12, 100, 1000, 2600])
def test_log_schedule_is_the_one_asked(total):
    assert log_steps(total) == sorted(plain_log_steps(total))
    assert [s for s in range(total + 1) if is_scheduled("log", s, total)] == log_steps(total)
    assert not any(is_scheduled("none", s, total) for s in range(total + 1))


def test_log_schedule_is_two_a_doubling():
    steps = log_steps(2**20)
    assert steps[:10] == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24]
    for k in range(1, 20):  # one step strictly between each power of two and the next
        assert [s for s in steps if 2**k < s < 2 ** (k + 1)] == [3 * 2 ** (k - 1)]


def tiny_mlm(seed: int = 0) -> MLM:
    cfg = BertConfig(vocab_size=48, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_len=16,
                     dropout=0.0, attn_dropout=0.0)  # fmt: skip
    torch.manual_seed(seed)
    return MLM(build_encoder(cfg), 48)


class Batches(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(k)
        ids = torch.randint(5, 48, (4, 12), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, 3] = ids[:, 3]
        ids[:, 3] = 4
        return {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), LABELS: labels}


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_schedule_survives_retention_and_resume(tmp_path):
    cfg = TrainConfig(steps=13, lr=1e-3, warmup_steps=2, save_every=2, save_schedule="log",
                      eval_every=0, log_every=1)  # fmt: skip
    quiet = lambda s: None  # noqa: E731
    train(tiny_mlm(), Batches(), cfg, tmp_path / "a", progress=False, log=quiet)
    train(tiny_mlm(), Batches(), cfg, tmp_path / "b", progress=False, log=quiet, stop_after=7)
    train(tiny_mlm(seed=1), Batches(), cfg, tmp_path / "b", resume=True, progress=False,
          log=quiet)  # fmt: skip
    for run in ("a", "b"):
        snaps = sorted((tmp_path / run / SNAPSHOTS).glob("step_*"))
        assert [int(p.name[5:]) for p in snaps] == [0, 1, 2, 3, 4, 6, 8, 12, 13]
        assert all(verify_manifest(p) for p in snaps)  # each with a manifest that matches
        # the retention kept two checkpoints (12 and 13); the snapshots below them stay
        ckpts = sorted(p.name for p in (tmp_path / run / "checkpoints").glob("step_*"))
        assert ckpts == ["step_00000012", "step_00000013"]
    for a, b in zip(sorted((tmp_path / "a" / SNAPSHOTS).glob("step_*")),
                    sorted((tmp_path / "b" / SNAPSHOTS).glob("step_*")), strict=True):  # fmt: skip
        wa, wb = weights(a / "model.safetensors"), weights(b / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), a.name  # resumed == uninterrupted
    w0, w1 = (weights(tmp_path / "a" / SNAPSHOTS / f"step_0000000{i}" / "model.safetensors")
              for i in (0, 1))  # fmt: skip
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)  # a step changed the weights
    final = weights(tmp_path / "a" / "model.safetensors")
    last = weights(tmp_path / "a" / SNAPSHOTS / "step_00000013" / "model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_saved_weights_lists_every_step_once_and_skips_damaged(tmp_path):
    cfg = TrainConfig(steps=6, lr=1e-3, warmup_steps=0, save_every=5, save_schedule="log",
                      eval_every=0, log_every=1)  # fmt: skip
    train(tiny_mlm(), Batches(), cfg, tmp_path, progress=False, log=lambda s: None)
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 6}))
    found = saved_weights(tmp_path, log=lambda s: None)
    assert [(w.step, w.kind) for w in found] == [
        (0, "snapshot"), (1, "snapshot"), (2, "snapshot"), (3, "snapshot"), (4, "snapshot"),
        (5, "checkpoint"), (6, "snapshot"),
    ]  # fmt: skip
    damaged = tmp_path / SNAPSHOTS / "step_00000003" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    said: list[str] = []
    assert 3 not in [w.step for w in saved_weights(tmp_path, log=said.append)]
    assert len(said) == 1 and "step_00000003" in said[0] and "manifest" in said[0]


def test_pretrain_cli_save_schedule(tmp_path, capsys, isolated_cache):
    from conftest import synthetic_texts

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(synthetic_texts(200)))
    base = ["pretrain", "--data", corpus, "--vocab-size", 200, "--max-len", 32, "--batch-size",
            8, "--steps", 5, "--save-every", 0, "--eval-every", 0, "--no-progress", "--threads",
            1]  # fmt: skip
    code, _, err = cli(capsys, *base, "--save-schedule", "log", "--out", tmp_path / "run")
    assert code == 0, err
    snaps = sorted(p.name for p in (tmp_path / "run" / SNAPSHOTS).iterdir())
    assert snaps == [f"step_0000000{i}" for i in (0, 1, 2, 3, 4, 5)]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["save_schedule"] == "log"
    code, _, err = cli(capsys, *base, "--save-schedule", "cubic", "--out", tmp_path / "bad")
    assert_clean_error(code, err, tmp_path / "bad", "cubic")
    code, _, err = cli(capsys, *base, "--set", "train.save_schedule=cubic", "--out",
                       tmp_path / "bad")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "bad", "unknown save schedule 'cubic'")
