"""One call that evaluates dense, Cus-Prun and baseline checkpoints and writes the report."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cusprun.evaluation.config import EvalConfig, EvaluationError, ModelEntry
from cusprun.evaluation.evaluate import MetricValue, ModelResult, evaluate_model, prepare_inputs
from cusprun.evaluation.metrics import metric_info
from cusprun.evaluation.plots import overlap_matrix, plot_overlap, plot_retention, plot_retention_by_set
from cusprun.evaluation.report import ComparisonReport, build_report
from cusprun.evaluation.report_files import write_report

log = logging.getLogger(__name__)


def _entries(models: Mapping[str, ModelEntry | Mapping]) -> dict[str, ModelEntry]:
    if not models:
        raise EvaluationError("compare() needs at least one model: {name: ModelEntry(path, method, "
                              "ratio)}.")
    out = {}
    for name, e in models.items():
        e = e if isinstance(e, ModelEntry) else ModelEntry(**e)
        if not Path(e.path).exists():
            raise EvaluationError(f"Model {name!r}: path {str(e.path)!r} does not exist.")
        out[name] = e
    dense = [n for n, e in out.items() if e.method == "dense"]
    if len(dense) > 1:
        raise EvaluationError(f"More than one dense model ({', '.join(dense)}); give one.")
    return out


def _overlap(overlap: Mapping | None) -> dict[tuple[str, str], float] | None:
    """Accept {dimension: kept unit ids} or a precomputed {(a, b): overlap}."""
    if not overlap:
        return None
    if all(isinstance(k, tuple) and len(k) == 2 for k in overlap):
        return {k: float(v) for k, v in overlap.items()}
    if all(isinstance(k, str) and isinstance(v, Iterable) for k, v in overlap.items()):
        return overlap_matrix(overlap)
    raise EvaluationError("overlap must be {dimension: set of kept unit ids} or "
                          "{(dimension_a, dimension_b): float}.")


def _evaluate(name: str, entry: ModelEntry, loss_sets, mc, config: EvalConfig,
              known: Sequence[MetricValue]) -> ModelResult:
    have = {metric_info(v.metric).family for v in known}
    missing = [f for f in config.metrics if f not in have]
    values = list(known)
    if missing:
        values += evaluate_model(name, entry, loss_sets, mc,
                                 config.model_copy(update={"metrics": missing})).values
    return ModelResult(name=name, entry=entry, values=values)


def check_known(known: Mapping[str, Sequence[MetricValue]], loss_sets: Mapping[str, list],
                mc: Mapping[str, list]) -> None:
    """Values measured before must cover the same documents and items as this comparison: a
    paired difference against them is refused later anyway (cusprun.evaluation.significance),
    so say it before any model is evaluated, not after all of them."""
    for name, values in known.items():
        for v in values:
            units = (mc if v.metric == "mc_accuracy" else loss_sets).get(v.eval_set)
            if units is not None and v.n_units is not None and v.n_units != len(units):
                raise EvaluationError(
                    f"Known {v.metric} of model {name!r} on {v.eval_set!r} covers {v.n_units} "
                    f"units, but this comparison has {len(units)}: it was measured on other "
                    "evaluation inputs; measure it again.")


def eval_workers(config: EvalConfig, entries: Mapping[str, ModelEntry]) -> int:
    """Models measured at once: 'auto' is two on a CPU with 2+ cores when the two largest fit in
    a quarter of free memory and are held whole (cusprun.evaluation.replicas: one forward leaves
    two cores idle part of the time); one on GPUs or for streamed models."""
    from cusprun.engine import model_bytes
    from cusprun.evaluation.replicas import AUTO_WORKERS, MEMORY_SHARE
    from cusprun.system import available_memory, cpu_cores

    if config.workers != "auto":
        return int(config.workers)
    if config.resolved_device() != "cpu" or cpu_cores() < 2 or config.streaming == "always":
        return 1
    sizes = sorted((model_bytes(e.path, config.resolved_dtype()) for e in entries.values()),
                   reverse=True)
    free = available_memory()
    return AUTO_WORKERS if free is not None and sum(sizes[:AUTO_WORKERS]) <= MEMORY_SHARE * free else 1


def _evaluate_all(entries, loss_sets, mc, config: EvalConfig, known) -> list[ModelResult]:
    """Every model, `eval_workers` at a time; speed afterwards one model at a time (a timing
    beside another running model would be no timing)."""
    from cusprun.evaluation.replicas import run_jobs

    n = min(eval_workers(config, entries), len(entries))
    items = list(entries.items())
    if n <= 1:
        return [_evaluate(name, e, loss_sets, mc, config, known.get(name, ()))
                for name, e in tqdm(items, desc="models", disable=not config.progress)]
    log.info("evaluating %d models, %d at a time (speed afterwards, one at a time)", len(items), n)
    quiet = config.model_copy(update={"metrics": [m for m in config.metrics if m != "speed"]})
    first = run_jobs([None] * n, items, lambda _, it: _evaluate(
        it[0], it[1], loss_sets, mc, quiet, known.get(it[0], ())), desc="models",
        progress=config.progress)
    if "speed" not in config.metrics:
        return first
    return [_evaluate(r.name, r.entry, loss_sets, mc, config, r.values) for r in first]


def compare(models: Mapping[str, ModelEntry | Mapping], eval_sets: Mapping[str, Sequence[Any]] | None,
            mc_tasks: Mapping[str, Sequence[Any]] | None, out_dir: str | Path, *,
            config: EvalConfig | None = None, overlap: Mapping | None = None,
            known: Mapping[str, Sequence[MetricValue]] | None = None) -> ComparisonReport:
    """Evaluate every model (one at a time) and write report.md, report.json, report.parquet and
    PNG plots to out_dir. All inputs are validated before the first model is loaded. `known`:
    model name -> values measured before on the same inputs (e.g. dense, cached across builds);
    only the metric families they lack are measured."""
    config = config or EvalConfig()
    entries = _entries(models)
    loss_sets, mc = prepare_inputs(eval_sets, mc_tasks, config)
    check_known(known or {}, loss_sets, mc)
    if config.streaming == "auto":     # one way for every model, decided by the largest
        from cusprun.engine import decide, model_bytes

        biggest = max(entries.values(), key=lambda e: model_bytes(e.path, config.resolved_dtype()))
        stream = decide(biggest.path, config.resolved_device(), config.resolved_dtype())
        config = config.model_copy(update={"streaming": "always" if stream else "never"})
    pairs = _overlap(overlap)
    jaccard = bool(overlap) and not all(isinstance(k, tuple) for k in overlap)
    results = _evaluate_all(entries, loss_sets, mc, config, known or {})
    report = build_report(results, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.model_dump() for r in report.rows]
    images: dict[str, Path] = {}
    for title, path in (("Retention vs pruning ratio",
                         plot_retention(rows, out / "retention_vs_ratio.png")),
                        ("Retention per eval set",
                         plot_retention_by_set(rows, out / "retention_by_eval_set.png"))):
        if path is not None:
            images[title] = path
    if pairs:
        title = "Overlap of kept units" + (" (Jaccard)" if jaccard else "")
        images[title] = plot_overlap(pairs, out / "overlap.png", title=title)
    files = write_report(report, out, images)
    report.files = {**files, **{p.stem: p for p in images.values()}}
    log.info("report written to %s", out)
    return report
