"""The comparison report: long-format rows with retention, 95 % intervals and paired differences
against dense and the best baseline. Its markdown is cusprun.evaluation.markdown; the files
(markdown, JSON, parquet) are written by cusprun.evaluation.report_files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from cusprun.evaluation.config import EvalConfig, EvaluationError, ModelEntry
from cusprun.evaluation.evaluate import ModelResult
from cusprun.evaluation.metrics import metric_info, retention
from cusprun.evaluation.significance import differences, verdict

SCHEMA = pa.schema([
    ("model", pa.string()), ("method", pa.string()), ("ratio", pa.float64()),
    ("metric", pa.string()), ("eval_set", pa.string()), ("value", pa.float64()),
    ("retention", pa.float64()), ("chance", pa.float64()), ("n", pa.int64()),
    ("n_units", pa.int64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("d_dense", pa.float64()), ("d_dense_low", pa.float64()), ("d_dense_high", pa.float64()),
    ("best_baseline", pa.string()), ("d_best", pa.float64()), ("d_best_low", pa.float64()),
    ("d_best_high", pa.float64()),
])


class ReportRow(BaseModel):
    model: str
    method: str
    ratio: float
    metric: str
    eval_set: str
    value: float
    retention: float | None
    """See cusprun.evaluation.metrics.retention; None without a dense model or a defined ratio."""
    chance: float | None = None
    n: int | None = None
    n_units: int | None = None
    """Documents or items behind the interval."""
    ci_low: float | None = None
    ci_high: float | None = None
    """95 % interval of value (Wilson for accuracy, t interval over documents for loss)."""
    d_dense: float | None = None
    d_dense_low: float | None = None
    d_dense_high: float | None = None
    """value - dense on the same documents/items, with its paired 95 % interval (t, jackknife)."""
    best_baseline: str | None = None
    d_best: float | None = None
    d_best_low: float | None = None
    d_best_high: float | None = None
    """value - the best baseline at the same ratio (methods that are not baselines only)."""
    unit_num: list[float] | None = None
    unit_den: list[float] | None = None
    """Per document or item (see MetricValue): report.json keeps them, so models of different
    builds scored on the same documents can be compared pair by pair later."""

    def vs(self, reference: str) -> str:
        """'better', 'worse' or '' (within the interval) against 'dense' or 'best' baseline."""
        return verdict(self.metric, getattr(self, f"d_{reference}_low"),
                       getattr(self, f"d_{reference}_high"))


class ComparisonReport(BaseModel):
    config: EvalConfig
    models: dict[str, ModelEntry]
    dense: str | None
    rows: list[ReportRow]
    files: dict[str, Path] = {}

    def get(self, model: str, metric: str, eval_set: str = "") -> ReportRow:
        metric_info(metric)
        for r in self.rows:
            if r.model == model and r.metric == metric and r.eval_set == eval_set:
                return r
        raise EvaluationError(f"No {metric!r} value for model {model!r}, eval set {eval_set!r}; "
                              f"models: {', '.join(self.models)}.")

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist([r.model_dump(exclude={"unit_num", "unit_den"})
                                     for r in self.rows], schema=SCHEMA)


def build_report(results: list[ModelResult], config: EvalConfig) -> ComparisonReport:
    """Rows for every (model, metric, eval set), with retention relative to the dense model."""
    if not results:
        raise EvaluationError("No models to report; give at least one ModelEntry.")
    dense = [r.name for r in results if r.entry.method == "dense"]
    if len(dense) > 1:
        raise EvaluationError(f"More than one dense model ({', '.join(dense)}); give one.")
    ref = {}
    if dense:
        ref = {(v.metric, v.eval_set): v.value for r in results if r.name == dense[0]
               for v in r.values}
    # dense first, then by method and ratio, so tables and plots read top-down
    results = sorted(results, key=lambda r: (r.entry.method != "dense", r.entry.method,
                                             r.entry.ratio, r.name))
    diffs = differences(results, dense[0] if dense else None)
    rows = []
    for res in results:
        for v in res.values:
            d = ref.get((v.metric, v.eval_set))
            ret = None if d is None else retention(v.metric, v.value, d)
            rows.append(ReportRow(model=res.name, method=res.entry.method, ratio=res.entry.ratio,
                                  metric=v.metric, eval_set=v.eval_set, value=v.value,
                                  retention=None if ret is None or math.isnan(ret) else ret,
                                  chance=v.chance, n=v.n, n_units=v.n_units, ci_low=v.ci_low,
                                  ci_high=v.ci_high, unit_num=v.unit_num, unit_den=v.unit_den,
                                  **diffs.get((res.name, v.metric, v.eval_set), {})))
    return ComparisonReport(config=config, models={r.name: r.entry for r in results},
                            dense=dense[0] if dense else None, rows=rows)


def read_report(path: str | Path) -> ComparisonReport:
    """The report a build wrote as report.json (write_report), e.g. to render it again; a value
    written as null (non-finite, see _finite) reads back as NaN."""
    payload = json.loads(Path(path).read_text())
    for row in payload.get("rows", []):
        if row.get("value") is None:
            row["value"] = math.nan
    payload.pop("metrics", None)
    try:
        return ComparisonReport.model_validate(payload)
    except ValueError as e:
        raise EvaluationError(f"{path} is not a comparison report written by cusprun "
                              f"(cusprun.evaluation.write_report): {e}") from e
