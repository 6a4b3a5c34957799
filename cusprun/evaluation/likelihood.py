"""Batched log-likelihood: held-out loss per eval set and multiple-choice accuracy.

Sequences are left-padded with explicit position ids (each sequence starts at position 0), and
padded positions are masked out of attention and never scored, so a padded batch scores each
sequence as if it ran alone (up to float rounding). Left padding aligns every sequence's scored
tokens at the end of the batch, so the LM head runs only on the last positions (`logits_to_keep`):
for MC options that avoids materialising vocabulary-sized logits for the whole context."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.items import LossExample, MCItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one sequence; the last n_scored of them are scored."""

    ids: list[int]
    n_scored: int


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _split(tokenizer, text: str, prompt: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids): the continuation's tokens are read off the encoding of
    prompt+continuation where its prefix equals the prompt's encoding (so boundary merges match
    how the model would see the full text); trailing whitespace of the prompt moves to the
    continuation."""
    stripped = prompt.rstrip()
    cont_text = prompt[len(stripped):] + text
    ctx = _ids(tokenizer, stripped, True)
    whole = _ids(tokenizer, stripped + cont_text, True)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, _ids(tokenizer, cont_text, False)


def _fit(ctx: list[int], cont: list[int], longest: int, max_tokens: int) -> Encoded:
    """Cut the prompt from the left (it keeps at least half the budget if it needs it; the budget
    left by the longest continuation otherwise) and the continuation from the right."""
    keep_ctx = min(len(ctx), max(max_tokens - longest, max_tokens // 2))
    ctx = ctx[len(ctx) - keep_ctx:]
    cont = cont[: max_tokens - keep_ctx]
    if not ctx:  # nothing to condition the first continuation token on
        return Encoded(cont, max(len(cont) - 1, 0))
    return Encoded(ctx + cont, len(cont))


def encode(tokenizer, text: str, prompt: str = "", max_tokens: int = 512) -> Encoded:
    """Encode a document (prompt empty: every token after the first is scored) or a prompt plus a
    continuation (only continuation tokens are scored; see _split and _fit). Over max_tokens, a
    document keeps its first max_tokens tokens."""
    if not prompt:
        ids = _ids(tokenizer, text, True)[:max_tokens]
        return Encoded(ids, max(len(ids) - 1, 0))
    ctx, cont = _split(tokenizer, text, prompt)
    return _fit(ctx, cont, len(cont), max_tokens)


def encode_item(tokenizer, item: MCItem, max_tokens: int = 512) -> list[Encoded]:
    """Every option of an MC item after the same question: when the longest option needs the
    question cut, every option gets the same cut question (so all are judged on one context)."""
    if not item.question:
        return [encode(tokenizer, o, "", max_tokens) for o in item.options]
    split = [_split(tokenizer, o, item.question) for o in item.options]
    longest = max(len(cont) for _, cont in split)
    return [_fit(ctx, cont, longest, max_tokens) for ctx, cont in split]


def pad_id_of(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def score_sequences(model, sequences: Sequence[Encoded], *, batch_size: int = 8, pad_id: int = 0,
                    desc: str = "scoring", progress: bool = True) -> list[tuple[float, int]]:
    """(sum of log-probs of the scored tokens, number of scored tokens) for each sequence, in order.

    Sequences are sorted by length so that batches waste little padding."""
    from cusprun.models.loading import input_device

    dev = input_device(model)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    starts = range(0, len(order), batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        idx = [i for i in order[s:s + batch_size] if sequences[i].n_scored > 0]
        if not idx:
            continue
        width = max(len(sequences[i].ids) for i in idx)
        keep = max(sequences[i].n_scored for i in idx) + 1
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        pos = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = sequences[i].ids
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
            pos[row, width - len(seq):] = torch.arange(len(seq))
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                       logits_to_keep=keep).logits  # positions width-keep .. width-1
        for row, i in enumerate(idx):
            n = sequences[i].n_scored
            # the logit at position t predicts token t+1: the last n tokens need the n logits
            # before the final one
            lp = torch.log_softmax(logits[row, keep - n - 1: keep - 1].float(), dim=-1)
            target = ids[row, width - n:].to(lp.device)
            out[i] = (float(lp.gather(1, target[:, None]).double().sum()), n)
        del logits
    return out


@dataclass
class LossResult:
    """Token-weighted mean negative log-likelihood (nats/token) over all scored tokens of a set."""

    loss: float
    perplexity: float
    n_tokens: int
    n_docs: int
    per_doc: list[tuple[float, int]] = field(default_factory=list, repr=False)
    """(negative log-likelihood sum, scored tokens) per document."""


def scored_tokens(tokenizer, max_tokens: int = 512) -> Callable[[LossExample], int]:
    """How many tokens heldout_loss scores for one example (for sizing loss sets by tokens)."""
    return lambda e: encode(tokenizer, e.text, e.prompt, max_tokens).n_scored


def encode_loss_set(tokenizer, examples: Sequence[LossExample], *, max_tokens: int = 512,
                    name: str = "loss") -> list[Encoded]:
    """The scored sequences of a loss set (see encode)."""
    if not examples:
        raise EvaluationError(f"Eval set {name!r} is empty; give at least one text.")
    return [encode(tokenizer, e.text, e.prompt, max_tokens) for e in examples]


def encoded_loss(model, enc: Sequence[Encoded], *, pad_id: int, batch_size: int = 8,
                 name: str = "loss", progress: bool = True) -> LossResult:
    """heldout_loss on sequences already encoded (encode_loss_set): models measured at once
    from several threads share the encoding instead of sharing one tokenizer."""
    scores = score_sequences(model, enc, batch_size=batch_size, pad_id=pad_id,
                             desc=f"loss {name}", progress=progress)
    per_doc = [(-lp, n) for lp, n in scores]
    n_tokens = sum(n for _, n in per_doc)
    if n_tokens == 0:
        raise EvaluationError(f"Eval set {name!r}: no scorable tokens (every text is a single "
                              "token or less); give longer texts.")
    loss = sum(nll for nll, _ in per_doc) / n_tokens
    log.info("loss %s: %.4f over %d tokens in %d docs", name, loss, n_tokens, len(enc))
    return LossResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), n_tokens=n_tokens,
                      n_docs=len(enc), per_doc=per_doc)


def heldout_loss(model, tokenizer, examples: Sequence[LossExample], *, max_tokens: int = 512,
                 batch_size: int = 8, name: str = "loss", progress: bool = True) -> LossResult:
    enc = encode_loss_set(tokenizer, examples, max_tokens=max_tokens, name=name)
    return encoded_loss(model, enc, pad_id=pad_id_of(tokenizer), batch_size=batch_size,
                        name=name, progress=progress)


@dataclass
class MCResult:
    accuracy: float
    chance: float
    """Mean of 1/#options over items: the expected accuracy of a uniform random guess."""
    n_items: int
    predictions: list[int] = field(repr=False)
    scores: list[list[float]] = field(repr=False)
    """Normalised option scores per item (the prediction is their argmax)."""
    correct: list[int] = field(default_factory=list, repr=False)
    """1 where the item was answered right, else 0 (for intervals and paired comparisons)."""
    n_packed: int = 0
    """Items whose question was computed once for all options (see cusprun.evaluation.packed)."""


