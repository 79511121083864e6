"""Batched prediction without gradients, for every command that runs a model forward only:
fine-tuned predictions (finetune.predict), embeddings (embed) and fill-mask.

    for key, out in predict_batches(model, ((key, batch), ...), forward):
        ...

The model is put in eval mode (and back in its mode afterwards), each batch goes to the model's
device and runs under inference mode (and under bf16 autocast with `bf16`, its floating outputs
returned in fp32), outputs come back in input order. On CPU, `workers` > 1 runs that many batches
at once, each in a Python thread with one intra-op thread: PyTorch releases the GIL inside its
ops, and the small element-wise ops of short sequences then pay no thread synchronisation
(embed's speed path).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (no dropout) inside the block, in its previous mode after it."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def default_workers(device: torch.device) -> int:
    """One worker per intra-op thread on CPU; one on GPU (the device is the parallel part)."""
    return torch.get_num_threads() if device.type == "cpu" else 1


@contextmanager
def batch_workers(workers: int) -> Iterator[Callable]:
    """A `map(fn, items)` that yields results in order: the builtin with one worker; else
    `workers` threads, each running its items with one intra-op thread (the process's thread
    count is restored afterwards), with at most 2 * workers items in flight."""
    if workers <= 1:
        yield map
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # read by each new worker thread when it runs its first op
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="selfsup-predict") as pool:

            def ordered_map(fn: Callable, items: Iterable) -> Iterator:
                pending: deque = deque()
                for item in items:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()

            yield ordered_map
    finally:
        torch.set_num_threads(threads)


def to_device(batch: Any, device: torch.device) -> Any:
    """A tensor, or each tensor of a dict, on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _fp32(out: Any) -> Any:
    """Floating tensors (alone, or the values of a dict) in fp32; anything else as it is."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _fp32(v) for k, v in out.items()}
    return out


def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[Any, Any]],
    forward: Callable | None = None,
    workers: int = 1,
    bf16: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """(key, forward(batch)) for each (key, batch) of `batches`, in order. `batches` is read
    lazily; a batch is a tensor or a dict of tensors, moved to the model's device. `forward`
    defaults to `model.predict`. `model` is in eval mode until the last output is taken. `bf16`
    runs each forward under bf16 autocast and returns its floating tensors in fp32."""
    device = next(model.parameters()).device
    forward = forward or model.predict

    def run(item: tuple[Any, Any]) -> tuple[Any, Any]:
        key, batch = item
        # per call: inference mode and autocast are thread-local
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = forward(to_device(batch, device))
        return key, _fp32(out) if bf16 else out

    with eval_mode(model), batch_workers(workers) as run_all:
        yield from run_all(run, batches)
