"""Batched log-likelihood: held-out loss per eval set and multiple-choice accuracy.

Sequences are left-padded with explicit position ids (each sequence starts at position 0), and
padded positions are masked out of attention and never scored, so a padded batch scores each
sequence as if it ran alone (up to float rounding). Passes go through cusprun.engine, so the
same code scores a model held whole and one streamed from disk, and the LM head runs on scored
positions only, in vocabulary chunks."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cusprun.engine import Batch, LayeredModel, Picks, Variant, pick_logprobs
from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.encoding import Encoded, encode, encode_item
from cusprun.evaluation.items import LossExample, MCItem
from cusprun.evaluation.packed import can_pack, pack, score_packed, window_of
from cusprun.models.loading import pad_id_of

log = logging.getLogger(__name__)

__all__ = ["Encoded", "LossResult", "MCResult", "encode", "encode_item", "encode_loss_set",
           "encoded_loss", "heldout_loss", "heldout_losses", "mc_accuracy", "normalise", "pad_id_of",
           "score_sequences", "scored_tokens", "sequence_batches"]


def as_layered(model: nn.Module | LayeredModel) -> LayeredModel:
    return model if isinstance(model, LayeredModel) else LayeredModel.resident(model)


def sequence_batches(sequences: Sequence[Encoded], batch_size: int, pad_id: int
                     ) -> tuple[list[Batch], list[Picks], list[list[int]]]:
    """Left-padded batches of the sequences that have scored tokens (longest first), the scored
    positions of each, and which sequence each scored position belongs to."""
    order = [i for i in sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
             if sequences[i].n_scored > 0]
    batches, picks, owners = [], [], []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(sequences[i].ids) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        pos = torch.zeros((len(idx), width), dtype=torch.long)
        rows, cols, owner = [], [], []
        for row, i in enumerate(idx):
            seq, n = sequences[i].ids, sequences[i].n_scored
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
            pos[row, width - len(seq):] = torch.arange(len(seq))
            # the hidden state at position t predicts token t+1: the last n tokens need the n
            # positions before the final one
            rows += [row] * n
            cols += list(range(width - n - 1, width - 1))
            owner += [i] * n
        batches.append(Batch(ids, mask, idx, {"attention_mask": mask, "position_ids": pos}))
        picks.append(Picks(torch.tensor(rows), torch.tensor(cols),
                           ids[torch.tensor(rows), torch.tensor(cols) + 1]))
        owners.append(owner)
    return batches, picks, owners


def sums_by_owner(lp: torch.Tensor, owners: list[list[int]], n: int) -> list[tuple[float, int]]:
    out = [[0.0, 0] for _ in range(n)]
    for i, v in zip((o for batch in owners for o in batch), lp.double().tolist()):
        out[i][0] += v
        out[i][1] += 1
    return [(s, k) for s, k in out]


@torch.no_grad()
def score_sequences(model: nn.Module | LayeredModel, sequences: Sequence[Encoded], *,
                    batch_size: int = 8, pad_id: int = 0, desc: str = "scoring",
                    progress: bool = True, variants: Sequence[Variant] | None = None
                    ) -> list[tuple[float, int]] | dict[str, list[tuple[float, int]]]:
    """(sum of log-probs of the scored tokens, number of scored tokens) for each sequence, in
    order. With `variants` (cusprun.engine.Variant), one pass scores every variant and the
    result is variant name -> that list."""
    lm = as_layered(model)
    batches, picks, owners = sequence_batches(sequences, batch_size, pad_id)
    lp = pick_logprobs(lm, batches, picks, variants or (Variant(),), desc=desc, progress=progress)
    scored = {name: sums_by_owner(v, owners, len(sequences)) for name, v in lp.items()}
    return scored if variants else scored["dense"]


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
    return _loss_result(scores, name, len(enc))


def heldout_losses(model, tokenizer, sets: dict[str, Sequence[LossExample]], *,
                   max_tokens: int = 512, batch_size: int = 8, progress: bool = True
                   ) -> dict[str, LossResult]:
    """heldout_loss of every set from one pass (a streamed model is read once, not per set)."""
    enc = {name: encode_loss_set(tokenizer, ex, max_tokens=max_tokens, name=name)
           for name, ex in sets.items()}
    scores = score_sequences(model, [e for es in enc.values() for e in es], batch_size=batch_size,
                             pad_id=pad_id_of(tokenizer), desc="loss sets", progress=progress)
    out, start = {}, 0
    for name, es in enc.items():
        out[name] = _loss_result(scores[start:start + len(es)], name, len(es))
        start += len(es)
    return out


def _loss_result(scores: list[tuple[float, int]], name: str, n_docs: int) -> LossResult:
    per_doc = [(-lp, n) for lp, n in scores]
    n_tokens = sum(n for _, n in per_doc)
    if n_tokens == 0:
        raise EvaluationError(f"Eval set {name!r}: no scorable tokens (every text is a single "
                              "token or less); give longer texts.")
    loss = sum(nll for nll, _ in per_doc) / n_tokens
    log.info("loss %s: %.4f over %d tokens in %d docs", name, loss, n_tokens, n_docs)
    return LossResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), n_tokens=n_tokens,
                      n_docs=n_docs, per_doc=per_doc)


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
