"""Run folders and checkpoints: atomic writes, full trainer state, exact resume, manifests.

A run folder:
    config.json               the RunConfig (plus "format": "selfsup-run")
    tokenizer/                vocab.txt, tokenizer.json, tokenizer_config.json
    checkpoints/step_XXXXXXXX one checkpoint, whole and written once by rank 0 (resumable at any
                              world size):
        model.safetensors     the weights
        trainer.safetensors   every tensor of the trainer state (optimizer moments and steps,
                              RNG states), named by its path: "optimizer/state/0/exp_avg", "rng"
        trainer.json          the rest of the trainer state (step, precision, param groups, the
                              scheduler) and its structure: which leaves are tensors, which
                              sequences are tuples, which dict keys are ints
        manifest.json         size and sha256 of the three files above, written last
    checkpoints/LATEST        name of the newest complete checkpoint
    model.safetensors         final weights, written when training ends
    manifest.json             size and sha256 of model.safetensors
    metrics.jsonl, tb/        logs

Nothing here unpickles: safetensors is raw tensor bytes behind a JSON header and the rest is
JSON, so opening a run folder someone handed over cannot run code. Checkpoints written before
this layout (model.safetensors + trainer.pt, no manifest) still load; their trainer.pt only
through torch's weights-only unpickler, which refuses anything but tensors and plain containers.

A checkpoint is written into a hidden temporary folder, its files fsynced, the manifest written
last, then the folder renamed into place and LATEST updated: a crash or a full disk leaves the
previous checkpoint as it was. Loading verifies the manifest and falls back to the previous
complete checkpoint (two are kept) when the newest is truncated or changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.errors import ConfigError

RUN_FORMAT = "selfsup-run"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "selfsup-manifest"
TRAINER_FORMAT = "selfsup-trainer-state"
MODEL = "model.safetensors"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
LEGACY_TRAINER = "trainer.pt"  # pickled, before trainer.json


class DamagedFileError(ConfigError):
    """A file that is missing, truncated or does not match its folder's manifest."""

    def __init__(self, file: Path, reason: str):
        super().__init__(f"{file} {reason}")
        self.file, self.reason = file, reason


