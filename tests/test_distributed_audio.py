"""Speech evaluation and audio fine-tuning under torchrun (gloo on the CPU) equal one process:
`selfsup superb` shares the hidden-state extraction and the probe fits across the ranks and
writes the same superb.json; `selfsup finetune --task audio-classify` trains data-parallel on
the same global batches, to the same accuracies and weights. And `run_jobs`, the helper that
shares independent jobs across the ranks.

The clips of helpers.write_speech are named {i % 4}_s{i % 3}_{i}.wav, their pitch set by i % 3:
the middle field is the learnable label."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import cli, mockingjay_run, write_speech
from safetensors.torch import load_file
from test_distributed import _selfsup, assert_same_rows, rows

from selfsup.distributed import run_jobs
from selfsup.errors import ConfigError
from selfsup.finetune_audio import ClipBatches
from selfsup.keys import FEATURES, IGNORE, LABELS, PADDING_MASK

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend"
)

PATTERN = "{digit}_{label}_{index}"  # finetune: the label s0 s1 s2, one pitch each


# --------------------------------------------------------------------------------------------
# run_jobs: independent jobs across the ranks, results in order
# --------------------------------------------------------------------------------------------


def test_run_jobs_in_one_process_runs_each_job_once_in_order():
    calls = []

    def job(i):
        calls.append(i)
        return {"square": i * i}

    assert run_jobs([partial(job, i) for i in range(5)]) == [{"square": i * i} for i in range(5)]
    assert calls == [0, 1, 2, 3, 4]
    assert run_jobs([]) == []


def test_run_jobs_in_one_process_raises_the_jobs_error():
    def fail():
        raise ConfigError("no examples")

    with pytest.raises(ConfigError, match="no examples"):
        run_jobs([lambda: 1, fail, lambda: 3])


RANKS_SCRIPT = """
import json, sys
from functools import partial
from selfsup import distributed
from selfsup.errors import ConfigError

def job(i):
    return {"i": i, "rank": distributed.rank()}

def fail(i):
    if i in (4, 5):
        raise ConfigError(f"job {i} failed")
    return i

distributed.setup("cpu")
out = {"jobs": distributed.run_jobs([partial(job, i) for i in range(7)]),
       "few": distributed.run_jobs([partial(job, i) for i in range(2)]),
       "none": distributed.run_jobs([])}
try:
    distributed.run_jobs([partial(fail, i) for i in range(7)])
except ConfigError as e:
    out["error"] = str(e)
out["world"], rank = distributed.world_size(), distributed.rank()
distributed.setup("cpu")  # nested, as a command holding the group over a recipe call
distributed.teardown()
out["kept_by_the_outer_setup"] = distributed.active()
distributed.teardown()
out["ended"] = not distributed.active()
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
    json.dump(out, f)
"""


def test_run_jobs_shares_jobs_round_robin_and_every_rank_gets_every_result(tmp_path):
    """3 ranks, 7 jobs: job i runs on rank i % 3 and every rank returns all 7 results in order;
    fewer jobs than ranks and no jobs work; a failed job (the first in job order: 4, on rank 1)
    raises its error on every rank instead of leaving the others waiting. A nested setup() and
    teardown() leave the group to the outer pair."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "3", str(script), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert all(o == outs[0] for o in outs)  # the same results on every rank
    assert outs[0]["world"] == 3
    assert outs[0]["jobs"] == [{"i": i, "rank": i % 3} for i in range(7)]
    assert outs[0]["few"] == [{"i": i, "rank": i} for i in range(2)]
    assert outs[0]["none"] == []
    assert outs[0]["error"] == "job 4 failed"
    assert outs[0]["kept_by_the_outer_setup"] and outs[0]["ended"]


# --------------------------------------------------------------------------------------------
# ClipBatches: rank r's clips of global batch k
# --------------------------------------------------------------------------------------------


def _clips(n: int = 11) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((int(rng.integers(3, 30)), 4), dtype=np.float32)
              for _ in range(n)]  # fmt: skip
    return frames, [i % 3 for i in range(n)]


def _clip_set(batch: dict) -> list[tuple]:
    """The (label, frames) of each clip of a batch, padding cut off, labelled ones only."""
    lengths = (~batch[PADDING_MASK]).sum(1).tolist()
    return sorted(
        (int(lab), batch[FEATURES][i, :n].numpy().tobytes())
        for i, (lab, n) in enumerate(zip(batch[LABELS], lengths, strict=True))
        if lab != IGNORE
    )


@pytest.mark.parametrize("world", [1, 2, 3])
def test_clip_shards_tile_the_global_batch(world):
    """11 clips in batches of 4: the last batch of each epoch holds 3, so with 2 and 3 ranks the
    shares are uneven; together they hold exactly the global batch's clips."""
    frames, labels = _clips()
    batches = ClipBatches(frames, labels, 4, seed=1)
    for k in range(2 * batches.per_epoch):
        shards = [batches.shard(k, r, world) for r in range(world)]
        assert sorted(c for s in shards for c in _clip_set(s)) == _clip_set(batches[k])
        sizes = [len(_clip_set(s)) for s in shards]
        assert max(sizes) - min(sizes) <= 1


