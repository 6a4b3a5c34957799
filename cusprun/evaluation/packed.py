"""Multiple-choice scoring that computes each question once.

The options of an item are packed after its question in one sequence: [question][option 1]...
[option k]. A block-causal attention mask lets every option see the question and its own earlier
tokens only, and each option's positions restart right after the question, so every option is
scored exactly as if it followed the question alone (up to float rounding). A 4-option item then
costs one question plus four options instead of four questions plus four options, and the LM
head (as large as the whole body for a 262k vocabulary) runs only on the positions whose next
token is scored.

Items are scored the plain way (`score_sequences`) when their options do not share one encoded
question (a prompt cut differently by max_tokens), when an item would outgrow a sliding attention
window, or when the model's attention implementation takes no custom mask (only 'sdpa' and
'eager' do)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cusprun.engine import Batch, LayeredModel, Picks, pick_logprobs
from cusprun.evaluation.encoding import Encoded

log = logging.getLogger(__name__)

MASKABLE = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedItem:
    """One question's token ids and each option's token ids (all of which are scored)."""

    context: list[int]
    options: list[list[int]]

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(o) for o in self.options)

    @property
    def span(self) -> int:
        """Largest position used: the question plus the longest option."""
        return len(self.context) + max(len(o) for o in self.options)


def pack(encoded: Sequence[Encoded]) -> PackedItem | None:
    """The item's options as one question plus continuations, or None when they do not share the
    same encoded question (then each option is scored on its own)."""
    ctxs = [e.ids[: len(e.ids) - e.n_scored] for e in encoded]
    if not ctxs[0] or any(c != ctxs[0] for c in ctxs) or any(e.n_scored < 1 for e in encoded):
        return None
    return PackedItem(ctxs[0], [e.ids[len(e.ids) - e.n_scored:] for e in encoded])


def can_pack(model) -> bool:
    return getattr(model.config, "_attn_implementation", "eager") in MASKABLE


def window_of(model) -> int | None:
    """Smallest sliding attention window of the model, if any layer slides."""
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if not window or (types is not None and "sliding_attention" not in types):
        return None
    return int(window)


def _layout(items: Sequence[PackedItem], pad_id: int):
    """ids, positions, segment ids (0 question, k+1 option k, -1 padding), right padded."""
    width = max(it.length for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(items), width), dtype=torch.long)
    seg = torch.full((len(items), width), -1, dtype=torch.long)
    for row, it in enumerate(items):
        c = len(it.context)
        ids[row, :c] = torch.tensor(it.context)
        pos[row, :c] = torch.arange(c)
        seg[row, :c] = 0
        start = c
        for k, opt in enumerate(it.options):
            end = start + len(opt)
            ids[row, start:end] = torch.tensor(opt)
            pos[row, start:end] = torch.arange(c, c + len(opt))
            seg[row, start:end] = k + 1
            start = end
    return ids, pos, seg


def block_mask(pos: torch.Tensor, seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive (batch, 1, query, key) mask: a token sees earlier question tokens and earlier tokens
    of its own segment; padding sees only itself (so it stays finite)."""
    real = seg >= 0
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    allowed = (pos[:, None, :] <= pos[:, :, None]) & ((k_seg == 0) | (k_seg == q_seg))
    allowed &= real[:, :, None] & real[:, None, :]
    allowed |= torch.eye(seg.shape[1], dtype=torch.bool)[None] & ~real[:, :, None]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _targets(items: Sequence[PackedItem]):
    """(row, hidden index, target id, item-in-batch, option) of every scored token."""
    out = []
    for row, it in enumerate(items):
        c = len(it.context)
        start = c
        for k, opt in enumerate(it.options):
            out.append((row, c - 1, opt[0], row, k))  # first option token: after the question
            out += [(row, start + j - 1, opt[j], row, k) for j in range(1, len(opt))]
            start += len(opt)
    return out


@torch.no_grad()
def score_packed(model, items: Sequence[PackedItem], *, batch_size: int = 8, pad_id: int = 0,
                 desc: str = "scoring", progress: bool = True) -> list[list[float]]:
    """Sum of log-probs of every option's tokens given its question, per item and option."""
    lm = model if isinstance(model, LayeredModel) else LayeredModel.resident(model)
    out = [[0.0] * len(it.options) for it in items]
    order = sorted(range(len(items)), key=lambda i: -items[i].length)
    batches, picks, owners = [], [], []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = [items[i] for i in idx]
        ids, pos, seg = _layout(batch, pad_id)
        call = {"position_ids": pos, "attention_mask": block_mask(pos, seg, lm.dtype)}
        batches.append(Batch(ids, (seg >= 0).long(), idx, call))
        tg = _targets(batch)
        picks.append(Picks(torch.tensor([t[0] for t in tg]), torch.tensor([t[1] for t in tg]),
                           torch.tensor([t[2] for t in tg])))
        owners.append([(idx[t[3]], t[4]) for t in tg])
    lp = pick_logprobs(lm, batches, picks, desc=desc, progress=progress)["dense"]
    for (i, k), v in zip((o for b in owners for o in b), lp.double().tolist()):
        out[i][k] += v
    return out
