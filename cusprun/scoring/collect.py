"""Statistics passes: the impact statistics (and, where wanted, the compensation Grams) of one or
more calibration corpora from one pass over the model (cusprun.engine), layer by layer."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cusprun.compensation.gram_set import SUMMARY_FILE
from cusprun.engine import LayeredModel, Variant, document_batches, run_pass
from cusprun.errors import CorpusError, SpecError
from cusprun.models.loading import pad_id_of
from cusprun.models.precision import resolve_precision
from cusprun.scoring.grams import GramRecorder
from cusprun.scoring.impact import ImpactRecorder
from cusprun.scoring.stats import DimensionStats

log = logging.getLogger(__name__)


def tokenize_docs(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids per document, truncated to max_tokens (never the model's max context)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_tokens, add_special_tokens=True)
    return [list(ids) for ids in enc["input_ids"]]


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


def as_layered(model: nn.Module | LayeredModel) -> LayeredModel:
    return model if isinstance(model, LayeredModel) else LayeredModel.resident(model)


@dataclass
class CorpusJob:
    """What one corpus of a pass asks for: statistics, Grams into `grams_dir`, or both."""

    texts: Sequence[str]
    stats: bool = True
    grams_dir: str | Path | None = None
    grams_max_docs: int | None = None
    grams_extra: dict | None = None


def collect_corpora(model: nn.Module | LayeredModel, tokenizer, jobs: Mapping[str, CorpusJob], *,
                    max_tokens: int = 512, batch_size: int = 8, grams_precision: str = "float32",
                    progress: bool = True, on_progress: Callable[[int, int], None] | None = None
                    ) -> dict[str, DimensionStats | None]:
    """One pass for every corpus of `jobs`: name -> its DimensionStats (None where only Grams
    were asked; those are written to the job's grams_dir, one layer file at a time)."""
    if not jobs:
        raise CorpusError("collect_corpora needs at least one corpus.")
    for job in jobs.values():
        _validate(job.texts, max_tokens, batch_size)
    lm = as_layered(model)
    pad = pad_id_of(tokenizer)
    precision = resolve_precision(grams_precision, lm.device)
    batches, seqs_of, skipped = [], {}, {}
    for name, job in jobs.items():
        seqs = tokenize_docs(tokenizer, job.texts, max_tokens)
        empty = [i for i, s in enumerate(seqs) if not s]
        if len(empty) == len(seqs):
            raise CorpusError(f"All {len(seqs)} documents of {name!r} tokenize to zero tokens; "
                              "nothing to measure.")
        if empty:
            log.warning("%s: skipping %d documents that tokenize to zero tokens (first: %d)",
                        name, len(empty), empty[0])
        seqs = [s for s in seqs if s]
        seqs_of[name], skipped[name] = seqs, len(empty)
        batches += document_batches(seqs, batch_size, pad, group=name)
    recorders, impacts, grams = [], {}, {}
    for name, job in jobs.items():
        n_tok = sum(len(s) for s in seqs_of[name])
        if job.stats:
            impacts[name] = ImpactRecorder(lm.adapter, lm.dims, len(seqs_of[name]), n_tok, lm.device,
                                           group=name)
            recorders.append(impacts[name])
        if job.grams_dir is not None:
            grams[name] = GramRecorder(lm.adapter, lm.dims, batches, job.grams_dir,
                                       precision=precision, group=name,
                                       max_docs=job.grams_max_docs,
                                       extra={"max_tokens": max_tokens, **(job.grams_extra or {})})
            recorders.append(grams[name])
    what = "statistics" if impacts else "compensation Grams"
    if impacts and grams:
        what += " + compensation Grams"
    log.info("%s of %d corpora (%d docs, %d tokens) in one pass over %d layers%s", what,
             len(jobs), sum(len(s) for s in seqs_of.values()),
             sum(len(t) for s in seqs_of.values() for t in s), lm.dims.n_layers,
             " streamed from disk" if lm.checkpoint is not None else "")
    t0 = time.perf_counter()
    done = run_pass(lm, batches, [Variant("dense", recorders=recorders)], desc=what,
                    progress=progress, on_layer=on_progress)
    seconds = time.perf_counter() - t0
    out: dict[str, DimensionStats | None] = {name: None for name in jobs}
    for name, rec in impacts.items():
        out[name] = _stats(rec, lm, seqs_of[name], skipped[name], max_tokens, seconds)
    log.info("%s: done in %.1fs (%.2f GB read)", what, seconds, done["bytes_read"] / 1e9)
    return out


def _stats(rec: ImpactRecorder, lm: LayeredModel, seqs: list[list[int]], skipped: int,
           max_tokens: int, seconds: float) -> DimensionStats:
    n, lengths = len(seqs), [len(s) for s in seqs]
    cpu = lambda t: t.cpu()  # noqa: E731 - the one host copy of each accumulator
    summary = {
        "n_docs": n, "n_tokens": int(sum(lengths)), "n_skipped_empty": skipped,
        "architecture": lm.adapter.architecture, "dims": dataclasses.asdict(lm.dims),
        "max_tokens": max_tokens, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 3)}
    return DimensionStats(
        ffn_pct=cpu(rec.ffn_pct), head_pct=cpu(rec.head_pct),
        ffn_impact_mean=cpu(rec.ffn_mean / n).float(), head_impact_mean=cpu(rec.head_mean / n).float(),
        ffn_centered=cpu(rec.ffn_centered), head_centered=cpu(rec.head_centered),
        down_sum=cpu(rec.down_sum), down_sumsq=cpu(rec.down_sumsq),
        o_sum=cpu(rec.o_sum), o_sumsq=cpu(rec.o_sumsq),
        doc_tokens=torch.tensor(lengths, dtype=torch.int32), summary=summary)


