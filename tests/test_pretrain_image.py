"""Image pretraining end to end on a tiny folder: the CLI's run folder and online probe, exact
kill-and-resume for a batch-level image objective with a moving-average target (BYOL), the
refusal of --grad-accum with BatchNorm, and one-line errors for bad image data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, cli, pretrain_straight_and_resumed
from PIL import Image
from safetensors.torch import load_file
from test_distributed import TIMING_KEYS, rows

from selfsup.presets import preset


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """2 class folders of 20 random 32 x 32 images each."""
    root = tmp_path_factory.mktemp("images") / "imgs"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


def image_cfg(images, objective="byol", steps=6):
    cfg = preset("tiny", "image")
    cfg.set_objective(objective)
    cfg.objective.proj_hidden, cfg.objective.proj_dim = 32, 16
    cfg.data.paths = [str(images)]
    cfg.data.cache_dir = str(images.parent / "cache")
    cfg.data.heldout_every = 5
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = steps, 8, 1
    cfg.train.eval_every, cfg.train.save_every, cfg.train.log_every = 3, 3, 1
    return cfg


def test_kill_and_resume_is_exact_for_byol(images, tmp_path):
    pretrain_straight_and_resumed(lambda: image_cfg(images), tmp_path / "a", tmp_path / "b", 4)
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert wa.keys() == wb.keys() and any("target_encoder" in k for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))


def test_cli_pretrain_then_probe(images, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "pretrain", "--modality", "image", "--preset", "tiny",
                            "--data", images, "--steps", "3", "--batch-size", "8", "--set",
                            "data.heldout_every=5", "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"]["name"] == "simclr" and cfg["objective"]["probe_classes"] == 2
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog"]
    assert "eval_probe_acc" in json.loads((out / "summary.json").read_text())
    code, stdout, err = cli(capsys, "probe", out, "--data", images, "--test", images,
                            "--method", "knn", "--k", "5")  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["train_images"] == 40 and 0.0 <= report["knn"]["mean"] <= 1.0


def test_grad_accum_is_refused_with_batchnorm(images, tmp_path, capsys):
    out = tmp_path / "accum"
    code, _, err = cli(capsys, "pretrain", "--modality", "image", "--objective", "rotation",
                       "--data", images, "--steps", "2", "--batch-size", "8", "--grad-accum",
                       "2", "--out", out, "--no-progress")  # fmt: skip
    assert_clean_error(code, err, out, "batch-level")


def test_bad_image_data_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    code, _, err = cli(capsys, "pretrain", "--modality", "image", "--data", empty, "--out",
                       tmp_path / "r", "--no-progress")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "r")
    code, _, err = cli(capsys, "pretrain", "--modality", "image", "--objective", "mlm",
                       "--data", empty, "--out", tmp_path / "r2")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "r2", "not image")
