"""Checkpoints: the trainer state round-trips exactly through safetensors + JSON (no pickle), an
old pickled trainer.pt never runs code, manifests catch truncated or changed files and resume
falls back to the previous complete checkpoint, a full disk ends in one line with nothing half
written left behind, and files follow the user's umask."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import shlex
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import selfsup.checkpoint as checkpoint
from selfsup.checkpoint import (
    MANIFEST,
    atomic_write_text,
    flatten_state,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
    save_final,
    unflatten_state,
    verify_manifest,
    write_manifest,
)
from selfsup.errors import ConfigError


def assert_same(a, b, where: str = "state") -> None:
    """Equal values of the same types all the way down; tensors bitwise, floats by bits."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        bits = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
        assert torch.equal(*bits), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        assert all(type(x) is type(y) for x, y in zip(a, b, strict=True)), f"{where}: key types"
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), where
    else:
        assert a == b, where


# --------------------------------------------------------------------------------------------
# flatten_state / unflatten_state
# --------------------------------------------------------------------------------------------

NESTED = {
    "step": 7,
    "precision": "bf16",
    "flags": [True, False, None],
    "floats": [1.0, -0.0, 1e-300, 0.1, float("inf"), float("-inf"), float("nan")],
    "big": 2**62,
    "betas": (0.9, 0.999),
    "nested": {"tuple_in_list": [(1, "a"), ()], "empty": {}, "empty_list": []},
    "state": {0: {"step": torch.tensor(3.0)}, 11: {"x": torch.arange(4)}},
    "mixed": {1: "int key", "1": "str key"},
    "tensors": {
        "bf16": torch.randn(2, 3).to(torch.bfloat16),
        "bool": torch.tensor([True, False]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
    },
    "rng_ranks": [(torch.arange(3, dtype=torch.uint8), None)],
}


def test_flatten_round_trips_every_kind_of_value():
    tensors, skeleton = flatten_state(NESTED)
    skeleton = json.loads(json.dumps(skeleton, allow_nan=False))  # strict JSON, no NaN literals
    assert_same(unflatten_state(tensors, skeleton), NESTED)


def test_flatten_names_tensors_by_their_path():
    tensors, _ = flatten_state(NESTED)
    assert {"state/0/step", "state/11/x", "tensors/bf16", "rng_ranks/0/0"} <= tensors.keys()
    assert len(tensors) == 8  # every tensor leaf once


def test_flatten_keeps_keys_that_look_like_paths_apart():
    state = {"a/b": torch.zeros(1), "a": {"b": torch.ones(1)}}
    tensors, skeleton = flatten_state(state)
    assert len(tensors) == 2
    assert_same(unflatten_state(tensors, skeleton), state)


@pytest.mark.parametrize(
    "bad, where",
    [({"x": object()}, "x"), ({"s": {1, 2}}, "s"), ({(1, 2): 3}, "(1, 2)"), ([1, b"raw"], "1")],
)
def test_flatten_refuses_what_json_cannot_hold(bad, where):
    with pytest.raises(TypeError, match="trainer state") as e:
        flatten_state(bad)
    assert where in str(e.value)


def test_unflatten_refuses_inconsistent_input():
    tensors, skeleton = flatten_state({"a": torch.zeros(2), "b": 1})
    with pytest.raises(ValueError, match="a"):
        unflatten_state({}, skeleton)  # a tensor the skeleton names is missing
    with pytest.raises(ValueError, match="extra"):
        unflatten_state({**tensors, "extra": torch.zeros(1)}, skeleton)  # one it never names
    with pytest.raises(ValueError, match="malformed"):
        unflatten_state(tensors, {"dict": {"a": {"what": 1}}})


# --------------------------------------------------------------------------------------------
# The trainer state through a checkpoint: exact resume
# --------------------------------------------------------------------------------------------


def tiny_training(seed: int = 0):
    """A model with dropout (so the RNG matters), AdamW over two groups as train.py builds
    them, and a warm-up schedule."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.LayerNorm(8), nn.Linear(8, 1))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 3))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler, step: int) -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
    model(x).square().mean().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def trainer_state(step, optimizer, scheduler, ranks: bool = False) -> dict:
    state = {
        "step": step,
        "precision": "fp32",
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
    }
    if ranks:
        state["rng_ranks"] = [(torch.get_rng_state(), None), (torch.get_rng_state(), None)]
    return state


def test_resume_restores_optimizer_scheduler_and_rng_exactly(tmp_path):
    model, optimizer, scheduler = tiny_training()
    for step in range(2):
        train_step(model, optimizer, scheduler, step)
    saved = trainer_state(2, optimizer, scheduler, ranks=True)
    save_checkpoint(tmp_path, 2, model, saved)

    ckpt, weights, state = load_checkpoint(tmp_path, log=pytest.fail)
    assert ckpt.name == "step_00000002"
    assert_same(state, saved)  # tuples (betas, rng_ranks) stay tuples, "state" keys stay ints
    assert isinstance(state["optimizer"]["param_groups"][0]["betas"], tuple)
    assert list(state["optimizer"]["state"]) == list(range(6))

    # A fresh model loads it all and takes the same next step, bitwise.
    train_step(model, optimizer, scheduler, 2)
    resumed, opt2, sched2 = tiny_training(seed=1)
    resumed.load_state_dict(weights)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    train_step(resumed, opt2, sched2, 2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == scheduler.get_last_lr()
    assert_same(opt2.state_dict(), optimizer.state_dict())


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    model, optimizer, scheduler = tiny_training()
    train_step(model, optimizer, scheduler, 0)
    saved = trainer_state(1, optimizer, scheduler)
    ckpt = save_checkpoint(tmp_path, 1, model, saved)
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors",
        "trainer.safetensors",
        "trainer.json",
        MANIFEST,
    }
    meta = json.loads((ckpt / "trainer.json").read_text())
    assert meta["format"] == "selfsup-trainer-state" and meta["state"]["dict"]["step"] == 1
    assert "optimizer/state/0/exp_avg" in load_file(str(ckpt / "trainer.safetensors"))
    assert_same(read_trainer_state(ckpt), saved)


def test_new_checkpoints_load_without_unpickling(tmp_path, monkeypatch):
    """safetensors holds raw bytes plus a JSON header and trainer.json is JSON: loading them
    cannot run code, so resume never needs pickle."""
    model, optimizer, scheduler = tiny_training()
    save_checkpoint(tmp_path, 1, model, trainer_state(1, optimizer, scheduler))

    def no(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(torch, "load", no)
    monkeypatch.setattr(pickle, "load", no)
    monkeypatch.setattr(pickle, "loads", no)
    monkeypatch.setattr(pickle, "Unpickler", no)
    assert load_checkpoint(tmp_path, log=pytest.fail)[0].name == "step_00000001"


def test_save_refuses_a_state_json_cannot_hold_before_writing(tmp_path):
    with pytest.raises(TypeError, match="lr_lambdas"):
        save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {"lr_lambdas": [lambda s: s]})
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------------------------
# Old run folders: trainer.pt
# --------------------------------------------------------------------------------------------


def legacy_checkpoint(run: Path, step: int, state_bytes: bytes | None = None, state=None) -> Path:
    """A checkpoint folder as written before manifests: model.safetensors + trainer.pt."""
    ckpt = run / "checkpoints" / f"step_{step:08d}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.full((3,), float(step))}, str(ckpt / "model.safetensors"))
    if state_bytes is not None:
        (ckpt / "trainer.pt").write_bytes(state_bytes)
    else:
        torch.save(state, ckpt / "trainer.pt")
    (run / "checkpoints" / "LATEST").write_text(ckpt.name)
    return ckpt


def test_old_checkpoint_with_plain_trainer_pt_still_resumes(tmp_path):
    _, optimizer, scheduler = tiny_training()
    old = trainer_state(4, optimizer, scheduler)
    legacy_checkpoint(tmp_path, 4, state=old)
    ckpt, weights, state = load_checkpoint(tmp_path, log=pytest.fail)
    assert ckpt.name == "step_00000004" and torch.equal(weights["w"], torch.full((3,), 4.0))
    assert_same(state, old)
    assert latest_checkpoint(tmp_path) == ckpt


class Planted:
    """Unpickling this runs a shell command: what a hostile trainer.pt would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_planted_pickle_in_trainer_pt_never_runs(tmp_path, kind):
    marker = tmp_path / "MARKER"
    payload = {"step": 1, "optimizer": Planted(marker)}
    if kind == "torch.save":
        torch.save(payload, tmp_path / "evil.pt")
        data = (tmp_path / "evil.pt").read_bytes()
    else:
        data = pickle.dumps(payload, protocol=2)
    if kind == "raw pickle":
        pickle.loads(data)
    else:
        torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists(), "the payload is live: an unsafe load runs it"
    marker.unlink()

    run = tmp_path / "run"
    legacy_checkpoint(run, 1, state_bytes=data)
    with pytest.raises(ConfigError) as e:
        load_checkpoint(run, log=pytest.fail)
    message = str(e.value)
    assert "\n" not in message
    assert "pickled trainer state that cannot be loaded safely" in message
    assert "step_00000001" in message and "system" in message  # names what it refers to
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Manifests and falling back
# --------------------------------------------------------------------------------------------


def two_checkpoints(run: Path) -> tuple[Path, Path]:
    model, optimizer, scheduler = tiny_training()
    first = save_checkpoint(run, 1, model, trainer_state(1, optimizer, scheduler))
    train_step(model, optimizer, scheduler, 1)
    second = save_checkpoint(run, 2, model, trainer_state(2, optimizer, scheduler))
    return first, second


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    _, ckpt = two_checkpoints(tmp_path)
    manifest = json.loads((ckpt / MANIFEST).read_text())
    files = {p.name for p in ckpt.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_manifest(ckpt) is True


def test_keep_two_checkpoints(tmp_path):
    model = {"w": torch.zeros(2)}
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {"step": step})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "step_00000002", "step_00000003"]
    assert (root / "LATEST").read_text().strip() == "step_00000003"


