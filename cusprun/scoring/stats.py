"""DimensionStats: what one statistics pass over one corpus leaves behind, and its files.

Nothing is kept per token. Per document and unit only the unit's rank percentile within its
layer survives (float16), plus corpus-wide per-channel moments of the down_proj / o_proj inputs
(for the wanda-sp and flap baselines) and the mean raw impact per unit (for plots).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cusprun.errors import CorpusError

log = logging.getLogger(__name__)

STATS_FILE = "stats.safetensors"
SUMMARY_FILE = "summary.json"
_OPTIONAL = ("ffn_centered", "head_centered")
_TENSORS = ("ffn_pct", "head_pct", "ffn_impact_mean", "head_impact_mean", "down_sum",
            "down_sumsq", "o_sum", "o_sumsq", "doc_tokens")


@dataclass
class DimensionStats:
    """Impact statistics of one model on one corpus.

    ffn_pct [docs, L, I] / head_pct [docs, L, H]: per-document rank percentile of each unit
    within its layer (0 = lowest impact, 1 = highest; ties share their mean rank).
    ffn_impact_mean [L, I] / head_impact_mean [L, H]: mean raw impact (RMS over tokens).
    down_sum/down_sumsq [L, I], o_sum/o_sumsq [L, H*head_dim]: per input channel sums of x and
    x^2 over every valid token of the corpus (float64); n_tokens tokens in all.
    doc_tokens [docs]: valid tokens per document (after truncation).
    ffn_centered [L, I] / head_centered [L, H]: corpus-level impact with the unit's mean
    contribution restored (RMS of its centred contribution); None in statistics written before.
    """

    ffn_pct: torch.Tensor
    head_pct: torch.Tensor
    ffn_impact_mean: torch.Tensor
    head_impact_mean: torch.Tensor
    down_sum: torch.Tensor
    down_sumsq: torch.Tensor
    o_sum: torch.Tensor
    o_sumsq: torch.Tensor
    doc_tokens: torch.Tensor
    summary: dict = field(default_factory=dict)
    ffn_centered: torch.Tensor | None = None
    head_centered: torch.Tensor | None = None

    @property
    def n_docs(self) -> int:
        return int(self.ffn_pct.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.ffn_pct.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.doc_tokens.sum())

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, FFN neurons per layer, query heads per layer)."""
        return self.n_layers, int(self.ffn_pct.shape[2]), int(self.head_pct.shape[2])

    @property
    def model_fingerprint(self) -> str | None:
        return self.summary.get("model_fingerprint")

    @property
    def corpus_hash(self) -> str | None:
        return self.summary.get("corpus_hash")

    @property
    def label(self) -> str:
        """A short name for messages: dimension=value, else the corpus hash."""
        extra = self.summary.get("extra") or {}
        if "dimension" in extra and "value" in extra:
            return f"{extra['dimension']}={extra['value']} ({(self.corpus_hash or '?')[:12]})"
        return f"corpus {(self.corpus_hash or 'unsaved')[:12]}"

    def channel_moments(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per input channel mean and (population) variance over all tokens, float64.
        `module` is 'down' (FFN neurons) or 'o' (concatenated head outputs)."""
        if module not in ("down", "o"):
            raise ValueError(f"module must be 'down' or 'o', got {module!r}")
        s, sq = (self.down_sum, self.down_sumsq) if module == "down" else (self.o_sum, self.o_sumsq)
        n = max(self.n_tokens, 1)
        mean = s / n
        return mean, (sq / n - mean * mean).clamp_min(0)

    def channel_sq_norm(self, module: str) -> torch.Tensor:
        """Per input channel sum of x^2 over all tokens (the squared L2 norm Wanda uses)."""
        return self.down_sumsq if module == "down" else self.o_sumsq


def save_stats(stats: DimensionStats, out_dir: str | Path, *, model_fingerprint: str,
               corpus_hash: str, extra: dict | None = None) -> dict:
    """Write stats.safetensors + summary.json into out_dir; returns (and sets) the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**stats.summary, "model_fingerprint": model_fingerprint, "corpus_hash": corpus_hash,
               "n_docs": stats.n_docs, "n_tokens": stats.n_tokens}
    if extra:
        summary["extra"] = {**summary.get("extra", {}), **extra}
    tensors = {name: getattr(stats, name).contiguous().cpu() for name in _TENSORS}
    tensors.update({name: getattr(stats, name).contiguous().cpu() for name in _OPTIONAL
                    if getattr(stats, name) is not None})
    tmp = out / f".{STATS_FILE}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "model_fingerprint": model_fingerprint,
                                           "corpus_hash": corpus_hash})
    os.replace(tmp, out / STATS_FILE)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    stats.summary = summary
    log.info("saved statistics of %d docs (%d tokens) to %s", stats.n_docs, stats.n_tokens, out)
    return summary


def load_stats(path: str | Path) -> DimensionStats:
    """Read a directory written by save_stats."""
    p = Path(path)
    missing = [f for f in (STATS_FILE, SUMMARY_FILE) if not (p / f).is_file()]
    if missing:
        raise CorpusError(f"Statistics directory {str(p)!r} lacks {', '.join(missing)}; "
                          f"expected {STATS_FILE} and {SUMMARY_FILE} written by save_stats.")
    tensors = load_file(str(p / STATS_FILE))
    absent = [n for n in _TENSORS if n not in tensors]
    if absent:
        raise CorpusError(f"{p / STATS_FILE} lacks tensors {absent}; it was not written by save_stats.")
    summary = json.loads((p / SUMMARY_FILE).read_text())
    return DimensionStats(**{n: tensors[n] for n in _TENSORS}, summary=summary,
                          **{n: tensors[n] for n in _OPTIONAL if n in tensors})


def check_statistics(s: DimensionStats, where: str, *, base_fingerprint: str,
                     shape: tuple[int, int, int] | None = None, min_docs: int = 1) -> None:
    """Statistics usable for a plan of the base model: collected on it, with enough documents
    and tokens, of its shape (layers, ffn, heads). Raises SpecError naming what is wrong. Every
    method (Cus-Prun's dimensions, the baselines' general text) checks its statistics here."""
    from cusprun.errors import SpecError

    if s.model_fingerprint != base_fingerprint:
        raise SpecError(f"Statistics {s.label} of {where} were collected on model fingerprint "
                        f"{s.model_fingerprint!r}, but the base model's fingerprint is "
                        f"{base_fingerprint!r}; recollect them on this model.")
    if s.n_docs < min_docs:
        raise SpecError(f"Statistics {s.label} of {where} hold {s.n_docs} documents; at least "
                        f"min_docs={min_docs} are needed (add documents or lower min_docs).")
    if s.n_tokens < 1:
        raise SpecError(f"Statistics {s.label} of {where} hold no tokens.")
    if shape is not None and s.shape != shape:
        raise SpecError(f"Statistics {s.label} of {where} have (layers, ffn, heads) = {s.shape}, "
                        f"but the model has {shape}.")

