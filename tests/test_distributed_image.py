"""Image pretraining under torchrun (gloo on the CPU) equals one process for the batch-level
objectives: SimCLR's negatives and VICReg's variance and covariance are gathered across ranks
with their gradients, and the ResNet's BatchNorm statistics cover every rank's rows
(selfsup.layers.batchnorm), so 2 processes log the same losses as 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributed as dist
from PIL import Image
from test_distributed import _selfsup, assert_same_rows, rows

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend"
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of 3 class folders of 24 random 32 x 32 images each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir()
        for i in range(24):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("objective", ["simclr", "vicreg"])
def test_two_processes_train_as_one(images, tmp_path, objective):
    args = ["pretrain", "--modality", "image", "--objective", objective, "--preset", "tiny",
            "--data", str(images), "--batch-size", "8", "--steps", "4", "--eval-every", "2",
            "--set", "train.log_every=1", "--set", "objective.proj_hidden=32", "--set",
            "objective.proj_dim=16", "--set", "data.heldout_every=6", "--cache-dir",
            str(tmp_path / "cache"), "--no-progress", "--seed", "1"]  # fmt: skip
    _selfsup(1, *args, "--out", str(tmp_path / "one"))
    _selfsup(2, *args, "--out", str(tmp_path / "two"))
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(one) == 4 + 2
    assert_same_rows(one, two)
