"""CPC, wav2vec and vq-wav2vec (objectives/cpc.py, wav2vec.py, vq_wav2vec.py) and their encoder
(encoders/conv_context.py): each loss equals its paper's formula computed directly, one anchor
at a time in float64 (and its gradient the tested losses' on explicitly gathered vectors); the
context network is causal; the negatives come from where they should; the Gumbel temperature
anneals and resumes; `selfsup pretrain` runs each end to end, resumes exactly, trains on two
processes as on one, and the run is a SUPERB upstream."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from helpers import assert_clean_error, cli, write_speech
from safetensors.torch import load_file

from selfsup.corrupt.negatives import frame_negatives, other_utterance_negatives
from selfsup.data.audio import collate_frames
from selfsup.encoders.conv_context import ConvContextConfig, build_conv_context
from selfsup.keys import NEGATIVES, OTHER_NEGATIVES
from selfsup.layers.conv_frontend import conv_output_lengths
from selfsup.losses import info_nce, info_nce_scores, wav2vec_binary_loss, wav2vec_binary_scores
from selfsup.objectives import build_objective, get_objective
from selfsup.objectives.vq_wav2vec import annealed_temperature

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = (4000, 3100, 1500)  # samples: 23, 17 and 7 frames (160 a frame, each reads 465)


def objective(name: str, **model):
    """`name` at the preset shape of width 16 (model overrides applied), seeded."""
    cls = get_objective(name)
    shape = cls.default_model(ConvContextConfig(dim=16, n_layers=2, n_entries=12))
    shape = replace(shape, **model)
    shape.validate()
    torch.manual_seed(0)
    return build_objective(cls.Config(name=name), shape)


def batch_for(model, lengths=LENGTHS, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = collate_frames([torch.randn(n, 1, generator=g).numpy() for n in lengths])
    return model.audio_needs().corrupt(batch, g)


def anchors(model, batch):
    """Every anchor of the batch one at a time: (utterance, t, k, prediction W_k c_t (+ b_k),
    target z_{t+k}, [negatives]) from the encoder's outputs, read off the batch's indices."""
    out = model.encode(batch)
    c, z, pad = out["hidden"], out[model.target], out["padding_mask"]
    S, C = model.cfg.steps, z.shape[-1]
    W = model.predict.weight.view(S, C, -1)
    bias = None if model.predict.bias is None else model.predict.bias.view(S, C)
    flat = z.flatten(0, 1)
    rows = []
    for b in range(z.shape[0]):
        L = int((~pad[b]).sum())
        for t in range(L):
            for k in range(1, S + 1):
                if t + k >= L:
                    continue
                pred = W[k - 1] @ c[b, t] + (0 if bias is None else bias[k - 1])
                negs = [z[b, j] for j in batch[NEGATIVES][b, t + k].tolist()]
                if OTHER_NEGATIVES in batch:
                    negs += [flat[j] for j in batch[OTHER_NEGATIVES][b, t + k].tolist()]
                rows.append((b, t, k, pred, z[b, t + k], torch.stack(negs)))
    return rows


def direct_cpc(rows):
    """CPC eq. 4 per anchor, float64: -log exp(z^T W_k c) / sum over {z} u negatives."""
    loss, hits = 0.0, 0
    for *_, pred, target, negs in rows:
        p, target, negs = pred.detach().double(), target.detach(), negs.detach()
        s = [float(target.double() @ p)] + [float(n.double() @ p) for n in negs]
        loss -= s[0] - math.log(sum(math.exp(v) for v in s))
        hits += all(s[0] > v for v in s[1:])
    return loss, hits


def direct_wav2vec(rows, weight=None):
    """wav2vec eq. 1 per anchor, float64: -[log sig(z^T h) + lambda mean log sig(-z~^T h)]."""
    loss, hits = 0.0, 0
    for *_, pred, target, negs in rows:
        p, target, negs = pred.detach().double(), target.detach(), negs.detach()
        pos, neg = float(target.double() @ p), [float(n.double() @ p) for n in negs]
        lam = len(neg) if weight is None else weight
        log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
        loss -= log_sig(pos) + lam * sum(log_sig(-v) for v in neg) / len(neg)
        hits += all(pos > v for v in neg)
    return loss, hits


def gathered(rows):
    return (torch.stack([r[3] for r in rows]), torch.stack([r[4] for r in rows]),
            torch.stack([r[5] for r in rows]))  # fmt: skip


def close(a, b):
    """Equal up to float32 rounding of sums over a few hundred anchors."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------
# the losses against the papers' formulas
# --------------------------------------------------------------------------------------------


