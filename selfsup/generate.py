"""Decoding an encoder-decoder: greedy, beam search and sampling, with a key/value cache.

The encoder reads the (padded) sources once; the decoder then writes one token per step for
every row at once, its keys and values kept in a cache so a step costs one token's work; in
greedy decoding and sampling a row that has written EOS leaves the batch (its cache rows too). Rules
applied to each step's scores, in this order (the order transformers applies them, so its
`generate` on an exported model writes the same greedy output):
- no-repeat n-gram: a token that would repeat an n-gram already in the row is banned;
- minimum length: EOS is banned before `min_new_tokens` tokens;
- forced EOS: the last allowed token is EOS (`max_new_tokens` tokens at most, EOS included).
Beam search keeps `beams` rows per source, scores a finished hypothesis by its summed
log-probability over length ** length_penalty (length: the tokens written, EOS included, as
transformers counts them), and stops when no running beam can beat the
worst of `beams` finished ones.

Legend: B sources, K beams, V vocabulary, T tokens written so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.encoders.transformer import reorder_cache
from selfsup.errors import ConfigError


@dataclass
class GenerateConfig:
    max_new_tokens: int = 64  # tokens written, EOS included
    min_new_tokens: int = 0  # EOS is banned before this many
    beams: int = 1
    length_penalty: float = 1.0  # > 1 favours longer hypotheses in beam search
    no_repeat_ngram: int = 0  # ban repeating any n-gram of this size (0: off)
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    top_p: float = 1.0  # sample within the smallest set of this much probability
    forced_eos: bool = True  # the last allowed token is EOS

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError("min_new_tokens must be in [0, max_new_tokens]")
        if self.beams < 1:
            raise ConfigError(f"beams must be >= 1, got {self.beams}")
        if self.sample and self.beams > 1:
            raise ConfigError("sampling with beams is not supported: choose one")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError("temperature must be > 0, top_p in (0, 1], top_k >= 0")
        if self.no_repeat_ngram < 0:
            raise ConfigError("no_repeat_ngram must be >= 0")


def banned_ngram_tokens(rows: list[list[int]], n: int) -> list[list[int]]:
    """For each row (tokens so far), the tokens that would complete an n-gram already in it."""
    out = []
    for row in rows:
        if len(row) + 1 < n:
            out.append([])
            continue
        prefix = tuple(row[len(row) - n + 1 :])
        out.append([row[i + n - 1] for i in range(len(row) - n + 1)
                    if tuple(row[i : i + n - 1]) == prefix])  # fmt: skip
    return out


def process_scores(
    scores: torch.Tensor, rows: list[list[int]], written: int, eos_id: int, cfg: GenerateConfig
) -> torch.Tensor:
    """Apply the rules to next-token scores (N, V) of rows (tokens so far, start included)
    that have `written` tokens after the start. In place; returns `scores`."""
    if cfg.no_repeat_ngram:
        for i, banned in enumerate(banned_ngram_tokens(rows, cfg.no_repeat_ngram)):
            if banned:
                scores[i, banned] = float("-inf")
    if eos_id < 0:  # a model without EOS (MASS): it writes exactly max_new_tokens
        return scores
    if written < cfg.min_new_tokens:
        scores[:, eos_id] = float("-inf")
    if cfg.forced_eos and written == cfg.max_new_tokens - 1:
        scores.fill_(float("-inf"))
        scores[:, eos_id] = 0.0
    return scores


def filter_top(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits (N, V) with all but the top-k and the top-p nucleus set to -inf (the most likely
    token always stays)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
        drop = before >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


class _Steps:
    """Decoder steps for rows that start at their own positions (MASS writes a fragment at
    the fragment's positions): position_start (N,) or None for 0, 1, 2, ..."""

    def __init__(self, model, memory, padding, position_start):
        self.model, self.memory = model, memory
        # the memory's keys mask, built once for every step (beams of one source share rows)
        padded = padding is not None and bool(padding.any())
        self.memory_mask = ~padding[:, None, None, :] if padded else None  # (N, 1, 1, S)
        self.start = position_start
        self.cache = model.decoder.new_cache()

    def __call__(self, last: torch.Tensor, t: int) -> torch.Tensor:
        pos = None if self.start is None else (self.start + t)[:, None]  # (N, 1)
        h = self.model.decode(last, self.memory, None, self.cache, offset=t, position_ids=pos,
                              memory_mask=self.memory_mask)  # fmt: skip
        return h[:, -1]  # (N, D)

    def select(self, index: torch.Tensor) -> None:
        """Keep only rows `index` (B',) of every row's state: the rows still decoding."""
        reorder_cache(self.cache, index)
        self.memory = self.memory.index_select(0, index)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)
        if self.start is not None:
            self.start = self.start[index]

    def reorder(self, index: torch.Tensor) -> None:
        """Rows `index` (a beam search's kept beams, each from its own source's beams): the
        memory's keys and values stay, the same for every beam of a source (copying them
        each step took half of a 4-beam search's time)."""
        reorder_cache(self.cache, index, parts=("self",))
        if self.start is not None:
            self.start = self.start[index]


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    start_id: int | torch.Tensor,
    eos_id: int,
    cfg: GenerateConfig | None = None,
    generator: torch.Generator | None = None,
    position_start: torch.Tensor | None = None,
) -> list[list[int]]:
    """The tokens written for each source (B, S), without the start token and the final EOS.
    `model` has encode / decode / logits and a decoder with new_cache() (Seq2SeqModel).
    `start_id` is the decoder's first input, one for all rows or (B,) one per row;
    `position_start` (B,) the position of each row's first decoder input (default 0)."""
    cfg = cfg or GenerateConfig()
    cfg.validate()
    B = input_ids.shape[0]
    starts = (start_id.tolist() if isinstance(start_id, torch.Tensor)
              else [start_id] * B)  # fmt: skip
    enc = model.encode(input_ids, attention_mask)
    memory, padding = enc["hidden"], enc["padding_mask"]
    if cfg.beams > 1:
        return _beam_search(model, memory, padding, starts, eos_id, cfg, position_start)
    step = _Steps(model, memory, padding, position_start)
    rows = [[s] for s in starts]
    active = list(range(B))  # the rows still decoding: a row that wrote EOS leaves the batch
    last = torch.tensor(starts, dtype=torch.long, device=input_ids.device)[:, None]
    for t in range(cfg.max_new_tokens):
        h = step(last, t)  # (A, D)
        scores = model.logits(h).float()  # (A, V)
        scores = process_scores(scores, [rows[i] for i in active], t, eos_id, cfg)
        if cfg.sample:
            logits = filter_top(scores / cfg.temperature, cfg.top_k, cfg.top_p)
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(-1)  # (A,)
        for i, tok in zip(active, nxt.tolist(), strict=True):
            rows[i].append(tok)
        going = nxt.cpu() != eos_id  # (A,)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)  # (A',)
            active = [active[k] for k in keep.tolist()]
            keep = keep.to(nxt.device)
            step.select(keep)
            nxt = nxt[keep]
        last = nxt[:, None]
    return [_strip(r, eos_id) for r in rows]


