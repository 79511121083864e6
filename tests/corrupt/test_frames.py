"""Frame corruption (Mockingjay arXiv:1910.12638, TERA arXiv:2007.06028) measured on random
padded batches, and the L1 losses against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.corrupt.frames import (
    add_noise,
    choose_spans,
    frame_stats,
    mask_frequency,
    mask_time,
    real_lengths,
    tera_corrupt,
)
from selfsup.losses import l1_sum, masked_l1


def batch(B=64, T=300, F=16, min_len=0, seed=0):
    """(features, padding_mask): random lengths in min_len..T, padding frames filled with values
    far from any real frame (100 + noise), so a padding frame copied or changed shows."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    lengths[0] = T  # one full row
    padding_mask = torch.arange(T) >= lengths[:, None]  # (B, T)
    features = torch.randn(B, T, F, generator=g)
    features[padding_mask] += 100.0
    return features, padding_mask


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of the maximal runs of True in a 1-D bool tensor."""
    out, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i - start))
            start = None
    return out


@pytest.mark.parametrize("stack", [1, 3])
@pytest.mark.parametrize("mask_prob", [0.15, 0.3])
def test_time_rate_close_to_mask_prob(stack, mask_prob):
    chosen_total = real_total = 0
    for seed in range(4):
        x, pm = batch(seed=seed)
        _, chosen = mask_time(x, pm, gen(seed), mask_prob=mask_prob, stack=stack)
        chosen_total += int(chosen.sum())
        real_total += int((~pm).sum())
    assert abs(chosen_total / real_total - mask_prob) < 0.01


@pytest.mark.parametrize("stack", [1, 3])
def test_span_count_per_utterance(stack):
    # Each utterance of n >= span units gets floor(x) or ceil(x) spans, x = mask_prob * n / span.
    x, pm = batch(min_len=30, seed=1)
    chosen = choose_spans(pm, gen(1), 0.15, 7, stack)
    n = real_lengths(pm) // stack
    for b in range(len(n)):
        if n[b] < 7:
            continue
        spans = int(chosen[b].sum()) / (7 * stack)
        xb = 0.15 * int(n[b]) / 7
        assert spans in (int(xb), int(xb) + 1), (b, spans, xb)


@pytest.mark.parametrize("stack", [1, 3])
def test_runs_are_whole_spans_aligned_to_stack(stack):
    x, pm = batch(seed=2)
    _, chosen = mask_time(x, pm, gen(2), stack=stack)
    n = real_lengths(pm) // stack
    seen = 0
    for b in range(len(n)):
        if n[b] < 7:
            continue
        for start, length in runs(chosen[b]):
            assert start % stack == 0
            assert length % (7 * stack) == 0, (b, start, length)
            seen += 1
    assert seen > 50
    stats = frame_stats(chosen, pm)
    assert 7 * stack in stats["run_lengths"]


def test_chosen_within_whole_units():
    # With stack=3, a trailing group of 1 or 2 real frames is never chosen.
    T = 30
    pm = torch.arange(T) >= torch.tensor([29, 28, 27, 30])[:, None]
    chosen = choose_spans(pm, gen(0), mask_prob=0.9, span=3, stack=3)
    for b, length in enumerate([29, 28, 27, 30]):
        assert not chosen[b, length // 3 * 3 :].any()
        assert chosen[b].any()


def test_short_utterances_masked_whole_at_mask_prob():
    # Rows of 1..6 frames (shorter than a span): masked whole with probability mask_prob;
    # empty rows never.
    B, T = 4000, 6
    g = gen(3)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    pm = torch.arange(T) >= lengths[:, None]
    chosen = choose_spans(pm, gen(4), mask_prob=0.15, span=7)
    masked = chosen.any(1)
    assert torch.equal(chosen, masked[:, None] & ~pm)  # whole utterance or nothing
    assert not masked[lengths == 0].any()
    share = masked[lengths > 0].float().mean().item()
    assert abs(share - 0.15) < 0.02


def test_padding_never_chosen_or_changed():
    x, pm = batch(seed=5)
    out, chosen = mask_time(x, pm, gen(5), zero_prob=0.4, random_prob=0.4)
    assert not (chosen & pm).any()
    assert torch.equal(out[pm], x[pm])
    out, band = mask_frequency(x, pm, gen(5))
    assert torch.equal(out[pm], x[pm])
    out, noised = add_noise(x, pm, gen(5), noise_prob=0.5)
    assert torch.equal(out[pm], x[pm])
    out, frame_mask = tera_corrupt(x, pm, gen(5), noise_prob=0.5)
    assert torch.equal(out[pm], x[pm])
    assert not frame_mask[pm].any()


def test_unchanged_outside_chosen_frames():
    x, pm = batch(seed=6)
    out, chosen = mask_time(x, pm, gen(6), zero_prob=0.4, random_prob=0.4)
    assert torch.equal(out[~chosen], x[~chosen])


def test_actions_per_utterance_80_10_10():
    # Every row long enough for at least one span; each row's chosen frames all get one action.
    x, pm = batch(B=3000, T=60, F=4, min_len=50, seed=7)
    out, chosen = mask_time(x, pm, gen(7))
    counts = {"zero": 0, "random": 0, "kept": 0}
    for b in range(x.shape[0]):
        c = chosen[b]
        assert c.any()
        new, old = out[b][c], x[b][c]
        if (new == 0).all():
            counts["zero"] += 1
        elif torch.equal(new, old):
            counts["kept"] += 1
        else:
            assert not (new == old).all(1).any(), "a random row keeps no chosen frame as is"
            counts["random"] += 1
    n = sum(counts.values())
    assert abs(counts["zero"] / n - 0.8) < 0.03
    assert abs(counts["random"] / n - 0.1) < 0.03
    assert abs(counts["kept"] / n - 0.1) < 0.03


def test_random_replacements_are_real_frames_of_the_batch():
    x, pm = batch(B=64, T=100, F=8, min_len=20, seed=8)
    out, chosen = mask_time(x, pm, gen(8), zero_prob=0.0, random_prob=1.0)
    real = x[~pm]  # (N, F)
    row_of_real = torch.arange(x.shape[0])[:, None].expand(pm.shape)[~pm]  # (N,)
    replaced = out[chosen]  # (M, F)
    rows = torch.arange(x.shape[0])[:, None].expand(pm.shape)[chosen]  # (M,)
    same = (replaced[:, None, :] == real[None, :, :]).all(-1)  # (M, N)
    assert same.any(1).all()  # each replacement equals a real input frame
    source = same.float().argmax(1)  # (M,) the frame it copies (frames are distinct)
    assert (row_of_real[source] != rows).float().mean() > 0.5  # mostly other utterances
    assert torch.equal(out[~chosen], x[~chosen])


def test_kept_action_leaves_values():
    x, pm = batch(seed=9)
    out, chosen = mask_time(x, pm, gen(9), zero_prob=0.0, random_prob=0.0)
    assert chosen.sum() > 1000
    assert torch.equal(out, x)


def test_zero_action_zeroes_chosen_frames():
    x, pm = batch(seed=10)
    out, chosen = mask_time(x, pm, gen(10), zero_prob=1.0, random_prob=0.0)
    assert (out[chosen] == 0).all()
    assert torch.equal(out[~chosen], x[~chosen])


def call_all(x, pm, seed):
    return [
        mask_time(x, pm, gen(seed), zero_prob=0.4, random_prob=0.4),
        mask_frequency(x, pm, gen(seed)),
        add_noise(x, pm, gen(seed), noise_prob=0.5),
        tera_corrupt(x, pm, gen(seed), noise_prob=0.5),
    ]


def test_same_seed_same_output_different_seed_different_output():
    x, pm = batch(seed=11)
    torch.manual_seed(1)
    first = call_all(x, pm, seed=3)
    state = torch.get_rng_state()
    torch.manual_seed(2)  # the global RNG changes nothing
    again = call_all(x, pm, seed=3)
    other = call_all(x, pm, seed=4)
    for (a, ma), (b, mb), (c, mc) in zip(first, again, other, strict=True):
        assert torch.equal(a, b) and torch.equal(ma, mb)
        assert not torch.equal(a, c) and not torch.equal(ma, mc)
    torch.manual_seed(1)
    call_all(x, pm, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # and none is drawn from it


def test_frequency_band():
    F = 40
    x, pm = batch(B=2000, T=20, F=F, seed=12)
    out, band = mask_frequency(x, pm, gen(12), max_width_ratio=0.2)
    width = band.sum(1)
    assert width.max() == 8 and width.min() == 0
    assert len(torch.unique(width)) == 9  # every width 0..floor(0.2 * 40) occurs
    for b in range(0, 2000, 50):  # contiguous
        idx = band[b].nonzero().squeeze(1)
        if len(idx):
            assert idx[-1] - idx[0] + 1 == len(idx)
    starts = band.float().argmax(1)[width > 0]
    assert starts.min() == 0 and (starts + width[width > 0]).max() == F  # both ends reachable
    hit = band[:, None, :] & ~pm[..., None]  # (B, T, F)
    assert (out[hit] == 0).all()
    assert torch.equal(out[~hit], x[~hit])  # outside the band, and on padding, unchanged


def test_noise_only_on_noised_utterances():
    x, pm = batch(B=2000, T=40, F=8, min_len=1, seed=13)
    out, noised = add_noise(x, pm, gen(13), noise_prob=0.1, std=0.2)
    assert abs(noised.float().mean().item() - 0.1) < 0.02
    assert torch.equal(out[~noised], x[~noised])
    real = ~pm[..., None].expand_as(x)
    diff = (out - x)[noised[:, None, None] & real]
    assert (diff != 0).all()
    assert abs(diff.std().item() - 0.2) < 0.01 and abs(diff.mean().item()) < 0.01


def test_tera_frame_mask_is_the_union():
    x, pm = batch(seed=14)
    out, frame_mask = tera_corrupt(x, pm, gen(14), noise_prob=0.3)
    g = gen(14)  # the same draws, in tera_corrupt's order
    step, chosen = mask_time(x, pm, g)
    step, band = mask_frequency(step, pm, g)
    step, noised = add_noise(step, pm, g, noise_prob=0.3)
    real = ~pm[..., None]
    expected = chosen[..., None] | (band[:, None, :] & real) | (noised[:, None, None] & real)
    assert torch.equal(out, step)
    assert torch.equal(frame_mask, expected)
    assert noised.any() and band.any() and chosen.any()
    # switches
    out, fm = tera_corrupt(x, pm, gen(14), frequency=False, noise=False)
    ref, ch = mask_time(x, pm, gen(14))
    assert torch.equal(out, ref) and torch.equal(fm, ch[..., None].expand_as(fm))
    out, fm = tera_corrupt(x, pm, gen(14), time=False, frequency=False, noise=False)
    assert torch.equal(out, x) and not fm.any()


def test_frame_stats():
    pm = torch.tensor([[False] * 8, [False] * 5 + [True] * 3])
    chosen = torch.tensor(
        [[True, True, False, True, True, True, False, True], [False] * 5 + [True] * 3]
    )
    s = frame_stats(chosen, pm)
    assert s["masked_fraction"] == 6 / 13  # padding never counts
    assert s["masked_utterances"] == 0.5
    assert s["run_lengths"] == {1: 1, 2: 1, 3: 1}


def test_left_padding_refused():
    pm = torch.tensor([[True, False, False]])
    with pytest.raises(ValueError, match="right padding"):
        choose_spans(pm, gen(0))


def test_masked_l1_against_direct_sum():
    g = gen(15)
    pred = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    target = torch.randn(3, 5, 4, generator=g)
    values = torch.rand(3, 5, 4, generator=g) < 0.3
    direct = sum(
        abs(pred[i, j, k].item() - target[i, j, k].item())
        for i in range(3)
        for j in range(5)
        for k in range(4)
        if values[i, j, k]
    )
    loss = masked_l1(pred, target, values)
    assert loss.item() == pytest.approx(direct, rel=1e-6)
    loss.backward()
    assert torch.equal(pred.grad, torch.sign(pred - target).detach() * values)
    frames = torch.rand(3, 5, generator=g) < 0.5
    assert masked_l1(pred, target, frames).item() == pytest.approx(
        masked_l1(pred, target, frames[..., None].expand(3, 5, 4)).item(), rel=1e-6
    )


def test_l1_sum_against_direct_sum():
    g = gen(16)
    pred, target = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    valid = torch.arange(6) < torch.tensor([6, 2])[:, None]
    direct = (pred[0] - target[0]).abs().sum() + (pred[1, :2] - target[1, :2]).abs().sum()
    assert l1_sum(pred, target, valid).item() == pytest.approx(direct.item(), rel=1e-6)
    assert l1_sum(pred, target).item() == pytest.approx(
        (pred - target).abs().sum().item(), rel=1e-6
    )


def _fairseq_style_count(n: int, p: float, span: int, min_spans: int, u: float) -> int:
    # the paper's rule written out: stochastic rounding of p * n / span, at least min_spans,
    # at most the number of places
    return min(max(int(p * n + u), min_spans), max(n - span + 1, 1))


def test_overlapping_spans_follow_the_wav2vec2_rule():
    from selfsup.corrupt.frames import overlapping_spans

    lengths = [200, 150, 37, 6, 0]
    T = max(lengths)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    g = torch.Generator().manual_seed(3)
    mask = overlapping_spans(pad, g, 0.065, 10, 2)
    assert not (mask & pad).any()
    assert not mask[4].any()
    assert mask[3, :6].all()  # shorter than a span: masked whole
    # every maximal run is a union of whole spans: at least `span` long unless clipped
    for row, n in zip(mask[:3], lengths[:3], strict=True):
        runs = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)]))
        starts, ends = (runs == 1).nonzero()[:, 0], (runs == -1).nonzero()[:, 0]
        assert ((ends - starts) >= 10).all() and int(ends.max()) <= n
    # the same seed, the same mask; the rate over many draws matches the rule's expectation
    again = overlapping_spans(pad, torch.Generator().manual_seed(3), 0.065, 10, 2)
    assert torch.equal(mask, again)
    big = torch.zeros(4000, 300, dtype=torch.bool)
    m = overlapping_spans(big, torch.Generator().manual_seed(0), 0.065, 10, 2)
    counts = {_fairseq_style_count(300, 0.065, 10, 2, u / 100) for u in range(100)}
    assert len(counts) == 2  # 0.065 * 300 = 19.5 starts: 19 or 20, as often
    # the expected covered share of k distinct uniform starts (width 10) among 291 places,
    # averaged over k = 19 and 20
    n_places, cover = 291, 0.0
    for k in counts:
        for t in range(300):
            ok = min(t, n_places - 1) - max(0, t - 9) + 1  # places whose span covers frame t
            cover += 1 - math.comb(n_places - ok, k) / math.comb(n_places, k)
    cover /= len(counts)
    assert abs(m.float().mean().item() - cover / 300) < 0.01