# --------------------------------------------------------------------------------------------
# The trainer state as tensors + JSON
# --------------------------------------------------------------------------------------------


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, str, int, float, bool, None) into
    its tensors, named by their path ("optimizer/state/0/exp_avg"), and a JSON-able skeleton
    that `unflatten_state` rebuilds it from, with the same types: tuples stay tuples, int dict
    keys stay ints, inf and NaN survive strict JSON. Anything else is a TypeError naming where.

    Skeleton nodes: JSON scalars and lists as themselves; every other node is an object with
    one key: {"tensor": name}, {"tuple": [...]}, {"dict": {str: node}} (all keys str),
    {"items": [[key, node], ...]} (some int keys), {"float": "inf" | "-inf" | "nan"}."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            name, n = path or "tensor", 1
            while name in tensors:  # a str key holding "/" can spell another path
                name, n = f"{path}~{n}", n + 1
            tensors[name] = x
            return {"tensor": name}
        if x is None or isinstance(x, bool | int | str):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"float": repr(x)}
        if isinstance(x, list):
            return [walk(v, _join(path, i)) for i, v in enumerate(x)]
        if isinstance(x, tuple):
            return {"tuple": [walk(v, _join(path, i)) for i, v in enumerate(x)]}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, str) and (not isinstance(k, int) or isinstance(k, bool)):
                    raise TypeError(
                        f"the trainer state at {path or '/'!r} has a key {k!r} of type "
                        f"{type(k).__name__}: keys must be str or int"
                    )
            if all(isinstance(k, str) for k in x):
                return {"dict": {k: walk(v, _join(path, k)) for k, v in x.items()}}
            return {"items": [[k, walk(v, _join(path, k))] for k, v in x.items()]}
        raise TypeError(
            f"cannot store a {type(x).__name__} in the trainer state at {path or '/'!r}: only "
            "tensors, dicts, lists, tuples, str, int, float, bool and None"
        )

    return tensors, walk(obj, "")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """The state `flatten_state` split into `tensors` and `skeleton`. A ValueError when they do
    not fit together (a tensor missing or never named, a node of unknown shape)."""
    named: set[str] = set()

    def bad(where: str, what: str) -> ValueError:
        return ValueError(f"malformed trainer state at {where or '/'!r}: {what}")

    def build(node: Any, where: str) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            return [build(v, _join(where, i)) for i, v in enumerate(node)]
        if not isinstance(node, dict) or len(node) != 1:
            raise bad(where, f"unexpected {type(node).__name__}")
        ((tag, body),) = node.items()
        if tag == "tensor":
            if body not in tensors:
                raise ValueError(f"the tensors lack {body!r}, which the state names at {where!r}")
            named.add(body)
            return tensors[body]
        if tag == "tuple" and isinstance(body, list):
            return tuple(build(v, _join(where, i)) for i, v in enumerate(body))
        if tag == "dict" and isinstance(body, dict):
            return {k: build(v, _join(where, k)) for k, v in body.items()}
        if tag == "items" and isinstance(body, list):
            out = {}
            for pair in body:
                if not (isinstance(pair, list) and len(pair) == 2 and _is_key(pair[0])):
                    raise bad(where, f"bad dict item {pair!r}")
                out[pair[0]] = build(pair[1], _join(where, pair[0]))
            return out
        if tag == "float" and body in ("inf", "-inf", "nan"):
            return float(body)
        raise bad(where, f"unknown node {tag!r}")

    state = build(skeleton, "")
    extra = sorted(tensors.keys() - named)
    if extra:
        raise ValueError(f"tensors the state never names: {', '.join(extra[:5])}")
    return state


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _is_key(k: Any) -> bool:
    return isinstance(k, str) or (isinstance(k, int) and not isinstance(k, bool))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module | dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoints/step_N atomically (temporary folder, fsync, manifest last, rename),
    then LATEST, and keep the `keep` newest. `model` is the model or its whole state dict
    (gathered from several processes). A full disk (or any write error) removes what was
    half written and raises an OSError whose one-line message names the last complete
    checkpoint; the previous checkpoints are untouched."""
    tensors, skeleton = flatten_state(trainer_state)  # a TypeError is a bug: before any write
    meta = json.dumps(
        {"format": TRAINER_FORMAT, "version": 1, "state": skeleton}, indent=1, allow_nan=False
    )
    root = run_dir / "checkpoints"
    name = f"step_{step:08d}"
    final = root / name
    tmp: Path | None = None
    renamed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_folder(root, name)
        save_safetensors(_state(model), tmp / MODEL)
        save_safetensors(tensors, tmp / TRAINER_TENSORS)
        _write_file(tmp / TRAINER_JSON, meta.encode())
        write_manifest(tmp, [MODEL, TRAINER_TENSORS, TRAINER_JSON])  # fsyncs them, then itself
        _fsync_dir(tmp)
        if final.exists():  # written before, by an attempt we resumed from behind
            shutil.rmtree(final)
        os.rename(tmp, final)
        renamed = True
        _fsync_dir(root)
        atomic_write_text(root / "LATEST", name)
    except BaseException as e:
        if tmp is not None:  # LATEST could not name it: the previous one stays the latest
            shutil.rmtree(final if renamed else tmp, ignore_errors=True)
        if isinstance(e, OSError | SafetensorError):
            raise _write_error(e, f"checkpoint {name} in {root}", run_dir) from e
        raise
    _prune(root, step, keep)
    return final


def latest_checkpoint(run_dir: Path, log: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint folder: the one LATEST names, else the newest before it
    whose files match their manifest (or, written before manifests, whose model.safetensors is
    whole). None when there is none; what was skipped goes to `log`."""
    problems: list[str] = []
    root = run_dir / "checkpoints"
    for ckpt in _candidates(root, problems):
        try:
            _check(ckpt)
        except DamagedFileError as e:
            problems.append(_problem(e, root))
            continue
        if problems and log is not None:
            log(f"warning: {'; '.join(problems)}; using {ckpt.name}")
        return ckpt
    return None


