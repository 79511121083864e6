"""The command line without silent surprises (issue 9): repeated flags add up, a resume applies
or refuses each changed setting, Ctrl-C keeps what was trained, conflicting or out-of-range
flags are one-line errors, adjustments are said, and `selfsup` alone says what it can do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import assert_clean_error, cli
from test_cli import FAST, write_corpus

import selfsup.train
from selfsup.checkpoint import is_run
from selfsup.cli import COMMANDS, _point_latest, _run_config, build_parser

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_repeated_data_and_set_flags_add_up(corpus):
    a, b = map(str, corpus)
    args = build_parser().parse_args(
        ["pretrain", "--data", a, "--data", b, "--set", "train.weight_decay=0.1",
         "--set", "train.clip_norm=2", "objective.random_prob=0"]
    )  # fmt: skip
    cfg = _run_config(args)
    assert cfg.data.paths == [a, b]
    assert (cfg.train.weight_decay, cfg.train.clip_norm) == (0.1, 2.0)
    assert cfg.objective.random_prob == 0


def test_resume_applies_steps_and_refuses_what_it_cannot(tmp_path, capsys, corpus):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--steps", "4",
                       "--save-every", "2", "--out", out)  # fmt: skip
    assert code == 0, err
    before = (out / "config.json").read_text()
    code, _, err = cli(capsys, "pretrain", "--resume", out, "--steps", "6", "--lr", "0.5",
                       "--set", "train.weight_decay=0.2", "--no-progress")  # fmt: skip
    assert_clean_error(code, err, None, "cannot change train.lr (0.002 -> 0.5)")
    refused = err.split("cannot change ")[1].split(" (a resume may change only")[0]
    assert "train.weight_decay (0.01 -> 0.2)" in refused and "train.steps" not in refused
    assert (out / "config.json").read_text() == before  # refused: nothing changed
    # The saved values again are no change; a raised --steps is applied and recorded.
    code, stdout, err = cli(capsys, "pretrain", "--resume", out, "--steps", "6", "--lr", "0.002",
                            "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "train.steps 4 -> 6" in stdout and "schedule is recomputed for 6 steps" in stdout
    assert "no longer bitwise equal" in stdout
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 6
    assert (out / "checkpoints" / "LATEST").read_text() == "step_00000006"


def test_ctrl_c_keeps_the_steps_done(tmp_path, capsys, corpus, monkeypatch):
    out = tmp_path / "run"
    write = selfsup.train._write

    def interrupt_at_step_3(f, writer, row, prefix):
        write(f, writer, row, prefix)
        if row["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(selfsup.train, "_write", interrupt_at_step_3)
    args = ["pretrain", *FAST, "--data", *corpus, "--save-every", "0", "--out", out]
    code, stdout, err = cli(capsys, *args, "--steps", "8", "--set", "train.log_every=3")
    assert code == 130 and err.strip() == "selfsup: interrupted"
    assert "saved a checkpoint at step 3" in stdout and f"--resume {out}" in stdout
    assert (out / "checkpoints" / "LATEST").read_text() == "step_00000003"
    monkeypatch.setattr(selfsup.train, "_write", write)
    code, stdout, err = cli(capsys, "pretrain", "--resume", out, "--no-progress")
    assert code == 0, err
    assert "resumed from step_00000003" in stdout and (out / "model.safetensors").exists()


def test_ctrl_c_before_the_first_step_says_so(tmp_path, capsys, corpus, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--steps", "4",
                            "--out", out)  # fmt: skip
    assert code == 130 and err.strip() == "selfsup: interrupted"
    assert "interrupted before the first step: nothing was trained" in stdout
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["pretrain", "--whole-word", "--span"], "--whole-word and --span"),
        (["pretrain", "--set", "objective.whole_word=true", "objective.span=true"], "--span"),
        (["inspect-masking", "--batches", "-1"], "--batches must be at least 1"),
        (["inspect-masking", "--batches", "0"], "--batches must be at least 1"),
        (["pretrain", "--max-len", "1000"], "beyond the model's position table (512)"),
    ],
)
def test_conflicting_or_out_of_range_flags_are_one_line(argv, says, tmp_path, capsys, corpus):
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, *argv, "--data", *corpus, *(["--out", out] * (argv[0] == "pretrain"))
    )
    assert_clean_error(code, err, out, says)


def test_adjusted_warmup_is_said(capsys):
    cfg = _run_config(build_parser().parse_args(["pretrain", "--steps", "50"]))
    assert cfg.train.warmup_steps == 5
    assert "warning: 100 warm-up steps do not fit 50 steps: using 5" in capsys.readouterr().out
    _run_config(build_parser().parse_args(["pretrain", "--steps", "500"]))
    assert capsys.readouterr().out == ""  # nothing adjusted, nothing said


def test_bare_selfsup_lists_every_command(capsys):
    code, out, err = cli(capsys)
    assert code == 0 and not err
    assert all(name in out for name in COMMANDS)
    code, help_out, _ = cli(capsys, "--help")
    assert code == 0 and help_out == out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {c.dest for c in sub._choices_actions} == set(COMMANDS)
    assert all(c.help for c in sub._choices_actions)  # every command is described


@pytest.mark.parametrize(
    "command, shows",
    [
        ("pretrain", ["(default: utf-8)", "example", "--resume runs/latest"]),
        ("tokenizer", ["(default: 8192)", "example: selfsup tokenizer"]),
        ("fill-mask", ["(default: 5)", "example: selfsup fill-mask"]),
        ("inspect-masking", ["(default: 50)", "example: selfsup inspect-masking"]),
    ],
)
def test_help_shows_defaults_and_an_example(command, shows, capsys):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    assert all(s in out for s in shows), out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_progress_without_a_terminal_prints_a_line_every_interval(capsys):
    bar = selfsup.train._NoBar(start=2, total=10, every=0.0)
    bar.set_postfix(loss="3.210", tokens_s="900")
    bar.update(1)
    assert capsys.readouterr().out == "step 3/10  loss=3.210  tokens_s=900\n"
    quiet = selfsup.train._NoBar(total=10, every=3600.0)
    quiet.update(1)
    assert capsys.readouterr().out == ""  # not before the interval has passed


def test_runs_latest_points_at_the_newest_default_run(tmp_path, capsys, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--steps", "2")
    assert code == 0, err
    latest = tmp_path / "runs" / "latest"
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert latest.is_symlink() and latest.resolve() == run.resolve() and is_run(latest)


def test_runs_latest_is_a_text_file_without_symlinks(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    run = tmp_path / "runs" / "tiny-mlm-1"
    run.mkdir(parents=True)
    _point_latest(tmp_path / "runs" / "latest", run)
    assert (tmp_path / "runs" / "latest").read_text().strip() == str(run)


def test_a_missing_optional_package_is_one_line(monkeypatch, capsys):
    """A command whose optional package is absent (scikit-learn for t-SNE plots, say) names the
    package to install instead of a traceback; a missing selfsup module stays a traceback."""
    import selfsup.cli as cli_module

    def needs_sklearn(args):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setitem(cli_module.COMMANDS, "embed", needs_sklearn)
    with pytest.raises(SystemExit) as e:
        cli_module.main(["embed", "some-model", "--input", "x.txt", "--out", "v.npy"])
    assert_clean_error(e.value.code, capsys.readouterr().err, says="pip install scikit-learn")

    def a_bug(args):
        raise ModuleNotFoundError("No module named 'selfsup.nowhere'", name="selfsup.nowhere")

    monkeypatch.setitem(cli_module.COMMANDS, "embed", a_bug)
    with pytest.raises(ModuleNotFoundError):
        cli_module.main(["embed", "some-model", "--input", "x.txt", "--out", "v.npy"])