@pytest.mark.parametrize(
    "damage",
    ["truncate model.safetensors", "truncate trainer.safetensors", "flip trainer.json",
     "flip model.safetensors", "flip manifest.json", "delete trainer.json", "delete folder"],
)  # fmt: skip
def test_damaged_latest_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    first, second = two_checkpoints(tmp_path)
    how, name = damage.split()
    target = second / name
    if how == "truncate":
        truncate(target)
    elif how == "flip":
        flip_byte(target, target.stat().st_size // 2)
    elif name == "folder":
        shutil.rmtree(second)
    else:
        target.unlink()
    warnings: list[str] = []
    ckpt, weights, state = load_checkpoint(tmp_path, log=warnings.append)
    assert ckpt == first and state["step"] == 1
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "step_00000002" in warnings[0] and "step_00000001" in warnings[0]
    if name != "folder":
        assert name in warnings[0]
    assert latest_checkpoint(tmp_path) == first


def test_every_checkpoint_damaged_is_one_line_error(tmp_path):
    first, second = two_checkpoints(tmp_path)
    truncate(second / "model.safetensors")
    flip_byte(first / "trainer.json", 10)
    with pytest.raises(ConfigError) as e:
        load_checkpoint(tmp_path, log=pytest.fail)
    message = str(e.value)
    assert "\n" not in message and "no usable checkpoint" in message
    assert "step_00000002" in message and "model.safetensors" in message
    assert "step_00000001" in message and "trainer.json" in message
    assert latest_checkpoint(tmp_path) is None


def test_old_checkpoint_without_manifest_truncated_is_detected(tmp_path):
    _, optimizer, scheduler = tiny_training()
    legacy_checkpoint(tmp_path, 1, state=trainer_state(1, optimizer, scheduler))
    second = legacy_checkpoint(tmp_path, 2, state=trainer_state(2, optimizer, scheduler))
    truncate(second / "model.safetensors")
    assert latest_checkpoint(tmp_path).name == "step_00000001"  # the header check sees it
    warnings: list[str] = []
    assert load_checkpoint(tmp_path, log=warnings.append)[0].name == "step_00000001"
    assert "step_00000002" in warnings[0] and "model.safetensors" in warnings[0]
    truncate(second.parent / "step_00000001" / "trainer.pt")  # old format, damaged: no pickle
    with pytest.raises(ConfigError, match="no usable checkpoint.*trainer.pt"):
        load_checkpoint(tmp_path, log=pytest.fail)


def test_no_checkpoints_is_none(tmp_path):
    assert load_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert load_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path) is None