def load_checkpoint(
    run_dir: Path, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, torch.Tensor], dict] | None:
    """The newest complete checkpoint of a run: (its folder, model weights, trainer state), or
    None when there is none. A damaged newest checkpoint is skipped with a warning to `log`;
    when every one is damaged, a one-line ConfigError lists what is wrong with each. An old
    pickled trainer.pt that torch's weights-only unpickler refuses is a ConfigError too (it is
    never unpickled any other way)."""
    problems: list[str] = []
    root = run_dir / "checkpoints"
    candidates = _candidates(root, problems)
    for ckpt in candidates:
        try:
            _check(ckpt)
            weights = read_safetensors(ckpt / MODEL)
            state = read_trainer_state(ckpt)
        except DamagedFileError as e:
            problems.append(_problem(e, root))
            continue
        if problems:
            log(f"warning: {'; '.join(problems)}; resuming from {ckpt.name}")
        return ckpt, weights, state
    if problems:
        raise ConfigError(f"no usable checkpoint in {root}: {'; '.join(problems)}")
    return None


def read_trainer_state(ckpt: Path) -> dict:
    """The trainer state of one checkpoint folder: trainer.json + trainer.safetensors, or an
    old trainer.pt through torch's weights-only unpickler."""
    meta_path = ckpt / TRAINER_JSON
    if meta_path.exists():
        tensors = read_safetensors(ckpt / TRAINER_TENSORS)
        try:
            meta = json.loads(meta_path.read_bytes())
            if not isinstance(meta, dict) or meta.get("format") != TRAINER_FORMAT:
                raise ValueError(f"its format is not {TRAINER_FORMAT!r}")
            return unflatten_state(tensors, meta["state"])
        except (ValueError, KeyError, UnicodeDecodeError) as e:  # JSONDecodeError included
            raise DamagedFileError(meta_path, f"is not a valid trainer state ({e})") from None
    legacy = ckpt / LEGACY_TRAINER
    if legacy.exists():
        return _read_legacy_trainer(legacy)
    raise DamagedFileError(ckpt, f"has no trainer state ({TRAINER_JSON} or {LEGACY_TRAINER})")


def _read_legacy_trainer(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise DamagedFileError(path, "cannot be read (truncated or damaged)") from None
        refers = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it refers to {refers.group(1)})" if refers else ""
        raise ConfigError(
            f"checkpoint {path.parent} holds a pickled trainer state that cannot be loaded "
            f"safely{what}; the trainer state must be rebuilt: train again without --resume, "
            "or delete that checkpoint folder to resume from an earlier one"
        ) from None
    except Exception as e:  # truncated zip, garbage: RuntimeError, EOFError, KeyError, ...
        reason = f"cannot be read ({type(e).__name__}: truncated or damaged)"
        raise DamagedFileError(path, reason) from None
    if not isinstance(state, dict):
        raise DamagedFileError(path, "does not hold a trainer state dict")
    return state


def _candidates(root: Path, problems: list[str]) -> list[Path]:
    """Checkpoint folders to try, in order: the one LATEST names, then the others, newest
    first. A LATEST naming no folder is a problem (and that name is tried, to report it)."""
    folders = sorted(
        (p for p in root.glob("step_*") if p.is_dir() and _step_of(p) is not None),
        key=_step_of,
        reverse=True,
    )
    marker = root / "LATEST"
    try:
        latest = marker.read_text().strip() if marker.exists() else None
    except (OSError, UnicodeDecodeError):
        latest = ""
    if latest is None:
        return folders
    if not re.fullmatch(r"step_\d+", latest):
        problems.append(f"LATEST does not name a checkpoint ({latest[:40]!r})")
        return folders
    return [root / latest, *(p for p in folders if p.name != latest)]


