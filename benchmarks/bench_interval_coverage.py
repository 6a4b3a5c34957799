"""Coverage of the report's 95 % intervals on samples as small as a report's: how often each
method's interval holds the true value, over many seeded simulated evaluation sets whose true
loss (or accuracy difference) is known.

Loss sets: per-document token counts are lognormal and cut at max_tokens, per-document loss per
token falls with length and varies between documents (skewed, gamma), and each token adds noise;
a pruned model adds a per-document degradation that grows with the document's difficulty. Two
settings: `recorded` matches the loss sets of the recorded reports under benchmarks/results/
(median 25-127 tokens, spread of log tokens 0.3-0.5, cut at max_tokens, per-document loss spread
0.4-0.6 nats), `heavy` has a much longer tail of document lengths (one document can hold half the
tokens). The true ratio sum(NLL) / sum(tokens) of the population is integrated numerically.

Multiple-choice tasks: items of normally distributed difficulty, each model right with a logistic
probability of its ability minus the difficulty, so two models' answers are correlated through
the items; in the `shared` cases model b copies a's answer on 80 % of the items (a pruned model
and its dense parent agree on most items) and answers on its own on the rest. The true accuracy
difference is integrated by Gauss-Hermite quadrature; where the two models are equal it is
exactly 0, and 100 % minus the coverage is the share of false marks.

Methods: `t (jackknife)`, what reports use for loss (cusprun.evaluation.intervals);
`percentile bootstrap` (2000 resamples, what reports used before); `BCa` bootstrap and
`t (linearised)` (delta-method standard error) as the other candidates; for paired accuracy
differences Agresti-Min (what reports use), the paired t interval, Newcombe's hybrid score
interval and the percentile bootstrap; for one accuracy, Wilson (what reports use).

    python -m benchmarks run bench_interval_coverage [--reps 4000] [--seed 0]

Writes benchmarks/results/interval_coverage.json (rendered into docs/results.md by
`make results`); docs/evaluation.md quotes its numbers."""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from cusprun.evaluation.intervals import (bootstrap, paired_difference, samples_of, t_interval,
                                          t_quantile, wilson)

ND = NormalDist()
NOMINAL = 0.95
TOLERANCE = 0.025
"""The chosen method's coverage must be within this of 95 % where documents look like the
recorded ones (tests/unit/test_evaluation_intervals.py checks it)."""


@dataclass(frozen=True)
class LossWorld:
    """How simulated documents and their losses are drawn (see the module docstring)."""

    median_tokens: float
    log_spread: float
    max_tokens: float
    loss: float = 3.0            # per-token loss of a document of 1 token (before the length slope)
    length_slope: float = 0.1    # per-token loss falls by this per e-fold of document length
    doc_spread: float = 0.35     # sd of a document's own difficulty (gamma, skewed)
    token_sd: float = 2.0        # sd of one token's NLL
    degradation: float = 0.3     # pruned model: extra nats/token on an average document ...
    harder_worse: float = 0.2    # ... plus this x the document's difficulty above average
    degradation_spread: float = 0.15

    def tokens(self, z: np.ndarray) -> np.ndarray:
        x = np.exp(math.log(self.median_tokens) + self.log_spread * z)
        return np.clip(x, 2.0, self.max_tokens)

    def truth(self) -> tuple[float, float]:
        """(true loss of the dense model, true loss difference pruned - dense): token-weighted
        means over the population, E[x * mean loss given x] / E[x], integrated over z."""
        z = np.linspace(-12, 12, 400_001)
        w = np.exp(-z * z / 2)
        x = self.tokens(z)
        ex = float(np.sum(w * x))
        exlog = float(np.sum(w * x * np.log(x)))
        loss = self.loss - self.length_slope * exlog / ex
        return loss, self.degradation + self.harder_worse * (loss - self.loss)

    def draw(self, rng: np.random.Generator, reps: int, n: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, dense NLL, pruned NLL) per document, each (reps, n)."""
        x = self.tokens(rng.standard_normal((reps, n)))
        own = (rng.gamma(2.0, 1.0, (reps, n)) - 2.0) / math.sqrt(2.0)
        mu = self.loss - self.length_slope * np.log(x) + self.doc_spread * own
        dense = x * mu + self.token_sd * np.sqrt(x) * rng.standard_normal((reps, n))
        d = (self.degradation + self.harder_worse * (mu - self.loss) + self.degradation_spread
             * (rng.gamma(2.0, 1.0, (reps, n)) - 2.0) / math.sqrt(2.0))
        pruned = dense + x * d + 0.5 * self.token_sd * np.sqrt(x) * rng.standard_normal((reps, n))
        return x, dense, pruned


WORLDS = {"recorded": LossWorld(median_tokens=60, log_spread=0.5, max_tokens=128),
          "heavy": LossWorld(median_tokens=40, log_spread=1.0, max_tokens=512, length_slope=0.15,
                             doc_spread=0.5)}


def bca(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
        num_b: np.ndarray | None = None) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval of sum(num)/sum(den) (or of the paired
    difference with num_b) - a candidate, not what reports use."""
    def stat(idx):
        r = num[idx].sum(-1) / den[idx].sum(-1)
        return r if num_b is None else num_b[idx].sum(-1) / den[idx].sum(-1) - r
    n = len(num)
    full = np.arange(n)
    value = stat(full)
    boots = stat(rng.integers(0, n, (n_boot, n)))
    below = (np.sum(boots < value) + 0.5 * np.sum(boots == value)) / n_boot
    z0 = ND.inv_cdf(min(max(below, 0.5 / n_boot), 1 - 0.5 / n_boot))
    jack = np.array([stat(np.delete(full, i)) for i in range(n)])
    d = jack.mean() - jack
    denom = 6 * float(np.sum(d ** 2)) ** 1.5
    a = float(np.sum(d ** 3)) / denom if denom > 0 else 0.0
    z = ND.inv_cdf((1 + NOMINAL) / 2)
    qs = [100 * ND.cdf(z0 + (z0 + q) / (1 - a * (z0 + q))) for q in (-z, z)]
    lo, hi = np.percentile(boots, qs)
    return float(lo), float(hi)


