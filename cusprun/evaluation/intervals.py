"""95 % intervals for every accuracy and loss, and paired tests of differences between models.

Both metrics are a ratio of sums over units (items or documents): accuracy = sum(correct) / items,
token-weighted loss = sum(document NLL) / sum(document tokens). Reports hold few units (a loss set
of 10-40 documents, a task of 16-100 items), so each method was chosen by its measured coverage
on samples that small (benchmarks/bench_interval_coverage.py, docs/evaluation.md):

* accuracy: Wilson score interval (closed form, right at 0 and 1);
* loss: t interval over documents: the ratio's jackknife standard error (each document left out
  in turn, so the tokens of one document stay together) with Student's t quantile at n - 1
  degrees of freedom. The percentile bootstrap used before (`bootstrap`, kept for comparison)
  covers the true loss about 89 % of the time at 10 documents instead of 95 %: a resample of
  few units is less varied than the population;
* a difference between two models on the same units, the honest test when the models answer the
  same items (item difficulty is shared and cancels out): for loss the same t interval on the
  paired difference (each document left out of both models at once); for 0/1 items Agresti and
  Min's interval for matched proportions (half an item added to each cell of the 2 x 2 table of
  right/wrong pairs). A pruned model and its dense parent answer most items alike, and there
  the paired t (like the bootstrap) gives a zero-width interval whenever no item tells them
  apart. A difference is "beyond the interval" when the 95 % interval excludes zero.

Every interval here is computed in closed form, so a report is reproducible without a seed."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from cusprun.evaluation.config import EvaluationError

N_BOOT = 2000
LEVEL = 0.95
Z95 = 1.959963984540054
EXACT_T_DF = 1000
"""Up to this many degrees of freedom the t quantile is found from the exact distribution
function; above it a Cornish-Fisher expansion is exact to about 1e-12."""


@dataclass(frozen=True)
class Samples:
    """Per-unit numerators and denominators; the metric is sum(num) / sum(den)."""

    num: tuple[float, ...]
    den: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.num) != len(self.den) or not self.num:
            raise EvaluationError(f"Samples need as many numerators as denominators, at least one "
                                  f"(got {len(self.num)} and {len(self.den)}).")
        bad = next((i for i, (x, d) in enumerate(zip(self.num, self.den))
                    if d < 0 or (d == 0 and x != 0)), None)
        if bad is not None:
            raise EvaluationError(f"Unit {bad} has numerator {self.num[bad]} over denominator "
                                  f"{self.den[bad]}: a denominator (tokens, items) must be "
                                  "positive, or zero with a zero numerator.")

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


def _t_inside(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * c2
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * c2
        total += term
    return s * total


@lru_cache(maxsize=None)
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| < t) = level for Student's t at df degrees of freedom (2.262 for df=9 at
    95 %): numpy has no t distribution and the project does not depend on scipy."""
    if int(df) != df or df < 1:
        raise EvaluationError(f"t_quantile(df={df}): degrees of freedom must be a whole number "
                              ">= 1.")
    if not 0 < level < 1:
        raise EvaluationError(f"t_quantile(level={level}): the level must be between 0 and 1.")
    df = int(df)
    z = NormalDist().inv_cdf((1 + level) / 2)
    if df > EXACT_T_DF:  # Cornish-Fisher expansion of the t quantile in 1/df
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4
    lo, hi = z, max(2 * z, 1.0)
    while _t_inside(hi, df) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_inside(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def _arrays(*samples: Samples) -> list[np.ndarray]:
    """num and den of each sample as arrays, without the units that carry nothing in any of them
    (a document with no scored token): they would count as evidence of no variation."""
    arrs = [np.asarray(a, dtype=float) for s in samples for a in (s.num, s.den)]
    keep = np.any([d != 0 for d in arrs[1::2]], axis=0)
    return [a[keep] for a in arrs]


def _leave_one_out(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (num.sum() - num) / (den.sum() - den)


def _t_around(value: float, loo: np.ndarray, level: float) -> tuple[float, float]:
    """value -+ t(n-1) x the jackknife standard error from the leave-one-out estimates; one unit
    gives no interval at all (-inf, inf)."""
    n = len(loo)
    if n < 2:
        return -math.inf, math.inf
    se = math.sqrt((n - 1) / n * float(np.sum((loo - loo.mean()) ** 2)))
    half = t_quantile(n - 1, level) * se
    return value - half, value + half


def t_interval(s: Samples, level: float = LEVEL) -> tuple[float, float]:
    """Interval of sum(num)/sum(den): the jackknife standard error over units (whole documents
    left out) with Student's t at n - 1 degrees of freedom; see the module docstring for why."""
    num, den = _arrays(s)
    return _t_around(s.value, _leave_one_out(num, den), level)


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _ratio(s: Samples, idx: np.ndarray) -> np.ndarray:
    num, den = np.asarray(s.num, dtype=float), np.asarray(s.den, dtype=float)
    d = den[idx].sum(axis=1)
    return num[idx].sum(axis=1) / np.where(d == 0, np.nan, d)


def bootstrap(s: Samples, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(num)/sum(den), resampling units. Reports no longer
    use it (it covers less than 95 % on few units); kept to measure that."""
    vals = _ratio(s, _draws(len(s), n_boot, seed))
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _exp(x: float) -> float:
    return math.inf if x > 700.0 else math.exp(x)


def interval(metric: str, s: Samples) -> tuple[float, float]:
    """95 % interval of a metric: Wilson for accuracy, t over documents for loss; perplexity is
    exp(loss)."""
    if metric == "mc_accuracy":
        return wilson(sum(s.num), len(s))
    lo, hi = t_interval(s)
    return (_exp(lo), _exp(hi)) if metric == "perplexity" else (lo, hi)


@dataclass(frozen=True)
class Difference:
    """a - b on the same units, with its paired 95 % interval."""

    value: float
    low: float
    high: float

    @property
    def beyond(self) -> bool:
        """True when the interval excludes zero: the two models differ beyond noise."""
        return self.low > 0 or self.high < 0


def _binary(s: Samples) -> bool:
    return all(d == 1 for d in s.den) and all(x in (0, 1) for x in s.num)


def matched_proportions(a: Samples, b: Samples, level: float = LEVEL) -> Difference:
    """Agresti & Min (2005) interval of the difference of two proportions on the same 0/1 items:
    the Wald interval of the 2 x 2 table of (a right, b right) pairs with 1/2 added to each cell,
    so items that no model tells apart still leave an interval of honest width."""
    if len(a) != len(b) or not (_binary(a) and _binary(b)):
        raise EvaluationError("matched_proportions needs two samples of the same 0/1 items "
                              f"(got {len(a)} and {len(b)} units).")
    x, y = np.asarray(a.num), np.asarray(b.num)
    only_a, only_b, n = float(np.sum(x > y)) + 0.5, float(np.sum(y > x)) + 0.5, len(x) + 2
    centre = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    half = NormalDist().inv_cdf((1 + level) / 2) * se
    return Difference(a.value - b.value, max(-1.0, centre - half), min(1.0, centre + half))


def paired_difference(a: Samples, b: Samples, level: float = LEVEL) -> Difference:
    """Difference of the metrics of two models scored on the same units: for 0/1 items (every
    denominator 1) matched_proportions, else the t interval from the jackknife over units, each
    unit left out of both models at once."""
    if len(a) != len(b):
        raise EvaluationError(f"A paired difference needs the same units for both models "
                              f"({len(a)} vs {len(b)}).")
    if _binary(a) and _binary(b):
        return matched_proportions(a, b, level)
    an, ad, bn, bd = _arrays(a, b)
    loo = _leave_one_out(an, ad) - _leave_one_out(bn, bd)
    value = a.value - b.value
    return Difference(value, *_t_around(value, loo, level))


def samples_of(num: Sequence[float], den: Sequence[float] | None = None) -> Samples:
    return Samples(tuple(float(x) for x in num),
                   tuple(float(x) for x in (den if den is not None else [1.0] * len(num))))
