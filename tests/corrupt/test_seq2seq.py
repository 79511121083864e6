"""The encoder-decoder noises: rates, span-length fit, invariants, sentinel order, determinism."""

import math

import pytest
import torch

from selfsup.corrupt.seq2seq import (
    mass_fragment,
    permute_sentences,
    place_spans,
    poisson_span_lengths,
    rotate,
    t5_lengths,
    t5_noise_mask,
    t5_spans,
    text_infill,
    token_delete,
    token_mask,
)

MASK, START = 1, 2
SENTINELS = list(range(1000, 1100))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tokens(n, seed=0):
    return torch.randint(10, 500, (n,), generator=gen(seed + 100))


def test_token_mask_rate_and_random_share():
    ids = tokens(20000)
    random_ids = torch.arange(10, 500)
    out = token_mask(ids, gen(), MASK, 0.3, random_ids, random_prob=0.1)
    changed = out != ids
    masked = out == MASK
    assert abs(masked.float().mean().item() - 0.27) < 0.01  # 90% of 30% are [MASK]
    # 10% of the chosen became random tokens (a few of which drew the original token)
    assert abs((changed & ~masked).float().mean().item() - 0.03 * (1 - 1 / 490)) < 0.005


def test_token_delete_keeps_a_subsequence_at_the_rate():
    ids = torch.arange(10000)  # distinct, so the kept order is visible
    out = token_delete(ids, gen(), 0.2)
    assert abs(1 - len(out) / len(ids) - 0.2) < 0.015
    assert torch.all(out[1:] > out[:-1])


def test_poisson_lengths_cover_the_budget_and_fit_poisson3():
    lengths = []
    for seed in range(300):
        got = poisson_span_lengths(200, gen(seed), 0.3)
        assert sum(got) == 60
        lengths += got[:-1]  # the last is cut to the budget
    n = len(lengths)
    for k in range(8):  # each frequency within 4 standard errors of Poisson(3)
        p = math.exp(-3) * 3**k / math.factorial(k)
        freq = sum(x == k for x in lengths) / n
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n), k
    assert any(x == 0 for x in lengths)  # zero-length spans occur (about 5%)


def test_spans_never_touch_and_stay_inside():
    for seed in range(200):
        lengths = poisson_span_lengths(40, gen(seed), 0.4)
        spans = place_spans(40, lengths, gen(seed + 1))
        assert len(spans) == len(lengths)
        assert all(0 <= s <= e <= 40 for s, e in spans)
        for (_, e0), (s1, _) in zip(spans[:-1], spans[1:], strict=True):
            assert s1 > e0  # at least one kept token between two spans


def test_span_places_are_uniform_over_positions():
    counts = torch.zeros(30)
    for seed in range(3000):
        for s, e in place_spans(30, [3], gen(seed)):
            counts[s:e] += 1
    starts = counts[2:-2] / 3000  # away from the edges every position is covered 3/28 of times
    assert torch.all((starts - 3 / 28).abs() < 0.025)


def test_text_infill_replaces_each_span_by_one_mask_and_is_invertible():
    ids = tokens(100)
    for seed in range(50):
        out, spans = text_infill(ids, gen(seed), MASK, prob=0.3)
        assert int((out == MASK).sum()) == len(spans)
        assert sum(e - s for s, e in spans) == 30
        assert len(out) == 100 - 30 + len(spans)
        # put the spans back where the masks are: the original comes back
        pieces, it = [], iter(spans)
        for x in out.tolist():
            if x == MASK:
                s, e = next(it)
                pieces += ids[s:e].tolist()
            else:
                pieces.append(x)
        assert pieces == ids.tolist()


def test_text_infill_inserts_a_mask_for_zero_length_spans():
    ids = tokens(200)
    grew = 0
    for seed in range(40):
        out, spans = text_infill(ids, gen(seed), MASK, prob=0.1, poisson_lambda=0.5)
        zero = sum(s == e for s, e in spans)
        assert len(out) == 200 - 20 + len(spans)
        grew += zero
    assert grew > 0


