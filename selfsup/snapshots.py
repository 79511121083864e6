"""Weights saved on a schedule of steps, for studying what a run learned when (BERT embryology,
Chiang et al., arXiv:2010.02480): `selfsup pretrain --save-schedule log`.

A schedule is a pure function of (step, total steps), so a resumed run saves the same steps as
an uninterrupted one. `log` saves steps 0 (the initialisation), 1, 2, 3, 4, 6, 8, 12, 16, 24, ...
(2^k and 3 x 2^k: two a doubling) and the last step.

A snapshot is the model's weights alone, no trainer state (it is for reading, not resuming):

    snapshots/step_XXXXXXXX/model.safetensors
    snapshots/step_XXXXXXXX/manifest.json      size and sha256 of model.safetensors, written last

written into a hidden temporary folder and renamed into place (selfsup.checkpoint's manifest and
atomic writes). Snapshots live beside checkpoints/, never in it, so the checkpoints' retention
(the two newest) never removes one.

`saved_weights` lists every saved set of weights of a run: its snapshots, its checkpoints and
its final weights, one per step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.checkpoint import (
    MODEL,
    DamagedFileError,
    _fsync_dir,
    _step_of,
    save_safetensors,
    temp_folder,
    verify_manifest,
    write_manifest,
)

SNAPSHOTS = "snapshots"


def log_steps(total: int) -> list[int]:
    """0, then 2^k and 3 x 2^k up to `total`, then `total`, in order."""
    steps, k = {0, total}, 1
    while k <= total:
        steps.update((k, 3 * k))
        k *= 2
    return sorted(s for s in steps if s <= total)


SCHEDULES: dict[str, Callable[[int], list[int]]] = {"none": lambda total: [], "log": log_steps}


def is_scheduled(schedule: str, step: int, total: int) -> bool:
    """Whether `schedule` saves the weights after `step` of `total` steps (0: the initial)."""
    return step in SCHEDULES[schedule](total)


def save_snapshot(run_dir: Path, step: int, weights: dict[str, torch.Tensor]) -> Path:
    """Write snapshots/step_N (weights + manifest) atomically; an existing one (written by an
    attempt this run resumed from behind) is replaced."""
    root = Path(run_dir) / SNAPSHOTS
    name = f"step_{step:08d}"
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(root, name)
    try:
        save_safetensors(weights, tmp / MODEL)
        write_manifest(tmp, [MODEL])  # fsyncs the weights, then itself
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return final


@dataclass(frozen=True)
class SavedWeights:
    step: int
    path: Path  # the model.safetensors file
    kind: str  # "snapshot", "checkpoint" or "final"


def saved_weights(run_dir: Path, log: Callable[[str], None] = print) -> list[SavedWeights]:
    """Every saved set of weights of a run, one per step, by step: snapshots first, then
    checkpoints, then the final weights (at the step its summary.json records). A folder whose
    files do not match its manifest is left out, with a warning to `log`."""
    run_dir = Path(run_dir)
    found: dict[int, SavedWeights] = {}
    for kind, sub in (("snapshot", SNAPSHOTS), ("checkpoint", "checkpoints")):
        for folder in sorted((run_dir / sub).glob("step_*")):
            step = _step_of(folder)
            if step is None or not folder.is_dir() or step in found:
                continue
            try:
                verify_manifest(folder)
                if not (folder / MODEL).is_file():
                    raise DamagedFileError(folder / MODEL, "is missing")
            except DamagedFileError as e:
                log(f"warning: skipping {folder.relative_to(run_dir)}: {e}")
                continue
            found[step] = SavedWeights(step, folder / MODEL, kind)
    step = _final_step(run_dir)
    if step is not None and step not in found and (run_dir / MODEL).is_file():
        try:
            verify_manifest(run_dir)
            found[step] = SavedWeights(step, run_dir / MODEL, "final")
        except DamagedFileError as e:
            log(f"warning: skipping the final weights: {e}")
    return [found[s] for s in sorted(found)]


def _final_step(run_dir: Path) -> int | None:
    """The step of the run's final weights: the steps of the run that wrote summary.json last
    (a run resumed for more steps rewrites model.safetensors only when it finishes)."""
    try:
        steps = json.loads((run_dir / "summary.json").read_text()).get("steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None
