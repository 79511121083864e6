"""Helpers shared by the test modules (importable as `helpers`: tests/ is on sys.path through
its conftest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main

# The shared data sits beside the repository (../shared/data), or where SELFSUP_SHARED_DATA says.
SHARED = Path(
    os.environ.get("SELFSUP_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def shared(sub: str) -> Path:
    """SHARED / sub, or skip the test with the reason when it is absent."""
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"{p} is absent (set SELFSUP_SHARED_DATA to the shared data folder)")
    return p


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `selfsup argv` in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clean_error(code: int, err: str, out: Path | None = None, says: str = "") -> None:
    """The CLI's contract for bad input: exit 2, one `selfsup: error: ...` line holding `says`,
    no traceback, and no output folder left behind."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("selfsup: error: ") and len(lines[0]) > len("selfsup: error: ")
    assert says in lines[0], lines[0]
    if out is not None:
        assert not out.exists(), f"{out} was left behind"


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (not JSON)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def pair_data(folder: Path, texts: list[str], tok, chunk_len: int, max_len: int = 64):
    """(PairBuilder of NSP pairs, MLM masker, training chunk ids) over `texts` written to a
    corpus in `folder`: chunks of up to `chunk_len` tokens, pairs of up to `max_len`."""
    from selfsup.data.text import PairBuilder, TextDataConfig, build_corpus, make_chunks
    from selfsup.objectives.mlm import MLMConfig, token_masker

    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = TextDataConfig(max_len=max_len, cache_dir=str(folder / "cache"))
    corpus = build_corpus([str(path)], tok, cfg, log=lambda s: None)
    chunks = make_chunks(corpus, chunk_len)
    builder = PairBuilder(corpus, chunks, tok, max_len, "nsp")
    return builder, token_masker(tok, MLMConfig()), np.arange(len(chunks))


def pair_batch(lengths, vocab_size: int, g) -> dict:
    """A padded batch of `[CLS]=2 A [SEP]=3 B [SEP]` rows of the given lengths, random ids from
    the torch generator `g` (segment B is type 1)."""
    import torch

    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab_size, (n,), generator=g)
        ids[i, 0], ids[i, n // 2], ids[i, n - 1] = 2, 3, 3
        types[i, n // 2 + 1 : n] = 1
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def write_speech(folder: Path, n: int = 24, seed: int = 0, rates=(16000, 8000)) -> Path:
    """`n` synthetic clips named {label}_{speaker}_{index}.wav: harmonic tones with a pitch per
    speaker and noise bursts, 0.3-1.2 s, at the given sample rates in turn."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rate = rates[i % len(rates)]
        t = np.arange(int(rate * rng.uniform(0.3, 1.2))) / rate
        f0 = 110.0 * (1 + i % 3)
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
        wave = wave * np.hanning(len(t)) + 0.05 * rng.standard_normal(len(t))
        soundfile.write(folder / f"{i % 4}_s{i % 3}_{i}.wav", (0.3 * wave).astype(np.float32), rate)
    return folder


def mockingjay_run(speech: Path, out: Path) -> Path:
    """A 2-step tiny Mockingjay run over the clips in `speech` (one thread, so the run is the
    same whatever the machine): a speech upstream of several layers, with its features."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["pretrain", "--objective", "mockingjay", "--preset", "tiny", "--data", str(speech),
              "--steps", "2", "--batch-size", "4", "--set", "data.max_frames=40", "--out",
              str(out), "--cache-dir", str(speech.parent / "cache"), "--no-progress"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out


def pretrain_straight_and_resumed(make_cfg, a: Path, b: Path, stop_after: int) -> None:
    """Pretrain make_cfg() uninterrupted into `a`, and into `b` stopped after step `stop_after`
    (as a kill after that step's checkpoint would) then resumed to the end, quietly; the test
    compares the two folders."""
    import selfsup.pretraining as recipe
    from selfsup.pretraining import pretrain

    quiet = lambda _: None  # noqa: E731
    pretrain(make_cfg(), a, progress=False, log=quiet)
    real_train = recipe.train
    recipe.train = lambda *args, **kwargs: real_train(*args, **kwargs, stop_after=stop_after)
    try:
        pretrain(make_cfg(), b, progress=False, log=quiet)
    finally:
        recipe.train = real_train
    assert not (b / "model.safetensors").exists()  # stopped before its final weights
    pretrain(None, b, resume=True, progress=False, log=quiet)


def perturb(model, seed: int, scale: float = 0.05):
    """Seeded noise on every weight of `model` (in place; returned), so that zero biases and
    unit norms hide no weight-mapping bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model