def test_text_infill_random_share():
    ids = tokens(2000)
    random_ids = torch.arange(600, 700)  # outside the text's ids: random ones are visible
    n_mask = n_random = 0
    for seed in range(20):
        out, spans = text_infill(ids, gen(seed), MASK, 0.3, 3.0, random_ids, random_prob=0.1)
        n_mask += int((out == MASK).sum())
        n_random += int(((out >= 600) & (out < 700)).sum())
    assert abs(n_random / (n_mask + n_random) - 0.1) < 0.03


def test_sentence_permutation_really_permutes():
    sentences = [torch.full((3,), i) for i in range(5)]
    moved = 0
    for seed in range(100):
        out, order = permute_sentences(sentences, gen(seed))
        assert sorted(order) == list(range(5))
        assert out.tolist() == [i for i in order for _ in range(3)]
        moved += order != list(range(5))
    assert moved >= 97  # the identity comes 1 time in 120
    out, order = permute_sentences(sentences[:1], gen())  # one sentence: nothing to permute
    assert order == [0]
    _, order = permute_sentences(sentences, gen(), share=0.0)
    assert order == list(range(5))


def test_partial_permutation_moves_only_the_chosen_share():
    sentences = [torch.tensor([i]) for i in range(10)]
    for seed in range(30):
        _, order = permute_sentences(sentences, gen(seed), share=0.4)
        assert sum(o != i for i, o in enumerate(order)) <= 4


def test_rotation_is_a_rotation_with_uniform_offsets():
    ids = torch.arange(8)
    offsets = []
    for seed in range(800):
        out, k = rotate(ids, gen(seed))
        assert out.tolist() == ids.roll(-k).tolist()
        offsets.append(k)
    for k in range(8):
        assert abs(offsets.count(k) / 800 - 1 / 8) < 0.045


def test_mass_masks_one_fragment_and_shifts_the_decoder_input():
    ids = tokens(40)
    starts = set()
    for seed in range(60):
        f = mass_fragment(ids, gen(seed), MASK, START, share=0.5)
        assert len(f.target) == 20
        assert f.target.tolist() == ids[f.start : f.start + 20].tolist()
        masked = (f.source == MASK).nonzero().squeeze(1).tolist()
        assert masked == list(range(f.start, f.start + 20))
        assert f.source[: f.start].tolist() == ids[: f.start].tolist()
        assert f.decoder_input[1:].tolist() == f.target[:-1].tolist()
        first = START if f.start == 0 else int(ids[f.start - 1])
        assert int(f.decoder_input[0]) == first
        starts.add(f.start)
    assert len(starts) > 10


def test_t5_mask_density_and_mean_span():
    spans, noise = [], 0
    for seed in range(200):
        m = t5_noise_mask(200, gen(seed))
        assert int(m.sum()) == 30
        assert not m[0]  # the text starts with a kept run
        noise += int(m.sum())
        runs = (m & ~torch.cat([torch.tensor([False]), m[:-1]])).sum()
        assert int(runs) == 10
        spans.append(int(runs))
    assert noise / sum(spans) == pytest.approx(3.0)


def test_t5_sentinels_in_order_and_spans_restore_the_text():
    ids = tokens(64)
    m = t5_noise_mask(64, gen(3))
    source, target = t5_spans(ids, m, SENTINELS)
    in_source = [x for x in source.tolist() if x >= 1000]
    in_target = [x for x in target.tolist() if x >= 1000]
    n = len(in_source)
    assert in_source == in_target == SENTINELS[:n]  # <extra_id_0> first, then 1, 2, ...
    assert int(target[0]) == SENTINELS[0]
    # fill the sentinels in from the target: the original text
    fill, key = {}, None
    for x in target.tolist():
        if x >= 1000:
            key = x
            fill[key] = []
        else:
            fill[key].append(x)
    restored = [y for x in source.tolist() for y in (fill[x] if x >= 1000 else [x])]
    assert restored == ids.tolist()
    assert len(source) == 64 - int(m.sum()) + n


