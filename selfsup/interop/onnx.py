"""ONNX export: a pretrained encoder (last hidden state) or a fine-tuned task model (its logits)
as `model.onnx` with dynamic batch and sequence axes, beside the tokenizer files and a
config.json (transformers' config of the model, label names included, plus a `selfsup` section
naming the graph's inputs and outputs), so onnxruntime needs nothing else from selfsup.

Inputs are always `input_ids`, `attention_mask`, `token_type_ids`, int64 (B, T). Outputs:
encoder `last_hidden_state` (B, T, D); classify / pair-classify `logits` (B, C); regress
`logits` (B,); tag `logits` (B, T, C); qa `start_logits`, `end_logits` (B, T). They are what
`BertEncoder` and the task models' `predict` return.

The graphs are traced by torch.export (`torch.onnx.export(dynamo=True)`, onnxscript). Two things
in the eager forward do not trace with symbolic shapes, so the wrappers here avoid them: the
encoder skips its mask when nothing is padded (a data-dependent branch; here the mask is always
applied, which gives the same outputs), and attention picks its CPU path by sequence length (a
guard on T; here the matmul path is kept for every length up to the position table).
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from selfsup.data.tokenizer import Tokenizer
from selfsup.encoders.text import BertConfig, BertEncoder
from selfsup.errors import ConfigError
from selfsup.interop.hf_bert import model_to_hf_config, task_hf_config, write_export
from selfsup.keys import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS

ONNX_FORMAT = "selfsup-onnx"
INPUTS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
OUTPUTS = {
    "encoder": ("last_hidden_state",),
    "classify": ("logits",),
    "pair-classify": ("logits",),
    "regress": ("logits",),
    "tag": ("logits",),
    "qa": ("start_logits", "end_logits"),
}
OPSET = 18


def hidden_states(
    encoder: BertEncoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
) -> torch.Tensor:
    """BertEncoder's last hidden states with the padding mask always applied. (B, T, D)"""
    x = encoder.embed(input_ids, token_type_ids)  # (B, T, D)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): padding keys hidden
    return encoder.transformer(x, keys)


class EncoderGraph(nn.Module):
    def __init__(self, encoder: BertEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return hidden_states(self.encoder, input_ids, attention_mask, token_type_ids)


class PooledGraph(nn.Module):
    """Sequence classification and regression: the head on BERT's pooled [CLS]."""

    def __init__(self, model: nn.Module, squeeze: bool):
        super().__init__()
        self.encoder, self.head, self.squeeze = model.encoder, model.head, squeeze

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        h = hidden_states(self.encoder, input_ids, attention_mask, token_type_ids)
        logits = self.head(torch.tanh(self.encoder.pooler(h[:, 0])))  # (B, C)
        return logits.squeeze(-1) if self.squeeze else logits


class TagGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder, self.head = model.encoder, model.head

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        h = hidden_states(self.encoder, input_ids, attention_mask, token_type_ids)
        return self.head(h)  # (B, T, C)


class SpanGraph(TagGraph):
    def forward(self, input_ids, attention_mask, token_type_ids):
        h = hidden_states(self.encoder, input_ids, attention_mask, token_type_ids)
        return self.head(h)  # (start, end), (B, T) each


def graph_for(kind: str, module: nn.Module) -> nn.Module:
    """The module to export for `kind`: `module` is a BertEncoder for "encoder", else a task
    model from selfsup.objectives.supervised."""
    if kind == "encoder":
        return EncoderGraph(module)
    if kind in ("classify", "pair-classify", "regress"):
        return PooledGraph(module, squeeze=kind == "regress")
    if kind == "tag":
        return TagGraph(module)
    if kind == "qa":
        return SpanGraph(module)
    raise ConfigError(f"no ONNX export for model kind {kind!r}")


@contextmanager
def _one_attention_path(max_len: int):
    """Attention's CPU matmul path for every length the graph can see, so export does not
    guard on T (the matmul path and SDPA compute the same softmax(q k^T / sqrt(d)) v)."""
    from selfsup.layers import attention

    before = attention.CPU_MATH_MAX_LEN
    attention.CPU_MATH_MAX_LEN = max(before, max_len)
    try:
        yield
    finally:
        attention.CPU_MATH_MAX_LEN = before


def _check_exporter() -> None:
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)} (pip install onnx "
                          "onnxscript)")  # fmt: skip


def write_onnx(graph: nn.Module, path: Path, outputs: tuple[str, ...], max_len: int) -> None:
    """Export `graph` (inputs INPUTS) to `path` with dynamic batch and sequence axes."""
    _check_exporter()
    B, T = 2, min(8, max_len)
    example = (
        torch.full((B, T), 5, dtype=torch.long),
        torch.ones(B, T, dtype=torch.long),
        torch.zeros(B, T, dtype=torch.long),
    )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_len)
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}
    graph = graph.eval().cpu()
    with _one_attention_path(max_len), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and opsets
        program = torch.onnx.export(
            graph, example, dynamo=True, dynamic_shapes=shapes, input_names=list(INPUTS),
            output_names=list(outputs), opset_version=OPSET, verbose=False,
        )  # fmt: skip
        program.save(str(path))


def export_onnx(
    module: nn.Module,
    kind: str,
    config: BertConfig,
    tokenizer: Tokenizer,
    out: Path,
    labels: list | None = None,
    task: str | None = None,
    max_len: int | None = None,
) -> None:
    """Write `out`/ with model.onnx, the tokenizer files and config.json. `module` is a
    BertEncoder (kind "encoder") or a fine-tuned task model (kind its task kind)."""
    if kind not in OUTPUTS:
        raise ConfigError(f"no ONNX export for model kind {kind!r}")
    if kind == "encoder":
        cfg = model_to_hf_config(config, ["BertModel"])
    else:
        cfg = task_hf_config(config, kind, labels)
    limit = min(max_len or config.max_len, config.max_len)
    cfg["selfsup"] = {
        "format": ONNX_FORMAT, "kind": kind, "task": task, "labels": labels,
        "inputs": list(INPUTS), "outputs": list(OUTPUTS[kind]), "max_len": limit,
        "model": dict(config.__dict__),
    }  # fmt: skip
    graph = graph_for(kind, module)
    _check_exporter()

    def fill(tmp: Path) -> None:
        write_onnx(graph, tmp / "model.onnx", OUTPUTS[kind], config.max_len)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
        tokenizer.save(tmp, limit)

    write_export(out, fill)
