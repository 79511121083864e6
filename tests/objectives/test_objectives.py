"""Every objective keeps the contract (objectives/base.py): finite sums for every declared term,
counts for every term's count, a gradient for every trainable parameter and none for a frozen
one; the registry takes objectives from outside the package."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from dataclasses import asdict, fields, replace

import pytest
import torch
from test_image_objectives import build as build_image
from test_image_objectives import make_batch as image_batch
from toys import ToyContrastive, VectorBatches, VectorRegression, text_batch

from selfsup.config import data_config_of, model_config_of
from selfsup.data.audio import collate_frames
from selfsup.data.audio_batches import AudioDataConfig
from selfsup.encoders.audio import AudioConfig
from selfsup.encoders.conv_context import ConvContextConfig
from selfsup.encoders.image import ImageConfig
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.encoders.wav2vec2 import Wav2Vec2Config
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, TARGETS
from selfsup.objectives import OBJECTIVES, build_objective, get_objective, register
from selfsup.objectives.base import batch_loss
from selfsup.objectives.supervised import (
    Regression,
    SequenceClassification,
    SpanQA,
    TokenTagging,
)

MODEL = BertConfig(vocab_size=40, dim=32, n_layers=2, n_heads=2, ffn_dim=64, max_len=12,
                   dropout=0.0, attn_dropout=0.0)  # fmt: skip


def pretraining(name):
    cls = get_objective(name)
    model_cls = model_config_of(cls)
    if model_cls is AudioConfig:
        return audio_objective(name)
    if model_cls is Wav2Vec2Config:
        return wave_objective(name)
    if model_cls is ConvContextConfig:
        return conv_context_objective(name)
    if model_cls is ImageConfig:  # a tiny ResNet (the pixel model: a tiny Transformer)
        model = build_image(name)
        return model, image_batch(model)
    shape = {k: v for k, v in asdict(MODEL).items() if k in {f.name for f in fields(model_cls)}}
    model = build_objective(cls.Config(name=name), model_cls(**shape))
    return model, (text_batch(0) if model_cls is BertConfig else seq2seq_batch())


def audio_objective(name):
    """An audio objective on a tiny encoder, and a padded batch of frames its own corruption
    (audio_needs) altered."""
    cls = get_objective(name)
    shape = AudioConfig(feature_dim=6, dim=16, n_layers=2, n_heads=2, ffn_dim=32, max_len=64,
                        dropout=0.0, attn_dropout=0.0)  # fmt: skip
    shape = cls.default_model(shape) if hasattr(cls, "default_model") else shape
    torch.manual_seed(0)
    model = build_objective(cls.Config(name=name), shape)
    g = torch.Generator().manual_seed(0)
    lengths = [60, 45, 21]
    batch = collate_frames([torch.randn(n, 6, generator=g).numpy() for n in lengths])
    corrupt = model.audio_needs().corrupt
    return model, (corrupt(batch, g) if corrupt else batch)


def wave_objective(name):
    """A waveform objective (wav2vec 2.0's encoder) on a tiny encoder, three conv layers of 20
    samples a frame, and a padded batch of waves its own corruption altered."""
    cls = get_objective(name)
    shape = Wav2Vec2Config(conv_channels=(16,) * 3, conv_kernels=(10, 3, 3),
                           conv_strides=(5, 2, 2), dim=16, n_layers=2, n_heads=2, ffn_dim=32,
                           pos_conv_kernel=8, pos_conv_groups=4, dropout=0.0, attn_dropout=0.0,
                           proj_dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = build_objective(cls.Config(name=name), shape)
    g = torch.Generator().manual_seed(0)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in (2400, 1800, 1000)])
    if data_config_of(cls).frame_targets is not AudioDataConfig.frame_targets:  # HuBERT's labels
        batch[TARGETS] = torch.randint(0, 2, (3, 2400 // 20), generator=g)  # one per frame
    corrupt = model.audio_needs().corrupt
    return model, (corrupt(batch, g) if corrupt else batch)


def conv_context_objective(name):
    """CPC / wav2vec / vq-wav2vec on a tiny conv encoder (16 channels, 20 samples a frame) and
    context, and a padded batch of waves its own corruption gave negatives."""
    cls = get_objective(name)
    shape = cls.default_model(ConvContextConfig(dim=16, n_layers=2, n_entries=8))
    shape = replace(shape, conv_kernels=(10, 3, 3), conv_strides=(5, 2, 2),
                    conv_channels=(16,) * 3)  # fmt: skip
    torch.manual_seed(0)
    model = build_objective(cls.Config(name=name), shape)
    g = torch.Generator().manual_seed(0)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in (2400, 1800, 1000)])
    return model, model.audio_needs().corrupt(batch, g)


def seq2seq_batch():
    """A padded encoder-decoder batch: sources, the targets shifted right, targets (IGNORE on
    padding), and the targets' positions."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(5, 40, (3, 10), generator=g)
    mask = torch.ones_like(src)
    mask[1, 7:] = 0
    labels = torch.randint(5, 40, (3, 6), generator=g)
    labels[2, 4:] = IGNORE
    dec = torch.cat([torch.full((3, 1), 2), labels[:, :-1].clamp(min=0)], 1)
    positions = torch.arange(2, 8).repeat(3, 1)
    return {
        "input_ids": src.masked_fill(mask == 0, 0), "attention_mask": mask,
        "decoder_input_ids": dec, "labels": labels, "decoder_position_ids": positions,
    }  # fmt: skip


def supervised(kind):
    torch.manual_seed(0)
    b = text_batch(0)
    enc = build_encoder(MODEL)
    if kind == "classify":
        return SequenceClassification(enc, 3), {**b, "labels": b["class_labels"].clamp(min=0)}
    if kind == "regress":
        return Regression(enc), {**b, "labels": torch.randn(len(b["labels"]))}
    if kind == "tag":
        return TokenTagging(enc, 5), {**b, "labels": b["labels"] % 5 * (b["labels"] >= 0) - 100 *
                                      (b["labels"] < 0)}  # fmt: skip
    start = torch.randint(1, 6, (len(b["labels"]),))
    return SpanQA(enc), {**b, "start_positions": start, "end_positions": start + 1}


CASES = {
    **{f"pretrain:{n}": (lambda n=n: pretraining(n)) for n in OBJECTIVES},
    **{f"finetune:{k}": (lambda k=k: supervised(k)) for k in ("classify", "regress", "tag", "qa")},
    "toy:regression": lambda: (VectorRegression(), VectorBatches("regression")[0]),
    "toy:contrastive": lambda: (ToyContrastive(), VectorBatches("contrastive")[0]),
}


def test_every_registered_objective_is_covered():
    assert {f"pretrain:{n}" for n in OBJECTIVES} <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_contract(case):
    model, batch = CASES[case]()
    counts = model.counts(batch)
    assert set(model.loss_terms) <= set(model.terms)
    assert set(model.terms.values()) <= set(counts) and model.work in counts
    assert all(isinstance(v, int | float) and v >= 0 for v in counts.values())
    out = model(batch)
    assert set(out) == set(model.terms)
    assert all(v.ndim == 0 and math.isfinite(float(v.detach())) for v in out.values())
    loss = batch_loss(model, batch)
    assert math.isfinite(float(loss)) and float(loss) != 0  # (SimSiam's -cos may be < 0)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
        else:
            assert p.grad is None, name  # frozen: never trained


def test_mlm_alone_freezes_the_pooler_and_fine_tuning_unfreezes_it():
    mlm, _ = pretraining("mlm")
    assert not any(p.requires_grad for p in mlm.encoder.pooler.parameters())
    nsp, _ = pretraining("mlm+nsp")
    assert all(p.requires_grad for p in nsp.encoder.pooler.parameters())
    task = SequenceClassification(mlm.encoder, 2)
    assert all(p.requires_grad for p in task.parameters())


def test_unknown_objective_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown objective 'electra'; choose from mlm"):
        get_objective("electra")


def test_register_an_objective_from_outside(monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "_probe", OBJECTIVES["mlm"])  # restored afterwards
    del OBJECTIVES["_probe"]
    with pytest.raises(TypeError, match="no Config"):
        register("_probe", VectorRegression)

    class Probe(VectorRegression):
        Config = get_objective("mlm").Config

        @classmethod
        def build(cls, cfg, model_cfg):
            return cls()

    register("_probe", Probe)
    assert get_objective("_probe") is Probe
    del OBJECTIVES["_probe"]


def test_entry_point_objective_is_found(tmp_path):
    """A package that declares a `selfsup.objectives` entry point: found by name in a fresh
    process, without importing it first."""
    pkg = tmp_path / "site"
    (pkg / "myobj").mkdir(parents=True)
    (pkg / "myobj" / "__init__.py").write_text(
        textwrap.dedent("""
        from selfsup.objectives.mlm import MLM
        class Mine(MLM):
            pass
    """)
    )
    dist = pkg / "myobj-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myobj\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfsup.objectives]\nmine = myobj:Mine\n")
    code = "from selfsup.objectives import get_objective; print(get_objective('mine').__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(pkg), "PATH": ""}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Mine"