def test_t5_too_few_sentinels_is_an_error():
    m = t5_noise_mask(200, gen())
    with pytest.raises(ValueError, match="sentinels"):
        t5_spans(tokens(200), m, SENTINELS[:3])


@pytest.mark.parametrize("length", [32, 64, 128, 512])
def test_t5_lengths_need_no_padding(length):
    raw, target_len = t5_lengths(length)
    m = t5_noise_mask(raw, gen())
    source, target = t5_spans(tokens(raw), m, SENTINELS)
    assert len(source) + 1 == length  # + EOS
    assert len(target) + 1 == target_len
    assert t5_lengths(length)[0] == raw


@pytest.mark.parametrize(
    "fn",
    [
        lambda g: token_mask(tokens(50), g, MASK, 0.3),
        lambda g: token_delete(tokens(50), g, 0.3),
        lambda g: text_infill(tokens(50), g, MASK)[0],
        lambda g: permute_sentences([tokens(5, s) for s in range(4)], g)[0],
        lambda g: rotate(tokens(50), g)[0],
        lambda g: mass_fragment(tokens(50), g, MASK, START).source,
        lambda g: t5_noise_mask(50, g),
    ],
)
def test_same_seed_same_output(fn):
    assert torch.equal(fn(gen(7)), fn(gen(7)))
    outs = {tuple(fn(gen(s)).tolist()) for s in range(5)}
    assert len(outs) > 1


def test_bart_noise_permutes_masks_and_keeps_the_text_recoverable():
    from selfsup.corrupt.seq2seq import BartNoise, bart_noise

    sentences = [torch.arange(10 * i + 10, 10 * i + 18) for i in range(4)]  # distinct tokens
    random_ids = torch.arange(600, 700)
    permuted = 0
    for seed in range(30):
        out, info = bart_noise(sentences, gen(seed), BartNoise(), MASK, random_ids)
        permuted += info["order"] != [0, 1, 2, 3]
        assert info["masked"] == round(0.3 * 32)
        kept = [x for x in out.tolist() if x != MASK and not 600 <= x < 700]
        assert len(kept) == 32 - info["masked"]
        # the kept tokens come in the permuted sentence order
        original = torch.cat([sentences[i] for i in info["order"]]).tolist()
        it = iter(original)
        assert all(any(x == y for y in it) for x in kept)  # a subsequence
    assert permuted >= 25  # the identity comes 1 time in 24


def test_bart_noise_deletion_rotation_and_token_masking():
    from selfsup.corrupt.seq2seq import BartNoise, bart_noise

    sentences = [torch.arange(100, 140)]
    noise = BartNoise(mask_prob=0.0, permute=0.0, delete_prob=0.25, rotate=1.0)
    out, info = bart_noise(sentences, gen(), noise, MASK, torch.arange(5, 9))
    assert len(out) == 40 - info["deleted"] and 4 <= info["deleted"] <= 18
    assert info["rotated"] > 0 or len(out) < 2
    noise = BartNoise(mask_prob=0.5, infill=False, permute=0.0, random_prob=0.0)
    out, info = bart_noise([torch.arange(100, 1100)], gen(), noise, MASK, torch.arange(5, 9))
    assert len(out) == 1000 and abs(int((out == MASK).sum()) - 500) < 60


def test_mass_80_10_10_inside_the_fragment():
    ids = torch.arange(100, 4100)
    random_ids = torch.arange(5000, 6000)
    f = mass_fragment(ids, gen(), MASK, START, 0.5, random_ids, random_prob=0.1, keep_prob=0.1)
    frag = f.source[f.start : f.start + 2000]
    assert abs(float((frag == MASK).float().mean()) - 0.8) < 0.03
    assert abs(float((frag >= 5000).float().mean()) - 0.1) < 0.02
    assert abs(float((frag == ids[f.start : f.start + 2000]).float().mean()) - 0.1) < 0.02
    outside = torch.cat([f.source[: f.start], f.source[f.start + 2000 :]])
    assert torch.equal(outside, torch.cat([ids[: f.start], ids[f.start + 2000 :]]))
