"""wav2vec 2.0's objective (arXiv:2006.11477): its loss and gradients equal transformers'
Wav2Vec2ForPreTraining given the same weights, mask, distractors and Gumbel noise; the
corruption and the noise are seeded; the temperature follows the saved step; collapse is
flagged; `selfsup pretrain --objective wav2vec2` runs, resumes exactly and trains the same in
two processes as in one.

Tiny models built here: three conv layers of 32 channels (kernels 10, 3, 3; strides 5, 2, 2:
20 samples a frame, 1000 samples -> 49 frames), width 32, 2 layers, 2 heads, a positional
conv of kernel 16 in 4 groups; codebooks of 2 x 8 entries, so that distractors with the
target's codes (excluded from the loss) occur.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from helpers import cli, perturb, pretrain_straight_and_resumed, write_speech

from selfsup.data.audio import collate_frames
from selfsup.encoders.wav2vec2 import Wav2Vec2Config
from selfsup.interop.hf_wav2vec2 import from_hf_state, hf_config_to_wav2vec2, to_hf_state
from selfsup.keys import FEATURES, NEGATIVES, NOISE_SEED, PADDING_MASK, TIME_MASK
from selfsup.losses import wav2vec2_contrastive, wav2vec2_contrastive_by_utterance
from selfsup.monitors import embedding_stats, moment_stats
from selfsup.objectives.base import batch_loss
from selfsup.objectives.wav2vec2 import (
    Wav2Vec2,
    Wav2Vec2ObjectiveConfig,
    frame_padding_mask,
    utterance_gumbel_noise,
    wav2vec2_corrupt,
)
from selfsup.presets import preset
from selfsup.train import evaluate

TINY = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
LAYERS = ((32, 10, 5), (32, 3, 2), (32, 3, 2))
G, V, K = 2, 8, 6
NO_DROPOUT = {k: 0.0 for k in ("hidden_dropout", "attention_dropout", "activation_dropout",
                               "feat_proj_dropout", "feat_quantizer_dropout", "final_dropout",
                               "layerdrop")}  # fmt: skip
LAYOUTS = {"base": {}, "stable": {"feat_extract_norm": "layer", "conv_bias": True,
                                  "do_stable_layer_norm": True}}  # fmt: skip


def objective_cfg(**changes) -> Wav2Vec2ObjectiveConfig:
    base = dict(mask_prob=0.1, span=4, n_negatives=K, n_groups=G, n_entries=V, code_dim=16,
                proj_dim=12, feature_penalty_weight=0.0)  # fmt: skip
    return Wav2Vec2ObjectiveConfig(**{**base, **changes})


def wave_batch(lengths=(1000, 1000, 1000), seed: int = 1, cfg=None, corrupt_seed: int = 2):
    """A collated batch of random waves, corrupted as the objective's pipeline does."""
    g = torch.Generator().manual_seed(seed)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in lengths])
    cfg = cfg or objective_cfg()
    return wav2vec2_corrupt(cfg, LAYERS, batch, torch.Generator().manual_seed(corrupt_seed))


def tiny_objective(seed: int = 0, **changes) -> Wav2Vec2:
    model = Wav2Vec2Config(conv_channels=(32,) * 3, conv_kernels=(10, 3, 3),
                           conv_strides=(5, 2, 2), dim=32, n_layers=2, n_heads=2, ffn_dim=64,
                           pos_conv_kernel=16, pos_conv_groups=4, dropout=0.0, attn_dropout=0.0,
                           proj_dropout=0.0)  # fmt: skip
    torch.manual_seed(seed)
    return Wav2Vec2.build(objective_cfg(**changes), model)


# --------------------------------------------------------------------------------------------
# The contrastive loss by position equals the reference form over gathered vectors
# --------------------------------------------------------------------------------------------


