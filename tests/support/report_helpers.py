"""A comparison report built by the real report code (build_report, write_report) from made-up
per-document values, without any model: import as
`from tests.support.report_helpers import synthetic_report`."""
from __future__ import annotations

import random
from pathlib import Path

from cusprun.evaluation import EvalConfig, MetricValue, ModelEntry, ModelResult, build_report
from cusprun.evaluation.intervals import wilson

# model -> (method, ratio, loss offset per token, MC items right of 40, params, prefill tok/s)
MODELS = {"dense": ("dense", 0.0, 0.0, 30, 135e6, 1000.0),
          "cusprun@0.25": ("cusprun", 0.25, 0.15, 26, 101e6, 1250.0),
          "random@0.25": ("random", 0.25, 0.9, 12, 101e6, 1240.0),
          "wanda-sp@0.25": ("wanda-sp", 0.25, 0.4, 20, 101e6, 1245.0)}
LOSS_SETS = ("domain=health", "general=en", "language=en")


def _loss(offset: float, seed: int) -> MetricValue:
    rng = random.Random(seed)  # the same documents for every model: paired differences
    docs = [(rng.uniform(2.0, 3.5), rng.randint(50, 120)) for _ in range(30)]
    num = [per_tok * n + offset * n + random.Random(seed * 7 + i).gauss(0, 0.05) * n
           for i, (per_tok, n) in enumerate(docs)]
    den = [float(n) for _, n in docs]
    return MetricValue(metric="loss", value=sum(num) / sum(den), n=int(sum(den)), n_units=len(den),
                       ci_low=sum(num) / sum(den) - 0.05, ci_high=sum(num) / sum(den) + 0.05,
                       unit_num=num, unit_den=den)


def _mc(right: int) -> MetricValue:
    lo, hi = wilson(right, 40)
    units = [1.0] * right + [0.0] * (40 - right)
    return MetricValue(metric="mc_accuracy", eval_set="definition QA", value=right / 40, chance=0.25,
                       n=40, n_units=40, ci_low=lo, ci_high=hi, unit_num=units, unit_den=[1.0] * 40)


def synthetic_report(models: dict = MODELS):
    results = []
    for name, (method, ratio, offset, right, params, tps) in models.items():
        values = []
        for i, s in enumerate(LOSS_SETS):
            v = _loss(offset, seed=i + 1)
            values.append(v.model_copy(update={"eval_set": s}))
        values += [_mc(right), MetricValue(metric="params_total", value=params),
                   MetricValue(metric="prefill_tokens_per_s", value=tps)]
        results.append(ModelResult(name=name, entry=ModelEntry(path=Path("/nonexistent") / name,
                                                               method=method, ratio=ratio),
                                   values=values))
    return build_report(results, EvalConfig(progress=False, n_mc_items=40))