def test_saving_after_a_fallback_replaces_the_damaged_checkpoints(tmp_path):
    first, second = two_checkpoints(tmp_path)
    truncate(second / "model.safetensors")
    assert load_checkpoint(tmp_path, log=lambda _: None)[0] == first
    save_checkpoint(tmp_path, 2, {"w": torch.zeros(1)}, {"step": 2})  # trained on from step 1
    assert load_checkpoint(tmp_path, log=pytest.fail)[0] == second
    # A step newer than the one being written belongs to an abandoned attempt: it goes, and
    # the two newest older ones stay for falling back.
    (tmp_path / "checkpoints" / "step_00000009").mkdir()
    save_checkpoint(tmp_path, 3, {"w": torch.zeros(1)}, {"step": 3})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["LATEST", "step_00000002", "step_00000003"]


def test_write_and_verify_manifest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00\x01")
    assert verify_manifest(tmp_path) is False  # no manifest: nothing to check
    write_manifest(tmp_path)
    assert set(json.loads((tmp_path / MANIFEST).read_text())["files"]) == {"a.txt", "sub/b.bin"}
    assert verify_manifest(tmp_path) is True
    (tmp_path / "a.txt").write_text("alphA")
    with pytest.raises(ConfigError, match=r"a\.txt.*does not match") as e:
        verify_manifest(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.bin").unlink()
    with pytest.raises(ConfigError, match=r"b\.bin.*missing"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "selfsup-manifest", "files": {"../x": {}}}')
    with pytest.raises(ConfigError, match="manifest"):
        verify_manifest(tmp_path)


def test_final_weights_get_a_manifest(tmp_path):
    save_final(tmp_path, {"w": torch.arange(4.0)})
    assert set(json.loads((tmp_path / MANIFEST).read_text())["files"]) == {"model.safetensors"}
    assert verify_manifest(tmp_path)
    save_final(tmp_path, {"w": torch.arange(5.0)})  # written again: the manifest follows
    assert verify_manifest(tmp_path)
    truncate(tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match="model.safetensors"):
        verify_manifest(tmp_path)


# --------------------------------------------------------------------------------------------
# Model folders: runs and HF exports verify their manifest
# --------------------------------------------------------------------------------------------


def test_run_and_hf_export_verify_their_manifest(run_factory, tmp_path):
    from selfsup.models import export_hf_folder, load_model

    run = run_factory("mlm")
    assert verify_manifest(run)
    loaded = load_model(run)
    hf = tmp_path / "hf"
    export_hf_folder(loaded, hf)
    assert verify_manifest(hf)
    assert {"model.safetensors", "config.json", "vocab.txt"} <= set(
        json.loads((hf / MANIFEST).read_text())["files"]
    )
    load_model(hf)
    for folder in (run, hf):
        flip_byte(folder / "model.safetensors", (folder / "model.safetensors").stat().st_size - 3)
        with pytest.raises(ConfigError, match="model.safetensors") as e:
            load_model(folder)
        assert "\n" not in str(e.value)


def test_run_without_final_weights_loads_the_last_good_checkpoint(run_factory):
    from selfsup.models import load_model

    run = run_factory("mlm")
    weights = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()
    (run / MANIFEST).unlink()
    save_checkpoint(run, 1, weights, {"step": 1})
    save_checkpoint(run, 2, {k: v + 1 for k, v in weights.items()}, {"step": 2})
    truncate(run / "checkpoints" / "step_00000002" / "model.safetensors")
    loaded = load_model(run)
    name = "encoder.embed.tokens.weight"
    assert torch.equal(loaded.model.state_dict()[name], weights[name])


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.mark.parametrize("where", ["model", "trainer", "json", "fsync", "manifest", "LATEST"])
def test_disk_full_while_saving_ends_in_one_line(tmp_path, monkeypatch, where):
    run = tmp_path / "run"
    model, optimizer, scheduler = tiny_training()
    save_checkpoint(run, 20, model, trainer_state(20, optimizer, scheduler))
    train_step(model, optimizer, scheduler, 20)

    real_save, real_write = checkpoint.save_file, checkpoint._write_file
    calls = {"save": 0}

    def full_save(tensors, filename, metadata=None):
        calls["save"] += 1
        if calls["save"] == {"model": 1, "trainer": 2}.get(where):
            Path(filename).write_bytes(b"\0" * 64)  # what got out before the disk filled
            raise SafetensorError(ENOSPC_SAFETENSORS)
        return real_save(tensors, filename, metadata=metadata)

    def full_write(path, data):
        target = {"json": "trainer.json", "manifest": f".{MANIFEST}.", "LATEST": ".LATEST."}
        if where in target and path.name.startswith(target[where]):
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    def full_fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # delayed allocation (NFS, XFS)

    monkeypatch.setattr(checkpoint, "save_file", full_save)
    monkeypatch.setattr(checkpoint, "_write_file", full_write)
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(OSError) as e:
        save_checkpoint(run, 40, model, trainer_state(40, optimizer, scheduler))
    monkeypatch.undo()

    assert e.value.errno == errno.ENOSPC
    root = run / "checkpoints"
    assert str(e.value) == (
        f"no space left writing checkpoint step_00000040 in {root} (errno 28); the last "
        f"complete checkpoint is step_00000020: free space and resume with --resume {run}"
    )
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "step_00000020"]  # no leftovers
    assert (root / "LATEST").read_text().strip() == "step_00000020"
    assert load_checkpoint(run, log=pytest.fail)[0].name == "step_00000020"


