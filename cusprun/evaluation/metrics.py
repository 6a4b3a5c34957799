"""The metric registry and retention arithmetic.

Retention compares a pruned model with dense on the same metric and eval set: dense/value for
lower-is-better quality metrics (loss, perplexity), value/dense for everything else (accuracy;
parameter and byte counts, read as the fraction kept; tokens/s, read as the speed-up). For quality,
1.0 means "as good as dense" and smaller is worse."""
from __future__ import annotations

import math
from dataclasses import dataclass

from cusprun.evaluation.config import EvaluationError


@dataclass(frozen=True)
class MetricInfo:
    family: str
    """Config family that computes it: loss, mc, size or speed."""
    higher_is_better: bool
    label: str


METRICS: dict[str, MetricInfo] = {
    "loss": MetricInfo("loss", False, "held-out loss (nats/token)"),
    "perplexity": MetricInfo("loss", False, "perplexity"),
    "mc_accuracy": MetricInfo("mc", True, "multiple-choice accuracy"),
    "params_total": MetricInfo("size", False, "parameters"),
    "params_non_embedding": MetricInfo("size", False, "non-embedding parameters"),
    "disk_bytes": MetricInfo("size", False, "checkpoint bytes"),
    "prefill_tokens_per_s": MetricInfo("speed", True, "prefill tokens/s"),
    "decode_tokens_per_s": MetricInfo("speed", True, "decode tokens/s"),
}


def metric_info(metric: str) -> MetricInfo:
    if metric not in METRICS:
        raise EvaluationError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}.")
    return METRICS[metric]


def retention(metric: str, value: float, dense: float) -> float:
    """Pruned metric relative to dense: dense/value for loss and perplexity (lower is better),
    value/dense for everything else (accuracy, parameter and byte counts, tokens/s).
    NaN when the ratio is undefined (a zero denominator)."""
    info = metric_info(metric)
    num, den = (value, dense) if (info.higher_is_better or info.family == "size") else (dense, value)
    if den == 0 or math.isnan(num) or math.isnan(den):
        return math.nan
    return num / den