def test_a_rank_without_a_clip_gets_one_that_counts_for_nothing():
    """A last batch of 1 clip with 2 ranks: rank 1 still runs the step (DDP waits for it) on a
    stand-in clip whose label is IGNORE: no loss, no examples counted."""
    frames, labels = _clips(5)
    batches = ClipBatches(frames, labels, 4, seed=1)
    last = next(k for k in range(2) if len(batches[k][LABELS]) == 1)
    stand_in = batches.shard(last, 1, 2)
    assert stand_in[LABELS].tolist() == [IGNORE] and _clip_set(stand_in) == []
    assert _clip_set(batches.shard(last, 0, 2)) == _clip_set(batches[last])


# --------------------------------------------------------------------------------------------
# Two processes == one process, end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    # 16 kHz only: no resampling, whose imports would add seconds to every process
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=40, rates=(16000,))


@pytest.fixture(scope="module")
def run(speech):
    """A 2-step Mockingjay run over the clips: a speech upstream of several layers."""
    return mockingjay_run(speech, speech.parent / "run")


def _without_seconds(report: dict) -> dict:
    """A superb.json without its wall-clock figures."""
    tasks = {t: {k: v for k, v in r.items() if k != "seconds"} for t, r in report["tasks"].items()}
    return {**{k: v for k, v in report.items() if k != "seconds"}, "tasks": tasks}


def _one_and_two(capsys, tmp_path, args: list[str], name: str) -> dict[int, str]:
    """stdout of `selfsup ARGS --out tmp/NAME1 --cache-dir ...` here, in this process (its
    imports are warm), and of the same under torchrun in 2 processes (into NAME2)."""

    def own(n: int) -> list[str]:
        return ["--out", str(tmp_path / f"{name}{n}"), "--cache-dir", str(tmp_path / f"cache{n}")]

    code, out, err = cli(capsys, *args, *own(1))
    assert code == 0, err
    return {1: out, 2: _selfsup(2, *args, *own(2))}


def test_superb_two_processes_equal_one(speech, run, tmp_path, capsys, one_thread):
    """The classify task (3 learning rates on dev, then 2 seeds refitted on train + dev): two
    processes encode half the batches each and fit half the probes each, and write the same
    superb.json as one process, to the last digit; only rank 0 prints and writes."""
    args = ["superb", str(run), "--task", "classify", "--data", str(speech), "--pattern",
            "{label}_{speaker}_{index}", "--label-column", "speaker", "--seeds", "2", "--lrs",
            "1e-3", "1e-2", "1e-1", "--epochs", "4", "--json"]  # fmt: skip
    outs = _one_and_two(capsys, tmp_path, args, "p")
    one, two = (json.loads((tmp_path / f"p{n}" / "superb.json").read_text()) for n in (1, 2))
    r = one["tasks"]["classify"]
    assert len(r["values"]) == 2 and len(r["dev"]) == 3 and len(r["layer_weights"]) > 1
    assert _without_seconds(two) == _without_seconds(one)
    assert (tmp_path / "p2" / "layer_weights.png").stat().st_size > 1000
    printed = [json.loads(line) for line in outs[2].splitlines() if line.startswith("{")]
    assert len(printed) == 1 and outs[2].count("upstream 1/1") == 1  # rank 0 alone prints
    assert _without_seconds(printed[0][str(run)]) == _without_seconds(one)


def test_audio_finetune_two_processes_equal_one(speech, run, tmp_path, capsys, one_thread):
    """31 training clips in batches of 5: shares of 3 and 2 clips, and a last batch of one clip
    per epoch, which leaves rank 1 a stand-in. Two processes train on the same global batches
    as one: the same losses, dev and test accuracies, and weights."""
    args = ["finetune", "--task", "audio-classify", "--data", str(speech), "--init", str(run),
            "--pattern", PATTERN, "--epochs", "2", "--batch-size", "5", "--train-limit", "31",
            "--lr", "1e-3", "--dropout", "0", "--seed", "1"]  # fmt: skip
    outs = _one_and_two(capsys, tmp_path, args, "ft")
    one, two = tmp_path / "ft1", tmp_path / "ft2"
    a, b = (json.loads((ft / "results.json").read_text()) for ft in (one, two))
    assert a["n_train"] == 31 and len(a["history"]) == 2
    for key in ("dev", "test", "history", "kept_step", "n_train"):
        assert b[key] == a[key], key
    assert_same_rows(rows(one), rows(two))
    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5) for k in wa)
    ca, cb = (json.loads((ft / "config.json").read_text()) for ft in (one, two))
    for key in ("labels", "model", "features", "feature_stats", "max_frames", "split"):
        assert cb[key] == ca[key], key
    printed = [line for line in outs[2].splitlines() if line.startswith("{")]
    assert len(printed) == 1 and json.loads(printed[0])["test"] == a["test"]  # rank 0 alone
    assert "distributed: 2 processes" in outs[2]
