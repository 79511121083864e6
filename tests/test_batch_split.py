"""One global batch trains the same however it is split: over accumulation steps (in-process)
and over processes (2 gloo ranks started here), for MLM, MLM+NSP, a supervised objective, an
objective about no tokens at all, and a batch-level contrastive one (which refuses accumulation).
None of these objectives is known to train.py or distributed.py."""

from __future__ import annotations

import gc
import json
import math
import socket
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from toys import ToyContrastive, V, VectorBatches, VectorRegression, text_batch

from selfsup.config import TrainConfig
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.errors import ConfigError
from selfsup.objectives import OBJECTIVES
from selfsup.objectives.supervised import SequenceClassification
from selfsup.train import train

B, T, STEPS = 8, 12, 3
CASES = ["mlm", "mlm+nsp", "classify", "regression", "contrastive"]
PER_ITEM = ["mlm", "mlm+nsp", "classify", "regression"]


class TextBatches(torch.utils.data.Dataset):
    def __init__(self, case: str):
        self.case = case

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        b = text_batch(k)
        if self.case == "classify":  # a sequence-classification batch: labels per example
            b = {**b, "labels": b["class_labels"]}
        del b["class_labels"]
        return b


class Merged(torch.utils.data.Dataset):
    """Batch k = micro-batches 2k and 2k+1 of `inner`, concatenated: one batch of 2B."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner) // 2

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        a, b = self.inner[2 * k], self.inner[2 * k + 1]
        return {key: torch.cat([a[key], b[key]]) for key in a}


def make(case: str):
    """(objective, batches) for a case, with the same initial weights every time."""
    torch.manual_seed(0)
    if case in ("regression", "contrastive"):
        return (VectorRegression() if case == "regression" else ToyContrastive()), VectorBatches(
            case
        )
    cfg = BertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=2, ffn_dim=64, max_len=T,
                     dropout=0.0, attn_dropout=0.0)  # fmt: skip
    if case == "classify":
        return SequenceClassification(build_encoder(cfg), 3, dropout=0.0), TextBatches(case)
    return OBJECTIVES[case](build_encoder(cfg), V), TextBatches(case)


def config(**kw) -> TrainConfig:
    base = dict(steps=STEPS, lr=3e-3, warmup_steps=0, schedule="constant", save_every=0,
                eval_every=0, log_every=1, weight_decay=0.01)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def quiet(_: str) -> None:
    pass


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(r).items() if not k.endswith("_per_s") and
             k not in ("data_share", "elapsed_s")} for r in lines]  # fmt: skip


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    assert [r.keys() for r in ra] == [r.keys() for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for k in x:
            assert y[k] == pytest.approx(x[k], rel=1e-4, abs=2e-5), (x["step"], k)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4, msg=k)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_micro_batches_hold_unequal_counts():
    """What makes the comparisons tests: the two halves of a batch hold different numbers of
    masked tokens, so weighting micro-batches (or ranks) equally would train differently."""
    model, data = make("mlm")
    halves = [
        (model.counts(data[2 * k])["masked"], model.counts(data[2 * k + 1])["masked"])
        for k in range(STEPS)
    ]
    assert sum(a != b for a, b in halves) >= 2, halves


@pytest.mark.parametrize("case", PER_ITEM)
def test_grad_accum_2_equals_one_batch_of_twice_the_size(case, tmp_path):
    model, data = make(case)
    train(model, data, config(grad_accum=2), tmp_path / "accum", log=quiet, progress=False)
    model, data = make(case)
    train(model, Merged(data), config(), tmp_path / "big", log=quiet, progress=False)
    assert_same_run(tmp_path / "accum", tmp_path / "big")


def test_batch_level_objective_refuses_grad_accum(tmp_path):
    model, data = make("contrastive")
    with pytest.raises(ConfigError, match="batch-level"):
        train(model, data, config(grad_accum=2), tmp_path, log=quiet, progress=False)


def test_objective_about_no_tokens_learns(tmp_path):
    model, data = make("regression")
    train(model, data, config(steps=60, lr=1e-2), tmp_path, log=quiet, progress=False)
    first, last = rows(tmp_path)[0], rows(tmp_path)[-1]
    assert math.isfinite(last["loss"]) and last["loss"] < 0.5 * first["loss"]
    assert {"sq_loss", "abs_err", "examples_per_s"} <= set(json.loads(
        (tmp_path / "metrics.jsonl").read_text().splitlines()[-1]))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Two gloo processes == one process
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        for case in CASES:
            model, data = make(case)
            train(model, data, config(), Path(root) / case, log=quiet, progress=False)
    finally:
        gc.collect()  # DDP wrappers left in reference cycles go before their process group
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two")
    for case in CASES:
        (root / case).mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), str(root)), nprocs=2, start_method="spawn")
    return root


@pytest.mark.parametrize("case", CASES)
def test_two_processes_train_like_one(case, two_process_runs, tmp_path):
    model, data = make(case)
    train(model, data, config(), tmp_path, log=quiet, progress=False)
    assert_same_run(tmp_path, two_process_runs / case)


class Counting(VectorRegression):
    """Counts the after-step calls and the optimizer steps it has seen."""

    def __init__(self):
        super().__init__()
        self.calls, self.weights = 0, []

    def after_step(self) -> None:
        self.calls += 1
        self.weights.append(self.net[0].weight.detach().clone())


def test_after_step_hook_runs_once_per_optimizer_step_after_the_update(tmp_path):
    """A moving-average target's place: once per optimizer step (not per micro-batch), after the
    weights moved."""
    torch.manual_seed(0)
    model = Counting()
    first = model.net[0].weight.detach().clone()
    train(model, VectorBatches("regression"), config(grad_accum=2, steps=4), tmp_path,
          log=quiet, progress=False)  # fmt: skip
    assert model.calls == 4
    assert not torch.equal(model.weights[0], first)  # called after the first update
    assert all(not torch.equal(a, b) for a, b in pairwise(model.weights))
