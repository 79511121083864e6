"""Parity with HuggingFace transformers: same weights, same inputs, same outputs (fp32, 1e-5).

Covers the name mapping (fused q/k/v, tied decoder, heads), HF-written folders (safetensors and
legacy pytorch_model.bin with gamma/beta names), the real pretrained all-MiniLM-L6-v2, and
selfsup run -> export_hf -> transformers / load_model round trips.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import pair_batch
from safetensors.torch import load_file

from selfsup.data.tokenizer import load_tokenizer
from selfsup.encoders.text import build_encoder
from selfsup.errors import ConfigError
from selfsup.interop.hf_bert import from_hf_state, hf_config_to_model, to_hf_state
from selfsup.keys import IGNORE
from selfsup.models import export_hf_folder, load_model
from selfsup.objectives import MLM, MLMWithNSP
from selfsup.objectives.base import batch_loss

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: a naïve résumé, 3.14 $ and 42%!",
    "我爱北京天安门。",
    "Supercalifragilisticexpialidocious zxqvbnm flibbertigibbet?",
    "Hello, world!! (yes) -- #tag @user <b>bold</b>",
    "ÉCOLE Straße Ünïcödé",
]


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape
    err = (a.float() - b.float()).abs().max().item()
    assert err <= atol, f"max abs difference {err:.3g} > {atol}"


def random_batch(vocab_size: int, lengths=(12, 8, 5), seed: int = 0) -> dict[str, torch.Tensor]:
    """Padded pair batch from random ids: [CLS]=2 A [SEP]=3 B [SEP]; segment B is type 1."""
    g = torch.Generator().manual_seed(seed)
    return pair_batch(lengths, vocab_size, g)


def assert_padded_pairs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch really has padding and both segments (else the test proves less); returns the
    (B, T) mask of real positions."""
    keep = batch["attention_mask"].bool()
    assert not keep.all() and keep[:, 0].all()
    assert (batch["token_type_ids"][keep] == 1).any() and (batch["token_type_ids"][keep] == 0).any()
    return keep


def tiny_hf_config(vocab_size: int, **kw) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        **kw,
    )


# --------------------------------------------------------------------------------------------
# 1. Random weights, converted with from_hf_state
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_random_bert_matches_transformers(attn, perturb):
    torch.manual_seed(0)
    ref = perturb(transformers.BertForPreTraining(tiny_hf_config(500, attn_implementation=attn)))
    ref.eval()
    cfg = hf_config_to_model(ref.config.to_dict())
    ours = MLMWithNSP(build_encoder(cfg), cfg.vocab_size, cfg.norm_eps).eval()
    ours.load_state_dict(from_hf_state(ref.state_dict(), cfg.n_layers))  # strict: every weight
    batch = random_batch(cfg.vocab_size)
    keep = assert_padded_pairs(batch)

    with torch.no_grad():
        r = ref(**batch, output_hidden_states=True)
        o = ours.encoder(**batch, return_all=True)
        assert len(o["all_hidden"]) == len(r.hidden_states) == cfg.n_layers + 1
        for h, rh in zip(o["all_hidden"], r.hidden_states, strict=True):
            close(h[keep], rh[keep])
        close(o["pooled"], ref.bert(**batch).pooler_output)
        close(ours.pair_head(o["pooled"]), r.seq_relationship_logits)
        logits = ours.mlm_head(o["hidden"][keep], ours.encoder.embed.tokens.weight)  # (M, V)
        close(logits, r.prediction_logits[keep])
        close(ours.predict_masked(batch, keep), torch.log_softmax(r.prediction_logits[keep], -1))

    # Same loss and same gradients, mapped back to HF names.
    labels = torch.full_like(batch["input_ids"], IGNORE)
    labels[:, 1:4] = batch["input_ids"][:, 1:4]
    pair_labels = torch.tensor([0, 1, 1])
    r = ref(**batch, labels=labels, next_sentence_label=pair_labels)
    loss = batch_loss(ours, {**batch, "labels": labels, "pair_labels": pair_labels})
    close(loss, r.loss)
    r.loss.backward()
    loss.backward()
    grads = to_hf_state({k: p.grad for k, p in ours.named_parameters()}, cfg.n_layers)
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    assert set(grads) - {"cls.predictions.bias"} <= set(ref_grads)
    for k, g in grads.items():
        close(g, ref_grads.get(k, ref_grads.get("cls.predictions.decoder.bias")))