def normalise(logprob: float, n_tokens: int, option: str, how: str) -> float:
    """Option score: log-likelihood per character ('char'), per token ('token') or raw ('none')."""
    if how == "char":
        return logprob / max(len(option), 1)
    if how == "token":
        return logprob / max(n_tokens, 1)
    if how == "none":
        return logprob
    raise EvaluationError(f"Unknown MC normalisation {how!r}; accepted: char, token, none.")


def _raw_option_scores(model, enc: list[list[Encoded]], *, batch_size: int, pad_id: int,
                       name: str, progress: bool, shared_prefix: bool
                       ) -> tuple[list[list[tuple[float, int]]], int]:
    """(log-prob sum, scored tokens) per item and option: packed items share their question's
    forward pass; the others are scored one sequence per option."""
    from cusprun.evaluation.packed import can_pack, pack, score_packed, window_of

    packed: dict[int, object] = {}
    if shared_prefix and can_pack(model):
        window = window_of(model)
        for k, options in enumerate(enc):
            p = pack(options)
            if p is not None and (window is None or p.span <= window):
                packed[k] = p
    out: list[list[tuple[float, int]]] = [[] for _ in enc]
    if packed:
        keys = list(packed)
        sums = score_packed(model, [packed[k] for k in keys], batch_size=batch_size, pad_id=pad_id,
                            desc=f"mc {name} (shared questions)", progress=progress)
        for k, s in zip(keys, sums):
            out[k] = [(v, len(o)) for v, o in zip(s, packed[k].options)]
    rest = [(k, o) for k in range(len(enc)) if k not in packed for o in range(len(enc[k]))]
    if rest:
        raw = score_sequences(model, [enc[k][o] for k, o in rest], batch_size=batch_size,
                              pad_id=pad_id, desc=f"mc {name}", progress=progress)
        for (k, _), r in zip(rest, raw):
            out[k].append(r)
    return out, len(packed)


def mc_accuracy(model, tokenizer, items: Sequence[MCItem], *, normalization: str = "char",
                max_tokens: int = 512, batch_size: int = 8, name: str = "mc",
                progress: bool = True, shared_prefix: bool = True) -> MCResult:
    """Pick, per item, the option with the highest normalised log-likelihood given the question.
    With shared_prefix, each question is computed once for all its options (same scores up to
    float rounding, several times faster for long questions); otherwise every (item, option)
    pair is scored as its own sequence in length-sorted batches."""
    if not items:
        raise EvaluationError(f"MC task {name!r} is empty; give at least one item.")
    normalise(0.0, 1, "x", normalization)  # reject a bad normalisation before any scoring
    enc = [encode_item(tokenizer, it, max_tokens) for it in items]
    raw, n_packed = _raw_option_scores(model, enc, batch_size=batch_size,
                                       pad_id=pad_id_of(tokenizer), name=name, progress=progress,
                                       shared_prefix=shared_prefix)
    scores = [[normalise(lp, n, it.options[o], normalization) for o, (lp, n) in enumerate(r)]
              for it, r in zip(items, raw)]
    preds = [max(range(len(s)), key=s.__getitem__) for s in scores]
    correct = [int(p == it.answer_index) for p, it in zip(preds, items)]
    acc = sum(correct) / len(items)
    chance = sum(it.chance for it in items) / len(items)
    log.info("mc %s: accuracy %.3f (chance %.3f) over %d items (%d with a shared question pass)",
             name, acc, chance, len(items), n_packed)
    return MCResult(accuracy=acc, chance=chance, n_items=len(items), predictions=preds,
                    scores=scores, correct=correct, n_packed=n_packed)