def linearised(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """t interval with the delta-method standard error of a ratio - a candidate."""
    n = len(num)
    r = num.sum() / den.sum()
    se = math.sqrt(float(np.sum((num - r * den) ** 2)) / (n * (n - 1))) / den.mean()
    half = t_quantile(n - 1) * se
    return r - half, r + half


def covered(intervals: list[tuple[float, float]], truth: float) -> float:
    return float(np.mean([lo <= truth <= hi for lo, hi in intervals]))


def loss_coverage(world: LossWorld, n: int, reps: int, seed: int, methods: tuple[str, ...],
                  n_boot: int = 2000) -> dict[str, dict[str, float]]:
    """{'loss' | 'difference': {method: coverage}} over `reps` simulated sets of n documents."""
    rng = np.random.default_rng(seed)
    x, dense, pruned = world.draw(rng, reps, n)
    loss, diff = world.truth()
    out: dict[str, dict[str, float]] = {"loss": {}, "difference": {}}
    for m in methods:
        one, two = [], []
        for r in range(reps):
            a, b = samples_of(pruned[r], x[r]), samples_of(dense[r], x[r])
            if m == "t (jackknife)":
                one.append(t_interval(b))
                d = paired_difference(a, b)
                two.append((d.low, d.high))
            elif m == "percentile bootstrap":
                one.append(bootstrap(b, n_boot=n_boot, seed=seed + r))
                two.append(bootstrap(samples_of(pruned[r] - dense[r], x[r]), n_boot=n_boot,
                                     seed=seed + r))
            elif m == "BCa":
                one.append(bca(dense[r], x[r], rng, n_boot))
                two.append(bca(dense[r], x[r], rng, n_boot, num_b=pruned[r]))
            elif m == "t (linearised)":
                one.append(linearised(dense[r], x[r]))
                two.append(linearised(pruned[r] - dense[r], x[r]))
            else:
                raise ValueError(f"unknown method {m!r}")
        out["loss"][m], out["difference"][m] = covered(one, loss), covered(two, diff)
    return out


def _expit(v):
    return 1 / (1 + np.exp(-v))


def mc_truth(ability_a: float, ability_b: float, shared: float = 0.0, spread: float = 1.5
             ) -> tuple[float, float]:
    """(true accuracy of a, true accuracy difference a - b) over items of N(0, 1) difficulty,
    b copying a's answer on a `shared` share of the items."""
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    pa, pb = _expit(ability_a - spread * z), _expit(ability_b - spread * z)
    return float(np.sum(w * pa)), (1 - shared) * float(np.sum(w * (pa - pb)))


def newcombe(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) of a paired difference of proportions
    - a candidate."""
    n = len(a)
    both, only_a = int(np.sum((a == 1) & (b == 1))), int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    (l1, u1), (l2, u2) = wilson(both + only_a, n), wilson(both + only_b, n)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins else 0.0
    lo = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    hi = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return p1 - p2 - lo, p1 - p2 + hi


def mc_coverage(ability_a: float, ability_b: float, shared: float, n: int, reps: int, seed: int,
                methods: tuple[str, ...], n_boot: int = 2000) -> dict[str, dict[str, float]]:
    """{'accuracy' | 'difference': {method: coverage}} over `reps` simulated tasks of n items."""
    rng = np.random.default_rng(seed)
    difficulty = rng.standard_normal((reps, n))
    a = (rng.random((reps, n)) < _expit(ability_a - 1.5 * difficulty)).astype(float)
    b = (rng.random((reps, n)) < _expit(ability_b - 1.5 * difficulty)).astype(float)
    b = np.where(rng.random((reps, n)) < shared, a, b)
    acc, diff = mc_truth(ability_a, ability_b, shared)
    out: dict[str, dict[str, float]] = {"accuracy": {}, "difference": {}}
    for m in methods:
        one, two = [], []
        for r in range(reps):
            if m == "Agresti-Min":
                one.append(wilson(a[r].sum(), n))
                d = paired_difference(samples_of(a[r]), samples_of(b[r]))
                two.append((d.low, d.high))
            elif m == "paired t":
                two.append(t_interval(samples_of(a[r] - b[r])))
            elif m == "percentile bootstrap":
                two.append(bootstrap(samples_of(a[r] - b[r]), n_boot=n_boot, seed=seed + r))
            elif m == "Newcombe":
                two.append(newcombe(a[r], b[r]))
            else:
                raise ValueError(f"unknown method {m!r}")
        if one:
            out["accuracy"]["Wilson"] = covered(one, acc)
        out["difference"][m] = covered(two, diff)
    return out


LOSS_METHODS = ("t (jackknife)", "percentile bootstrap", "BCa", "t (linearised)")
MC_METHODS = ("Agresti-Min", "paired t", "Newcombe", "percentile bootstrap")
MC_CASES = {"independent, equal (45 %)": (-0.3, -0.3, 0.0),
            "independent, a 9 points ahead": (0.0, -0.5, 0.0),
            "independent, a 26 points ahead": (0.5, -1.0, 0.0),
            "shared, equal (45 %)": (-0.3, -0.3, 0.8),
            "shared, a 5 points ahead": (0.5, -1.0, 0.8)}


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results_io import Result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=4000, help="simulated sets per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=int, nargs="+", default=[10, 32])
    p.add_argument("--items", type=int, nargs="+", default=[16, 40, 100])
    args = p.parse_args(argv)
    started = time.perf_counter()
    res = Result("interval_coverage", "Coverage of the report's 95 % intervals on small samples",
                 {"reps": args.reps, "seed": args.seed, "docs": args.docs, "items": args.items})
    res.say(f"Share of {args.reps} seeded simulated sets whose 95 % interval holds the true value "
            f"(Monte Carlo error about ±{100 * 1.96 * math.sqrt(0.05 * 0.95 / args.reps):.1f} "
            "points). Reports use t (jackknife) for loss, Wilson for one accuracy and Agresti-Min "
            "for accuracy differences.")
    values: dict = {"loss": {}, "mc": {}}
    for world_name, world in WORLDS.items():
        rows = []
        for n in args.docs:
            cov = loss_coverage(world, n, args.reps, args.seed + n, LOSS_METHODS)
            values["loss"][f"{world_name}|{n}"] = cov
            for what in ("loss", "difference"):
                rows.append([n, what, *(pct(cov[what][m]) for m in LOSS_METHODS)])
        loss, diff = world.truth()
        res.table(["documents", "interval of", *LOSS_METHODS], rows,
                  title=f"Loss sets, `{world_name}` documents (median {world.median_tokens:g} "
                        f"tokens, log spread {world.log_spread:g}, cut at {world.max_tokens:g}; "
                        f"true loss {loss:.3f}, true difference {diff:+.3f}):")
    rows = []
    for case, (aa, ab, shared) in MC_CASES.items():
        for n in args.items:
            cov = mc_coverage(aa, ab, shared, n, args.reps, args.seed + n, MC_METHODS)
            values["mc"][f"{case}|{n}"] = cov
            rows.append([case, n, pct(cov["accuracy"]["Wilson"]),
                         *(pct(cov["difference"][m]) for m in MC_METHODS)])
    res.table(["models", "items", "accuracy: Wilson",
               *(f"difference: {m}" for m in MC_METHODS)], rows,
              title="Multiple-choice tasks (accuracy of one model; paired difference of two):")
    rec = values["loss"]["recorded|" + str(min(args.docs))]
    res.say(f"At {min(args.docs)} recorded-like documents: t (jackknife) "
            f"{pct(rec['loss']['t (jackknife)'])} for the loss, "
            f"{pct(rec['difference']['t (jackknife)'])} for a paired difference; percentile "
            f"bootstrap {pct(rec['loss']['percentile bootstrap'])} and "
            f"{pct(rec['difference']['percentile bootstrap'])} (nominal 95 %).")
    values["seconds"] = round(time.perf_counter() - started, 1)
    res.values = values
    res.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