@pytest.mark.parametrize(
    "cls, objective",
    [
        ("BertForPreTraining", MLMWithNSP),
        ("BertForMaskedLM", MLM),
        ("BertModel", None),
    ],
)
def test_load_model_reads_transformers_folders(cls, objective, tiny_tokenizer, perturb, tmp_path):
    """A folder written by transformers' save_pretrained loads with the right heads, and
    export_hf writes the same weights back."""
    torch.manual_seed(0)
    ref = perturb(getattr(transformers, cls)(tiny_hf_config(tiny_tokenizer.vocab_size))).eval()
    ref.save_pretrained(tmp_path / "hf")
    tiny_tokenizer.save(tmp_path / "hf")
    loaded = load_model(tmp_path / "hf")
    assert loaded.source == "hf"
    assert type(loaded.model) is objective if objective else loaded.model is None

    batch = tiny_tokenizer(SENTENCES[:3], SENTENCES[3:])
    keep = assert_padded_pairs(batch)
    with torch.no_grad():
        r = ref(**batch, output_hidden_states=True)
        o = loaded.encoder(**batch)
        close(o["hidden"][keep], r.hidden_states[-1][keep])
        if objective is not None:
            logits = r.prediction_logits if objective is MLMWithNSP else r.logits
            close(loaded.model.predict_masked(batch, keep), torch.log_softmax(logits[keep], -1))

    export_hf_folder(loaded, tmp_path / "out")
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    for k, v in ref.state_dict().items():
        if k.endswith("decoder.weight"):  # tied to the word embeddings, not stored
            continue
        assert torch.equal(exported[k], v), k


def test_load_model_reads_legacy_bin_with_gamma_beta(tiny_tokenizer, perturb, tmp_path):
    """Old Google-converted checkpoints: pytorch_model.bin, LayerNorm.gamma/beta names."""
    torch.manual_seed(0)
    ref = perturb(transformers.BertForPreTraining(tiny_hf_config(tiny_tokenizer.vocab_size)))
    ref.eval()
    legacy = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    sd = {}
    for k, v in ref.state_dict().items():
        for new, old in legacy.items():
            k = k.replace(new, old)
        sd[k] = v
    assert any(k.endswith("gamma") for k in sd)
    tmp_path.mkdir(exist_ok=True)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(ref.config.to_json_string())
    tiny_tokenizer.save(tmp_path)
    loaded = load_model(tmp_path)
    batch = tiny_tokenizer(SENTENCES[:3], SENTENCES[3:])
    keep = assert_padded_pairs(batch)
    with torch.no_grad():
        r = ref(**batch)
        want = torch.log_softmax(r.prediction_logits[keep], -1)
        close(loaded.model.predict_masked(batch, keep), want)


@pytest.mark.parametrize(
    "change",
    [
        {"model_type": "roberta"},
        {"hidden_act": "gelu_new"},
        {"position_embedding_type": "relative_key"},
    ],
)
def test_unsupported_hf_configs_are_refused(change):
    hf = tiny_hf_config(100).to_dict() | change
    with pytest.raises(ConfigError):
        hf_config_to_model(hf)


# --------------------------------------------------------------------------------------------
# 2. The real pretrained all-MiniLM-L6-v2
# --------------------------------------------------------------------------------------------


def test_minilm_matches_transformers(minilm_dir):
    loaded = load_model(minilm_dir)
    assert loaded.source == "hf" and loaded.model is None  # BertModel: no pretraining heads
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    batch = loaded.tokenizer(SENTENCES)
    keep = batch["attention_mask"].bool()
    assert not keep.all()
    with torch.no_grad():
        o = loaded.encoder(**batch)
        r = ref(**batch)
    close(o["hidden"][keep], r.last_hidden_state[keep])
    close(o["pooled"], r.pooler_output)
    # A pretrained model is far from random: guard against comparing two zero tensors.
    assert o["hidden"][keep].std() > 0.1


def test_minilm_tokenizer_matches_transformers(minilm_dir, tmp_path):
    ours = load_tokenizer(minilm_dir)
    ref = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    assert ours.vocab_size == len(ref) == 30522
    assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        ref.pad_token_id,
        ref.cls_token_id,
        ref.sep_token_id,
        ref.mask_token_id,
    )
    # Only vocab.txt (older HF folders): the pipeline is rebuilt and must still agree.
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    vocab_only = load_tokenizer(tmp_path)

    for tok in (ours, vocab_only):
        got = tok(SENTENCES)
        want = ref(SENTENCES, padding=True, return_tensors="pt")
        for k in got:
            assert torch.equal(got[k], want[k]), k
        got = tok(SENTENCES[:3], SENTENCES[3:], max_len=16)
        want = ref(
            SENTENCES[:3],
            SENTENCES[3:],
            padding=True,
            truncation=True,
            max_length=16,
            return_tensors="pt",
        )
        for k in got:
            assert torch.equal(got[k], want[k]), k
    tokens = ref.convert_ids_to_tokens(ours(SENTENCES[1:3])["input_ids"][0])
    assert "cafe" in tokens and "naive" in tokens  # lowercased, accents stripped
    assert ours.unk_id in ours(SENTENCES[2:3])["input_ids"][0]


