"""One readable training loop: AdamW, warm-up + decay, accumulation, clipping, optional bf16,
held-out evaluation, atomic checkpoints and exact resume; the same loop on W processes under
torchrun (DDP or FSDP2, see selfsup/distributed.py), equal to one process up to rounding.

The loop knows objectives only through their contract (selfsup/objectives/base.py): a forward
returns sums, `counts(batch)` says what they are sums over, `work` which count is throughput.
Per optimizer step it adds the counts of all micro-batches and ranks (one all-reduce) and trains
on each sum over its global count, so any split of one global batch trains the same."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from selfsup import distributed
from selfsup.checkpoint import load_checkpoint, save_checkpoint, save_final
from selfsup.config import TrainConfig
from selfsup.device import resolve_precision
from selfsup.errors import ConfigError
from selfsup.objectives.base import normalise, total_loss
from selfsup.snapshots import is_scheduled, save_snapshot

# learned tokens and position tables of image encoders (ViT's [CLS], iGPT's positions): no
# weight decay, as timm and the ViT recipes exempt them
NO_DECAY_NAMES = ("cls_token", "positions")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings' LayerNorm (BERT's AdamW recipe), nor on
    NO_DECAY_NAMES."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "norm" in name or name.endswith(NO_DECAY_NAMES)
        (no_decay if exempt else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (the default), or LARS (arXiv:1708.03888), the large-batch optimizer of several
    image methods, with biases and norms excluded from its weight decay and its layer-wise
    adaptation."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lars":
        from selfsup.lars import LARS

        groups[1]["lars_exclude"] = True
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    # fused: one kernel per parameter group, ~3x faster than the foreach path on CPU
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then linear or cosine decay to `min_ratio` at `total` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def add_counts(total: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v
    return total


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[dict], bf16: bool = False) -> dict:
    """Held-out metrics: every value the objective returns, summed over the batches and divided
    by its count over the batches, and `loss`, the sum of the loss terms' means."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for batch in batches:
        add_counts(counts, model.counts(batch))
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        add_counts(sums, {k: float(v) for k, v in out.items()})
    model.train(was_training)
    if not batches:
        return {}
    means = normalise(sums, counts, model.terms)
    return {"loss": total_loss(means, model.loss_terms), **means}