def _check(ckpt: Path) -> None:
    """A DamagedFileError unless the folder's files match its manifest, or, in a folder from
    before manifests, its model.safetensors is whole and a trainer state is there."""
    if not ckpt.is_dir():
        raise DamagedFileError(ckpt, "is missing")
    if not verify_manifest(ckpt):
        _check_safetensors(ckpt / MODEL)
        if not (ckpt / TRAINER_JSON).exists() and not (ckpt / LEGACY_TRAINER).exists():
            raise DamagedFileError(ckpt, "has no trainer state")
    if not (ckpt / MODEL).is_file():
        raise DamagedFileError(ckpt / MODEL, "is missing")


def _problem(e: DamagedFileError, root: Path) -> str:
    try:
        where = e.file.relative_to(root)
    except ValueError:
        where = e.file
    return f"{where} {e.reason}"


def _step_of(p: Path) -> int | None:
    m = re.fullmatch(r"step_(\d+)", p.name)
    return int(m.group(1)) if m else None


def _prune(root: Path, step: int, keep: int) -> None:
    """Keep the checkpoint just written and the keep-1 newest before it. Newer ones belong to an
    attempt we resumed from behind (their newest was damaged) and go, as do temporary folders
    a killed save left."""
    steps = {p: _step_of(p) for p in root.glob("step_*") if p.is_dir()}
    older = sorted((s, p) for p, s in steps.items() if s is not None and s < step)
    doomed = [p for p, s in steps.items() if s is not None and s > step]
    doomed += [p for _, p in older[: max(0, len(older) - (keep - 1))]]
    doomed += [p for p in root.glob(".step_*") if p.is_dir()]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)


def save_final(run_dir: Path, model: nn.Module | dict[str, torch.Tensor]) -> None:
    """Write the run's final model.safetensors atomically, then its manifest.json. A write
    error leaves the previous weights (if any) and raises an OSError with a one-line message."""
    target = run_dir / MODEL
    tmp: Path | None = None
    try:
        (run_dir / MANIFEST).unlink(missing_ok=True)  # it must never vouch for other weights
        fd, name = tempfile.mkstemp(dir=run_dir, prefix=".model.", suffix=".safetensors")
        os.close(fd)
        tmp = Path(name)
        save_safetensors(_state(model), tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
        tmp = None
        write_manifest(run_dir, [MODEL])
        _fsync_dir(run_dir)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError | SafetensorError):
            raise _write_error(e, str(target), run_dir) from e
        raise


def _write_error(e: BaseException, what: str, run_dir: Path) -> OSError:
    """One line for a failed write: what, why (errno), the last complete checkpoint, what to do."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (m := re.search(r"os error (\d+)", str(e))):  # safetensors' I/O errors
        code = int(m.group(1))
    full = code in (errno.ENOSPC, errno.EDQUOT)
    if full:
        head = f"no space left writing {what} (errno {code})"
    else:
        why = os.strerror(code) if code else _first_line(e)
        head = f"could not write {what} ({why}{f', errno {code}' if code else ''})"
    try:
        last = latest_checkpoint(run_dir)
    except OSError:
        last = None
    fix = "free space" if full else "fix that"
    if last is not None:
        tail = f"the last complete checkpoint is {last.name}: {fix} and "
        tail += f"resume with --resume {run_dir}"
    else:
        tail = f"there is no complete checkpoint yet: {fix} and train again"
    err = OSError(f"{head}; {tail}")
    err.errno = code
    return err


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------------------------
# Manifests: size and sha256 of every file of a folder
# --------------------------------------------------------------------------------------------


def write_manifest(folder: Path, files: Iterable[str] | None = None) -> Path:
    """Write folder/manifest.json listing `files` (paths relative to `folder`; default: every
    file under it) with their size and sha256, after fsyncing each: write it last, once the
    files are complete. Returns its path."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST
        )
    entries = {}
    for name in files:
        path = folder / name
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            os.fsync(f.fileno())
        entries[PurePosixPath(name).as_posix()] = {"size": path.stat().st_size, "sha256": digest}
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "files": entries}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return folder / MANIFEST


