"""The WordPiece tokenizer: BERT's rules (lowercase, accents, CJK one per token), saved in a form
transformers loads unchanged and encodes identically."""

from __future__ import annotations

import shutil

import pytest
import torch

from selfsup.data.tokenizer import SPECIALS, load_tokenizer, train_tokenizer
from selfsup.errors import ConfigError

SENTENCES = [
    "The river runs over the stone.",
    "Café naïve résumé, ÉCOLE Straße!",
    "北京天安门 学生 London",
    "Gamma   Delta\tParis\nquickly; zzqx unknownword 🙂",
]


@pytest.fixture(scope="module")
def cased_tokenizer(texts):
    return train_tokenizer(texts, vocab_size=300, lowercase=False)


def tokens(tok, text: str) -> list[str]:
    return tok.tok.encode(text, add_special_tokens=False).tokens


def test_specials_come_first_and_are_found(tiny_tokenizer):
    assert [tiny_tokenizer.decode_token(i) for i in range(len(SPECIALS))] == SPECIALS
    assert (tiny_tokenizer.pad_id, tiny_tokenizer.cls_id, tiny_tokenizer.sep_id) == (0, 2, 3)


def test_cjk_split_one_per_token(tiny_tokenizer):
    assert tokens(tiny_tokenizer, "北京天安门学生") == list("北京天安门学生")
    # Even glued to Latin text, each CJK character stands alone.
    assert tokens(tiny_tokenizer, "london北京") == ["london", "北", "京"]


def test_lowercase_option(tiny_tokenizer, cased_tokenizer):
    assert tiny_tokenizer.lowercase and not cased_tokenizer.lowercase
    # BERT uncased: lowercase and strip accents.
    assert tokens(tiny_tokenizer, "PARIS Café") == tokens(tiny_tokenizer, "paris cafe")
    assert "paris" in tokens(tiny_tokenizer, "PARIS")
    # Cased: neither.
    assert tokens(cased_tokenizer, "Paris") == ["Paris"]
    assert tokens(cased_tokenizer, "Paris") != tokens(cased_tokenizer, "paris")
    assert "é" in "".join(tokens(cased_tokenizer, "Café"))


def test_call_pads_truncates_and_marks_segments(tiny_tokenizer):
    tok = tiny_tokenizer
    b = tok(SENTENCES[:2], SENTENCES[2:], max_len=12)
    ids, mask, types = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    assert ids.shape[1] <= 12 and (ids[:, 0] == tok.cls_id).all()
    for i in range(2):
        n = int(mask[i].sum())
        seps = (ids[i, :n] == tok.sep_id).nonzero().squeeze(1).tolist()
        assert len(seps) == 2 and seps[1] == n - 1
        assert (types[i, : seps[0] + 1] == 0).all() and (types[i, seps[0] + 1 : n] == 1).all()
        assert (ids[i, n:] == tok.pad_id).all() and (types[i, n:] == 0).all()
    # Padding and truncation are switched off again afterwards.
    assert len(tok.tok.encode(SENTENCES[0] * 20).ids) > 12


def test_vocab_txt_order_matches_ids(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save(tmp_path)
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == tiny_tokenizer.vocab_size
    assert [tiny_tokenizer.tok.token_to_id(t) for t in lines[:-1]] == list(range(len(lines) - 1))


@pytest.mark.parametrize("cased", [False, True])
def test_save_load_round_trip(cased, tiny_tokenizer, cased_tokenizer, tmp_path):
    tok = cased_tokenizer if cased else tiny_tokenizer
    tok.save(tmp_path / "full")
    for name in ("vocab.txt", "tokenizer_config.json"):  # an HF folder without tokenizer.json
        (tmp_path / "vocab_only").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "full" / name, tmp_path / "vocab_only" / name)
    for folder in ("full", "vocab_only"):
        back = load_tokenizer(tmp_path / folder)
        assert back.lowercase == tok.lowercase and back.vocab_size == tok.vocab_size
        assert back.encode_plain(SENTENCES) == tok.encode_plain(SENTENCES)
    assert load_tokenizer(tmp_path / "full").fingerprint() == tok.fingerprint()


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path)  # a folder without vocab.txt or tokenizer.json


def test_random_ids_and_continuations(tiny_tokenizer):
    tok = tiny_tokenizer
    rand = set(tok.random_ids().tolist())
    assert rand.isdisjoint(tok.special_ids) and len(rand) == tok.vocab_size - len(SPECIALS)
    table = tok.continuation_table()
    pieces = [t for t in tok.tok.get_vocab() if t.startswith("##")]
    assert pieces and int(table.sum()) == len(pieces)
    assert all(table[tok.tok.token_to_id(t)] for t in pieces)


# --------------------------------------------------------------------------------------------
# transformers loads what we save
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cased", [False, True])
def test_transformers_loads_saved_tokenizer(cased, tiny_tokenizer, cased_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = cased_tokenizer if cased else tiny_tokenizer
    tok.save(tmp_path)
    ref = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    assert ref.get_vocab() == tok.tok.get_vocab()
    assert ref.do_lower_case == tok.lowercase
    assert (ref.pad_token_id, ref.unk_token_id, ref.cls_token_id, ref.sep_token_id) == (
        tok.pad_id,
        tok.unk_id,
        tok.cls_id,
        tok.sep_id,
    )
    assert ref.mask_token_id == tok.mask_id
    for text in SENTENCES:
        assert ref.tokenize(text) == tokens(tok, text)
    got = tok(SENTENCES)
    want = ref(SENTENCES, padding=True, return_tensors="pt")
    for k in got:
        assert torch.equal(got[k], want[k]), k
    got = tok(SENTENCES[:2], SENTENCES[2:], max_len=14)
    want = ref(
        SENTENCES[:2],
        SENTENCES[2:],
        padding=True,
        truncation=True,
        max_length=14,
        return_tensors="pt",
    )
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert (got["token_type_ids"] == 1).any()