def test_disk_full_on_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    def full_save(tensors, filename, metadata=None):
        raise SafetensorError(ENOSPC_SAFETENSORS)

    monkeypatch.setattr(checkpoint, "save_file", full_save)
    with pytest.raises(OSError, match="no complete checkpoint yet") as e:
        save_checkpoint(tmp_path, 10, {"w": torch.zeros(1)}, {"step": 10})
    assert "\n" not in str(e.value) and "step_00000010" in str(e.value)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []


def test_disk_full_writing_final_weights_keeps_the_old_ones(tmp_path, monkeypatch):
    save_final(tmp_path, {"w": torch.zeros(2)})
    monkeypatch.setattr(
        checkpoint, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x"))
    )
    with pytest.raises(OSError, match=r"no space left writing .*model\.safetensors") as e:
        save_final(tmp_path, {"w": torch.ones(2)})
    monkeypatch.undo()
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["w"], torch.zeros(2))


# --------------------------------------------------------------------------------------------
# Permissions: the user's umask, not mkstemp's 0600
# --------------------------------------------------------------------------------------------


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_and_folders_follow_the_umask(tmp_path, umask027, run_factory):
    run = tmp_path / "run"
    ckpt = save_checkpoint(run, 1, {"w": torch.zeros(1)}, {"step": 1})
    save_final(run, {"w": torch.zeros(1)})
    atomic_write_text(run / "config.json", "{}")
    assert mode(ckpt) == 0o750
    for f in [*ckpt.iterdir(), run / "checkpoints" / "LATEST", run / "model.safetensors",
              run / MANIFEST, run / "config.json"]:  # fmt: skip
        assert mode(f) == 0o640, f

    from selfsup.models import export_hf_folder, load_model

    hf = tmp_path / "hf"
    export_hf_folder(load_model(run_factory("mlm")), hf)
    assert mode(hf) == 0o750
    assert all(mode(f) == 0o640 for f in hf.rglob("*") if f.is_file())
