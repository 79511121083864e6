"""The encoder-decoder: same logits as transformers' BART on mapped weights (both directions),
a causal decoder, and incremental decoding with a cache equal to decoding the whole prefix."""

import pytest
import torch

from selfsup.encoders.seq2seq import Seq2SeqConfig, build_seq2seq
from selfsup.encoders.transformer import reorder_cache
from selfsup.interop.hf_bart import (
    hf_config_to_model,
    model_to_hf_config,
    state_dict_from_hf,
    state_dict_to_hf,
)

transformers = pytest.importorskip("transformers")

CFG = Seq2SeqConfig(vocab_size=97, dim=32, n_layers=2, decoder_layers=3, n_heads=4, ffn_dim=48,
                    max_len=40, dropout=0.0, pad_id=0)  # fmt: skip
SPECIAL = {"pad": 0, "bos": 2, "eos": 3, "decoder_start": 2}


def model(seed=0):
    torch.manual_seed(seed)
    m = build_seq2seq(CFG).eval()
    with torch.no_grad():  # non-zero biases and norms, so a wrong mapping shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 97, (3, 11), generator=g)
    mask = torch.ones_like(src)
    mask[1, 7:] = 0
    mask[2, 9:] = 0
    src = src.masked_fill(mask == 0, 0)
    tgt = torch.randint(4, 97, (3, 9), generator=g)
    tgt[:, 0] = 2
    return src, mask, tgt


def hf_model(ours):
    hf_cfg = transformers.BartConfig(**model_to_hf_config(CFG, SPECIAL))
    hf = transformers.BartForConditionalGeneration(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(state_dict_to_hf(ours.state_dict(), CFG),
                                             strict=False)  # fmt: skip
    assert not unexpected and not [k for k in missing if "embed_tokens" not in k], missing
    return hf


def test_logits_equal_transformers_bart():
    ours = model()
    hf = hf_model(ours)
    src, mask, tgt = batch()
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        got = ours(src, tgt, mask)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_hf_weights_import_back_to_the_same_model():
    ours = model()
    hf = hf_model(ours)
    cfg = hf_config_to_model(hf.config.to_dict())
    assert cfg.n_decoder_layers == 3 and cfg.norm_eps == 1e-5
    back = build_seq2seq(cfg).eval()
    back.load_state_dict(state_dict_from_hf(hf.state_dict(), cfg))
    src, mask, tgt = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(src, tgt, mask), ours(src, tgt, mask), atol=0, rtol=0)


def test_decoder_never_sees_the_future():
    ours = model()
    src, mask, tgt = batch()
    with torch.no_grad():
        base = ours(src, tgt, mask)
        changed = tgt.clone()
        changed[:, 5:] = torch.randint(4, 97, changed[:, 5:].shape)
        other = ours(src, changed, mask)
    torch.testing.assert_close(other[:, :5], base[:, :5], atol=1e-6, rtol=1e-5)
    assert (other[:, 5:] - base[:, 5:]).abs().max() > 1e-3


def test_padding_in_the_source_changes_nothing_real():
    ours = model()
    src, mask, tgt = batch()
    with torch.no_grad():
        base = ours(src, tgt, mask)
        src2 = src.clone()
        src2[mask == 0] = 55  # other ids under the padding mask
        torch.testing.assert_close(ours(src2, tgt, mask), base, atol=1e-6, rtol=1e-5)


def test_cached_decoding_equals_full_decoding():
    ours = model()
    src, mask, tgt = batch()
    with torch.no_grad():
        enc = ours.encode(src, mask)
        full = ours.decode(tgt, enc["hidden"], enc["padding_mask"])
        cache = ours.decoder.new_cache()
        steps = [ours.decode(tgt[:, :3], enc["hidden"], enc["padding_mask"], cache, 0)]
        for t in range(3, tgt.shape[1]):  # then one token at a time
            steps.append(ours.decode(tgt[:, t : t + 1], enc["hidden"], enc["padding_mask"],
                                     cache, offset=t))  # fmt: skip
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_two_tokens_at_once_after_a_cache_stay_causal():
    ours = model()
    src, mask, tgt = batch()
    with torch.no_grad():
        enc = ours.encode(src, mask)
        full = ours.decode(tgt, enc["hidden"], enc["padding_mask"])
        cache = ours.decoder.new_cache()
        a = ours.decode(tgt[:, :4], enc["hidden"], enc["padding_mask"], cache, 0)
        b = ours.decode(tgt[:, 4:7], enc["hidden"], enc["padding_mask"], cache, 4)
    torch.testing.assert_close(torch.cat([a, b], 1), full[:, :7], atol=1e-5, rtol=1e-5)


def test_reordered_cache_follows_its_rows():
    ours = model()
    src, mask, tgt = batch()
    with torch.no_grad():
        enc = ours.encode(src, mask)
        cache = ours.decoder.new_cache()
        ours.decode(tgt[:, :4], enc["hidden"], enc["padding_mask"], cache, 0)
        index = torch.tensor([2, 2, 0])
        reorder_cache(cache, index)
        got = ours.decode(tgt[index, 4:5], enc["hidden"][index], enc["padding_mask"][index],
                          cache, 4)  # fmt: skip
        full = ours.decode(tgt[index, :5], enc["hidden"][index], enc["padding_mask"][index])
    torch.testing.assert_close(got[:, 0], full[:, 4], atol=1e-5, rtol=1e-5)


def test_too_long_inputs_are_refused():
    ours = model()
    with pytest.raises(ValueError, match="source length 41"):
        ours.encode(torch.ones(1, 41, dtype=torch.long))
    enc = ours.encode(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="target length"):
        ours.decode(torch.ones(1, 2, dtype=torch.long), enc["hidden"], offset=39)


def test_export_refuses_a_norm_eps_bart_cannot_hold():
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError, match="norm_eps"):
        model_to_hf_config(Seq2SeqConfig(norm_eps=1e-12), SPECIAL)