# --------------------------------------------------------------------------------------------
# 3. selfsup run -> export_hf -> transformers and back
# --------------------------------------------------------------------------------------------

# Keys a class may legitimately find unused in a BertForPreTraining export: the heads it lacks.
HEADS_NOT_IN = {
    "BertForPreTraining": (),
    "BertForMaskedLM": ("bert.pooler.", "cls.seq_relationship."),
    "BertModel": ("cls.",),
}


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_export_round_trip(objective, run_factory, tmp_path):
    run = run_factory(objective, max_len=64)
    ours = load_model(run)
    assert ours.source == "run"
    # Nothing left at its initial value: mapping mix-ups cannot hide behind zeros or ones.
    assert ours.model.mlm_head.bias.abs().min() > 0
    export_hf_folder(ours, tmp_path / "hf")
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    arch = "BertForPreTraining" if objective == "mlm+nsp" else "BertForMaskedLM"
    assert hf_cfg["architectures"] == [arch]

    batch = ours.tokenizer(SENTENCES[:3], SENTENCES[3:])
    keep = assert_padded_pairs(batch)
    with torch.no_grad():
        o = ours.encoder(**batch)
        logits = ours.model.mlm_head(o["hidden"][keep], ours.encoder.embed.tokens.weight)

    classes = ["BertModel", "BertForMaskedLM"]
    if objective == "mlm+nsp":
        classes.append("BertForPreTraining")
    for name in classes:
        cls = getattr(transformers, name)
        ref, info = cls.from_pretrained(tmp_path / "hf", output_loading_info=True)
        ref.eval()
        assert set(info["missing_keys"]) <= {"cls.predictions.decoder.weight"}, (name, info)
        assert not info["mismatched_keys"] and not info["error_msgs"], (name, info)
        bad = {k for k in info["unexpected_keys"] if not k.startswith(HEADS_NOT_IN[name])}
        if name == "BertModel" or objective == "mlm+nsp":
            assert not bad, (name, bad)
        with torch.no_grad():
            r = ref(**batch, output_hidden_states=True)
        close(r.hidden_states[-1][keep], o["hidden"][keep])
        if name == "BertModel":
            close(r.pooler_output, o["pooled"])
        elif name == "BertForMaskedLM":
            close(r.logits[keep], logits)
        else:
            close(r.prediction_logits[keep], logits)
            close(r.seq_relationship_logits, ours.model.pair_head(o["pooled"]))

    # The exported tokenizer: same encodings, and truncation within the position table.
    hf_tok = transformers.BertTokenizerFast.from_pretrained(tmp_path / "hf")
    assert hf_tok.model_max_length == ours.config.max_len == 64
    want = hf_tok(SENTENCES[:3], SENTENCES[3:], padding=True, return_tensors="pt")
    for k in batch:
        assert torch.equal(batch[k], want[k]), k

    # And back into selfsup: bit-identical weights.
    back = load_model(tmp_path / "hf")
    assert back.source == "hf" and type(back.model) is type(ours.model)
    sd, back_sd = ours.model.state_dict(), back.model.state_dict()
    assert sd.keys() == back_sd.keys()
    for k in sd:
        assert torch.equal(sd[k], back_sd[k]), k


def test_export_encoder_only_round_trip(minilm_dir, tmp_path):
    """An HF BertModel (no heads) exports as BertModel with unprefixed names."""
    loaded = load_model(minilm_dir)
    export_hf_folder(loaded, tmp_path / "out")
    hf_cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf_cfg["architectures"] == ["BertModel"]
    want = load_file(str(minilm_dir / "model.safetensors"))
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(got) == set(want) - {"embeddings.position_ids"}
    for k in got:
        assert torch.equal(got[k], want[k]), k


def test_export_refuses_non_empty_folder(tiny_run, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError):
        export_hf_folder(load_model(tiny_run), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "x"
