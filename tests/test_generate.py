"""Decoding: greedy, beam search, the step rules and sampling, against transformers' `generate`
on the same weights, against decoding without a cache, and against exhaustive search."""

import itertools

import pytest
import torch

from selfsup.encoders.seq2seq import Seq2SeqConfig, build_seq2seq
from selfsup.errors import ConfigError
from selfsup.generate import GenerateConfig, banned_ngram_tokens, filter_top, generate
from selfsup.interop.hf_bart import model_to_hf_config, state_dict_to_hf

transformers = pytest.importorskip("transformers")

START, EOS = 2, 3
CFG = Seq2SeqConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_len=64,
                    dropout=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    """Half-trained (40 steps) to reverse 8-token sources: outputs depend on the input, end
    with EOS, and are uncertain enough that beams and greedy disagree."""
    torch.manual_seed(0)
    m = build_seq2seq(CFG)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        src = torch.randint(4, 50, (32, 8), generator=g)
        tgt = torch.cat([src.flip(1), torch.full((32, 1), EOS)], 1)
        dec = torch.cat([torch.full((32, 1), START), tgt[:, :-1]], 1)
        loss = torch.nn.functional.cross_entropy(m(src, dec).flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def hf(model):
    special = {"pad": 0, "bos": START, "eos": EOS, "decoder_start": START}
    h = transformers.BartForConditionalGeneration(
        transformers.BartConfig(**model_to_hf_config(CFG, special))
    ).eval()
    h.load_state_dict(state_dict_to_hf(model.state_dict(), CFG), strict=False)
    return h


def sources(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 50, (n, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def hf_generate(hf, ids, mask, **kw):
    out = hf.generate(input_ids=ids, attention_mask=mask, decoder_start_token_id=START,
                      eos_token_id=EOS, forced_eos_token_id=EOS, pad_token_id=0,
                      bos_token_id=START, **kw)  # fmt: skip
    rows = []
    for row in out.tolist():
        row = row[1:]
        rows.append(row[: row.index(EOS)] if EOS in row else row)
    return rows


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ({}, {"num_beams": 1, "do_sample": False}),
        ({"no_repeat_ngram": 2}, {"num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 2}),
        ({"min_new_tokens": 12}, {"num_beams": 1, "do_sample": False, "min_new_tokens": 12}),
        ({"beams": 4}, {"num_beams": 4, "do_sample": False, "length_penalty": 1.0}),
        ({"beams": 3, "length_penalty": 2.0, "no_repeat_ngram": 3},
         {"num_beams": 3, "do_sample": False, "length_penalty": 2.0, "no_repeat_ngram_size": 3}),
        ({"beams": 3, "length_penalty": 0.0}, {"num_beams": 3, "do_sample": False,
                                               "length_penalty": 0.0}),
    ],
)  # fmt: skip
def test_same_output_as_transformers_generate(model, hf, ours, theirs):
    ids, mask = sources()
    cfg = GenerateConfig(max_new_tokens=16, **ours)
    got = generate(model, ids, mask, START, EOS, cfg)
    want = hf_generate(hf, ids, mask, max_new_tokens=16, **theirs)
    assert got == want
    assert len({tuple(r) for r in got}) > 1  # the rows differ
    if cfg.min_new_tokens:
        assert min(len(r) for r in got) >= cfg.min_new_tokens
    else:
        assert min(len(r) for r in got) < 15  # some row stopped at its own EOS
    if cfg.beams > 1:  # the beams change something: not greedy in disguise
        assert got != generate(model, ids, mask, START, EOS, GenerateConfig(max_new_tokens=16))


def test_forced_eos_caps_the_length(model):
    ids, mask = sources()
    for beams in (1, 3):
        out = generate(model, ids, mask, START, EOS, GenerateConfig(max_new_tokens=5, beams=beams))
        assert all(len(r) <= 4 for r in out)  # 5 tokens at most, the last one EOS (stripped)


def reference_greedy(model, ids, mask, n):
    """Greedy without a cache: the whole prefix through the decoder at every step."""
    enc = model.encode(ids, mask)
    rows = torch.full((ids.shape[0], 1), START)
    for _ in range(n):
        h = model.decode(rows, enc["hidden"], enc["padding_mask"])
        rows = torch.cat([rows, model.logits(h[:, -1]).argmax(-1, keepdim=True)], 1)
    return rows[:, 1:].tolist()


def test_cached_greedy_equals_greedy_without_cache(model):
    ids, mask = sources()
    cfg = GenerateConfig(max_new_tokens=10, forced_eos=False)
    got = generate(model, ids, mask, START, EOS, cfg)
    want = reference_greedy(model, ids, mask, 10)
    for g, w in zip(got, want, strict=True):
        w = w[: w.index(EOS)] if EOS in w else w
        assert g == w


def test_wide_beam_finds_the_exhaustive_best():
    torch.manual_seed(3)
    cfg = Seq2SeqConfig(vocab_size=6, dim=16, n_layers=1, n_heads=2, ffn_dim=16, max_len=8,
                        dropout=0.0)  # fmt: skip
    m = build_seq2seq(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    src = torch.tensor([[4, 5, 1, 4]])
    enc = m.encode(src)

    def logprob(seq):
        dec = torch.tensor([[START, *seq[:-1]]])
        lp = m.logits(m.decode(dec, enc["hidden"])).log_softmax(-1)[0]
        return float(lp[torch.arange(len(seq)), torch.tensor(seq)].sum())

    with torch.no_grad():
        best, best_seq = float("-inf"), None
        for n in (1, 2, 3):
            for seq in itertools.product(range(6), repeat=n):
                if EOS in seq[:-1] or (n < 3 and seq[-1] != EOS):
                    continue  # finished at the first EOS, or ran to the length
                s = logprob(list(seq))
                if s > best:
                    best, best_seq = s, list(seq)
        got = generate(m, src, None, START, EOS, GenerateConfig(
            max_new_tokens=3, beams=36, length_penalty=0.0, forced_eos=False))  # fmt: skip
    want = best_seq[:-1] if best_seq[-1] == EOS else best_seq
    assert got == [want]


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    ids, mask = sources()
    cfg = GenerateConfig(max_new_tokens=12, sample=True, top_k=20, top_p=0.9)
    a = generate(model, ids, mask, START, EOS, cfg, torch.Generator().manual_seed(5))
    b = generate(model, ids, mask, START, EOS, cfg, torch.Generator().manual_seed(5))
    c = generate(model, ids, mask, START, EOS, cfg, torch.Generator().manual_seed(6))
    assert a == b and a != c
    one = GenerateConfig(max_new_tokens=12, sample=True, top_k=1)
    greedy = generate(model, ids, mask, START, EOS, GenerateConfig(max_new_tokens=12))
    assert generate(model, ids, mask, START, EOS, one, torch.Generator().manual_seed(1)) == greedy


def test_filter_top_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = filter_top(logits, 0, 0.8) > float("-inf")
    assert kept.tolist() == [[True, True, True, False, False]]  # 0.5 + 0.2 < 0.8 <= + 0.15
    kept = filter_top(logits, 2, 1.0) > float("-inf")
    assert kept.tolist() == [[True, True, False, False, False]]
    assert (filter_top(logits, 0, 0.1) > float("-inf")).sum() == 1  # the top token stays


def test_banned_ngrams_by_hand():
    assert banned_ngram_tokens([[5, 6, 7, 5, 6]], 3) == [[7]]
    assert banned_ngram_tokens([[5, 6, 5]], 2) == [[6]]
    assert banned_ngram_tokens([[5]], 3) == [[]]


def test_bad_settings_are_config_errors(model):
    ids, mask = sources()
    bad_settings = [
        GenerateConfig(max_new_tokens=0),
        GenerateConfig(beams=2, sample=True),
        GenerateConfig(min_new_tokens=9, max_new_tokens=5),
        GenerateConfig(top_p=0),
    ]
    for bad in bad_settings:
        with pytest.raises(ConfigError):
            generate(model, ids, mask, START, EOS, bad)


def test_exported_folder_generates_like_selfsup_with_its_own_generation_config(model, tmp_path):
    """transformers loads the export (no remote code) and, with the folder's
    generation_config.json alone, writes selfsup's greedy output; AutoTokenizer reads it."""
    from selfsup.data.tokenizer import train_tokenizer
    from selfsup.interop.hf_bart import export_bart

    words = [f"w{i}" for i in range(60)]
    tok = train_tokenizer([" ".join(words)] * 3, 50, True)
    assert (tok.pad_id, tok.cls_id, tok.sep_id) == (0, START, EOS) and tok.vocab_size == 50
    export_bart(model, CFG, tok, tmp_path / "hf")
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    ids, mask = sources()
    want = generate(model, ids, mask, START, EOS, GenerateConfig(max_new_tokens=16))
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, num_beams=1,
                      do_sample=False)  # fmt: skip
    got = []
    for row in out.tolist():
        row = row[1:]
        got.append(row[: row.index(EOS)] if EOS in row else row)
    assert got == want
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert auto("w1 w2")["input_ids"] == tok(["w1 w2"])["input_ids"][0].tolist()