def test_cpc_loss_is_the_papers_infonce_over_every_step_and_anchor():
    model = objective("cpc")
    batch = batch_for(model)
    out = model(batch)
    rows = anchors(model, batch)
    assert (
        len(rows)
        == model.counts(batch)["anchors"]
        == sum(max(0, L - k) for L in (23, 17, 7) for k in range(1, 13))
    )
    loss, hits = direct_cpc(rows)
    assert 0 < hits < len(rows)
    assert float(out["contrastive_acc"]) == hits
    assert float(out["contrastive_loss"]) == pytest.approx(loss, rel=1e-5)
    # gradients: the tested info_nce on every anchor's gathered vectors, through the encoder
    out["contrastive_loss"].backward()
    mine = grads(model)
    model.zero_grad()
    info_nce(*gathered(anchors(model, batch)))[0].backward()
    theirs = grads(model)
    assert mine.keys() == theirs.keys()
    for name in mine:
        close(mine[name], theirs[name])


def test_cpc_negatives_come_from_the_same_and_the_other_utterances():
    model = objective("cpc")
    batch = batch_for(model)
    assert batch[NEGATIVES].shape == (3, 23, 8) and batch[OTHER_NEGATIVES].shape == (3, 23, 8)
    real = [23, 17, 7]
    for b, L in enumerate(real):
        same = batch[NEGATIVES][b, :L]
        assert int(same.max()) < L
        assert not bool((same == torch.arange(L)[:, None]).any())  # never the frame itself
        other = batch[OTHER_NEGATIVES][b, :L]
        rows, frames = other // 23, other % 23
        assert not bool((rows == b).any())
        assert all(int(frames[rows == r].max()) < real[r] for r in set(rows.flatten().tolist()))


def test_score_forms_of_the_losses_equal_the_vector_forms():
    g = torch.Generator().manual_seed(0)
    pred, target, negs = (torch.randn(*s, generator=g) for s in ((7, 5), (7, 5), (7, 4, 5)))
    target[:3] = pred[:3] * 2  # some hits
    scores = torch.cat([(pred * target).sum(-1, keepdim=True),
                        torch.einsum("nd,nkd->nk", pred, negs)], 1)  # fmt: skip
    for mine, theirs in [(info_nce_scores(scores), info_nce(pred, target, negs)),
                         (wav2vec_binary_scores(scores), wav2vec_binary_loss(pred, target, negs)),
                         (wav2vec_binary_scores(scores, 2.0),
                          wav2vec_binary_loss(pred, target, negs, 2.0))]:  # fmt: skip
        torch.testing.assert_close(mine[0], theirs[0])
        assert float(mine[1]) == float(theirs[1])
    assert 0 < float(info_nce_scores(scores)[1]) < 7


@pytest.mark.parametrize("weight", [0.0, 3.0])
def test_wav2vec_loss_is_the_papers_binary_loss(weight):
    model = objective("wav2vec")
    model.cfg.negative_weight = weight
    batch = batch_for(model)
    assert OTHER_NEGATIVES not in batch and batch[NEGATIVES].shape[-1] == 10
    out = model(batch)
    rows = anchors(model, batch)
    loss, hits = direct_wav2vec(rows, weight or None)
    assert float(out["contrastive_acc"]) == hits
    assert float(out["contrastive_loss"]) == pytest.approx(loss, rel=1e-5)
    out["contrastive_loss"].backward()
    mine = grads(model)
    model.zero_grad()
    wav2vec_binary_loss(*gathered(anchors(model, batch)), weight or None)[0].backward()
    for name, g in grads(model).items():
        close(mine[name], g)