def _strip(row: list[int], eos_id: int) -> list[int]:
    row = row[1:]
    return row[:-1] if row and row[-1] == eos_id else row


def _beam_search(model, memory, padding, starts, eos_id, cfg, position_start):
    B, K = memory.shape[0], cfg.beams
    expand = torch.arange(B, device=memory.device).repeat_interleave(K)  # (B*K,)
    memory, padding = memory[expand], padding[expand]
    step = _Steps(model, memory, padding,
                  None if position_start is None else position_start[expand])  # fmt: skip
    rows = [[starts[b]] for b in range(B) for _ in range(K)]
    beam_scores = torch.zeros(B, K)
    beam_scores[:, 1:] = float("-inf")  # at first only one beam is real
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    last = torch.tensor([r[0] for r in rows], device=memory.device)[:, None]
    lp = cfg.length_penalty
    for t in range(cfg.max_new_tokens):
        h = step(last, t)  # (B*K, D)
        logp = model.logits(h).float().log_softmax(-1).cpu()  # (B*K, V)
        logp = process_scores(logp, rows, t, eos_id, cfg)
        V = logp.shape[-1]
        total = (logp + beam_scores.reshape(-1, 1)).view(B, K * V)
        top_scores, top_index = total.topk(2 * K, dim=1)  # (B, 2K)
        keep_rows, keep_tokens, keep_scores = [], [], []
        for b in range(B):
            chosen = []
            if not done[b]:
                for rank, (s, idx) in enumerate(
                    zip(top_scores[b].tolist(), top_index[b].tolist(), strict=True)
                ):
                    beam, tok = divmod(idx, V)
                    src = b * K + beam
                    if tok == eos_id:
                        if rank < K and s > float("-inf"):
                            hyp = rows[src][1:] + [eos_id]
                            _add(finished[b], s / len(hyp) ** lp, hyp, K)
                        continue
                    chosen.append((src, tok, s))
                    if len(chosen) == K:
                        break
            while len(chosen) < K:  # a finished source (or too few candidates): filler rows
                chosen.append((b * K, eos_id, float("-inf")))
            for src, tok, s in chosen:
                keep_rows.append(src)
                keep_tokens.append(tok)
                keep_scores.append(s)
            if not done[b] and len(finished[b]) == K:
                best_running = max(s for _, _, s in chosen)
                # transformers' default (early_stopping=False): the best running beam's score
                # at the current length cannot rise above the worst finished hypothesis
                done[b] = best_running / (t + 1) ** lp <= min(x for x, _ in finished[b])
        if all(done):
            break
        index = torch.tensor(keep_rows)
        rows = [rows[i] + [tok] for i, tok in zip(keep_rows, keep_tokens, strict=True)]
        beam_scores = torch.tensor(keep_scores).view(B, K)
        step.reorder(index.to(memory.device))
        last = torch.tensor(keep_tokens, device=memory.device)[:, None]
    for b in range(B):  # running beams join when the length ran out
        if not done[b]:
            for k in range(K):
                s = float(beam_scores[b, k])
                if s > float("-inf"):
                    hyp = rows[b * K + k][1:]
                    _add(finished[b], s / len(hyp) ** lp, hyp, K)
    out = []
    for b in range(B):
        best = max(finished[b], key=lambda x: x[0])[1] if finished[b] else []
        out.append(best[:-1] if best and best[-1] == eos_id else best)
    return out


