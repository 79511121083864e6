"""Image presets: a backbone shape (selfsup.encoders.image.SHAPES) and its training defaults,
written in Python. Images are 32 x 32 (CIFAR-10); the default objective is SimCLR.

`mini` is the CPU recipe of the README's Images section: a narrow ResNet (widths 16-128, one
block per stage, 0.3M parameters) that takes about 2 s for a SimCLR step of 2 x 256 views on
these 2 cores, so 30 minutes are ~900 steps (~12 epochs of the 20k CIFAR subset). A full
ResNet-18 manages ~2 epochs in that time here (about 30 s a step); `resnet18` is for machines
that have the time. Batch 256 with AdamW (LARS is `--set train.optimizer=lars`, with SimCLR's
lr 0.3 x B / 256 and weight decay 1e-6), cosine decay, no weight decay on norms and biases.
"""

from __future__ import annotations

from copy import deepcopy

from selfsup.config import RunConfig, TrainConfig
from selfsup.data.image import ImageDataConfig
from selfsup.encoders.image import ImageConfig, image_shape
from selfsup.objectives.simclr import SimCLRConfig

# A ResNet preset's Transformer fields are the shape of the pixel-sequence model (objective
# pixels), which has no ResNet: a small one, of the preset's scale.
PIXEL_TINY = dict(dim=32, n_layers=2, n_heads=2, ffn_dim=64)
PIXEL_MINI = dict(dim=128, n_layers=4, n_heads=4, ffn_dim=512)

MODELS: dict[str, ImageConfig] = {
    "tiny": ImageConfig(**image_shape("resnet-tiny"), **PIXEL_TINY),  # tests and smoke runs
    "mini": ImageConfig(**image_shape("resnet-narrow"), **PIXEL_MINI),
    "resnet18": ImageConfig(**image_shape("resnet18")),
    "vit-tiny": ImageConfig(**image_shape("vit-tiny")),
    "vit-mini": ImageConfig(**image_shape("vit-small-cpu")),
}


def _train(steps: int, batch_size: int, lr: float, warmup: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup,
                       weight_decay=1e-4, schedule="cosine", save_every=200,
                       eval_every=100, betas=(0.9, 0.999), eps=1e-8)  # fmt: skip


TRAIN: dict[str, TrainConfig] = {
    "tiny": _train(20, 32, 1e-3, 2),
    "mini": _train(900, 256, 2e-3, 50),
    "resnet18": _train(20000, 256, 1e-3, 500),
    "vit-tiny": _train(20, 32, 1e-3, 2),
    "vit-mini": _train(2000, 256, 5e-4, 100),
}


def image_preset(name: str) -> RunConfig:
    return RunConfig(preset=name, model=deepcopy(MODELS[name]), objective=SimCLRConfig(),
                     data=ImageDataConfig(), train=deepcopy(TRAIN[name]))  # fmt: skip
