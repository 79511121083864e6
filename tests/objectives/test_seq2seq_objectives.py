"""BART and MASS through the text pipeline and the loop: the batches they make from a real
corpus (sentence permutation visible after the pipeline, MASS's fragment and positions),
exact resume, and the CLI run."""

import json

import numpy as np
import pytest
import torch
from helpers import cli

from selfsup.config import RunConfig
from selfsup.data.text import split_sentences
from selfsup.encoders.seq2seq import Seq2SeqConfig
from selfsup.keys import ATTENTION_MASK, DECODER_INPUT_IDS, DECODER_POSITION_IDS, IGNORE, LABELS
from selfsup.objectives.base import batch_loss
from selfsup.pretraining import prepare_data


def documents(n_docs=30, n_sents=6):
    words = "river stone cloud apple north quiet paper glass tiger lemon iron music".split()
    docs = []
    for d in range(n_docs):
        sents = []
        for s in range(n_sents):
            k = (d * 7 + s * 3) % len(words)
            sents.append(f"The {words[k]} and the {words[(k + s + 1) % len(words)]} sat.")
        docs.append(" ".join(sents))
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("s2s") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents()))
    return path


def run_cfg(corpus, objective, tmp_path, **sets) -> RunConfig:
    cfg = RunConfig()
    cfg.set_objective(objective)
    cfg.model.vocab_size = 300
    cfg.model.dim, cfg.model.n_layers, cfg.model.n_heads, cfg.model.ffn_dim = 32, 1, 2, 64
    cfg.data.paths, cfg.data.max_len = [str(corpus)], 48
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.batch_size = 8
    for k, v in sets.items():
        setattr(cfg.objective, k, v)
    return cfg


def test_switching_to_an_encoder_decoder_keeps_the_shape_not_the_norm_eps():
    cfg = RunConfig()
    cfg.model.dim, cfg.model.n_layers = 96, 3
    cfg.set_objective("bart")
    assert isinstance(cfg.model, Seq2SeqConfig)
    assert (cfg.model.dim, cfg.model.n_layers, cfg.model.n_decoder_layers) == (96, 3, 3)
    assert cfg.model.norm_eps == 1e-5  # BART's, not BERT's 1e-12
    back = RunConfig.from_dict(cfg.to_dict())
    assert isinstance(back.model, Seq2SeqConfig) and back.model.dim == 96


def test_bart_batches_permute_sentences_after_the_pipeline(corpus, tmp_path):
    cfg = run_cfg(corpus, "bart", tmp_path, mask_prob=0.0)  # permutation only
    data = prepare_data(cfg, log=lambda _: None)
    tok = data.tokenizer
    permuted = multi = 0
    for k in range(4):
        b = data.batches[k]
        for src, m, tgt, dec in zip(b["input_ids"], b[ATTENTION_MASK], b[LABELS],
                                    b[DECODER_INPUT_IDS], strict=True):  # fmt: skip
            src = src[m.bool()].tolist()
            tgt = tgt[tgt != IGNORE].tolist()
            assert src[0] == tok.cls_id and src[-1] == tok.sep_id and tgt[-1] == tok.sep_id
            assert dec[: len(tgt)].tolist() == [tok.cls_id, *tgt[:-1]]
            assert sorted(src[1:-1]) == sorted(tgt[:-1])  # the same tokens, reordered
            multi += tgt.count(tok.encode_plain(["."])[0][0]) >= 2
            permuted += src[1:-1] != tgt[:-1]
    assert multi >= 16  # the segments hold several sentences: their ends survived packing
    assert permuted >= 0.8 * multi
    assert split_sentences(documents()[0]) == [s.strip() + "." for s in
                                               documents()[0].split(".")[:-1]]  # fmt: skip


def test_bart_default_noise_masks_about_30_percent(corpus, tmp_path):
    data = prepare_data(run_cfg(corpus, "bart", tmp_path), log=lambda _: None)
    tok = data.tokenizer
    masks = real = 0
    for k in range(4):
        b = data.batches[k]
        masks += int((b["input_ids"] == tok.mask_id).sum())
        real += int((b[LABELS] != IGNORE).sum()) - b[LABELS].shape[0]  # minus each [SEP]
    # 30% of the tokens in spans of mean 3, each one [MASK] (90% of them: 10% random)
    assert 0.05 < masks / real < 0.15


