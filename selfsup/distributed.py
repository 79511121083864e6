"""Several processes, one run: torchrun's environment, DDP or FSDP2, and each rank's share.

`torchrun --nproc_per_node N -m selfsup pretrain ...` starts N copies of the command; each finds
RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT) in its environment and joins one process
group: gloo on CPU, NCCL on GPUs (one GPU per process, chosen by LOCAL_RANK). Without those
variables (a plain `python -m selfsup`) no process group exists and every helper here is the
one-process identity; under torchrun the distributed path runs even with one process.

W ranks reproduce one process training on the same global batch:
- data: global micro-batch k is a pure function of (seed, k), whatever W is; rank r trains on
  its share of it (`RankShard`: the dataset's own `shard`, else its rows [r B/W, (r+1) B/W)).
  So a checkpoint's step is its data position at any W, and a run can resume with another
  number of processes.
- loss: objectives return sums and their counts; the loop all-reduces the counts once per step
  (`all_reduce_sums`) and divides by them, so ranks holding different numbers of scored items
  (tokens, frames, pairs) still train on the global mean. Batch-level objectives gather what
  they need with `gather_with_grad`.
- checkpoints: gathered whole (FSDP2 included) and written once, by rank 0, in the one-process
  format.
- other work: independent jobs (the probe fits of an evaluation, batches to encode) are shared
  round robin by `run_jobs`, their results gathered on every rank in job order.
- dropout: each rank draws its own masks (the presets use no dropout); with dropout, W ranks
  are not bitwise one process, and resuming at another W keeps the data order but not the masks.
"""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.device import resolve_device
from selfsup.errors import ConfigError
from selfsup.seeds import Stream, seed_for

# setup() calls not yet matched by a teardown(), counted from the one that started the group:
# a command may hold the group over several recipe calls that set up and tear down themselves.
_DEPTH = 0
Result = TypeVar("Result")


def setup(device: str = "auto") -> torch.device:
    """Join torchrun's process group (once) and return this process's device: its GPU by
    LOCAL_RANK when there are GPUs, else the CPU. Without torchrun: `device` (auto: the GPU
    when there is one), no group. Calls nest: the group ends with the teardown() matching the
    setup() that started it."""
    global _DEPTH
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return resolve_device(device)
    device = torch.device("cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local_rank} of this machine has no GPU of its own "
                f"({torch.cuda.device_count()} visible): start at most one process per GPU, or "
                "set CUDA_VISIBLE_DEVICES= to train on the CPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # CPU tensors (metrics, RNG states) go through gloo even when the GPUs use NCCL.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        _DEPTH = 1
    elif _DEPTH:  # inside a setup() of ours: the outer call keeps the group
        _DEPTH += 1
    return device


def teardown() -> None:
    """Leave what the matching setup() joined (nothing for a group setup() did not start)."""
    global _DEPTH
    if _DEPTH == 0:
        return
    _DEPTH -= 1
    if _DEPTH == 0 and dist.is_initialized():
        # A DDP wrapper sits in reference cycles (its hooks hold it): collect it while its
        # process group exists, or its gloo threads may abort the process at exit
        # ("terminate called without an active exception").
        gc.collect()
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process belongs to a process group (torchrun), even a group of one."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def quiet(_: str) -> None:
    """The log of ranks other than 0: only rank 0 prints."""


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (training the tokenizer, filling the data cache); the others
    wait for it, then run it too and find the cache filled."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Each key's sum over the ranks (every rank passes the same keys), in float64."""
    if not active():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t, strict=True)}


def run_jobs(jobs: Sequence[Callable[[], Result]]) -> list[Result]:
    """Every job's result, in job order, on every rank: independent jobs (probe fits, batches
    to encode) shared across the ranks, job i run by rank i % W, the results gathered with
    all_gather_object (so they must pickle; give CPU tensors and plain values, not models).
    Round robin: jobs of similar cost, or in order of cost, share out evenly. A failed job's
    exception (the first in job order) is raised on every rank, so none is left waiting for the
    others. One process: [job() for job in jobs]."""
    if world_size() == 1:
        return [job() for job in jobs]
    mine: dict[int, tuple[bool, object]] = {}  # job: (done, its result or a portable error)
    error = None  # this rank's failed job's own exception, its traceback intact
    for i in range(rank(), len(jobs), world_size()):
        try:
            mine[i] = (True, jobs[i]())
        except Exception as e:
            mine[i], error = (False, _portable(e, i)), e
            break  # this rank's later jobs would be thrown away
    ranks: list = [None] * world_size()
    dist.all_gather_object(ranks, mine)
    results = {i: r for part in ranks for i, r in part.items()}
    failed = [i for i, (done, _) in results.items() if not done]
    if failed:
        first = min(failed)
        raise error if first in mine else results[first][1]
    return [results[i][1] for i in range(len(jobs))]