def collect_stats(model: nn.Module | LayeredModel, tokenizer, texts: Sequence[str], *,
                  max_tokens: int = 512, batch_size: int = 8, progress: bool = True,
                  on_progress: Callable[[int, int], None] | None = None,
                  grams_dir: str | Path | None = None, grams_extra: dict | None = None,
                  grams_precision: str = "float32") -> DimensionStats:
    """Impact statistics of every FFN neuron and query head on every document of `texts`
    (right-padded batches of similar length; padding contributes nothing). With `grams_dir`
    the same pass also writes the corpus's compensation Grams there. `on_progress(done,
    total)` is called as the pass finishes each layer."""
    _validate(texts, max_tokens, batch_size)
    job = CorpusJob(texts, grams_dir=grams_dir, grams_extra=grams_extra)
    return collect_corpora(model, tokenizer, {"corpus": job}, max_tokens=max_tokens,
                           batch_size=batch_size, grams_precision=grams_precision,
                           progress=progress, on_progress=on_progress)["corpus"]


def collect_grams(model: nn.Module | LayeredModel, tokenizer, texts: Sequence[str],
                  out_dir: str | Path, *, max_tokens: int = 256, batch_size: int = 8,
                  progress: bool = True, extra: dict | None = None, precision: str = "float32",
                  max_docs: int | None = None) -> dict:
    """Write one `layer-NNNN.safetensors` per decoder layer (cusprun.compensation.gram_set) and
    `grams.json` into out_dir from a pass of their own; returns the summary. `max_docs`: only
    the first that many documents count. `precision`: of the per-batch x^T x products."""
    if isinstance(texts, str) or not texts:
        raise CorpusError("collect_grams needs a non-empty list of documents.")
    if max_tokens < 1 or batch_size < 1:
        raise SpecError(f"max_tokens={max_tokens} and batch_size={batch_size} must be positive.")
    job = CorpusJob(texts, stats=False, grams_dir=out_dir, grams_max_docs=max_docs, grams_extra=extra)
    collect_corpora(model, tokenizer, {"corpus": job}, max_tokens=max_tokens,
                    batch_size=batch_size, grams_precision=precision, progress=progress)
    return json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
