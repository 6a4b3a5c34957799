"""Which differences between models are beyond noise: every model against dense, and every
method that is not a baseline (Cus-Prun) against the best baseline at the same ratio, on each
loss set and MC task, by paired bootstrap over the same documents or items
(cusprun.evaluation.intervals)."""
from __future__ import annotations

from cusprun.evaluation.evaluate import MetricValue, ModelResult
from cusprun.evaluation.intervals import paired_difference, samples_of
from cusprun.evaluation.metrics import metric_info

COMPARED = ("loss", "mc_accuracy")


def baseline_methods() -> frozenset[str]:
    from cusprun.baselines import BASELINES

    return frozenset(BASELINES)


def _paired(a: MetricValue, b: MetricValue, seed: int):
    if a.unit_num is None or b.unit_num is None or len(a.unit_num) != len(b.unit_num):
        return None
    return paired_difference(samples_of(a.unit_num, a.unit_den), samples_of(b.unit_num, b.unit_den),
                             seed=seed)


def differences(results: list[ModelResult], dense: str | None, seed: int = 0
                ) -> dict[tuple[str, str, str], dict]:
    """(model, metric, eval set) -> d_dense* (value - dense) and best_baseline, d_best* (value -
    best baseline at the same ratio) with their 95 % paired intervals; loss and accuracy only."""
    base = baseline_methods()
    vals = {(r.name, v.metric, v.eval_set): v for r in results for v in r.values
            if v.metric in COMPARED}
    entries = {r.name: r.entry for r in results}
    out: dict[tuple[str, str, str], dict] = {}
    for (name, metric, s), v in vals.items():
        row: dict = {}
        if dense and name != dense and (dense, metric, s) in vals:
            d = _paired(v, vals[(dense, metric, s)], seed)
            if d is not None:
                row.update(d_dense=d.value, d_dense_low=d.low, d_dense_high=d.high)
        e = entries[name]
        if e.method != "dense" and e.method not in base:
            rivals = [(n, vals[(n, metric, s)]) for n, o in entries.items()
                      if o.method in base and o.ratio == e.ratio and (n, metric, s) in vals]
            if rivals:
                better = max if metric_info(metric).higher_is_better else min
                best, bv = better(rivals, key=lambda nv: nv[1].value)
                d = _paired(v, bv, seed)
                if d is not None:
                    row.update(best_baseline=best, d_best=d.value, d_best_low=d.low,
                               d_best_high=d.high)
        if row:
            out[(name, metric, s)] = row
    return out


def verdict(metric: str, low: float | None, high: float | None) -> str:
    """'better' / 'worse' when the interval of (model - reference) excludes zero, else ''."""
    if low is None or high is None or low <= 0 <= high:
        return ""
    up = low > 0
    return "better" if up == metric_info(metric).higher_is_better else "worse"
