"""The training loop: it can overfit one batch, its schedule and weight-decay groups are BERT's,
and a run killed with SIGKILL resumes to bitwise the same weights and metrics."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import selfsup.pretraining
from selfsup.checkpoint import save_checkpoint
from selfsup.config import TrainConfig
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.keys import IGNORE
from selfsup.objectives import MLM
from selfsup.objectives.base import batch_loss
from selfsup.presets import preset
from selfsup.pretraining import prepare_data, pretrain
from selfsup.train import evaluate, lr_factor, param_groups, train

# wall-clock figures: never equal between runs
TIMING_KEYS = {"tokens_per_s", "data_share", "elapsed_s"}

NAMES = ["Anna", "Boris", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas"]
VERBS = ["opened", "painted", "found", "carried", "watched", "cleaned", "sold", "described"]
THINGS = ["the door", "a red boat", "the old map", "a letter", "the garden gate", "two lamps"]
WHEN = ["at dawn", "after lunch", "in the rain", "before the train left", "on Sunday", "slowly"]


def write_corpus(folder: Path, n_docs: int = 30, n_sents: int = 12) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(n_docs):
        sents = [
            f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(WHEN)}."
            for _ in range(n_sents)
        ]
        rows.append(json.dumps({"text": " ".join(sents)}) + "\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(rows))
    return folder / "corpus.jsonl"


def tiny_mlm(vocab_size: int = 64, seed: int = 0) -> MLM:
    cfg = BertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=2, ffn_dim=128,
                      max_len=32, dropout=0.0, attn_dropout=0.0)  # fmt: skip
    torch.manual_seed(seed)
    return MLM(build_encoder(cfg), vocab_size)


def random_batch(vocab_size: int, seed: int, B: int = 8, T: int = 24) -> dict[str, torch.Tensor]:
    """Random tokens with ~25% of the positions masked ([MASK] = 4) and labelled."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    ids[:, 0] = 2  # [CLS]
    chosen = torch.rand(B, T, generator=g) < 0.25
    chosen[:, 0] = False
    chosen[:, 1] = True  # at least one target per row
    return {
        "input_ids": torch.where(chosen, torch.full_like(ids, 4), ids),
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.where(chosen, ids, torch.full_like(ids, IGNORE)),
    }


class SeededBatches(torch.utils.data.Dataset):
    """Batch k is a function of k alone (`fixed`: the same batch every time)."""

    def __init__(self, vocab_size: int, fixed: bool = False):
        self.vocab_size, self.fixed = vocab_size, fixed

    def __len__(self) -> int:
        return 1 if self.fixed else 1000

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return random_batch(self.vocab_size, 0 if self.fixed else k)


