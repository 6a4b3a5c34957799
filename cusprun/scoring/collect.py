"""collect_stats: one hooked forward pass per batch over a corpus -> DimensionStats."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from cusprun.adapters import Adapter
from cusprun.errors import CorpusError, SpecError
from cusprun.models.loading import input_device
from cusprun.scoring.hooks import ImpactRecorder
from cusprun.scoring.percentile import rank_percentile
from cusprun.scoring.stats import DimensionStats

log = logging.getLogger(__name__)


def tokenize_docs(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids per document, truncated to max_tokens (never the model's max context)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_tokens, add_special_tokens=True)
    return [list(ids) for ids in enc["input_ids"]]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Document indices grouped into batches of similar length (longest first) to limit padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def _validate(texts, max_tokens: int, batch_size: int) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise CorpusError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise CorpusError("The corpus is empty: collect_stats needs at least one document.")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise CorpusError(f"Document {bad} is {type(texts[bad]).__name__}, expected a string.")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise SpecError(f"max_tokens={max_tokens!r} must be a positive integer (e.g. 512).")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"batch_size={batch_size!r} must be a positive integer (e.g. 8).")


@torch.no_grad()
def collect_stats(model: nn.Module, tokenizer, texts: Sequence[str], *, max_tokens: int = 512,
                  batch_size: int = 8, progress: bool = True,
                  on_progress: Callable[[int, int], None] | None = None,
                  grams_dir: str | Path | None = None, grams_extra: dict | None = None,
                  grams_precision: str = "float32") -> DimensionStats:
    """Impact statistics of every FFN neuron and query head on every document of `texts`.

    Runs the model once per batch (right-padded, sorted by length) with logits for the last
    position only; padded positions contribute nothing. `on_progress(done_docs, total_docs)` is
    called after each batch. With `grams_dir`, the same pass also writes the compensation Grams
    of these documents there (what collect_grams would write, without a second forward pass;
    memory: every layer's Grams at once, see cusprun.compensation.grams.gram_bytes;
    `grams_precision` as in collect_grams)."""
    _validate(texts, max_tokens, batch_size)
    adapter = Adapter.for_model(model)
    dims = adapter.dims(model.config)
    seqs = tokenize_docs(tokenizer, texts, max_tokens)
    empty = [i for i, s in enumerate(seqs) if not s]
    if len(empty) == len(seqs):
        raise CorpusError(f"All {len(seqs)} documents tokenize to zero tokens; nothing to measure.")
    if empty:
        log.warning("skipping %d documents that tokenize to zero tokens (first: %d)", len(empty), empty[0])
    keep = [i for i, s in enumerate(seqs) if s]
    seqs = [seqs[i] for i in keep]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    device = input_device(model)
    L, I, H = dims.n_layers, dims.ffn, dims.n_heads
    n = len(seqs)
    ffn_pct = torch.empty((n, L, I), dtype=torch.float16)
    head_pct = torch.empty((n, L, H), dtype=torch.float16)
    ffn_mean = torch.zeros((L, I), dtype=torch.float64)
    head_mean = torch.zeros((L, H), dtype=torch.float64)
    lengths = [len(s) for s in seqs]
    batches = length_batches(lengths, batch_size)
    log.info("statistics%s over %d docs (%d tokens, max %d per doc) in %d batches",
             " + compensation Grams" if grams_dir is not None else "", n, sum(lengths), max_tokens,
             len(batches))
    t0 = time.perf_counter()
    recorder = ImpactRecorder(model, adapter, dims)
    grams = None
    if grams_dir is not None:
        from cusprun.compensation.grams import GramRecorder

        grams = GramRecorder(model, adapter, grams_precision)
    done = 0
    try:
        bar = tqdm(total=n, desc="impact statistics", unit="doc", disable=not progress)
        for idx in batches:
            ids, mask = pad_right([seqs[i] for i in idx], pad_id, device)
            recorder.start_batch(mask)
            if grams is not None:
                grams.start_batch(mask)
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            ffn, heads = recorder.take_batch()
            ffn_mean += ffn.sum(0).double()
            head_mean += heads.sum(0).double()
            rows = torch.tensor(idx)
            ffn_pct[rows] = rank_percentile(ffn).half()
            head_pct[rows] = rank_percentile(heads).half()
            done += len(idx)
            bar.update(len(idx))
            if on_progress is not None:
                on_progress(done, n)
        bar.close()
        ffn_centered, head_centered = recorder.centered_impacts(int(sum(lengths)))
        if grams is not None:
            grams.write(grams_dir, n_docs=len(texts), n_tokens=int(sum(lengths)),
                        max_tokens=max_tokens, extra=grams_extra)
    finally:
        recorder.remove()
        if grams is not None:
            grams.remove()
    summary = {
        "n_docs": n, "n_tokens": int(sum(lengths)), "n_skipped_empty": len(empty),
        "architecture": adapter.architecture, "dims": dataclasses.asdict(dims),
        "max_tokens": max_tokens, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    cat = lambda accs, name: torch.stack([getattr(a, name).cpu() for a in accs])  # noqa: E731
    return DimensionStats(
        ffn_pct=ffn_pct, head_pct=head_pct,
        ffn_impact_mean=(ffn_mean / n).float(), head_impact_mean=(head_mean / n).float(),
        ffn_centered=ffn_centered, head_centered=head_centered,
        down_sum=cat(recorder.ffn, "sum"), down_sumsq=cat(recorder.ffn, "sumsq"),
        o_sum=cat(recorder.heads, "sum"), o_sumsq=cat(recorder.heads, "sumsq"),
        doc_tokens=torch.tensor(lengths, dtype=torch.int32), summary=summary)
