"""Fine-tuning recipe: task data -> features -> length-bucketed batches -> task model -> the same
training loop as pretraining -> predictions -> official metrics.

Features per task kind:
- classify / pair-classify / regress: `[CLS] A [SEP] (B [SEP])`, label on the example;
- tag: words tokenized as pre-split input, the label on each word's first sub-token;
- qa: `[CLS] question [SEP] context window [SEP]`, long contexts cut into windows with a stride;
  the answer's character span mapped to token positions through offsets (windows without the
  answer point at [CLS]); predictions take the best span with start <= end and at most
  `max_answer_len` tokens over all windows, mapped back to the original text.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup.data.padding import pad_sequences
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.finetune_common import (  # noqa: F401  (re-exported: callers import them here)
    BucketedBatches,
    EarlyStop,
    append_eval_row,
    bucketed_order,
    check_loop_settings,
    json_safe,
    load_splits,
    loop_config,
    save_json,
    set_dropout,
    split_by_article,
    steps_of,
    training_splits,
)
from selfsup.keys import (
    ATTENTION_MASK,
    CONTEXT_MASK,
    END_POSITIONS,
    IGNORE,
    INPUT_IDS,
    LABELS,
    START_POSITIONS,
    TOKEN_TYPE_IDS,
)
from selfsup.models import FINETUNE_FORMAT, FINETUNE_VERSION, load_finetuned
from selfsup.objectives.supervised import build_task_model
from selfsup.paths import check_out_folder
from selfsup.predict import predict_batches

# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Unpadded token ids per feature, plus what the task needs to score or map back."""

    ids: list[list[int]]
    types: list[list[int]]
    labels: list = field(default_factory=list)  # int/float per feature, or per-token lists
    extra: dict = field(default_factory=dict)  # qa: example index, offsets, context masks...

    def __len__(self) -> int:
        return len(self.ids)


def encode_texts(tok: Tokenizer, examples, max_len: int, label_index: dict | None) -> Features:
    """Sequence (pair) classification or regression features."""
    tok.tok.enable_truncation(max_len)
    try:
        pairs = [e.text_pair is not None for e in examples]
        inputs = [
            (e.text, e.text_pair) if p else e.text for e, p in zip(examples, pairs, strict=True)
        ]
        enc = tok.tok.encode_batch(inputs)
    finally:
        tok.tok.no_truncation()
    labels = []
    for e in examples:
        if e.label is None:
            labels.append(IGNORE if label_index is not None else float("nan"))
        elif label_index is None:
            labels.append(float(e.label))
        else:
            labels.append(label_index[e.label])
    return Features([x.ids for x in enc], [x.type_ids for x in enc], labels)


def encode_tags(tok: Tokenizer, sentences, max_len: int, tag_index: dict) -> Features:
    """Words -> sub-tokens; each word's tag on its first sub-token, IGNORE elsewhere. Words past
    max_len are cut (their count is kept in extra["cut_words"] so evaluation can count them)."""
    tok.tok.enable_truncation(max_len)
    try:
        enc = tok.tok.encode_batch([s.words for s in sentences], is_pretokenized=True)
    finally:
        tok.tok.no_truncation()
    labels, cut = [], []
    for s, e in zip(sentences, enc, strict=True):
        lab, seen = [], set()
        for w in e.word_ids:
            if w is None or w in seen:
                lab.append(IGNORE)
            else:
                seen.add(w)
                lab.append(tag_index.get(s.tags[w], IGNORE) if s.tags else IGNORE)
        labels.append(lab)
        cut.append(len(s.words) - len(seen))
    return Features([x.ids for x in enc], [x.type_ids for x in enc], labels, {"cut_words": cut})