def rows(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def quiet(_: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 cores, maybe shared: one thread is the fastest and the steadiest
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# The loop learns
# --------------------------------------------------------------------------------------------


def test_overfits_one_batch(tmp_path):
    V = 64
    model, batch = tiny_mlm(V), random_batch(V, seed=0)
    with torch.no_grad():
        start = float(batch_loss(model, batch))
    assert abs(start - math.log(V)) < 0.5  # BERT's init predicts ~uniformly
    cfg = TrainConfig(steps=150, lr=3e-3, warmup_steps=10, schedule="constant", weight_decay=0.0,
                      save_every=0, eval_every=0, log_every=10)  # fmt: skip
    train(model, SeededBatches(V, fixed=True), cfg, tmp_path, progress=False, log=quiet)
    with torch.no_grad():
        end = float(batch_loss(model, batch))
    assert end < 1.0, f"loss went from {start:.2f} to {end:.2f}"
    losses = [r["loss"] for r in rows(tmp_path)]
    assert len(losses) == 15 and losses[-1] < losses[0] / 3
    assert (tmp_path / "model.safetensors").exists()  # the final weights, even without checkpoints


def test_objective_warnings_are_logged_after_every_evaluation(tmp_path):
    """The loop hands each evaluation's metrics to the objective's `warnings` and logs what it
    returns (a collapse monitor's lines), one line each, with the step."""
    seen = []

    class Watched(MLM):
        def warnings(self, metrics):
            seen.append(metrics)
            return [f"mlm accuracy {metrics['mlm_acc']:.3f}"] if len(seen) == 2 else []

    torch.manual_seed(0)
    model = Watched(tiny_mlm().encoder, 64)
    held = [random_batch(64, seed=99)]
    cfg = TrainConfig(steps=3, lr=1e-3, warmup_steps=0, save_every=0, eval_every=1, log_every=1)
    logs: list[str] = []
    train(model, SeededBatches(64), cfg, tmp_path, lambda m: evaluate(m, held), progress=False,
          log=logs.append)  # fmt: skip
    assert len(seen) == 3 and all({"loss", "mlm_acc", "mlm_loss"} <= set(m) for m in seen)
    evals = [r for r in rows(tmp_path) if "eval_loss" in r]
    assert [m["loss"] for m in seen] == pytest.approx([r["eval_loss"] for r in evals], abs=1e-5)
    assert logs == [f"warning at step 2: mlm accuracy {seen[1]['mlm_acc']:.3f}"]


# --------------------------------------------------------------------------------------------
# Schedule and weight decay
# --------------------------------------------------------------------------------------------


def test_lr_factor_warmup_then_decay():
    f = lr_factor
    # Linear warm-up over 10 steps: step s trains at (s + 1) / 10 of the peak.
    assert [f(s, 10, 110, "linear") for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    # Then linear decay to 0 at step 110, or to min_ratio.
    assert [f(s, 10, 110, "linear") for s in (10, 35, 60, 110)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.0]
    )
    assert f(60, 10, 110, "linear", min_ratio=0.1) == pytest.approx(0.55)
    # Cosine: half at the midpoint, and (1 + cos(pi/4)) / 2 a quarter of the way.
    assert f(60, 10, 110, "cosine") == pytest.approx(0.5)
    assert f(35, 10, 110, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert f(110, 10, 110, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert [f(s, 10, 110, "constant") for s in (10, 60, 109)] == [1.0, 1.0, 1.0]
    assert f(0, 0, 100, "linear") == 1.0 and f(500, 10, 110, "linear") == 0.0  # no warm-up; past


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_loop_follows_the_schedule(schedule, tmp_path):
    cfg = TrainConfig(steps=12, lr=1e-3, warmup_steps=4, schedule=schedule, save_every=0,
                      eval_every=0, log_every=1)  # fmt: skip
    train(tiny_mlm(), SeededBatches(64), cfg, tmp_path, progress=False, log=quiet)
    logged = [r["lr"] for r in rows(tmp_path)]
    # The row of step k reports the rate that step k used.
    expected = [1e-3 * lr_factor(k - 1, 4, 12, schedule) for k in range(1, 13)]
    assert logged == pytest.approx(expected)
    assert logged[0] == pytest.approx(2.5e-4) and max(logged) == pytest.approx(1e-3)
    assert logged[-1] > 0  # the last step still learns; the rate reaches 0 after it


def test_no_weight_decay_on_biases_and_norms():
    model = tiny_mlm()
    groups = param_groups(model, weight_decay=0.01)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert not decay & no_decay
    # every trained parameter, and not the frozen ones (MLM alone: the pooler)
    assert decay | no_decay == {id(p) for p in model.parameters() if p.requires_grad}
    assert not {id(p) for p in model.encoder.pooler.parameters()} & (decay | no_decay)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, nn.LayerNorm) or name == "bias":
                assert id(p) in no_decay, (type(module).__name__, name)
            elif isinstance(module, nn.Linear | nn.Embedding):
                assert id(p) in decay, (type(module).__name__, name)
    # The MLM head's output bias (a bare parameter) is a bias too.
    assert id(model.mlm_head.bias) in no_decay
    assert id(model.encoder.embed.tokens.weight) in decay


# --------------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------------


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in metrics]


def test_stop_and_resume_in_process(tmp_path):
    """train(stop_after=k) then resume == one uninterrupted run, with gradient accumulation."""
    cfg = TrainConfig(steps=6, lr=1e-3, warmup_steps=2, grad_accum=2, save_every=3,
                      eval_every=0, log_every=1)  # fmt: skip
    data = SeededBatches(64)
    train(tiny_mlm(), data, cfg, tmp_path / "a", progress=False, log=quiet)
    train(tiny_mlm(), data, cfg, tmp_path / "b", progress=False, log=quiet, stop_after=4)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    assert [r["step"] for r in rows(tmp_path / "b")] == [1, 2, 3, 4]
    logs: list[str] = []
    model = tiny_mlm(seed=1)  # a different init: everything must come from the checkpoint
    train(model, data, cfg, tmp_path / "b", resume=True, progress=False, log=logs.append)
    assert logs == ["resumed from step_00000003 (step 3)"]
    assert_same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")
    assert without_timing(rows(tmp_path / "a")) == without_timing(rows(tmp_path / "b"))


def test_resume_without_checkpoint_starts_over(tmp_path):
    cfg = TrainConfig(steps=5, lr=1e-3, warmup_steps=0, save_every=0, eval_every=0, log_every=1)
    data = SeededBatches(64)
    train(tiny_mlm(), data, cfg, tmp_path, progress=False, log=quiet, stop_after=3)
    train(tiny_mlm(), data, cfg, tmp_path, resume=True, progress=False, log=quiet)
    assert [r["step"] for r in rows(tmp_path)] == [1, 2, 3, 4, 5]  # no duplicated rows


def _pretrain_cmd(corpus: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "selfsup", "pretrain", "--data", str(corpus), "--objective",
        "mlm+nsp", "--max-len", "32", "--vocab-size", "200", "--batch-size", "16", "--steps",
        "60", "--save-every", "10", "--eval-every", "10", "--seed", "3", "--no-progress",
        "--cache-dir", str(out.parent / "cache"), "--out", str(out),
    ]  # fmt: skip


def _latest_step(run: Path) -> int:
    try:
        return int((run / "checkpoints" / "LATEST").read_text().strip().removeprefix("step_"))
    except (FileNotFoundError, ValueError):
        return 0


def test_sigkill_and_resume_is_bitwise_exact(tmp_path):
    corpus = write_corpus(tmp_path / "data")
    a, b = tmp_path / "a", tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFSUP_CACHE": str(tmp_path / "unused")}
    run = dict(env=env, capture_output=True, text=True, timeout=300)
    done = subprocess.run(_pretrain_cmd(corpus, a), **run)
    assert done.returncode == 0, done.stderr

    # The same command (the tokenizer and tokens now come from the cache), killed mid-run.
    proc = subprocess.Popen(_pretrain_cmd(corpus, b), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while proc.poll() is None and _latest_step(b) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(b)
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill: {proc.stderr.read()}"
    assert 20 <= killed_at < 60 and not (b / "model.safetensors").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "selfsup", "pretrain", "--resume", str(b), "--no-progress"], **run
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step_{killed_at:08d}" in resumed.stdout
    assert_same_weights(a / "model.safetensors", b / "model.safetensors")
    assert_same_weights(
        a / "checkpoints" / "step_00000060" / "model.safetensors",
        b / "checkpoints" / "step_00000060" / "model.safetensors",
    )
    rows_a, rows_b = without_timing(rows(a)), without_timing(rows(b))
    assert [r["step"] for r in rows_a] == sorted(2 * list(range(10, 61, 10)))  # train, eval
    assert rows_a == rows_b
    summary_a, summary_b = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert {k: v for k, v in summary_a.items() if k != "minutes"} == {
        k: v for k, v in summary_b.items() if k != "minutes"
    }


# --------------------------------------------------------------------------------------------
# The pretraining recipe around the loop
# --------------------------------------------------------------------------------------------


def _config(corpus: Path, **data):
    cfg = preset("tiny")
    cfg.data.paths = [str(corpus)]
    cfg.data.cache_dir = str(corpus.parent / "cache")
    cfg.data.max_len, cfg.model.vocab_size = 32, 200
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = 2, 8, 0
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_heldout_batches_cover_each_chunk_once(tmp_path):
    cfg = _config(write_corpus(tmp_path / "data", n_docs=80), heldout_every=2)
    data = prepare_data(cfg, log=quiet)
    n_held = data.stats["heldout_sequences"]
    sizes = [len(b["input_ids"]) for b in data.eval_batches]
    assert n_held > 64  # more than one batch
    assert sum(sizes) == n_held and sizes[:-1] == [64] * (len(sizes) - 1)


def test_failed_start_leaves_no_run(tmp_path, monkeypatch):
    cfg, out = _config(write_corpus(tmp_path / "data")), tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(selfsup.pretraining, "train", broken)
    with pytest.raises(RuntimeError, match="boom"):
        pretrain(cfg, out, progress=False, log=quiet)
    assert not out.exists()

    def interrupted_after_a_checkpoint(model, batches, train_cfg, run_dir, *args, **kwargs):
        save_checkpoint(run_dir, 1, model, {"step": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(selfsup.pretraining, "train", interrupted_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, out, progress=False, log=quiet)
    assert (out / "config.json").exists()  # resumable: kept


def test_resume_keeps_the_precision_the_run_trained_in(tmp_path, monkeypatch):
    """The precision is part of the saved state: a run started in bf16 continues in bf16."""
    from selfsup.checkpoint import read_trainer_state

    # Any CPU: the flag check is what refuses bf16 (autocast itself runs everywhere).
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    V = 64
    cfg = TrainConfig(
        steps=2, lr=1e-3, warmup_steps=0, save_every=1, eval_every=0, precision="bf16"
    )
    train(tiny_mlm(V), SeededBatches(V), cfg, tmp_path, progress=False, log=quiet)
    assert read_trainer_state(tmp_path / "checkpoints" / "step_00000002")["precision"] == "bf16"
    seen = []
    model = tiny_mlm(V)
    model.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    cfg = replace(cfg, steps=3, precision="fp32")
    train(model, SeededBatches(V), cfg, tmp_path, resume=True, progress=False, log=quiet)
    assert seen == [True]  # step 3 only, in bf16 autocast
    assert read_trainer_state(tmp_path / "checkpoints" / "step_00000003")["precision"] == "bf16"


def test_resume_into_another_model_is_one_line(tmp_path):
    """A checkpoint of MLM+NSP resumed as MLM alone (other weights, another parameter layout):
    a ConfigError naming the checkpoint, not a traceback from load_state_dict."""
    from selfsup.errors import ConfigError
    from selfsup.objectives import MLMWithNSP

    V = 64
    cfg = TrainConfig(steps=2, lr=1e-3, warmup_steps=0, save_every=1, eval_every=0)
    torch.manual_seed(0)
    enc = tiny_mlm(V).encoder
    batches = [{**b, "pair_labels": torch.zeros(len(b["labels"]), dtype=torch.long)}
               for b in (random_batch(V, k) for k in range(2))]  # fmt: skip
    train(MLMWithNSP(enc, V), batches, cfg, tmp_path, progress=False, log=quiet)
    with pytest.raises(ConfigError, match="step_00000002 do not fit this model"):
        train(tiny_mlm(V), SeededBatches(V), replace(cfg, steps=3), tmp_path, resume=True,
              progress=False, log=quiet)  # fmt: skip


def test_same_command_same_run_with_fresh_caches(tmp_path, monkeypatch):
    """Two runs of one config on one corpus, each with its own empty cache (as on two
    machines): the same tokenizer files and bitwise the same weights."""
    corpus = write_corpus(tmp_path / "corpus")
    runs = []
    for name in ("a", "b"):
        cfg = preset("tiny")
        cfg.data.paths, cfg.data.max_len, cfg.model.vocab_size = [str(corpus)], 32, 200
        cfg.data.cache_dir = str(tmp_path / f"cache-{name}")
        cfg.train.steps, cfg.train.batch_size, cfg.train.eval_every = 5, 8, 0
        cfg.train.save_every, cfg.train.warmup_steps = 0, 1
        pretrain(cfg, tmp_path / name, progress=False, log=quiet)
        runs.append(tmp_path / name)
    a, b = runs
    for f in ("vocab.txt", "tokenizer.json"):
        assert (a / "tokenizer" / f).read_bytes() == (b / "tokenizer" / f).read_bytes()
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
