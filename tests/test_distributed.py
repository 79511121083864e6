"""Several processes (torchrun, gloo on CPU) train like one process on the same global batch:
the same per-step losses up to float rounding, with DDP and with FSDP2, padded or packed, and a
checkpoint written by two processes resumes in one."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import pair_data
from safetensors.torch import load_file

from selfsup.checkpoint import read_trainer_state
from selfsup.data.packing import unpack
from selfsup.data.text import PretrainBatches
from selfsup.distributed import RankShard
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE
from selfsup.models import run_config
from selfsup.pretraining import prepare_data

# wall-clock figures: never equal between runs
TIMING_KEYS = {"tokens_per_s", "targets_per_s", "frames_per_s", "images_per_s", "data_share",
               "elapsed_s"}  # fmt: skip
STEPS, BATCH = 6, 8

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend"
)


# --------------------------------------------------------------------------------------------
# Each rank's rows of a batch
# --------------------------------------------------------------------------------------------


def _batch(B: int = 6, T: int = 5) -> dict:
    ids = torch.arange(B * T).reshape(B, T)
    return {"input_ids": ids, "labels": -ids, "pair_labels": torch.arange(B), "T": torch.tensor(T)}


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_shards_tile_the_global_batch(world):
    full = _batch()
    shards = [RankShard([full], r, world)[0] for r in range(world)]
    for key in ("input_ids", "labels", "pair_labels"):
        assert torch.equal(torch.cat([s[key] for s in shards]), full[key])
        assert all(len(s[key]) == 6 // world for s in shards)
    assert all(s["T"] is full["T"] for s in shards)  # a number, not per example: unchanged


def test_rank_shard_refuses_what_it_cannot_split():
    with pytest.raises(ConfigError, match="not divisible by the 4 processes"):
        RankShard([_batch(B=6)], 0, 4)[0]
    # packed rows hold several examples: rows (6) and examples (9) differ, so no cut by rows
    packed = {**_batch(), "seq_ids": torch.zeros(6, 5), "cls_index": torch.arange(9)}
    with pytest.raises(NotImplementedError, match="shard"):
        RankShard([packed], 0, 2)[0]


@pytest.fixture(scope="module")
def tiny_batches(tmp_path_factory, texts, tiny_tokenizer):
    """make(pack) -> PretrainBatches of 16 sentence pairs (NSP) from the synthetic corpus, of
    up to 24 tokens in rows of 64, so that packing has examples to pack."""
    folder = tmp_path_factory.mktemp("shards")
    builder, masker, chunk_ids = pair_data(folder, texts[:200], tiny_tokenizer, 24)
    return lambda pack: PretrainBatches(builder, masker, chunk_ids, 16, seed=5, pack=pack)


PER_TOKEN = ("input_ids", "token_type_ids", "labels", "position_ids")


def _examples(batch: dict) -> list[tuple[list, int]]:
    """Each example of a padded or a packed batch, in order: its (n, 4) per-token values (input
    ids after masking, token types, labels, positions) and its pair label."""
    B, T = batch["input_ids"].shape
    batch = {"position_ids": torch.arange(T).expand(B, T), **batch}  # padded rows start at 0
    per_token = torch.stack([batch[key] for key in PER_TOKEN], -1)  # (B, T, 4)
    if "cls_index" in batch:
        tokens = unpack(per_token, batch["seq_ids"], batch["cls_index"])
    else:
        tokens = [per_token[i, :n] for i, n in enumerate(batch["attention_mask"].sum(1).tolist())]
    return [(t.tolist(), int(lab)) for t, lab in zip(tokens, batch["pair_labels"], strict=True)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_packed_rank_shards_hold_the_global_examples_and_masks(tiny_batches, world):
    """Rank r packs examples [r B/W, (r+1) B/W) of the global batch, masked as one process masks
    them (padded or packed: the masks do not depend on the layout)."""
    padded, packed = tiny_batches(pack=False), tiny_batches(pack=True)
    for k in range(3):
        shards = [RankShard(packed, r, world)[k] for r in range(world)]
        assert all(len(s["cls_index"]) == 16 // world for s in shards)
        assert [e for s in shards for e in _examples(s)] == _examples(padded[k])
        assert any(len(s["input_ids"]) < 16 // world for s in shards)  # they did pack
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        RankShard(packed, 0, 3)[0]


# --------------------------------------------------------------------------------------------
# Two processes == one process
# --------------------------------------------------------------------------------------------

WORDS = "Anna Boris Clara opened painted found the door a red boat at dawn slowly".split()


def _write_corpus(path: Path) -> Path:
    rng = random.Random(0)
    # Documents of 1 to 12 sentences: their last chunks are short, so rows have room to pack.
    docs = [
        " ".join(" ".join(rng.choice(WORDS) for _ in range(6)) + "." for _ in range(n))
        for n in [rng.randint(1, 12) for _ in range(50)]
    ]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def _selfsup(processes: int, *args: str) -> str:
    """`selfsup ARGS` in one process, or under torchrun in `processes`; returns stdout."""
    launcher = [sys.executable, "-m", "selfsup"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(processes), "-m", "selfsup"]  # fmt: skip
    # gloo on the CPU, also where there are GPUs (NCCL needs one GPU per process)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFSUP_CACHE": "/nonexistent",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    done = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _pretrain_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "--data", str(folder / "corpus.jsonl"), "--objective", "mlm+nsp",
        "--max-len", "32", "--vocab-size", "200", "--batch-size", str(BATCH), "--grad-accum",
        "2", "--steps", str(STEPS), "--save-every", "3", "--eval-every", "3", "--seed", "3",
        "--set", "train.log_every=1", "--cache-dir", str(folder / "cache"), "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def _pretrain(folder: Path, out: Path, processes: int, *extra: str) -> str:
    return _selfsup(processes, *_pretrain_args(folder, out, *extra))


def rows(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    """Equal up to float rounding (values are logged with 5 decimals, grad_norm with 4)."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra.keys() - TIMING_KEYS:
            tol = 1.5e-4 if k == "grad_norm" else 1.5e-5
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=tol), (ra["step"], k)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distributed")
    _write_corpus(folder / "corpus.jsonl")
    return folder