def encode_qa(
    tok: Tokenizer, examples, max_len: int, stride: int = 128, max_query_len: int = 64
) -> Features:
    """Windows over long contexts (SQuAD recipe: doc stride 128, query up to 64 tokens).

    `stride` is the number of context tokens consecutive windows share (the `stride` of HF
    tokenizers and run_qa.py), so an answer cut by one window's edge is whole in the next. It
    is capped at half a window, so windows always advance: with the defaults (max_len 128,
    stride 128) an uncapped step of `stride` tokens would leave no overlap at all."""
    if stride < 0:
        raise ConfigError(f"doc stride must be >= 0, got {stride}")
    ids, types, labels = [], [], []
    ex_index, offsets, ctx_masks = [], [], []
    cls = tok.cls_id
    for i, ex in enumerate(examples):
        q = tok.tok.encode(ex.question, add_special_tokens=False).ids[:max_query_len]
        ctx = tok.tok.encode(ex.context, add_special_tokens=False)
        c_ids, c_off = ctx.ids, ctx.offsets
        room = max_len - len(q) - 3
        if room < 8:
            raise ConfigError(f"max_len {max_len} leaves no room for the context")
        step = room - min(stride, room // 2)  # windows share min(stride, room // 2) tokens
        starts = list(range(0, max(1, len(c_ids) - room + step), step)) or [0]
        ans = ex.answers[0] if ex.answers else None
        for s in starts:
            window = c_ids[s : s + room]
            seq = [cls, *q, tok.sep_id, *window, tok.sep_id]
            first = len(q) + 2  # index of the first context token
            typ = [0] * first + [1] * (len(window) + 1)
            off = [None] * first + list(c_off[s : s + len(window)]) + [None]
            start_pos = end_pos = 0
            if ans is not None:
                a0 = ans["answer_start"]
                a1 = a0 + len(ans["text"])
                tok_s = tok_e = None
                for j, (o0, o1) in enumerate(c_off[s : s + len(window)]):
                    if tok_s is None and o1 > a0:
                        tok_s = j
                    if o0 < a1:
                        tok_e = j
                if tok_s is not None and tok_e is not None and tok_e >= tok_s:
                    if c_off[s + tok_s][0] <= a0 and c_off[s + tok_e][1] >= a1:
                        start_pos, end_pos = first + tok_s, first + tok_e
            ids.append(seq)
            types.append(typ)
            labels.append((start_pos, end_pos))
            ex_index.append(i)
            offsets.append(off)
            ctx_masks.append([0] * first + [1] * len(window) + [0])
            if s + room >= len(c_ids):
                break
    return Features(
        ids, types, labels, {"example": ex_index, "offsets": offsets, "context_mask": ctx_masks}
    )


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def pad_batch(feats: Features, idx, pad_id: int, kind: str) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest feature in the batch."""
    input_ids, mask = pad_sequences([feats.ids[i] for i in idx], pad_id)  # (B, T)
    batch = {
        INPUT_IDS: input_ids,
        TOKEN_TYPE_IDS: pad_sequences([feats.types[i] for i in idx], 0)[0],
        ATTENTION_MASK: mask.long(),
    }
    if not feats.labels:
        return batch
    if kind == "tag":  # one label per token
        batch[LABELS] = pad_sequences([feats.labels[i] for i in idx], IGNORE)[0]
    elif kind == "qa":
        batch[START_POSITIONS] = torch.tensor([feats.labels[i][0] for i in idx])
        batch[END_POSITIONS] = torch.tensor([feats.labels[i][1] for i in idx])
        batch[CONTEXT_MASK] = pad_sequences([feats.extra["context_mask"][i] for i in idx], 0)[0]
    elif kind == "regress":
        batch[LABELS] = torch.tensor([feats.labels[i] for i in idx], dtype=torch.float)
    else:
        batch[LABELS] = torch.tensor([feats.labels[i] for i in idx], dtype=torch.long)
    return batch


class FinetuneBatches(BucketedBatches):
    """Padded batches of an encoder task's features."""

    def __init__(self, feats: Features, batch_size: int, pad_id: int, kind: str, seed: int):
        super().__init__(np.array([len(x) for x in feats.ids]), batch_size, seed)
        self.feats, self.pad_id, self.kind = feats, pad_id, kind

    def collate(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return pad_batch(self.feats, idx, self.pad_id, self.kind)


def eval_batches(feats: Features, batch_size: int, pad_id: int, kind: str):
    """Length-sorted batches for inference; yields (indices, batch)."""
    order = np.argsort([len(x) for x in feats.ids], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, pad_batch(feats, idx, pad_id, kind)


# --------------------------------------------------------------------------------------------
# Predictions (nothing beyond one batch of logits is held)
# --------------------------------------------------------------------------------------------


def predict(
    model,
    feats: Features,
    kind: str,
    pad_id: int,
    batch_size: int = 64,
    max_answer_len: int = 30,
    bf16: bool = False,
):
    """classify: class ids; regress: floats; tag: per-feature lists of tag ids at word starts;
    qa: per-example best (score, char_start, char_end). `bf16`: forwards under bf16 autocast."""
    forward = model.predict
    if kind == "qa":  # the span search needs each window's context positions

        def forward(batch):
            return {**model.predict(batch), CONTEXT_MASK: batch[CONTEXT_MASK]}

    n = len(feats)
    if kind == "qa":
        best: dict[int, tuple[float, int, int]] = {}
    else:
        out: list = [None] * n
    batches = eval_batches(feats, batch_size, pad_id, kind)
    for idx, res in predict_batches(model, batches, forward, bf16=bf16):
        if kind == "tag":
            preds = res["logits"].argmax(-1).cpu()  # (B, T)
            for r, i in enumerate(idx):
                lab = feats.labels[i]
                out[i] = [int(preds[r, t]) for t in range(len(lab)) if lab[t] != IGNORE]
        elif kind == "qa":
            s_log, e_log = res["start_logits"].cpu(), res["end_logits"].cpu()
            cm = res[CONTEXT_MASK].bool().cpu()
            for r, i in enumerate(idx):
                cand = _best_span(s_log[r], e_log[r], cm[r], max_answer_len)
                if cand is None:
                    continue
                score, ts, te = cand
                off = feats.extra["offsets"][i]
                ex = feats.extra["example"][i]
                if ex not in best or score > best[ex][0]:
                    best[ex] = (score, off[ts][0], off[te][1])
        else:
            logits = res["logits"]
            vals = logits.tolist() if kind == "regress" else logits.argmax(-1).tolist()
            for r, i in enumerate(idx):
                out[i] = vals[r]
    return best if kind == "qa" else out


def _best_span(
    start: torch.Tensor, end: torch.Tensor, ctx: torch.Tensor, max_len: int, top: int = 20
):
    """Highest start+end score with start <= end < start + max_len, inside the context."""
    neg = torch.finfo(start.dtype).min
    s = start.masked_fill(~ctx, neg)
    e = end.masked_fill(~ctx, neg)
    k = min(top, int(ctx.sum()))
    if k == 0:
        return None
    s_top, e_top = torch.topk(s, k), torch.topk(e, k)
    best = None
    for sv, si in zip(s_top.values.tolist(), s_top.indices.tolist(), strict=True):
        for ev, ei in zip(e_top.values.tolist(), e_top.indices.tolist(), strict=True):
            if si <= ei < si + max_len and (best is None or sv + ev > best[0]):
                best = (sv + ev, si, ei)
    return best


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


@dataclass
class FinetuneConfig:
    task: str
    data: str
    init: str  # a selfsup run, a HF BERT folder, or "scratch"
    out: str
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_len: int = 128
    seed: int = 0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    preset: str | None = None  # for scratch
    tokenizer: str | None = None  # for scratch: a tokenizer folder or run
    eval_every: int = 0  # steps; 0 = once per epoch
    doc_stride: int = 128
    max_answer_len: int = 30
    article_holdout: float = 0.0  # QA with a single file: hold out this share of articles
    train_limit: int = 0  # use at most N training examples (0 = all)
    # One labelled file and no --dev: dev is a seeded share of its rows, never trained on.
    dev_fraction: float = 0.1
    dev: str | None = None  # a separate labelled file (or folder) to score on
    keep: str = "best"  # best: the weights of the evaluation with the best dev metric; last
    patience: int = 0  # stop after this many evaluations without a better dev metric (0: off)
    class_weights: str | None = None  # classify: "balanced" weighs each class's loss n/(C n_c)
    device: str = "auto"  # auto: the GPU when there is one
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 where the hardware has it): training and dev
    options: dict = field(default_factory=dict)  # task reader options (columns, tagset...)
    beams: int = 1  # seq2seq: beam width when decoding dev
    max_target_len: int = 64  # seq2seq: target tokens (EOS included); longer ones are cut
    label_smoothing: float = 0.0  # seq2seq: epsilon of label-smoothed cross-entropy


def init_encoder(cfg: FinetuneConfig, log=print):
    """(encoder, tokenizer, model config) from a run/HF folder, or a fresh one for `scratch`."""
    from selfsup.checkpoint import is_run
    from selfsup.data.tokenizer import load_tokenizer
    from selfsup.encoders.text import build_encoder
    from selfsup.models import load_model, run_config
    from selfsup.presets import preset

    if cfg.init != "scratch":
        loaded = load_model(cfg.init)
        return loaded.encoder, loaded.tokenizer, loaded.config
    if cfg.tokenizer is None:
        raise ConfigError("--init scratch needs --tokenizer (a tokenizer folder, run or model)")
    tok = load_tokenizer(cfg.tokenizer)
    src = Path(cfg.tokenizer)
    if cfg.preset:
        mcfg = preset(cfg.preset).model
    elif is_run(src):
        mcfg = run_config(src).model  # the same architecture as the pretrained run
    else:
        raise ConfigError("--init scratch needs --preset (or a run as --tokenizer)")
    mcfg.vocab_size, mcfg.pad_id = tok.vocab_size, tok.pad_id
    torch.manual_seed(cfg.seed)
    return build_encoder(mcfg), tok, mcfg


def make_features(kind: str, tok: Tokenizer, examples, max_len: int, labels, cfg) -> Features:
    if kind == "qa":
        return encode_qa(tok, examples, max_len, cfg.doc_stride)
    index = {lab: i for i, lab in enumerate(labels)} if labels is not None else None
    if kind == "tag":
        return encode_tags(tok, examples, max_len, index)
    return encode_texts(tok, examples, max_len, index)


def score(task: str, kind: str, examples, feats: Features, preds, labels) -> dict[str, float]:
    """Official metrics for the task on these predictions; {} when nothing is labelled (an
    unlabelled test split: only predictions are written)."""
    from selfsup.data.tasks import get_task
    from selfsup.eval import metrics as M

    spec = get_task(task)
    if kind == "qa":
        answers = qa_answers(examples, preds)
        em_f, f1_f = (M.cmrc_em, M.cmrc_f1) if spec.metric == "cmrc2018" else (M.exact_match, M.f1)
        scored = [(e, [a["text"] for a in e.answers]) for e in examples if e.answers]
        if not scored:
            return {}
        em = 100 * float(np.mean([em_f(answers[e.qid], g) for e, g in scored]))
        f1 = 100 * float(np.mean([f1_f(answers[e.qid], g) for e, g in scored]))
        return {"exact_match": em, "f1": f1}
    if kind == "tag":
        gold = [t for lab in feats.labels for t in lab if t != IGNORE]
        pred = [t for p in preds for t in p]
        n_cut = sum(feats.extra.get("cut_words", []))
        if not gold and not n_cut:
            return {}
        correct = sum(int(a == b) for a, b in zip(pred, gold, strict=True))
        return {"accuracy": correct / max(1, len(gold) + n_cut), "words": len(gold) + n_cut}
    gold = feats.labels
    if kind == "regress":  # NaN marks a missing target; any float (-100.0 too) is a target
        keep = [i for i, g in enumerate(gold) if not math.isnan(g)]
    else:
        keep = [i for i, g in enumerate(gold) if g != IGNORE]
    if not keep:
        return {}
    p = [preds[i] for i in keep]
    g = [gold[i] for i in keep]
    if kind == "regress" and len(keep) < 2:  # a correlation needs two points
        return {"pearson": math.nan, "spearmanr": math.nan, "corr": math.nan}
    if task in M.GLUE_MAIN:
        return M.glue_metrics(task, p, g)
    if spec.metric == "pearson_spearman":
        r, rho = M.pearson(p, g), M.spearman(p, g)
        return {"pearson": r, "spearmanr": rho, "corr": (r + rho) / 2}
    out = {"accuracy": M.accuracy(p, g)}
    if spec.metric in ("accuracy_f1", "mcc"):
        out = M.glue_metrics("mrpc" if spec.metric == "accuracy_f1" else "cola", p, g)
    return out


def main_metric(task: str, kind: str) -> str:
    from selfsup.data.tasks import get_task
    from selfsup.eval.metrics import GLUE_MAIN

    if task in GLUE_MAIN:
        return GLUE_MAIN[task]
    return {"qa": "f1", "regress": "corr"}.get(kind) or {
        "mcc": "mcc", "accuracy_f1": "acc_and_f1"
    }.get(get_task(task).metric, "accuracy")  # fmt: skip


def qa_answers(examples, best: dict) -> dict[str, str]:
    return {
        e.qid: (e.context[best[i][1] : best[i][2]] if i in best else "")
        for i, e in enumerate(examples)
    }


def finetune(cfg: FinetuneConfig, log=print, progress: bool = False) -> dict:
    """Fine-tune and evaluate on dev; returns {"dev": metrics, "history": [...], ...}."""
    from selfsup.data.tasks import check_labels, get_task, task_labels
    from selfsup.device import resolve_device, resolve_precision
    from selfsup.train import train

    spec = get_task(cfg.task)
    kind = spec.kind
    if kind == "seq2seq":  # text -> text: an encoder-decoder recipe of its own
        from selfsup.finetune_seq2seq import finetune_seq2seq

        return finetune_seq2seq(cfg, log, progress)
    out = check_out_folder(cfg.out)
    check_loop_settings(cfg, ("epochs", "lr", "batch_size", "max_len"))
    if cfg.class_weights is not None:
        if cfg.class_weights != "balanced":
            raise ConfigError(f"--class-weights must be balanced, got {cfg.class_weights!r}")
        if kind not in ("classify", "pair-classify"):
            raise ConfigError(f"--class-weights is for classification tasks, not {kind}")
    train_ex, dev_ex = training_splits(cfg, log)
    labels = task_labels(
        cfg.task, train_ex, **{k: v for k, v in cfg.options.items() if k == "tagset"}
    )
    if labels is not None:
        check_labels(labels, dev_ex)
    encoder, tok, mcfg = init_encoder(cfg, log)
    max_len = min(cfg.max_len, mcfg.max_len)
    torch.manual_seed(cfg.seed)
    class_weights = None
    if cfg.class_weights is not None:
        class_weights = balanced_class_weights([e.label for e in train_ex], labels)
        log("class weights (balanced): " + ", ".join(
            f"{lab} {w:.3f}" for lab, w in zip(labels, class_weights, strict=True)))  # fmt: skip
    model = build_task_model(
        kind, encoder, len(labels) if labels else None, cfg.dropout, class_weights
    )
    set_dropout(model.encoder, cfg.dropout)
    device = resolve_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    bf16 = precision == "bf16"
    model.to(device)
    train_feats = make_features(kind, tok, train_ex, max_len, labels, cfg)
    dev_feats = make_features(kind, tok, dev_ex, max_len if kind != "tag" else mcfg.max_len,
                              labels, cfg)  # fmt: skip
    batches = FinetuneBatches(train_feats, cfg.batch_size, tok.pad_id, kind, cfg.seed)
    steps = max(1, round(cfg.epochs * batches.per_epoch))
    metric = main_metric(cfg.task, kind)
    history: list[dict] = []
    # kept: the evaluation whose weights the folder keeps (a CPU copy): the best so far by
    # `metric` with keep=best (the last one until any is finite), every one with keep=last.
    # best: the best value so far, for --patience.
    kept: dict = {}
    best = {"value": -math.inf, "index": None, "since": 0}

    def eval_fn(m) -> dict:
        preds = predict(m, dev_feats, kind, tok.pad_id, max_answer_len=cfg.max_answer_len,
                        bf16=bf16)  # fmt: skip
        res = score(cfg.task, kind, dev_ex, dev_feats, preds, labels)
        history.append({"step": len(history), **res})
        value = res.get(metric, math.nan)
        better = math.isfinite(value) and value > best["value"]
        if better:
            best.update(value=value, index=len(history) - 1, since=0)
        else:
            best["since"] += 1
        if cfg.keep == "last" or better or best["index"] is None:
            snapshot = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
            kept.update(index=len(history) - 1, weights=snapshot)
        if cfg.patience and best["since"] >= cfg.patience:
            raise EarlyStop({metric: value})
        return {metric: value}

    tcfg = loop_config(cfg, steps, batches.per_epoch, precision)

    def step_of(i: int) -> int:  # the training step after which evaluation i ran
        return min(steps, (i + 1) * tcfg.eval_every)

    out.mkdir(parents=True, exist_ok=True)
    log(f"{cfg.task}: {len(train_ex)} train / {len(dev_ex)} dev examples, {len(train_feats)} "
        f"features, {steps} steps of {cfg.batch_size}; init {cfg.init}; precision {precision}"
        + ("" if why == "as asked" else f" ({why})"))  # fmt: skip
    ended: dict = {}  # stopped early / interrupted: train wrote no final weights

    def finish() -> dict:
        """Write the kept weights (when train did not), config.json and results.json."""
        last = len(history) - 1
        if kept and (ended or kept["index"] != last):
            from selfsup.checkpoint import save_final

            save_final(out, kept["weights"])
        dev = history[kept["index"]] if kept else {}
        if kept and kept["index"] != last:  # an earlier evaluation was better
            log(f"kept the weights of step {dev['step']} ({metric} {best['value']:.4f}; the last "
                f"evaluation gave {history[-1].get(metric, math.nan):.4f})")  # fmt: skip
        config = {
            "format": FINETUNE_FORMAT, "version": FINETUNE_VERSION, "task": cfg.task,
            "kind": kind, "labels": labels, "encoder": encoder_kind(mcfg),
            "model": mcfg.__dict__, "max_len": max_len, "init": cfg.init,
            "class_weights": class_weights, "finetune": {k: v for k, v in cfg.__dict__.items()},
        }  # fmt: skip
        save_json(out / "config.json", config)
        result = {"task": cfg.task, "init": cfg.init, "seed": cfg.seed, "dev": dev,
                  "main_metric": metric,
                  "kept": "best" if cfg.keep == "best" and best["index"] is not None else "last",
                  "kept_step": dev.get("step"), **ended, "history": history}  # fmt: skip
        save_json(out / "results.json", result)
        return result

    try:
        tok.save(out / "tokenizer")
        train(model, batches, tcfg, out, eval_fn=eval_fn, log=log, progress=progress)
    except EarlyStop as stop:
        at = step_of(len(history) - 1)
        ended["stopped_early_at"] = at
        append_eval_row(out / "metrics.jsonl", at, stop.metrics)  # train could not write it
        since = step_of(best["index"]) if best["index"] is not None else "-"
        log(f"stopped early at step {at}: {metric} did not improve on {best['value']:.4f} "
            f"(step {since}) for {cfg.patience} evaluations")  # fmt: skip
    except KeyboardInterrupt:
        if not kept:  # nothing was scored: nothing worth keeping
            shutil.rmtree(out, ignore_errors=True)
            log(f"interrupted before the first dev evaluation: removed {out}")
            raise
        at = _drop_trainer_checkpoints(out)  # train saved one; a fine-tuning never resumes
        ended.update(interrupted=True, at_step=at if at is not None else step_of(len(history) - 1))
        steps_of(history, step_of)
        result = finish()
        log(
            f"interrupted at step {ended['at_step']}: kept the weights of step "
            f"{result['kept_step']} ({metric} {result['dev'].get(metric, math.nan):.4f}) in {out}"
        )
        raise
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    steps_of(history, step_of)
    return finish()


def encoder_kind(mcfg) -> str:
    """What a fine-tuned folder's encoder is: "bert", or "seq2seq" (an encoder-decoder's
    encoder half, selfsup.encoders.seq2seq.Seq2SeqEncoder)."""
    from selfsup.encoders.seq2seq import Seq2SeqConfig

    return "seq2seq" if isinstance(mcfg, Seq2SeqConfig) else "bert"


def _drop_trainer_checkpoints(out: Path) -> int | None:
    """Remove the trainer checkpoint an interrupted `train` saves (weights plus optimizer state,
    3x the model: a fine-tuning folder is never resumed); its step, or None without one."""
    from selfsup.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(out)
    step = int(ckpt.name.removeprefix("step_")) if ckpt is not None else None
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return step


def balanced_class_weights(train_labels: list, labels: list[str]) -> list[float]:
    """sklearn's class_weight="balanced": n / (k * n_c) for each of the k classes seen in
    training (n_c examples of n); 0 for a class never seen (it is never a training target)."""
    counts = {lab: 0 for lab in labels}
    for y in train_labels:
        if y is not None:
            counts[y] += 1
    n, k = sum(counts.values()), sum(1 for c in counts.values() if c)
    return [n / (k * counts[lab]) if counts[lab] else 0.0 for lab in labels]


def evaluate_finetuned(
    path: str,
    task: str,
    data: str,
    split: str = "dev",
    options: dict | None = None,
    log=print,
    device: str = "auto",
    precision: str = "fp32",
    beams: int | None = None,
) -> dict:
    """Predict `split` of `task` from `data` with a fine-tuned folder; write predictions.
    `precision` fp32 | bf16 | auto: of the forwards; `beams`: seq2seq decoding (default the
    fine-tuning's)."""
    from selfsup.data.tasks import check_labels, get_task, load_task
    from selfsup.device import inference_bf16, resolve_device

    model, tok, config = load_finetuned(path)
    torch_device = resolve_device(device)
    bf16 = inference_bf16(precision, torch_device)
    model.to(torch_device)
    spec = get_task(task)
    if spec.kind != config["kind"]:
        raise ConfigError(f"{path} was fine-tuned for a {config['kind']} task, not {spec.kind}")
    examples = load_task(task, data, split, **(options or {}))
    if spec.kind == "seq2seq":
        from selfsup.finetune_seq2seq import evaluate_seq2seq

        return evaluate_seq2seq(path, model, tok, config, examples, beams, bf16, log)
    labels = config["labels"]
    if labels is not None:
        check_labels(labels, examples)
    ft = config["finetune"]
    cfg = FinetuneConfig(task, data, "x", "x", doc_stride=ft.get("doc_stride", 128),
                         max_answer_len=ft.get("max_answer_len", 30))  # fmt: skip
    max_len = config["max_len"] if spec.kind != "tag" else config["model"]["max_len"]
    feats = make_features(spec.kind, tok, examples, max_len, labels, cfg)
    preds = predict(model, feats, spec.kind, tok.pad_id, max_answer_len=cfg.max_answer_len,
                    bf16=bf16)  # fmt: skip
    metrics = score(task, spec.kind, examples, feats, preds, labels)
    rows = []
    if spec.kind == "qa":
        rows = [{"id": k, "prediction": v} for k, v in qa_answers(examples, preds).items()]
    elif spec.kind == "tag":
        rows = [
            {"words": e.words, "prediction": [labels[t] for t in p]}
            for e, p in zip(examples, preds, strict=True)
        ]
    else:
        for e, p in zip(examples, preds, strict=True):
            rows.append({"text": e.text, "text_pair": e.text_pair, "label": e.label,
                         "prediction": labels[p] if labels else p})  # fmt: skip
    out = Path(path) / f"predictions-{task}-{split}.jsonl"
    from selfsup.checkpoint import atomic_write_text

    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log(f"wrote {len(rows)} predictions to {out}")
    return metrics
