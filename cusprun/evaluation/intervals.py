"""95 % intervals for every accuracy and loss, and paired tests of differences between models.

Both metrics are a ratio of sums over units (items or documents): accuracy = sum(correct) / items,
token-weighted loss = sum(document NLL) / sum(document tokens). So one estimator serves both:

* accuracy: Wilson score interval (closed form, right at 0 and 1);
* loss: percentile bootstrap over documents (whole documents resampled, so tokens of one document
  stay together);
* a difference between two models on the same units: paired bootstrap (the same resampled units
  for both models), the honest test when the models answer the same items: item difficulty is
  shared and cancels out. A difference is "beyond the interval" when the 95 % interval of the
  difference excludes zero.

Resampling is seeded, so a report is reproducible."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cusprun.evaluation.config import EvaluationError

N_BOOT = 2000
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Samples:
    """Per-unit numerators and denominators; the metric is sum(num) / sum(den)."""

    num: tuple[float, ...]
    den: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.num) != len(self.den) or not self.num:
            raise EvaluationError(f"Samples need as many numerators as denominators, at least one "
                                  f"(got {len(self.num)} and {len(self.den)}).")

    @property
    def value(self) -> float:
        return float(sum(self.num) / sum(self.den))

    def __len__(self) -> int:
        return len(self.num)


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        raise EvaluationError(f"wilson(k={k}, n={n}): n must be positive.")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _ratio(s: Samples, idx: np.ndarray) -> np.ndarray:
    num, den = np.asarray(s.num, dtype=float), np.asarray(s.den, dtype=float)
    d = den[idx].sum(axis=1)
    return num[idx].sum(axis=1) / np.where(d == 0, np.nan, d)


def bootstrap(s: Samples, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(num)/sum(den), resampling units."""
    vals = _ratio(s, _draws(len(s), n_boot, seed))
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def interval(metric: str, s: Samples, *, seed: int = 0) -> tuple[float, float]:
    """95 % interval of a metric: Wilson for accuracy, bootstrap for loss; perplexity is exp(loss)."""
    if metric == "mc_accuracy":
        return wilson(sum(s.num), len(s))
    lo, hi = bootstrap(s, seed=seed)
    return (math.exp(min(lo, 700.0)), math.exp(min(hi, 700.0))) if metric == "perplexity" else (lo, hi)


@dataclass(frozen=True)
class Difference:
    """a - b on the same units, with its paired-bootstrap 95 % interval."""

    value: float
    low: float
    high: float

    @property
    def beyond(self) -> bool:
        """True when the interval excludes zero: the two models differ beyond noise."""
        return self.low > 0 or self.high < 0


def paired_difference(a: Samples, b: Samples, *, n_boot: int = N_BOOT, seed: int = 0) -> Difference:
    """Difference of the metrics of two models scored on the same units (paired bootstrap)."""
    if len(a) != len(b):
        raise EvaluationError(f"A paired difference needs the same units for both models "
                              f"({len(a)} vs {len(b)}).")
    idx = _draws(len(a), n_boot, seed)
    diffs = _ratio(a, idx) - _ratio(b, idx)
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return Difference(a.value - b.value, float(lo), float(hi))


def samples_of(num: Sequence[float], den: Sequence[float] | None = None) -> Samples:
    return Samples(tuple(float(x) for x in num),
                   tuple(float(x) for x in (den if den is not None else [1.0] * len(num))))