@pytest.mark.parametrize("quantizer", ["gumbel", "kmeans"])
def test_vq_wav2vec_scores_the_quantized_frames(quantizer):
    model = objective("vq-wav2vec", quantizer=quantizer)
    batch = batch_for(model)
    out = model(batch)
    rows = anchors(model, batch)  # targets and negatives: the quantized z^
    enc = model.encode(batch)
    real = ~enc["padding_mask"]
    q, z = enc["quantized"], enc["z"]
    assert len({tuple(r) for r in q[real].tolist()}) <= 12**2  # G = 2 groups of V = 12 entries
    loss, hits = direct_wav2vec(rows)
    assert float(out["contrastive_loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(out["contrastive_acc"]) == hits
    codes = enc["codes"][real]
    assert float(out["codes_in_use"]) == pytest.approx(
        sum(len(set(codes[:, g].tolist())) for g in range(2)) / 2
    )
    if quantizer == "kmeans":  # (1 + gamma) sum ||z - e||^2, over frames x channels
        sq = float(((q - z)[real] ** 2).sum())
        assert float(out["vq_loss"]) == pytest.approx(1.25 * sq, rel=1e-5)
        assert model.counts(batch)["vq_values"] == int(real.sum()) * 16
        assert "vq_loss" in model.loss_terms
    else:
        assert float(out["temperature"]) == 2.0


def test_gumbel_temperature_anneals_with_the_step_buffer_and_resumes():
    model = objective("vq-wav2vec")
    batch = batch_for(model)
    model.cfg.anneal_steps = 4  # linear 2 -> 0.5 over 4 steps
    seen = []
    for _ in range(6):
        seen.append(float(model(batch)["temperature"]))
        model.after_step()
    assert seen == pytest.approx([2.0, 1.625, 1.25, 0.875, 0.5, 0.5])
    state = model.state_dict()
    assert int(state["step"]) == 6
    fresh = objective("vq-wav2vec")
    fresh.cfg.anneal_steps = 4
    fresh.load_state_dict(state)
    assert float(fresh(batch)["temperature"]) == 0.5
    cfg = fresh.cfg
    cfg.anneal_steps = 0  # the implementation's decay: max(0.5, 2 * 0.999995^step)
    assert annealed_temperature(cfg, 1000) == pytest.approx(2 * 0.999995**1000)
    assert annealed_temperature(cfg, 10**7) == 0.5


def test_gumbel_noise_is_drawn_per_utterance():
    """An utterance's codes in training depend on its own seed, not on the batch around it (so
    the codes are the same on any rank); evaluation takes the argmax, no noise."""
    model = objective("vq-wav2vec", conv_norm="layer")
    batch = batch_for(model)
    codes = model.encode(batch)["codes"]
    alone = {"features": batch["features"][1:2, :3100], "noise_seed": batch["noise_seed"][1:2],
             "padding_mask": batch["padding_mask"][1:2, :3100]}  # fmt: skip
    assert torch.equal(model.encode(alone)["codes"][0], codes[1, :17])
    other = {**batch, "noise_seed": batch["noise_seed"] + 1}
    assert not torch.equal(model.encode(other)["codes"], codes)
    model.eval()
    assert torch.equal(model.encode(batch)["codes"], model.encode(other)["codes"])


# --------------------------------------------------------------------------------------------
# the encoder: causal, padding-free, the upstream contract
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "quantizer"), [("gru", "none"), ("conv", "none"),
                                                    ("conv", "gumbel")])  # fmt: skip
def test_the_context_is_causal(context, quantizer):
    """Changing sample s changes no output (z, every context layer) at a frame whose window
    ends before s (frame t reads samples [160 t, 160 t + 465)), and does change later ones."""
    cfg = ConvContextConfig(conv_channels=(16,) * 5, dim=16, n_layers=3, context=context,
                            quantizer=quantizer, n_entries=12)  # fmt: skip
    torch.manual_seed(0)
    enc = build_conv_context(cfg).eval()
    wave = torch.randn(1, 6000, 1)
    s = 3000
    bumped = wave.clone()
    bumped[0, s] += 5.0
    a, b = enc(wave, return_all=True), enc(bumped, return_all=True)
    earlier = (s - enc.receptive_field) // enc.frame_stride + 1  # frames 0..earlier-1
    assert len(a["all_hidden"]) == 4  # z, then 3 context layers
    for ha, hb in zip(a["all_hidden"], b["all_hidden"], strict=True):
        assert torch.equal(ha[0, :earlier], hb[0, :earlier])
    assert not torch.equal(a["hidden"][0, earlier:], b["hidden"][0, earlier:])


def test_with_a_group_norm_front_end_the_context_network_alone_is_causal():
    """wav2vec's group norm makes z depend on the whole clip; the context given z does not
    read ahead."""
    model = objective("wav2vec")
    enc = model.encoder.eval()
    z = torch.randn(1, 30, enc.z_dim)
    bumped = z.clone()
    bumped[0, 20] += 3.0
    for ha, hb in zip(enc.context(z), enc.context(bumped), strict=True):
        assert torch.equal(ha[0, :20], hb[0, :20]) and not torch.equal(ha[0, 20:], hb[0, 20:])


def test_padding_never_changes_real_frames_with_a_layer_norm_front_end():
    model = objective("cpc")
    enc = model.encoder.eval()
    batch = collate_frames([torch.randn(n, 1).numpy() for n in LENGTHS])
    out = enc(batch["features"], batch["padding_mask"], return_all=True)
    alone = enc(batch["features"][2:, :1500], return_all=True)
    n = int(conv_output_lengths(1500, enc.conv_layers))
    assert out["padding_mask"][2].tolist() == [False] * n + [True] * (23 - n)
    for h, g in zip(out["all_hidden"], alone["all_hidden"], strict=True):
        torch.testing.assert_close(h[2, :n], g[0], rtol=1e-5, atol=1e-6)