def test_contrastive_by_utterance_equals_the_gathered_form():
    g = torch.Generator().manual_seed(0)
    B, T, D = 3, 20, 8
    context = torch.randn(B, T, D, generator=g, requires_grad=True)
    quantized = torch.randn(B, T, D, generator=g)
    quantized[1, 5] = quantized[1, 7]  # a distractor equal to the target: excluded
    quantized = quantized.requires_grad_()
    anchors = torch.rand(B, T, generator=g) < 0.5
    anchors[1, 5] = anchors[1, 7] = True
    b, t = anchors.nonzero(as_tuple=True)
    negatives = torch.randint(0, T, (len(b), 5), generator=g)
    negatives[(b == 1) & (t == 5), 0] = 7
    ours, hits = wav2vec2_contrastive_by_utterance(context, quantized, anchors, negatives)
    ref, ref_hits = wav2vec2_contrastive(context[b, t], quantized[b, t], quantized[b[:, None],
                                         negatives])  # fmt: skip
    assert torch.allclose(ours, ref, rtol=1e-5) and float(hits) == float(ref_hits)
    ga = torch.autograd.grad(ours, (context, quantized))
    gb = torch.autograd.grad(ref, (context, quantized))
    for a, r in zip(ga, gb, strict=True):
        assert torch.allclose(a, r, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Against transformers' Wav2Vec2ForPreTraining
# --------------------------------------------------------------------------------------------


def hf_pretraining(layout: str, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(
        **TINY, **LAYOUTS[layout], **NO_DROPOUT, num_codevector_groups=G,
        num_codevectors_per_group=V, codevector_dim=16, proj_codevector_dim=12, num_negatives=K,
        diversity_loss_weight=0.1, contrastive_logits_temperature=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForPreTraining(cfg)
    perturb(model, seed)
    return model.train()


# (ours, transformers') names of the weights outside the encoder
HEADS = [
    ("quantizer.logits.weight", "quantizer.weight_proj.weight"),
    ("quantizer.logits.bias", "quantizer.weight_proj.bias"),
    ("quantizer.out.weight", "project_q.weight"),
    ("quantizer.out.bias", "project_q.bias"),
    ("project.weight", "project_hid.weight"),
    ("project.bias", "project_hid.bias"),
]


def ours_from(hf, **changes) -> tuple[Wav2Vec2, Wav2Vec2Config]:
    """Our objective with transformers' weights; the front end's gradient unscaled
    (transformers scales none) and no feature penalty (transformers has none)."""
    enc_cfg, _ = hf_config_to_wav2vec2(hf.config.to_dict())
    model = Wav2Vec2.build(objective_cfg(**changes), replace(enc_cfg, feature_grad_mult=1.0))
    sd = hf.state_dict()
    model.encoder.load_state_dict(from_hf_state(sd, enc_cfg))
    with torch.no_grad():
        for ours, theirs in HEADS:
            model.get_parameter(ours).copy_(sd[theirs])
        model.quantizer.codebooks.copy_(sd["quantizer.codevectors"].view(G, V, -1))
    return model.train(), enc_cfg


def hf_inputs(batch: dict, rows: torch.Tensor) -> dict:
    """transformers' arguments for our batch: its mask, our distractors as flat indices into
    the batch's frames, and the attention mask where the batch is padded."""
    mask = batch[TIME_MASK]
    B, T = mask.shape
    offsets = (torch.arange(B) * T)[:, None, None]
    args = {"mask_time_indices": mask, "sampled_negative_indices": batch[NEGATIVES].long() +
            offsets}  # fmt: skip
    if batch[PADDING_MASK].any():
        args["attention_mask"] = (~batch[PADDING_MASK]).long()
    return args


def inject_noise(monkeypatch, batch: dict, rows: torch.Tensor) -> None:
    """transformers draws its Gumbel noise from the global RNG (torch's gumbel_softmax): give it
    ours instead, the frames we quantize (`rows`) with our per-utterance noise, the others
    (which no loss reads) with none."""
    B, T = rows.shape
    full = torch.zeros(B, T, G, V)
    full[rows] = utterance_gumbel_noise(batch[NOISE_SEED], rows, G, V)

    def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        soft = ((logits + full.reshape(logits.shape)) / tau).softmax(dim)
        index = soft.argmax(dim, keepdim=True)
        one_hot = torch.zeros_like(soft).scatter_(dim, index, 1.0)
        return one_hot - soft.detach() + soft if hard else soft

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", gumbel_softmax)


@pytest.mark.parametrize(
    "layout, negatives_from, lengths",
    [("base", "masked", (1000, 1000, 1000)), ("stable", "masked", (1000, 760, 430)),
     ("stable", "all", (1000, 760, 430))],
)  # fmt: skip
def test_loss_and_gradients_equal_transformers(monkeypatch, layout, negatives_from, lengths):
    """transformers in train mode (dropout and layer drop 0): its contrastive loss (a sum over
    the masked frames) and diversity loss (times the masked frames) are our sums; its total is
    our loss times the masked frames; every weight gets the same gradient."""
    hf = hf_pretraining(layout)
    ours, enc_cfg = ours_from(hf, negatives_from=negatives_from)
    batch = wave_batch(lengths, cfg=ours.cfg)
    mask = batch[TIME_MASK]
    pad = frame_padding_mask(batch[PADDING_MASK], LAYERS)
    rows = mask if negatives_from == "masked" else ~pad
    inject_noise(monkeypatch, batch, rows)
    theirs = hf(batch[FEATURES][..., 0], **hf_inputs(batch, rows))
    out = ours(batch)
    M = int(mask.sum())
    assert M == ours.counts(batch)["masked"] and M > 3 * K
    assert float(out["contrastive_loss"]) == pytest.approx(float(theirs.contrastive_loss), 1e-5)
    div = float(out["diversity_loss"])
    assert div == pytest.approx(0.1 * float(theirs.diversity_loss), 1e-5)
    assert float(out["prob_perplexity"]) / M == pytest.approx(
        float(theirs.codevector_perplexity), 1e-5
    )
    loss = batch_loss(ours, batch)
    assert float(loss) * M == pytest.approx(float(theirs.loss), 1e-5)
    # the exclusion of distractors equal to the target was exercised
    b, t = mask.nonzero(as_tuple=True)
    q = theirs.projected_quantized_states.detach()
    negatives = batch[NEGATIVES][mask].long()
    assert (q[b[:, None], negatives] == q[b, t][:, None]).all(-1).any()

    (loss * M).backward()
    theirs.loss.backward()
    grads = {n: p.grad for n, p in ours.encoder.named_parameters()}
    mine = {f"wav2vec2.{k}": v for k, v in to_hf_state(grads, enc_cfg).items()}
    mine.update({h: ours.get_parameter(o).grad for o, h in HEADS})
    mine["quantizer.codevectors"] = ours.quantizer.codebooks.grad.reshape(1, G * V, -1)
    expected = {n: p.grad for n, p in hf.named_parameters()}
    assert mine.keys() == expected.keys()
    for n, g in expected.items():
        err = float((mine[n] - g).abs().max())
        assert err <= 1e-4 * max(float(g.abs().max()), 1e-3), (n, err)


# --------------------------------------------------------------------------------------------
# Corruption and noise: seeded, per utterance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives_from", ["masked", "all"])
def test_corruption_is_seeded_and_draws_distractors_within_the_utterance(negatives_from):
    cfg = objective_cfg(negatives_from=negatives_from)
    lengths = (1000, 760, 430)
    a, b = wave_batch(lengths, cfg=cfg), wave_batch(lengths, cfg=cfg)
    c = wave_batch(lengths, cfg=cfg, corrupt_seed=3)
    for key in (TIME_MASK, NEGATIVES, NOISE_SEED):
        assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    pad = frame_padding_mask(a[PADDING_MASK], LAYERS)
    mask, negatives = a[TIME_MASK], a[NEGATIVES]
    assert mask.shape == pad.shape == (3, 49) and negatives.shape == (3, 49, K)
    assert not (mask & pad).any() and (mask.sum(1) >= 2 * cfg.span // 2).all()
    sources = mask if negatives_from == "masked" else ~pad
    for i, t in mask.nonzero().tolist():
        drawn = negatives[i, t].long()
        assert sources[i, drawn].all() and (drawn != t).all()  # of the same utterance, not t
    # every tensor is per utterance: a batch cut by rows (a rank's share) keeps its meaning
    assert {v.shape[0] for v in a.values()} == {3}


def test_gumbel_noise_comes_from_the_batch_not_the_global_rng():
    model = tiny_objective().train()
    batch = wave_batch()
    torch.manual_seed(1)
    first = model(batch)
    torch.manual_seed(2)
    again = model(batch)
    for k in first:
        assert torch.equal(first[k], again[k]), k
    other = {**batch, NOISE_SEED: batch[NOISE_SEED] + 1}
    assert not torch.equal(model(other)["contrastive_loss"], first["contrastive_loss"])
    # an utterance's noise depends on its own seed and frames, not on the rest of the batch
    rows = batch[TIME_MASK]
    whole = utterance_gumbel_noise(batch[NOISE_SEED], rows, G, V)
    tail = utterance_gumbel_noise(batch[NOISE_SEED][1:], rows[1:], G, V)
    assert torch.equal(whole[int(rows[0].sum()) :], tail)


def test_temperature_follows_the_saved_step():
    model = tiny_objective()
    assert model.gumbel_temperature() == 2.0
    for _ in range(3):
        model.after_step()
    assert int(model.step) == 3 and model.gumbel_temperature() == pytest.approx(2 * 0.999995**3)
    fresh = tiny_objective()
    fresh.load_state_dict(model.state_dict())  # a resumed run continues the schedule
    assert fresh.gumbel_temperature() == model.gumbel_temperature()
    fresh.step.fill_(10**7)
    assert fresh.gumbel_temperature() == 0.5  # annealed to its floor
    model.train()(wave_batch())
    assert model.quantizer.temperature == model.gumbel_temperature()


# --------------------------------------------------------------------------------------------
# Monitors and collapse
# --------------------------------------------------------------------------------------------


def test_moment_stats_equal_the_row_statistics():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0)) @ torch.randn(6, 6)
    x[:, 5] = 0.0
    ref = embedding_stats(x)
    parts = [x[:20], x[20:]]  # moments add over shards (ranks)
    total = sum(p.sum(0) for p in parts)
    gram = sum(p.T @ p for p in parts)
    got = moment_stats(total, gram, 50)
    assert float(got["embedding_std"]) == pytest.approx(float(ref["embedding_std"]), 1e-5)
    assert float(got["effective_rank"]) == pytest.approx(float(ref["effective_rank"]), 1e-5)
    assert got["dim"] == 6
    assert float(moment_stats(torch.zeros(6), torch.zeros(6, 6), 0)["effective_rank"]) == 0.0


def test_monitors_are_means_and_a_healthy_model_raises_no_warning():
    model = tiny_objective(n_entries=320, code_dim=16)
    # enough masked frames (about 800) that a healthy code histogram can spread over 320
    batches = [wave_batch((3000,) * 6, seed, cfg=model.cfg) for seed in (1, 5)]
    ev = evaluate(model, batches)
    assert 1.0 <= ev["code_perplexity_0"] <= ev["codes_in_use_0"] <= 320
    assert 0.0 <= ev["contrastive_acc"] <= 1.0 and ev["temperature"] == 2.0
    assert ev["prob_perplexity"] == pytest.approx(
        (1 - ev["diversity_loss"] / 0.1) * G * 320, rel=1e-4
    )  # L_d = (G V - prob_perplexity) / (G V)
    assert ev["embedding_std"] > 0 and 1 < ev["effective_rank"] <= 12
    assert ev["loss"] == pytest.approx(sum(ev[k] for k in model.loss_terms))
    assert model.warnings(ev) == []


def force_one_entry(model: Wav2Vec2) -> None:
    """Every frame's logits pick entry 3 of each group: a collapsed codebook."""
    with torch.no_grad():
        model.quantizer.logits.weight.zero_()
        model.quantizer.logits.bias.fill_(-20.0)
        model.quantizer.logits.bias.view(G, -1)[:, 3] = 20.0


def test_a_codebook_forced_onto_one_entry_is_flagged():
    model = tiny_objective(n_entries=320, code_dim=16)
    force_one_entry(model)
    ev = evaluate(model, [wave_batch(cfg=model.cfg)])
    assert ev["code_perplexity_0"] == pytest.approx(1.0) and ev["codes_in_use_1"] == 1.0
    assert ev["diversity_loss"] == pytest.approx(0.1 * (1 - 1 / 320), rel=1e-4)
    warnings = model.warnings(ev)
    assert any(w.startswith("codebook group 0: perplexity 1.0") for w in warnings), warnings
    assert any(w.startswith("codebook group 1: 1 of 320 entries") for w in warnings), warnings
    # every target is the same vector: all distractors excluded, a trivial task
    assert ev["contrastive_loss"] == 0.0 and ev["contrastive_acc"] == 1.0
    assert any("trivial" in w for w in warnings)


class Batches(torch.utils.data.Dataset):
    def __init__(self, cfg):
        self.cfg = cfg

    def __len__(self) -> int:
        return 100

    def __getitem__(self, k: int) -> dict:
        return wave_batch(seed=k, cfg=self.cfg, corrupt_seed=k)


def test_the_loop_logs_collapse_warnings_at_every_evaluation(tmp_path):
    from selfsup.config import TrainConfig
    from selfsup.train import train

    model = tiny_objective(n_entries=320, code_dim=16, diversity_weight=0.0)
    force_one_entry(model)
    held = [wave_batch(seed=99, cfg=model.cfg)]
    cfg = TrainConfig(steps=2, batch_size=3, lr=1e-4, warmup_steps=0, save_every=0,
                      eval_every=1, log_every=1)  # fmt: skip
    logs = []
    train(model, Batches(model.cfg), cfg, tmp_path, lambda m: evaluate(m, held), progress=False,
          log=logs.append)  # fmt: skip
    for step in (1, 2):
        assert any(line.startswith(f"warning at step {step}: codebook group 0") for line in logs)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["codes_in_use_0"] == 1.0 and rows[1]["eval_code_perplexity_1"] == 1.0
    assert int(model.step) == 2


# --------------------------------------------------------------------------------------------
# selfsup pretrain --objective wav2vec2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips")


def run_cfg(speech, steps: int = 8):
    cfg = preset("tiny", "audio")
    cfg.set_objective("wav2vec2")
    cfg.data.paths, cfg.data.cache_dir = [str(speech)], str(speech.parent / "cache")
    cfg.data.max_frames, cfg.data.heldout_every = 8000, 6  # 0.5 s crops
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = steps, 4, 1
    cfg.train.eval_every, cfg.train.save_every, cfg.train.log_every = 4, 4, 1
    cfg.validate()
    return cfg


def metrics(run) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


TIMING = {"samples_per_s", "frames_per_s", "data_share", "elapsed_s"}


def test_cli_pretrain_with_the_tiny_preset(speech, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys, "pretrain", "--objective", "wav2vec2", "--preset", "tiny", "--data", speech,
        "--steps", "2", "--batch-size", "4", "--cache-dir", tmp_path / "cache", "--out", out,
        "--no-progress", "--set", "data.max_frames=8000", "--set", "train.eval_every=2",
        "--set", "data.heldout_every=6",
    )  # fmt: skip
    assert code == 0, err
    assert "objective wav2vec2" in stdout and "2 layers x 128" in stdout
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["conv_channels"] == [128] * 7 and saved["model"]["feature_dim"] == 1
    assert saved["data"]["features"]["kind"] == "wave"
    train_row, eval_row = metrics(out)[-2:]
    for k in ("contrastive_loss", "diversity_loss", "feature_penalty", "contrastive_acc",
              "code_perplexity_0", "codes_in_use_1", "temperature", "effective_rank"):  # fmt: skip
        assert k in train_row and f"eval_{k}" in eval_row
    assert train_row["temperature"] == pytest.approx(2 * 0.999995, abs=1e-5)  # step 1's
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["eval_loss"] < float("inf")


def test_inspect_masking_reports_the_encoder_frames_masked(speech, tmp_path, capsys):
    code, out, err = cli(
        capsys, "inspect-masking", "--objective", "wav2vec2", "--data", speech, "--batches",
        "10", "--batch-size", "4", "--cache-dir", tmp_path / "cache", "--json",
        "--set", "data.max_frames=16000",
    )  # fmt: skip
    assert code == 0, err
    stats = json.loads(out)
    # p = 0.065 of the frames start a span of 10; overlaps: about 1 - 0.935^10 = 49% masked
    assert 0.4 < stats["time_masked_rate"] < 0.62 and stats["masked_utterances"] == 1.0
    assert min(map(int, stats["run_lengths"])) >= 10  # whole spans, merged where they touch
    assert stats["target_mask_prob"] == 0.065 and stats["span"] == 10


@pytest.mark.parametrize(
    "args, message",
    [(["--grad-accum", "2"], "batch-level"),
     (["--set", "objective.negatives_from=others"], "negatives_from"),
     (["--set", "objective.code_dim=255"], "code_dim"),
     (["--set", "data.max_frames=300"], "receptive field")],
)  # fmt: skip
def test_bad_settings_are_one_line_errors(speech, tmp_path, capsys, args, message):
    code, _, err = cli(capsys, "pretrain", "--objective", "wav2vec2", "--data", speech,
                       "--out", tmp_path / "r", *args)  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_interrupted_run_resumes_exactly(speech, tmp_path):
    """Stopped after its step-4 checkpoint and resumed to step 8: the weights (the Gumbel
    temperature's step included) and every logged value of an uninterrupted run."""
    pretrain_straight_and_resumed(lambda: run_cfg(speech), tmp_path / "a", tmp_path / "b", 4)
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert int(wa["step"]) == 8 and wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(metrics(tmp_path / "a")) == strip(metrics(tmp_path / "b"))


@pytest.mark.slow  # about 70 s on 2 busy cores: three processes start
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo")
def test_two_processes_train_as_one(tmp_path):
    """Under torchrun each rank holds half of every batch: the diversity loss and the codebook
    and embedding statistics come from both halves (gathered), the distractors from each
    utterance; per-step losses, monitors and gradient norms equal one process."""
    from test_distributed import BATCH, _selfsup, assert_same_rows

    clips = write_speech(tmp_path / "clips", n=24)
    args = [
        "pretrain", "--objective", "wav2vec2", "--data", str(clips), "--batch-size", str(BATCH),
        "--steps", "4", "--save-every", "2", "--eval-every", "2", "--seed", "3",
        "--set", "train.log_every=1", "--set", "data.max_frames=8000", "--set",
        "data.heldout_every=6", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    _selfsup(1, *args, "--out", str(tmp_path / "one"))
    _selfsup(2, *args, "--out", str(tmp_path / "two"))

    def without_rate(rs):  # samples_per_s: wall clock, not in test_distributed's TIMING_KEYS
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rs]

    one, two = (without_rate(metrics(tmp_path / r)) for r in ("one", "two"))
    assert "diversity_loss" in one[0] and "eval_codes_in_use_0" in one[-1]
    assert_same_rows(one, two)