def verify_manifest(folder: Path) -> bool:
    """Check every file folder/manifest.json lists: True when all match, False when there is no
    manifest (a folder from before manifests), else a one-line DamagedFileError (a ConfigError)
    naming the file that is missing, truncated or changed."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_bytes())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise DamagedFileError(path, "is not a valid manifest") from None
    for name, entry in files.items():
        rel = PurePosixPath(name)
        if (
            not rel.parts
            or rel.is_absolute()
            or ".." in rel.parts
            or not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise DamagedFileError(path, f"is not a valid manifest (at {name!r})")
        file = Path(folder) / rel
        if not file.is_file():
            raise DamagedFileError(file, f"is missing (listed in {MANIFEST})")
        size = file.stat().st_size
        if size != entry["size"]:
            listed = entry["size"]
            reason = (
                f"does not match {MANIFEST} ({size} bytes, listed {listed}: truncated or changed)"
            )
            raise DamagedFileError(file, reason)
        with open(file, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != entry["sha256"]:
                reason = f"does not match {MANIFEST} (sha256 differs: corrupted or changed)"
                raise DamagedFileError(file, reason)
    return True


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """save_file for any state dict (tied or non-contiguous tensors are copied), the file with
    the permissions the user's umask gives (safetensors creates it 0600)."""
    save_file(_storable(tensors), str(path), metadata=metadata)
    _chmod_file(path)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a one-line DamagedFileError naming it when it is missing,
    truncated or not safetensors (instead of the library's traceback)."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DamagedFileError(path, "is missing") from None
    except (SafetensorError, OSError) as e:
        raise DamagedFileError(path, f"cannot be read ({_first_line(e)})") from None


def load_weights(folder: Path, name: str = MODEL) -> dict[str, torch.Tensor]:
    """folder/name (default model.safetensors), after checking folder's manifest if it has one:
    a one-line ConfigError naming the file when it does not match or cannot be read."""
    verify_manifest(folder)
    return read_safetensors(Path(folder) / name)


def _check_safetensors(path: Path) -> None:
    """Cheap: the header parses and covers the whole file (a truncated file fails)."""
    if not path.is_file():
        raise DamagedFileError(path, "is missing")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as e:
        raise DamagedFileError(
            path, f"is truncated or not safetensors ({_first_line(e)})"
        ) from None


# --------------------------------------------------------------------------------------------
# Atomic writes with the user's permissions
# --------------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (temporary file, fsync, rename); the file gets the
    permissions the user's umask gives, not mkstemp's 0600."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        _chmod_file(tmp)
        _write_file(tmp, text.encode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_folder(parent: Path, name: str) -> Path:
    """A new hidden folder parent/.name.XXXX to build `name` in before renaming it into place,
    with the permissions the user's umask gives (mkdtemp's are 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (some filesystems cannot fsync a folder: skipped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _chmod_file(path: Path) -> None:
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process umask, read without setting it where Linux shows it (os.umask can only be
    read by changing it, which races with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _state(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model if isinstance(model, dict) else model.state_dict()


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory (safetensors refuses shared
    storage: a tensor seen twice, such as tied weights, is copied)."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------


def is_run(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.exists():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == RUN_FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_run_config(p: Path) -> dict:
    """The run folder's config.json as a dict, without its "format" marker."""
    d = json.loads((p / "config.json").read_text())
    return {k: v for k, v in d.items() if k != "format"}