def test_the_encoder_keeps_the_upstream_contract():
    enc = objective("wav2vec").encoder.eval()
    assert (enc.dim, enc.n_layers, enc.stack, enc.feature_dim) == (16, 2, 1, 1)
    assert (enc.frame_stride, enc.receptive_field) == (160, 465)
    out = enc(torch.zeros(1, 2, 1), return_all=True)  # shorter than one frame: one, padding
    assert out["padding_mask"].tolist() == [[True]] and len(out["all_hidden"]) == 3
    wide = build_conv_context(ConvContextConfig())  # CPC's paper shape: z 512, GRU 256
    out = wide(torch.zeros(1, 2000), return_all=True)
    assert [h.shape[-1] for h in out["all_hidden"]] == [256]  # only layers as wide as D


def test_other_utterance_negatives_in_a_batch_of_one_come_from_the_utterance():
    valid = torch.ones(1, 6, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    idx = other_utterance_negatives(valid, 5, g)
    assert idx.shape == (6, 5) and int(idx.max()) < 6
    assert not bool((idx == torch.arange(6)[:, None]).any())


def test_negatives_are_a_function_of_the_generator():
    valid = torch.arange(10)[None] < torch.tensor([10, 7, 3])[:, None]
    draw = lambda s: frame_negatives(valid, 4, 4, torch.Generator().manual_seed(s))  # noqa: E731
    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    # drawn uniformly: utterance 2's frames take other-utterance draws in proportion (3 of 20)
    many = other_utterance_negatives(valid, 2000, torch.Generator().manual_seed(0))[:10]
    share = float(((many // 10) == 2).float().mean())
    assert share == pytest.approx(3 / 10, abs=0.03)  # of utterance 0's others: 7 + 3 frames


def test_collapse_is_flagged_from_the_held_out_monitors():
    model = objective("vq-wav2vec", n_entries=320)
    healthy = {"eval_code_perplexity": 200.0, "eval_codes_in_use": 300.0,
               "eval_embedding_std": 0.3, "eval_effective_rank": 9.0}  # fmt: skip
    assert model.warnings(healthy) == []
    collapsed = {"eval_code_perplexity": 1.2, "eval_codes_in_use": 3.0,
                 "eval_embedding_std": 1e-4, "eval_effective_rank": 1.0}  # fmt: skip
    said = " | ".join(model.warnings(collapsed))
    for what in ("perplexity 1.2 of 320 entries", "3 of 320 entries in use", "embedding std",
                 "effective rank"):  # fmt: skip
        assert what in said
    trivial = {"contrastive_acc": 1.0, "contrastive_loss": 1e-4}  # the loop's keys, no eval_
    assert "trivial" in " ".join(objective("cpc").warnings(trivial))


@pytest.mark.parametrize("size", ["tiny", "mini"])
@pytest.mark.parametrize("name", ["cpc", "wav2vec", "vq-wav2vec"])
def test_the_speech_presets_give_each_objective_its_layout(size, name):
    from selfsup.presets import preset

    cfg = preset(size, "audio")
    cfg.set_objective(name)
    cfg.validate()
    m, width = cfg.model, {"tiny": 128, "mini": 256}[size]
    assert m.conv_channels == (width,) * 5 and m.dim == width and m.feature_dim == 1
    assert (m.context, m.conv_norm, m.n_layers) == (
        ("gru", "layer", 1) if name == "cpc" else ("conv", "group", {"tiny": 2, "mini": 3}[size])
    )
    assert m.quantizer == ("gumbel" if name == "vq-wav2vec" else "none")
    assert cfg.data.features.kind == "wave" and cfg.data.max_frames >= m.receptive_field


# --------------------------------------------------------------------------------------------
# selfsup pretrain end to end
# --------------------------------------------------------------------------------------------

TINY = ["--set", "model.conv_channels=16,16,16,16,16", "--set", "model.dim=16",
        "--set", "data.max_frames=4000", "--set", "data.heldout_every=6",
        "--set", "train.log_every=1"]  # fmt: skip


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=16)


def pretrain_args(speech, objective, out, *extra):
    return ["pretrain", "--objective", objective, "--data", speech, "--steps", "4",
            "--batch-size", "4", "--eval-every", "2", "--save-every", "2", "--cache-dir",
            speech.parent / "cache", "--out", out, "--no-progress", *TINY, *extra]  # fmt: skip


@pytest.mark.parametrize("name", ["cpc", "wav2vec", "vq-wav2vec"])
def test_pretrain_runs_end_to_end(speech, tmp_path, capsys, name):
    code, out, err = cli(capsys, *pretrain_args(speech, name, tmp_path / "run"))
    assert code == 0, err
    assert f"objective {name}" in out
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["conv_channels"] == [16] * 5 and cfg["data"]["features"]["kind"] == "wave"
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["eval_contrastive_loss"] < float("inf")
    assert 0 <= summary["eval_contrastive_acc"] <= 1 and summary["eval_effective_rank"] > 1
    if name == "vq-wav2vec":
        assert 1 <= summary["eval_code_perplexity"] <= 320
    from selfsup.eval.upstream import load_upstream

    upstream = load_upstream(str(run))  # a SUPERB upstream: z, then the context layers
    wave = torch.randn(2, 3000, 1)
    pad = torch.zeros(2, 3000, dtype=torch.bool)
    pad[1, 2000:] = True
    res = upstream(wave, pad)
    layers = 1 + cfg["model"]["n_layers"]  # CPC: one GRU layer; wav2vec: the preset's two
    assert upstream.n_layers == layers == len(res["all_hidden"])
    assert layers == (2 if name == "cpc" else 3)
    assert res["all_hidden"][0].shape == (2, 16, 16)
    assert res["padding_mask"].sum(1).tolist() == [0, 6]


def test_vq_wav2vec_resumes_exactly(speech, tmp_path, capsys):
    """Stopped after its step-2 checkpoint and resumed: the same weights, temperature buffer
    and log as one uninterrupted run (the Gumbel noise, negatives and temperature included)."""
    import selfsup.pretraining as recipe

    extra = ("--set", "objective.anneal_steps=3")
    assert cli(capsys, *pretrain_args(speech, "vq-wav2vec", tmp_path / "a", *extra))[0] == 0
    real_train = recipe.train
    recipe.train = lambda *a, **kw: real_train(*a, **kw, stop_after=3)
    try:
        assert cli(capsys, *pretrain_args(speech, "vq-wav2vec", tmp_path / "b", *extra))[0] == 0
    finally:
        recipe.train = real_train
    assert not (tmp_path / "b" / "model.safetensors").exists()
    code, _, err = cli(capsys, "pretrain", "--resume", tmp_path / "b", "--no-progress")
    assert code == 0, err
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert int(wa["step"]) == 4 and all(torch.equal(wa[k], wb[k]) for k in wa)
    timing = {"frames_per_s", "data_share", "elapsed_s"}
    rows = [[{k: v for k, v in json.loads(r).items() if k not in timing}
             for r in (tmp_path / x / "metrics.jsonl").read_text().splitlines()]
            for x in "ab"]  # fmt: skip
    assert rows[0] == rows[1]
    temps = [r["temperature"] for r in rows[0] if "temperature" in r]
    assert temps == pytest.approx([2.0, 1.5, 1.0, 0.5])


@pytest.mark.parametrize(
    ("objective", "setting", "says"),
    [("cpc", "model.quantizer=gumbel", "vq-wav2vec"),
     ("vq-wav2vec", "model.quantizer=none", "quantizer=gumbel or kmeans"),
     ("cpc", "model.context=lstm", "model.context"),
     ("wav2vec", "objective.same_negatives=0", "at least one negative")],
)  # fmt: skip
def test_bad_settings_are_one_line_errors(speech, tmp_path, capsys, objective, setting, says):
    out = tmp_path / "run"
    code, _, err = cli(capsys, *pretrain_args(speech, objective, out, "--set", setting))
    assert_clean_error(code, err, out, says)


def test_cpc_refuses_gradient_accumulation(speech, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, *pretrain_args(speech, "cpc", out, "--grad-accum", "2"))
    assert_clean_error(code, err, out, "batch-level")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpc", "vq-wav2vec"])
def test_two_processes_train_like_one(speech, tmp_path, name):
    """CPC's negatives from the other utterances of the batch: each rank gathers every rank's
    frames; vq-wav2vec's Gumbel noise is per utterance and its codebook monitors gathered: so
    two processes (gloo, the CPU) train as one, up to float rounding."""
    import torch.distributed as dist
    from test_distributed import _selfsup, assert_same_rows

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("no gloo backend")
    args = [str(a) for a in pretrain_args(speech, name, tmp_path / "one")]
    _selfsup(1, *args)
    args[args.index(str(tmp_path / "one"))] = str(tmp_path / "two")
    _selfsup(2, *args)
    read = lambda r: [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert_same_rows(read(tmp_path / "one"), read(tmp_path / "two"))