def test_mass_batches_hold_the_fragment_at_its_positions(corpus, tmp_path):
    data = prepare_data(run_cfg(corpus, "mass", tmp_path), log=lambda _: None)
    tok = data.tokenizer
    b = data.batches[0]
    for i in range(b["input_ids"].shape[0]):
        n_src = int(b[ATTENTION_MASK][i].sum())
        tgt = b[LABELS][i][b[LABELS][i] != IGNORE]
        pos = b[DECODER_POSITION_IDS][i][: len(tgt)]
        assert len(tgt) == round(0.5 * (n_src - 2))
        assert pos.tolist() == list(range(int(pos[0]), int(pos[0]) + len(tgt)))
        src = b["input_ids"][i]
        assert float((src[pos] == tok.mask_id).float().mean()) >= 0.5  # ~80% masked there
        outside = torch.ones(n_src, dtype=torch.bool)
        outside[pos] = False
        assert not bool((src[:n_src][outside] == tok.mask_id).any())


@pytest.mark.parametrize("objective", ["bart", "mass", "t5"])
def test_loss_is_finite_and_falls(corpus, tmp_path, objective):
    from selfsup.objectives import build_objective

    cfg = run_cfg(corpus, objective, tmp_path)
    data = prepare_data(cfg, log=lambda _: None)
    cfg.model.vocab_size, cfg.model.pad_id = data.tokenizer.vocab_size, data.tokenizer.pad_id
    torch.manual_seed(0)
    model = build_objective(cfg.objective, cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = data.batches[0]
    first = float(batch_loss(model, batch).detach())
    for _ in range(40):  # one batch, learnt by heart
        loss = batch_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = data.tokenizer.vocab_size
    assert first == pytest.approx(torch.log(torch.tensor(float(v))).item(), rel=0.1)
    assert float(loss.detach()) < 0.5 * first


@pytest.mark.parametrize("objective,extra", [("bart", []), ("mass", []), ("t5", []),
                                             ("bart", ["--pack"])])  # fmt: skip
def test_cli_pretrain_and_exact_resume(corpus, tmp_path, capsys, objective, extra):
    """A 6-step run, and the same run resumed from its step-3 checkpoint: the same weights and
    the same logged values."""
    import shutil

    from safetensors.torch import load_file

    args = ["pretrain", "--objective", objective, "--data", corpus, "--vocab-size", "300",
            "--max-len", "48", "--batch-size", "8", "--steps", "6", "--save-every", "3",
            "--eval-every", "3", "--set", "train.log_every=1", "--set", "data.heldout_every=5",
            "--set", "model.dim=32",
            "--set", "model.n_heads=2", "--set", "model.ffn_dim=64", "--precision", "fp32",
            "--cache-dir", tmp_path / "cache", "--no-progress", *extra]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = cli(capsys, *args, "--out", a)
    assert code == 0, err
    assert "eval_s2s_acc" in out
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "step_00000006")
    (b / "checkpoints" / "LATEST").write_text("step_00000003\n")
    (b / "model.safetensors").unlink()
    (b / "summary.json").unlink()
    code, out, err = cli(capsys, "pretrain", "--resume", b, "--no-progress")
    assert code == 0, err
    assert "resumed from step_00000003" in out
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    def values(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        timing = ("_per_s", "elapsed_s", "data_share")
        return [{k: v for k, v in r.items() if not k.endswith(timing)} for r in rows]

    assert values(a) == values(b)
    summary = json.loads((a / "summary.json").read_text())
    assert 0 <= summary["eval_s2s_acc"] <= 1


def test_t5_batches_sentinels_in_order_and_lengths_within_the_sequence(corpus, tmp_path):
    from selfsup.objectives.t5 import sentinel

    data = prepare_data(run_cfg(corpus, "t5", tmp_path), log=lambda _: None)
    tok = data.tokenizer
    ids = tok.ids_of([sentinel(k) for k in range(100)])
    assert ids == list(range(ids[0], ids[0] + 100))  # added at the end of the vocabulary
    assert set(ids) <= set(tok.special_ids)  # never a random replacement
    full = 0
    for k in range(4):
        b = data.batches[k]
        for src, m, tgt in zip(b["input_ids"], b[ATTENTION_MASK], b[LABELS], strict=True):
            src, tgt = src[m.bool()].tolist(), tgt[tgt != IGNORE].tolist()
            in_src = [t for t in src if t in ids]
            assert in_src == ids[: len(in_src)] == [t for t in tgt if t in ids]
            assert tgt[-1] == tok.sep_id
            # the sentinels' spans put back give the segment: as many tokens as kept + hidden
            n_text = len(src) - 2 - len(in_src) + len(tgt) - 1 - len(in_src)
            assert abs(len(tgt) - 1 - len(in_src) - round(0.15 * n_text)) <= 1
            assert len(src) <= 48  # T5's length computation: never beyond the sequence
            full = max(full, len(src))
    assert full >= 40  # segments end at sentence ends, so they come close to the length


def test_t5_generation_fills_the_sentinels_back_in(tmp_path):
    from selfsup.data.tokenizer import train_tokenizer
    from selfsup.objectives.t5 import T5, T5Config, sentinel

    tok = train_tokenizer(["the river saw the stone and the cloud"] * 20, 60, True)
    tok = tok.with_specials([sentinel(k) for k in range(3)])
    t5 = T5.__new__(T5)  # only the tokenizer-side methods: no model needed
    t5.cfg = T5Config(sentinels=3)
    src = tok(["the [MASK] [MASK] saw the [MASK] ."])["input_ids"][0].tolist()
    ready = t5.prepare_source(tok, src)
    x0, x1 = tok.ids_of([sentinel(0), sentinel(1)])
    assert ready.count(x0) == 1 and ready.count(x1) == 1 and tok.mask_id not in ready
    river, stone = tok.encode_plain(["river stone"])[0]
    written = [x0, river, x1, stone]
    restored = t5.restore(tok, ready, written)
    assert restored == tok.encode_plain(["the river saw the stone ."])[0]
    with pytest.raises(Exception, match="no \\[MASK\\]"):
        t5.generation_plan(tok, tok(["plain text"])["input_ids"][0].tolist())


@pytest.mark.parametrize("objective", ["bart", "mass", "t5"])
def test_packed_batches_give_the_padded_loss_and_gradients(corpus, tmp_path, objective):
    """--pack: the same examples in fewer rows (both sides within the width, each example's
    source and target in one row), and the same loss and gradients as padded, so no example
    sees another's tokens through either attention."""
    from selfsup.keys import DECODER_SEQ_IDS, SEQ_IDS
    from selfsup.objectives import build_objective

    short = tmp_path / "short.jsonl"  # documents of 1 to 4 sentences: segments to pack
    docs = [" ".join(split_sentences(d)[: 1 + i % 4]) for i, d in enumerate(documents())]
    short.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    cfg = run_cfg(short, objective, tmp_path)
    cfg.data.pack = True
    packed = prepare_data(cfg, log=lambda _: None).batches[0]
    cfg.data.pack = False
    padded = prepare_data(cfg, log=lambda _: None).batches[0]
    R, B = packed[LABELS].shape[0], padded[LABELS].shape[0]
    assert R < B and packed[SEQ_IDS].shape[1] <= 96 and packed[LABELS].shape[1] <= 96
    # row by row, the same examples on both sides, in the same order
    assert torch.equal(packed[SEQ_IDS].max(1).values, packed[DECODER_SEQ_IDS].max(1).values)
    assert int((packed[LABELS] != IGNORE).sum()) == int((padded[LABELS] != IGNORE).sum())
    assert int(packed[ATTENTION_MASK].sum()) == int(padded[ATTENTION_MASK].sum())
    data = prepare_data(cfg, log=lambda _: None)
    cfg.model.vocab_size, cfg.model.pad_id = data.tokenizer.vocab_size, data.tokenizer.pad_id
    torch.manual_seed(0)
    model = build_objective(cfg.objective, cfg.model).eval()  # no dropout: equal sums

    def loss_and_grads(batch):
        model.zero_grad()
        out = model(batch)
        out["s2s_loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    a, ga = loss_and_grads(padded)
    b, gb = loss_and_grads(packed)
    assert float(b["s2s_loss"].detach()) == pytest.approx(float(a["s2s_loss"].detach()), rel=1e-5)
    assert float(b["s2s_acc"]) == float(a["s2s_acc"])
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-4, atol=1e-5, msg=n)


def test_pack_rows_fits_both_sides():
    from selfsup.data.packing import pack_rows

    src, tgt = [30, 10, 25, 5, 20], [5, 30, 10, 25, 20]
    rows = pack_rows(src, 40, tgt)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    for r in rows:
        assert sum(src[i] for i in r) <= 40 and sum(tgt[i] for i in r) <= 40
    # the second side is a real constraint: the sources alone (40) fit one row, the targets
    # (45) do not
    assert pack_rows([30, 10], 40) == [[0, 1]]
    assert pack_rows([30, 10], 40, [10, 35]) == [[1], [0]]


def test_packing_that_saves_little_keeps_the_padded_batch():
    from selfsup.keys import SEQ_IDS
    from selfsup.objectives.seq2seq import Seq2SeqExample, collate_seq2seq, pack_seq2seq

    def batch(lengths):
        ex = [Seq2SeqExample([5] * n, [6] * n, [7] * n) for n in lengths]
        return collate_seq2seq(ex, 0)

    full = pack_seq2seq(batch([10, 10, 10, 10]), 0, 20)  # 2 rows of 20: no slot saved
    assert SEQ_IDS not in full and full[LABELS].shape == (4, 10)
    short = pack_seq2seq(batch([10, 3, 3, 4]), 0, 20)  # 1 row of 20 against 4 of 10
    assert short[SEQ_IDS].tolist() == [[0] * 10 + [1] * 4 + [2] * 3 + [3] * 3]
    assert short[LABELS].shape == (1, 20)


def test_t5_segments_cut_across_sentences_fill_the_input_exactly(tmp_path):
    """T5's segments are cut from the running text (not at sentence ends), so every one but a
    document's last has the raw length whose corrupted input is exactly max_len: no padding;
    and the pieces of a document, in order, are its text."""
    from selfsup.data.text import make_token_chunks, token_chunk_sentences
    from selfsup.objectives.t5 import T5, T5Config

    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents(8, 30)))
    cfg = run_cfg(path, "t5", tmp_path)
    data = prepare_data(cfg, log=lambda _: None)
    lengths = []
    for k in range(6):
        b = data.batches[k]
        lengths += b[ATTENTION_MASK].sum(1).tolist()
    assert sum(n == 48 for n in lengths) >= 0.75 * len(lengths)
    assert max(lengths) == 48
    # the rows: consecutive pieces of segment_len tokens inside each document
    from selfsup.data.text import build_corpus

    corpus = build_corpus(cfg.data.paths, data.tokenizer, cfg.data, log=lambda _: None)
    seg = T5(None, T5Config()).segment_len(48)
    rows = make_token_chunks(corpus, seg)
    off = corpus.sent_offsets
    for d in range(len(corpus.doc_sents) - 1):
        mine = rows[rows[:, 2] == d]
        t0, t1 = off[corpus.doc_sents[d]], off[corpus.doc_sents[d + 1]]
        assert mine[0, 0] == t0 and mine[-1, 1] == t1
        assert (mine[1:, 0] == mine[:-1, 1]).all() and ((mine[:, 1] - mine[:, 0]) <= seg).all()
        assert ((mine[:-1, 1] - mine[:-1, 0]) == seg).all()
        text = np.concatenate([np.concatenate(token_chunk_sentences(corpus, r)) for r in mine])
        assert text.tolist() == corpus.tokens[t0:t1].tolist()
    # a piece keeps its sentence ends: more pieces than rows when a row crosses a sentence end
    assert any(len(token_chunk_sentences(corpus, r)) > 1 for r in rows)
