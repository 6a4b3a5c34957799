"""Which differences between models are beyond noise: every model against dense, and every
method that is not a baseline (Cus-Prun) against the best baseline at the same ratio, on each
loss set and MC task, by a paired t interval over the same documents or items
(cusprun.evaluation.intervals).

Marks are per comparison, at 95 % each, not corrected for multiple comparisons: a report holds
two per loss set and MC task for each expert, and among k comparisons of models that do not
differ about 0.05 k are marked by chance (docs/evaluation.md, "How many marks")."""
from __future__ import annotations

from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.evaluate import MetricValue, ModelResult
from cusprun.evaluation.intervals import paired_difference, samples_of
from cusprun.evaluation.metrics import metric_info

COMPARED = ("loss", "mc_accuracy")


def baseline_methods() -> frozenset[str]:
    from cusprun.baselines import BASELINES

    return frozenset(BASELINES)


def _paired(name: str, a: MetricValue, ref: str, b: MetricValue):
    """The paired difference a - b; None when either value carries no per-unit data (a value
    given by hand). Different unit counts mean the two models were not scored on the same
    documents or items: an error, never a comparison left out."""
    if a.unit_num is None or b.unit_num is None:
        return None
    if len(a.unit_num) != len(b.unit_num):
        unit = "items" if a.metric == "mc_accuracy" else "documents"
        raise EvaluationError(
            f"{a.metric} on {a.eval_set!r}: model {name!r} was scored on {len(a.unit_num)} {unit}, "
            f"{ref!r} on {len(b.unit_num)}; a paired comparison needs the same {unit} for both "
            "(were their values measured on other evaluation inputs?).")
    return paired_difference(samples_of(a.unit_num, a.unit_den), samples_of(b.unit_num, b.unit_den))


def differences(results: list[ModelResult], dense: str | None
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
            d = _paired(name, v, dense, vals[(dense, metric, s)])
            if d is not None:
                row.update(d_dense=d.value, d_dense_low=d.low, d_dense_high=d.high)
        e = entries[name]
        if e.method != "dense" and e.method not in base:
            rivals = [(n, vals[(n, metric, s)]) for n, o in entries.items()
                      if o.method in base and o.ratio == e.ratio and (n, metric, s) in vals]
            if rivals:
                better = max if metric_info(metric).higher_is_better else min
                best, bv = better(rivals, key=lambda nv: nv[1].value)
                d = _paired(name, v, best, bv)
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


def comparisons_per_model(rows) -> int:
    """The most paired comparisons any one model has in a report (rows with d_dense / d_best):
    among k comparisons at 95 % of models that do not differ, about 0.05 k are marked by chance."""
    count: dict[str, int] = {}
    for r in rows:
        count[r.model] = count.get(r.model, 0) + (r.d_dense is not None) + (r.d_best is not None)
    return max(count.values(), default=0)