def _add(hyps: list[tuple[float, list[int]]], score: float, hyp: list[int], k: int) -> None:
    """Keep the k best finished hypotheses."""
    if len(hyps) < k or score > min(s for s, _ in hyps):
        hyps.append((score, hyp))
        if len(hyps) > k:
            hyps.remove(min(hyps, key=lambda x: x[0]))


def generate_text(
    model,
    texts: list[str],
    cfg: GenerateConfig | None = None,
    batch_size: int = 16,
    seed: int = 0,
    log=print,
) -> list[dict]:
    """`selfsup generate`: for each text, what an encoder-decoder run writes from it, as
    {"input": text, "output": the restored text, "written": what the decoder wrote}.
    A text longer than the model's positions is cut (a counted warning through `log`). How
    each objective reads and restores is its `prepare_source`, `generation_plan` and
    `restore` (BART: the whole text; MASS: the [MASK] fragment written back in; T5: each [MASK]
    run a sentinel, filled back in). `model` is a run folder or a `Loaded`."""
    from dataclasses import replace

    from selfsup.models import Loaded, load_model
    from selfsup.objectives.seq2seq import Seq2SeqObjective

    cfg = cfg or GenerateConfig()
    cfg.validate()
    loaded = model if isinstance(model, Loaded) else load_model(model)
    objective = loaded.model
    if not isinstance(objective, Seq2SeqObjective):
        kind = getattr(getattr(objective, "cfg", None), "name", loaded.source)
        raise ConfigError(
            f"{model if not isinstance(model, Loaded) else 'the model'} is an encoder-only "
            f"model ({kind}): generate needs an encoder-decoder run (--objective bart, mass or t5)"
        )
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    tok, net = loaded.tokenizer, objective.model
    max_len = loaded.config.max_len
    sources, cut = [], 0
    if not texts:
        return []
    encoded = tok(texts, max_len=max_len + 1)  # [CLS] ... [SEP], padded to the longest
    for row, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True):
        ids = row[mask.bool()].tolist()
        if len(ids) > max_len:
            ids, cut = [*ids[: max_len - 1], tok.sep_id], cut + 1
        sources.append(ids)
    if cut:
        log(f"warning: {cut} of {len(texts)} inputs were longer than the model's {max_len} "
            "positions and were cut")  # fmt: skip
    sources = [objective.prepare_source(tok, s) for s in sources]
    plans = [objective.generation_plan(tok, s) for s in sources]
    written: list[list[int] | None] = [None] * len(texts)
    # rows decode together when they share a length limit and an EOS rule
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault((plan.max_new, plan.eos), []).append(i)
    g = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    for (max_new, eos), rows in groups.items():
        run = replace(cfg, max_new_tokens=max_new or cfg.max_new_tokens,
                      min_new_tokens=min(cfg.min_new_tokens, max_new or cfg.max_new_tokens),
                      forced_eos=cfg.forced_eos and eos)  # fmt: skip
        for at in range(0, len(rows), batch_size):
            part = rows[at : at + batch_size]
            width = max(len(sources[i]) for i in part)
            ids = torch.full((len(part), width), tok.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(part):
                ids[r, : len(sources[i])] = torch.tensor(sources[i])
                mask[r, : len(sources[i])] = 1
            starts = torch.tensor([plans[i].start for i in part])
            positions = torch.tensor([plans[i].position for i in part], device=device)
            out = generate(net, ids.to(device), mask.to(device), starts,
                           tok.sep_id if eos else -1, run, g, positions)  # fmt: skip
            for i, w in zip(part, out, strict=True):
                written[i] = w
    return [
        {"input": text, "output": tok.decode(objective.restore(tok, src, w)),
         "written": tok.decode(w)}
        for text, src, w in zip(texts, sources, written, strict=True)
    ]  # fmt: skip