def train(
    model: nn.Module,
    batches: torch.utils.data.Dataset,
    cfg: TrainConfig,
    run_dir: Path,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    resume: bool = False,
    num_workers: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `model` (an objective, see objectives/base.py) on `batches[k]`, k = micro-batch
    index. Returns the final held-out metrics (or the last training metrics).

    Under torchrun (a process group of W ranks), `batches[k]` is still the global micro-batch:
    each rank trains on its share of it, and only rank 0 writes logs and checkpoints."""
    world, main = distributed.world_size(), distributed.is_main()
    if not main:
        log = distributed.quiet
    objective = model  # the module that declares terms and counts (unwrapped)
    device = next(model.parameters()).device
    accum = cfg.grad_accum
    if objective.batch_level and accum > 1:
        raise ConfigError(
            f"{type(objective).__name__} is a batch-level objective: --grad-accum would train "
            "on a different batch; use a larger --batch-size"
        )
    found = load_checkpoint(run_dir, log) if resume else None
    precision = cfg.precision  # concrete from the recipe; "auto" is resolved here otherwise
    if found is not None:
        ckpt, weights, state = found
        try:
            model.load_state_dict(weights)  # whole, then sharded
        except RuntimeError as e:  # missing/unexpected keys or shapes: another model
            first = str(e).splitlines()[0]
            raise ConfigError(f"the weights of {ckpt} do not fit this model: {first}") from None
        precision = state.get("precision", precision)  # the run's own
    bf16 = resolve_precision(precision, device)[0] == "bf16"  # bf16 without the hardware: error
    model = distributed.wrap(model, cfg.fsdp)  # under torchrun: DDP or FSDP2; else as it is
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule, cfg.min_lr_ratio),
    )
    start = 0
    if found is not None:
        try:
            distributed.load_optimizer_state(model, optimizer, state["optimizer"])
        except (ValueError, KeyError) as e:  # another parameter layout (an older selfsup?)
            raise ConfigError(
                f"the optimizer state of {ckpt} does not match this model ({e}); the trainer "
                "state must be rebuilt: train again without --resume"
            ) from None
        scheduler.load_state_dict(state["scheduler"])
        distributed.set_rng_state(state, cfg.seed, state["step"])  # dropout's
        start = state["step"]
        log(f"resumed from {ckpt.name} (step {start})")
    else:
        distributed.seed_ranks(cfg.seed, 0)  # several ranks: a dropout stream for each
    if resume and main:
        _truncate_metrics(run_dir / "metrics.jsonl", start)  # no checkpoint: start over
    if start >= cfg.steps:
        log(f"already trained for {start} steps")
        if not (run_dir / "model.safetensors").exists():  # the final write had failed
            _save_final(run_dir, model)
        return {}

    if distributed.active():
        batches = distributed.RankShard(batches, distributed.rank(), world)
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start * accum, cfg.steps * accum),
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        generator=torch.Generator(),  # keep the global RNG (dropout) untouched by the loader
    )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if start == 0 and is_scheduled(cfg.save_schedule, 0, cfg.steps):
        _snapshot(run_dir, 0, model)  # the initialisation
    writer = _tensorboard(run_dir) if main else None
    metrics_file = open(run_dir / "metrics.jsonl", "a") if main else None
    bar = _progress(progress, start, cfg.steps) if main else _Silent()
    model.train()
    data_iter = iter(loader)
    last: dict = {}
    work, work_seen, t0, data_time = objective.work, 0.0, time.perf_counter(), 0.0
    done = saved = start
    updating = False
    try:
        for step in range(start, cfg.steps):
            td = time.perf_counter()
            micro = [next(data_iter) for _ in range(accum)]
            counts: dict[str, float] = {}
            for batch in micro:
                add_counts(counts, objective.counts(batch))
            micro = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in micro]
            data_time += time.perf_counter() - td
            work_seen += counts[work]
            # One all-reduce: the global batch's counts. Gradients are averaged over the W ranks
            # (DDP, FSDP2), so each rank's sums are scaled by W / global count.
            counts = distributed.all_reduce_sums(counts)
            scale = {k: world / n if n else 0.0 for k, n in counts.items()}
            sums: dict[str, float] = {}
            for i, batch in enumerate(micro):
                with distributed.grad_sync(model, last=i == accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        out = model(batch)
                    loss = sum(out[k] * scale[objective.terms[k]] for k in objective.loss_terms)
                    loss.backward()
                add_counts(sums, {k: v.detach() for k, v in out.items()})
            means = normalise(distributed.all_reduce_sums(sums), counts, objective.terms)
            means = {"loss": total_loss(means, objective.loss_terms), **means}
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.clip_norm if cfg.clip_norm > 0 else float("inf")
            )
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
                grad_norm = grad_norm.full_tensor()
            lr = scheduler.get_last_lr()[0]  # the rate this step used (step() moves to the next)
            updating = True  # an interrupt from here to `done` would leave a torn state
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            objective.after_step()
            done, updating = step + 1, False
            if not math.isfinite(means["loss"]):
                raise FloatingPointError(f"loss became {means['loss']} at step {done}")

            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - t0
                rate = distributed.all_reduce_sums({"w": work_seen})["w"] / elapsed  # all ranks'
                row = {
                    "step": done,
                    **{k: round(v, 5) for k, v in means.items()},
                    "lr": lr,
                    "grad_norm": round(float(grad_norm), 4),
                    f"{work}_per_s": round(rate, 1),
                    "data_share": round(data_time / elapsed, 4),
                    "elapsed_s": round(elapsed, 2),  # since this process started training
                }  # fmt: skip  (rank 0's share)
                if main:
                    _write(metrics_file, writer, row, "train")
                bar.set_postfix(loss=f"{means['loss']:.3f}", **{f"{work}_s": f"{rate:.0f}"})
                last = row
            bar.update(1)

            if eval_fn and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                # Every rank evaluates all held-out batches (at most heldout_max sequences): FSDP2
                # needs every rank in each forward, and the others would only wait for rank 0.
                ev = eval_fn(distributed.unwrap(model))
                row = {"step": done, **{f"eval_{k}": round(v, 5) for k, v in ev.items()}}
                if main:
                    _write(metrics_file, writer, row, "eval")
                bar.write(_fmt(row))
                last = {**last, **row}
                for line in getattr(objective, "warnings", lambda _: [])(ev):
                    log(f"warning at step {done}: {line}")

            if is_scheduled(cfg.save_schedule, done, cfg.steps):
                _snapshot(run_dir, done, model)
            if cfg.save_every and (done % cfg.save_every == 0) and done < cfg.steps:
                _save(run_dir, done, model, optimizer, scheduler, bf16)
                saved = done
            if stop_after is not None and done >= stop_after:
                break
    except KeyboardInterrupt:  # Ctrl-C: keep the steps done (one process: no collectives)
        if done > saved and not updating and not distributed.active():
            _save(run_dir, done, model, optimizer, scheduler, bf16)
            log(f"interrupted: saved a checkpoint at step {done}")
        raise
    bar.close()
    if metrics_file:
        metrics_file.close()
    if writer:
        writer.close()
    if done == cfg.steps:
        if cfg.save_every:
            _save(run_dir, done, model, optimizer, scheduler, bf16)
        _save_final(run_dir, model)
    return last


def _save(run_dir, step, model, optimizer, scheduler, bf16: bool) -> None:
    """Every rank takes part (FSDP2 gathers the shards); rank 0 writes; the others wait."""
    weights = distributed.model_state(model)
    state = {
        "step": step,
        "precision": "bf16" if bf16 else "fp32",
        "optimizer": distributed.optimizer_state(model, optimizer),
        "scheduler": scheduler.state_dict(),
        **distributed.rng_state(),
    }
    _on_main(lambda: save_checkpoint(run_dir, step, weights, state))


def _snapshot(run_dir: Path, step: int, model: nn.Module) -> None:
    """The weights at a scheduled step (selfsup/snapshots.py), kept whatever the retention."""
    weights = distributed.model_state(model)
    _on_main(lambda: save_snapshot(run_dir, step, weights))


def _save_final(run_dir: Path, model: nn.Module) -> None:
    weights = distributed.model_state(model)  # gathered whole on rank 0
    _on_main(lambda: save_final(run_dir, weights))


def _on_main(write: Callable[[], object]) -> None:
    """Rank 0 writes; every rank learns whether it could (a full disk must stop all of them,
    not leave the others waiting at a barrier) and raises rank 0's error."""
    error = None
    if distributed.is_main():
        try:
            write()
        except (OSError, ConfigError) as e:
            error = e
    failed = distributed.all_reduce_sums({"failed": error is not None})["failed"]
    if error is not None:
        raise error
    if failed:
        raise OSError("process 0 could not write to the run folder (its log says why)")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows past the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    rows = [r for r in path.read_text().splitlines() if r.strip()]
    keep = [r for r in rows if json.loads(r).get("step", 0) <= step]
    path.write_text("".join(r + "\n" for r in keep))


def _write(f, writer, row: dict, prefix: str) -> None:
    f.write(json.dumps(row) + "\n")
    f.flush()
    if writer:
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float):
                writer.add_scalar(f"{prefix}/{k}", v, row["step"])


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v}" for k, v in row.items())


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


class _Silent:  # ranks other than 0
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def write(self, s):
        pass

    def close(self):
        pass


class _NoBar(_Silent):
    """No terminal: the eval lines, and a plain `step n/N  loss=...` line every `every` seconds
    (a log file or CI shows the run is alive)."""

    def __init__(self, start: int = 0, total: int = 0, every: float = 30.0):
        self.n, self.total, self.every = start, total, every
        self.shown, self.postfix = time.perf_counter(), {}

    def update(self, n):
        self.n += n
        if time.perf_counter() - self.shown >= self.every:
            self.shown = time.perf_counter()
            extra = "".join(f"  {k}={v}" for k, v in self.postfix.items())
            print(f"step {self.n}/{self.total}{extra}", flush=True)

    def set_postfix(self, **kw):
        self.postfix = kw

    def write(self, s):
        print(s, flush=True)


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return _NoBar(start, total)
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0)