@pytest.fixture(scope="module")
def one(folder) -> Path:
    """The reference: one process (it also fills the tokenizer and data caches)."""
    _pretrain(folder, folder / "one", 1)
    return folder / "one"


@pytest.fixture(scope="module")
def ddp(folder, one) -> Path:
    _pretrain(folder, folder / "ddp", 2)
    return folder / "ddp"


def test_ranks_hold_unequal_masked_tokens(one):
    """What makes the comparison a test: without weighting each rank's loss by its share of the
    masked tokens, two processes would train differently from one."""
    cfg = run_config(one)
    cfg.data.tokenizer = str(one / "tokenizer")
    batches = prepare_data(cfg, log=lambda _: None).batches
    halves = [
        [int((batches[k]["labels"][half] != IGNORE).sum()) for half in (slice(0, 4), slice(4, 8))]
        for k in range(2 * STEPS)
    ]
    assert sum(a != b for a, b in halves) >= STEPS, halves


def test_two_processes_ddp_train_like_one(one, ddp):
    assert_same_rows(rows(one), rows(ddp))  # train and eval rows, written once
    a, b = load_file(str(one / "model.safetensors")), load_file(str(ddp / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    trainer = read_trainer_state(ddp / "checkpoints" / "step_00000006")
    reference = read_trainer_state(one / "checkpoints" / "step_00000006")
    assert trainer["optimizer"]["param_groups"] == reference["optimizer"]["param_groups"]
    assert trainer["optimizer"]["state"].keys() == reference["optimizer"]["state"].keys()


@pytest.mark.slow
def test_two_processes_fsdp_train_like_one(folder, one):
    fsdp = folder / "fsdp"
    _pretrain(folder, fsdp, 2, "--fsdp")
    assert_same_rows(rows(one), rows(fsdp))
    # Gathered whole: the same names and shapes as one process's checkpoint.
    a = load_file(str(one / "checkpoints" / "step_00000003" / "model.safetensors"))
    b = load_file(str(fsdp / "checkpoints" / "step_00000003" / "model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    state, reference = (
        read_trainer_state(run / "checkpoints" / "step_00000003") for run in (fsdp, one)
    )
    assert state["optimizer"]["param_groups"] == reference["optimizer"]["param_groups"]
    assert state["optimizer"]["state"].keys() == reference["optimizer"]["state"].keys()


def test_two_process_checkpoint_resumes_in_one_process(folder, one, ddp):
    """As if the two-process run had been stopped after step 3: one process takes over."""
    run = folder / "ddp_resumed"
    shutil.copytree(ddp, run)
    (run / "checkpoints" / "LATEST").write_text("step_00000003")
    (run / "model.safetensors").unlink()
    out = _selfsup(1, "pretrain", "--resume", str(run), "--no-progress")
    assert "resumed from step_00000003" in out
    assert_same_rows(rows(one), rows(run))
    a, b = load_file(str(one / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


@pytest.fixture(scope="module")
def one_packed(folder, one) -> Path:
    _pretrain(folder, folder / "one_packed", 1, "--pack")
    return folder / "one_packed"


def test_packed_one_process_trains_like_padded(one, one_packed):
    """Packing changes the layout, never the examples, their masks or what each token sees."""
    assert_same_rows(rows(one), rows(one_packed))
    cfg = run_config(one_packed)
    cfg.data.tokenizer = str(one_packed / "tokenizer")
    batches = prepare_data(cfg, log=lambda _: None).batches
    shards = [RankShard(batches, r, 2)[k] for k in range(2 * STEPS) for r in range(2)]
    assert sum(len(s["input_ids"]) < BATCH // 2 for s in shards) >= STEPS  # the ranks do pack


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_packed_train_like_one(folder, one_packed, sharding):
    run = folder / f"{sharding}_packed"
    out = _pretrain(folder, run, 2, "--pack", *(["--fsdp"] if sharding == "fsdp" else []))
    assert "2 processes" in out
    assert_same_rows(rows(one_packed), rows(run))


@pytest.mark.parametrize("objective", ["bart", "t5"])
def test_two_processes_train_an_encoder_decoder_like_one(folder, objective):
    """A per-target-token loss over uneven targets per rank (BART's whole texts, T5's spans):
    two DDP processes with accumulation train like one process."""
    extra = ["--objective", objective, "--set", "model.dim=32", "--set", "model.n_heads=2",
             "--set", "model.ffn_dim=64", "--set", "data.heldout_every=10"]  # fmt: skip
    one_run, two_run = folder / f"{objective}_one", folder / f"{objective}_two"
    _pretrain(folder, one_run, 1, *extra)
    out = _pretrain(folder, two_run, 2, *extra)
    assert "2 processes" in out
    assert any("eval_s2s_loss" in r for r in rows(one_run))
    assert_same_rows(rows(one_run), rows(two_run))
    a, b = (
        load_file(str(one_run / "model.safetensors")),
        load_file(str(two_run / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_machines_train_like_one(folder, one):
    """Two torchrun launches meeting through the c10d rendezvous, as two machines would (here on
    one host, one process each): the same run as one process."""
    run = folder / "two_nodes"
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint, "--rdzv_id", "selfsup-test"]  # fmt: skip
    args = _pretrain_args(folder, run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *rdzv, "-m", "selfsup", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [node.communicate(timeout=180) for node in nodes]
    for node, (_, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert any("2 processes" in out for out, _ in outs)
    assert_same_rows(rows(one), rows(run))


# --------------------------------------------------------------------------------------------
# Audio: the same loop, the same contract
# --------------------------------------------------------------------------------------------


def test_audio_objective_two_processes_equal_one(tmp_path):
    """TERA on frames (per-utterance masking actions, random frames drawn from the whole batch,
    frequency bands): two processes train on the same global batch as one."""
    from helpers import write_speech

    clips = write_speech(tmp_path / "clips", n=24)
    args = [
        "pretrain", "--objective", "tera", "--data", str(clips), "--batch-size", str(BATCH),
        "--steps", "4", "--save-every", "2", "--eval-every", "2", "--seed", "3",
        "--set", "train.log_every=1", "--set", "data.max_frames=60", "--set",
        "data.heldout_every=6", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    _selfsup(1, *args, "--out", str(tmp_path / "one"))
    _selfsup(2, *args, "--out", str(tmp_path / "two"))
    assert_same_rows(rows(tmp_path / "one"), rows(tmp_path / "two"))
