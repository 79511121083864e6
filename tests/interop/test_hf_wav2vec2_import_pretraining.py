"""`selfsup pretrain --objective wav2vec2 --init HF_FOLDER`: a HuggingFace Wav2Vec2ForPreTraining
folder (encoder, quantizer weight_proj / codevectors, project_q, project_hid) continues
pretraining here. After the import our loss on a batch equals transformers' on the same folder
with the same mask, distractors and Gumbel noise; one pretraining step runs from it; a folder
without a quantizer (Wav2Vec2Model) gives the encoder, and the quantizer keeps the run's seeded
random weights with a warning in the log (the documented choice); bad uses are one-line errors.

The folders are tiny random models saved here with save_pretrained (as a user's download is):
three conv layers of 32 channels (kernels 10, 3, 3; strides 5, 2, 2: 20 samples a frame),
width 32, 2 layers, 2 heads, a positional conv of kernel 16 in 4 groups, codebooks of 2 x 8
entries (so that distractors with the target's codes occur), 6 distractors; weights perturbed
so zero biases and unit norms hide no mapping bug; dropout and layer drop 0.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import assert_clean_error, cli, perturb, write_speech

from selfsup.checkpoint import RUN_FORMAT, read_safetensors
from selfsup.data.audio import collate_frames
from selfsup.errors import ConfigError
from selfsup.interop.hf_wav2vec2 import from_hf_heads
from selfsup.keys import FEATURES, NEGATIVES, NOISE_SEED, PADDING_MASK, TIME_MASK
from selfsup.objectives import build_objective
from selfsup.objectives.base import batch_loss
from selfsup.objectives.wav2vec2 import (
    frame_padding_mask,
    utterance_gumbel_noise,
    wav2vec2_corrupt,
)
from selfsup.presets import preset
from selfsup.pretraining_init import init_config, init_weights

transformers = pytest.importorskip("transformers")

TINY = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
LAYERS = ((32, 10, 5), (32, 3, 2), (32, 3, 2))
G, V, K = 2, 8, 6
HEADS = dict(num_codevector_groups=G, num_codevectors_per_group=V, codevector_dim=16,
             proj_codevector_dim=12, num_negatives=K, diversity_loss_weight=0.1,
             contrastive_logits_temperature=0.1)  # fmt: skip
NO_DROPOUT = {k: 0.0 for k in ("hidden_dropout", "attention_dropout", "activation_dropout",
                               "feat_proj_dropout", "feat_quantizer_dropout", "final_dropout",
                               "layerdrop")}  # fmt: skip
LAYOUTS = {"base": {}, "stable": {"feat_extract_norm": "layer", "conv_bias": True,
                                  "do_stable_layer_norm": True}}  # fmt: skip


def save_hf(folder, layout: str = "base", model_cls: str = "Wav2Vec2ForPreTraining", seed=0):
    """A tiny random transformers model saved in `folder` with its feature extractor."""
    cfg = transformers.Wav2Vec2Config(**TINY, **LAYOUTS[layout], **NO_DROPOUT, **HEADS)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    perturb(model, seed)
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=layout == "stable"
    ).save_pretrained(folder)
    return folder


def imported(folder, seed: int = 0, **objective):
    """(our objective built as `pretrain --init folder` builds it, its RunConfig, the log)."""
    cfg = preset("tiny", "audio")
    cfg.set_objective("wav2vec2")
    init_config(cfg, folder)
    for k, v in objective.items():  # what --set objective.K=V does after the import
        setattr(cfg.objective, k, v)
    cfg.validate()
    torch.manual_seed(seed)
    model = build_objective(cfg.objective, cfg.model)
    lines = []
    init_weights(model, cfg, lines.append)
    return model, cfg, lines


def wave_batch(cfg, lengths, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in lengths])
    return wav2vec2_corrupt(cfg, LAYERS, batch, torch.Generator().manual_seed(2))


def inject_noise(monkeypatch, batch: dict, rows: torch.Tensor) -> None:
    """transformers draws its Gumbel noise from the global RNG (torch's gumbel_softmax): give it
    ours, on the frames we quantize (`rows`), none on the others (which no loss reads)."""
    B, T = rows.shape
    full = torch.zeros(B, T, G, V)
    full[rows] = utterance_gumbel_noise(batch[NOISE_SEED], rows, G, V)

    def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        soft = ((logits + full.reshape(logits.shape)) / tau).softmax(dim)
        one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
        return one_hot - soft.detach() + soft if hard else soft

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", gumbel_softmax)


@pytest.mark.parametrize("layout, lengths", [("base", (1000, 1000, 1000)),
                                             ("stable", (1000, 760, 430))])  # fmt: skip
def test_imported_loss_equals_transformers_on_the_same_folder(monkeypatch, tmp_path, layout,
                                                              lengths):  # fmt: skip
    folder = save_hf(tmp_path / "hf", layout)
    # masking numbers as the loss-equality test of the objective; no feature penalty
    # (transformers has none)
    ours, cfg, lines = imported(folder, mask_prob=0.1, span=4, feature_penalty_weight=0.0)
    o = cfg.objective
    assert (o.n_groups, o.n_entries, o.code_dim, o.proj_dim, o.n_negatives) == (G, V, 16, 12, K)
    assert cfg.model.dim == 32 and cfg.model.stable_layer_norm == (layout == "stable")
    assert cfg.data.features.cmvn == "utterance" and cfg.train.init == str(folder)
    assert "warning" not in " ".join(lines) and "Wav2Vec2ForPreTraining" in lines[0]
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(folder).train()
    ours.train()
    batch = wave_batch(ours.cfg, lengths)
    mask = batch[TIME_MASK]
    B, T = mask.shape
    inject_noise(monkeypatch, batch, mask)  # distractors from the masked frames (HF's scheme)
    flat = batch[NEGATIVES].long() + (torch.arange(B) * T)[:, None, None]  # transformers' form
    args = {"mask_time_indices": mask, "sampled_negative_indices": flat}
    if batch[PADDING_MASK].any():
        args["attention_mask"] = (~batch[PADDING_MASK]).long()
        assert frame_padding_mask(batch[PADDING_MASK], LAYERS).any()
    with torch.no_grad():
        hf_out = theirs(batch[FEATURES][..., 0], **args)
        out, loss = ours(batch), batch_loss(ours, batch)
    M = int(mask.sum())
    assert M > 3 * K
    assert float(out["contrastive_loss"]) == pytest.approx(float(hf_out.contrastive_loss), 1e-5)
    assert float(out["diversity_loss"]) == pytest.approx(0.1 * float(hf_out.diversity_loss), 1e-5)
    assert float(loss) * M == pytest.approx(float(hf_out.loss), 1e-5)
    # and not by chance: at this tolerance, fresh codebooks give another loss
    with torch.no_grad():
        ours.quantizer.codebooks.uniform_()
        other = float(ours(batch)["contrastive_loss"])
    assert other != pytest.approx(float(hf_out.contrastive_loss), 1e-5)


def test_a_folder_without_a_quantizer_keeps_a_seeded_random_one_and_warns(tmp_path):
    folder = save_hf(tmp_path / "hf", model_cls="Wav2Vec2Model")
    ours, cfg, lines = imported(folder, seed=3)
    assert len(lines) == 2 and lines[1].startswith("warning: ") and "no quantizer" in lines[1]
    torch.manual_seed(3)
    fresh = build_objective(cfg.objective, cfg.model)
    hf_sd = read_safetensors(folder / "model.safetensors")
    assert not any(k.startswith("quantizer.") for k in hf_sd)
    for name, p in ours.named_parameters():
        if name.startswith(("quantizer.", "project.")):
            assert torch.equal(p, fresh.get_parameter(name)), name  # the run's own init
    # the encoder is the folder's
    w = ours.encoder.transformer.blocks[1].mlp.down.weight
    assert torch.equal(w, hf_sd["encoder.layers.1.feed_forward.output_dense.weight"])
    assert not torch.equal(w, fresh.encoder.transformer.blocks[1].mlp.down.weight)


def test_an_incomplete_quantizer_is_a_one_line_error(tmp_path):
    model = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**TINY, **HEADS))
    sd = model.state_dict()
    assert from_hf_heads(sd, G, V)["quantizer.codebooks"].shape == (G, V, 8)
    sd.pop("project_q.bias")
    with pytest.raises(ConfigError, match="lack project_q.bias") as e:
        from_hf_heads(sd, G, V)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="codevectors has shape"):
        from_hf_heads(model.state_dict(), G, 4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=8, rates=(16000,))


def pretrain(capsys, folder, clips, out, *extra):
    return cli(capsys, "pretrain", "--objective", "wav2vec2", "--init", folder, "--data", clips,
               "--steps", "1", "--batch-size", "4", "--lr", "1e-9", "--out", out,
               "--cache-dir", clips.parent / "cache", "--no-progress",
               "--set", "data.max_frames=4000", "--set", "data.heldout_every=4",
               *extra)  # fmt: skip


def test_one_pretraining_step_from_an_hf_folder(tmp_path, clips, capsys, one_thread):
    folder = save_hf(tmp_path / "hf", "stable")
    capsys.readouterr()
    run = tmp_path / "run"
    code, out, err = pretrain(capsys, folder, clips, run)
    assert code == 0, err
    assert f"weights from {folder} (HuggingFace Wav2Vec2ForPreTraining)\n" in out
    assert "warning: " not in out.replace("warning: 30 warm-up steps", "")
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["init"] == str(folder)
    assert config["model"]["dim"] == 32 and config["model"]["stable_layer_norm"] is True
    assert config["objective"]["n_entries"] == V and config["objective"]["n_negatives"] == K
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("step") == 1 and r.get("loss", float("nan")) > 0 for r in rows), rows
    # the step started from the folder's weights (lr 1e-9: they barely move)
    ours, _, _ = imported(folder)
    after = read_safetensors(run / "model.safetensors")
    for name, p in ours.state_dict().items():
        if p.is_floating_point():
            torch.testing.assert_close(after[name], p, rtol=0, atol=1e-6)
    # a resumed run reads its checkpoint, not the folder
    shutil.rmtree(folder)
    code, out, err = cli(capsys, "pretrain", "--resume", run, "--steps", "2", "--no-progress")
    assert code == 0, err
    assert "init: " not in out


def test_init_errors_are_one_line(tmp_path, clips, capsys, one_thread):
    folder = save_hf(tmp_path / "hf")
    capsys.readouterr()  # transformers' progress bars
    code, _, err = cli(capsys, "pretrain", "--objective", "mockingjay", "--init", folder,
                       "--data", clips, "--out", tmp_path / "a")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "a", "--init is not supported by objective mockingjay")
    code, _, err = pretrain(capsys, tmp_path / "nothing", clips, tmp_path / "b")
    assert_clean_error(code, err, tmp_path / "b", "not a HuggingFace model folder")
    run = tmp_path / "run"  # a selfsup run is resumed, or exported first
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": RUN_FORMAT}))
    code, _, err = pretrain(capsys, run, clips, tmp_path / "b")
    assert_clean_error(code, err, tmp_path / "b", "is a selfsup run: continue it with --resume")
    code, _, err = pretrain(capsys, folder, clips, tmp_path / "c", "--set", "model.dim=64",
                            "--set", "model.n_heads=2")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "c", "a --set changed the shape")
    code, _, err = cli(capsys, "pretrain", "--resume", tmp_path / "c", "--init", folder)
    assert_clean_error(code, err, None, "give one of them")