def _portable(e: Exception, job: int) -> Exception:
    """`e` if the other ranks can unpickle it, else a RuntimeError saying what it was."""
    try:
        return pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeError(f"job {job} failed in process {rank()}: {type(e).__name__}: {e}")


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` concatenated along dim 0, in rank order, with the gradient flowing back
    to each rank's own part (for contrastive distractors and batch statistics across ranks).
    One process: x."""
    if not active() or world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def whole_batch(x: torch.Tensor, training: bool) -> torch.Tensor:
    """x (B, ...) of this rank's rows -> the whole batch's, gradients flowing back: training
    under torchrun holds a rank's share of each batch (evaluation, and one process, all of it),
    so batch-level objectives gather what their loss and monitors need."""
    if training and world_size() > 1:
        return gather_with_grad(x)
    return x


# --------------------------------------------------------------------------------------------
# Data: each rank's rows of the global batch
# --------------------------------------------------------------------------------------------


class RankShard(torch.utils.data.Dataset):
    """Rank r's share of global micro-batch k.

    A dataset with a `shard(k, rank, world_size)` method builds the share itself: so does the
    text pipeline, which masks the whole batch padded, cuts out the share and, with packing,
    packs only those examples into rows (packed rows hold several examples: they cannot be cut).
    Otherwise every tensor of the batch must have the same first dimension B (the examples),
    and rank r takes rows [r B/W, (r+1) B/W) of each."""

    def __init__(self, batches: torch.utils.data.Dataset, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict:
        if self.world_size == 1:
            return self.batches[k]
        if hasattr(self.batches, "shard"):
            return self.batches.shard(k, self.rank, self.world_size)
        batch = self.batches[k]
        sizes = {v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim}
        if len(sizes) != 1:
            raise NotImplementedError(
                f"the batch's tensors have first dimensions {sorted(sizes)}, so it cannot be cut "
                "by rows: give the dataset a shard(k, rank, world_size) method"
            )
        (B,) = sizes
        if B % self.world_size:
            raise ConfigError(f"batch size {B} is not divisible by the {self.world_size} processes")
        n = B // self.world_size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        return {
            key: v[rows] if isinstance(v, torch.Tensor) and v.ndim else v
            for key, v in batch.items()
        }


# --------------------------------------------------------------------------------------------
# The model: DDP or FSDP2, and the global-mean loss
# --------------------------------------------------------------------------------------------


def wrap(model: nn.Module, fsdp: bool = False) -> nn.Module:
    """DDP (every rank holds the whole model) or, with `fsdp`, FSDP2 (each Transformer block and
    the rest shard their parameters over the ranks). No process group: the model as it is.

    A tied decoder takes the input embedding at call time, not a second parameter, so the tie
    holds under both: with FSDP2 the embedding belongs to the root group, which is gathered for
    the whole root forward, decoder included."""
    if not active():
        return model
    if not fsdp:
        device = next(model.parameters()).device
        # An objective that leaves parameters unused (says so): DDP must then search the graph
        # for them every step (it fails without, and warns when there are none).
        # (static_graph=True would find them once, but fails with no_sync accumulation.)
        unused = getattr(model, "unused_parameters", False)
        return DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    from torch.distributed.fsdp import fully_shard  # torch >= 2.6

    from selfsup.encoders.transformer import Transformer

    for module in model.modules():
        if isinstance(module, Transformer):
            for block in module.blocks:
                fully_shard(block)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The objective itself: DDP's inner module; an FSDP2 model is its own module."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_fsdp(model: nn.Module) -> bool:
    # By name: DTensor's module moved between torch versions, and one process never needs it.
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def grad_sync(model: nn.Module, last: bool):
    """With DDP and gradient accumulation, all-reduce only on the last micro-batch (the sum of
    the local gradients is reduced once; averaging is linear, so the result is the same)."""
    if last or not isinstance(model, DistributedDataParallel):
        return nullcontext()
    return model.no_sync()


# --------------------------------------------------------------------------------------------
# Checkpoints: whole, in the one-process format, at any world size
# --------------------------------------------------------------------------------------------


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict with the objective's own names (on rank 0; FSDP2 gathers it to the
    CPU there and returns {} elsewhere). Every rank must call it."""
    if not is_fsdp(model):
        return unwrap(model).state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state in torch's own format (parameters numbered in group order), whole,
    on rank 0: the same at any world size, with DDP or FSDP2. Every rank must call it."""
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_optimizer_state_dict(model, optimizer, options=options)  # keyed by names
    if not is_main():
        return {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    return {
        "state": {index[name]: s for name, s in full["state"].items()},
        "param_groups": [
            {**g, "params": [index[name] for name in g["params"]]} for g in full["param_groups"]
        ],
    }


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what `optimizer_state` saved (at any world size); FSDP2 keeps each rank's shard."""
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, optimizer)
    full = {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, full, options=options)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's numbering (groups in order, then params in order)."""
    name_of = {id(p): name for name, p in unwrap(model).named_parameters()}
    return [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]


def rng_state() -> dict:
    """The CPU RNG state as one process saves it (rank 0's) and, with several ranks, every
    rank's CPU and CUDA states, so a resume at the same world size keeps each rank's dropout."""
    state = {"rng": torch.get_rng_state()}
    if active():
        mine = (torch.get_rng_state(), torch.cuda.get_rng_state() if _cuda() else None)
        ranks: list = [None] * world_size()
        dist.all_gather_object(ranks, mine)
        state["rng_ranks"] = ranks
    return state


def set_rng_state(state: dict, seed: int, step: int) -> None:
    """Restore `rng_state`'s: one process, rank 0's state (as before there were ranks); several,
    each rank its own when the world size is the one saved, else rank 0's state for all and a
    stream of their own for the other ranks."""
    ranks = state.get("rng_ranks")
    if active() and ranks and len(ranks) == world_size():
        cpu, cuda = ranks[rank()]
        torch.set_rng_state(cpu)
        if cuda is not None and _cuda():
            torch.cuda.set_rng_state(cuda)
        return
    torch.set_rng_state(state["rng"])
    seed_ranks(seed, step)


def seed_ranks(seed: int, step: int) -> None:
    """Ranks other than 0 draw dropout from their own stream (rank 0 keeps the one it has)."""
    if rank() > 0:
        torch.manual_seed(seed_for(seed, Stream.DROPOUT, rank(), step))


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()
