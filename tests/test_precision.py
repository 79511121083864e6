"""`auto` precision (issue 9): bf16 autocast where the CPU's flags (avx512_bf16, AMX) or the GPU
say bf16 is native, fp32 elsewhere, decided without timing; the concrete value is recorded in
config.json, the checkpoint and the log. The rest of the suite pins fp32 (SELFSUP_PRECISION in
conftest.py); these tests unset it and set the CPU flags themselves."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_clean_error, cli
from test_cli import FAST, write_corpus

from selfsup.checkpoint import latest_checkpoint, read_trainer_state
from selfsup.device import resolve_precision
from selfsup.errors import ConfigError

CPU = torch.device("cpu")


def set_flags(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    monkeypatch.delenv("SELFSUP_PRECISION", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(
    "avx512_bf16, amx, want",
    [
        (True, False, ("bf16", "auto: the CPU has avx512_bf16")),
        (False, True, ("bf16", "auto: the CPU has AMX")),
        (False, False, ("fp32", "auto: the CPU has no native bf16")),
    ],
)
def test_auto_follows_the_cpu_flags(monkeypatch, avx512_bf16, amx, want):
    set_flags(monkeypatch, avx512_bf16, amx)
    assert resolve_precision("auto", CPU) == want
    assert resolve_precision("fp32", CPU) == ("fp32", "as asked")


def test_the_environment_decides_auto(monkeypatch):
    set_flags(monkeypatch, avx512_bf16=True)
    monkeypatch.setenv("SELFSUP_PRECISION", "fp32")
    assert resolve_precision("auto", CPU) == ("fp32", "auto: SELFSUP_PRECISION=fp32")
    assert resolve_precision("bf16", CPU)[0] == "bf16"  # an explicit setting wins
    monkeypatch.setenv("SELFSUP_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="SELFSUP_PRECISION='fp16'; use bf16 or fp32"):
        resolve_precision("auto", CPU)


def test_bf16_without_the_hardware_is_refused(monkeypatch):
    set_flags(monkeypatch, avx512_bf16=False)
    with pytest.raises(ConfigError, match="this CPU has no native bf16"):
        resolve_precision("bf16", CPU)
    monkeypatch.setenv("SELFSUP_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="this CPU has no native bf16"):
        resolve_precision("auto", CPU)


@pytest.mark.parametrize("avx512_bf16, want", [(True, "bf16"), (False, "fp32")])
def test_auto_is_recorded_in_config_checkpoint_and_log(
    monkeypatch, tmp_path, capsys, corpus, avx512_bf16, want
):
    set_flags(monkeypatch, avx512_bf16)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--steps", "2",
                            "--save-every", "2", "--device", "cpu", "--out", out)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == want
    assert read_trainer_state(latest_checkpoint(out))["precision"] == want
    reason = "the CPU has avx512_bf16" if avx512_bf16 else "the CPU has no native bf16"
    assert f"precision {want} (auto: {reason})" in stdout
    # Resumed where the flags say otherwise, the run keeps its own precision.
    set_flags(monkeypatch, True)  # bf16 possible either way, so only the rule could change it
    code, stdout, err = cli(capsys, "pretrain", "--resume", out, "--steps", "3", "--no-progress")
    assert code == 0, err
    assert f"precision {want} (the run's own)" in stdout
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == want
    assert read_trainer_state(latest_checkpoint(out))["precision"] == want


def test_explicit_bf16_without_the_hardware_is_one_line(monkeypatch, tmp_path, capsys, corpus):
    set_flags(monkeypatch, avx512_bf16=False)
    out = tmp_path / "out"
    for flag in (["--precision", "bf16"], ["--bf16"]):
        code, _, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, *flag, "--device", "cpu",
                           "--out", out)  # fmt: skip
        assert_clean_error(code, err, out, "bf16 was requested but this CPU has no native bf16")


def test_bad_precision_flag_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "pretrain", "--precision", "fp16", "--out", tmp_path / "out")
    assert_clean_error(code, err, tmp_path / "out", "invalid choice: 'fp16'")
