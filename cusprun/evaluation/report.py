"""The comparison report: long-format rows with retention, and its markdown/JSON/parquet files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from cusprun.evaluation.config import EvalConfig, EvaluationError, ModelEntry
from cusprun.evaluation.evaluate import ModelResult
from cusprun.evaluation.metrics import METRICS, metric_info, retention

SCHEMA = pa.schema([
    ("model", pa.string()), ("method", pa.string()), ("ratio", pa.float64()),
    ("metric", pa.string()), ("eval_set", pa.string()), ("value", pa.float64()),
    ("retention", pa.float64()), ("chance", pa.float64()), ("n", pa.int64()),
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
        return pa.Table.from_pylist([r.model_dump() for r in self.rows], schema=SCHEMA)


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
    rows = []
    for res in results:
        for v in res.values:
            d = ref.get((v.metric, v.eval_set))
            ret = None if d is None else retention(v.metric, v.value, d)
            rows.append(ReportRow(model=res.name, method=res.entry.method, ratio=res.entry.ratio,
                                  metric=v.metric, eval_set=v.eval_set, value=v.value,
                                  retention=None if ret is None or math.isnan(ret) else ret,
                                  chance=v.chance, n=v.n))
    return ComparisonReport(config=config, models={r.name: r.entry for r in results},
                            dense=dense[0] if dense else None, rows=rows)


# ---- markdown ----------------------------------------------------------------------------------

def _human(x: float, unit: str = "") -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}{unit}"
    return f"{x:.0f}{unit}"


def _fmt(metric: str, v: float) -> str:
    if metric in ("params_total", "params_non_embedding"):
        return _human(v)
    if metric == "disk_bytes":
        return _human(v, "B")
    if metric in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        return f"{v:.1f}"
    if metric == "perplexity":
        return f"{v:.2f}"
    return f"{v:.4f}" if metric == "loss" else f"{v:.3f}"


def _cell(row: ReportRow | None) -> str:
    if row is None:
        return "–"
    s = _fmt(row.metric, row.value)
    return s if row.retention is None else f"{s} ({100 * row.retention:.1f}%)"


def _table(report: ComparisonReport, columns: list[tuple[str, str, str]]) -> list[str]:
    """columns: (header, metric, eval_set); one row per model."""
    idx = {(r.model, r.metric, r.eval_set): r for r in report.rows}
    head = ["model", "method", "ratio"] + [c[0] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report.models.items():
        cells = [name, e.method, f"{e.ratio:.2f}"]
        cells += [_cell(idx.get((name, m, s))) for _, m, s in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: ComparisonReport, images: dict[str, Path] | None = None) -> str:
    sets = lambda metric: sorted({r.eval_set for r in report.rows if r.metric == metric})  # noqa: E731
    chance = {r.eval_set: r.chance for r in report.rows if r.metric == "mc_accuracy"}
    present = {r.metric for r in report.rows}
    ref = f"the dense model `{report.dense}`" if report.dense else "no dense model (none given)"
    out = ["# Model comparison", "",
           f"Each cell is `value (retention)`; retention is relative to {ref}: value/dense for "
           "accuracy, size and speed; dense/value for loss and perplexity (so below 100% is worse "
           "for quality, smaller for size). See docs/evaluation.md for the exact definitions.", ""]
    size_speed = [(METRICS[m].label, m, "") for m in METRICS
                  if METRICS[m].family in ("size", "speed") and m in present]
    if size_speed:
        out += ["## Size and speed", ""] + _table(report, size_speed) + [""]
    if "loss" in present:
        out += ["## Held-out loss (nats/token, token-weighted; lower is better)", ""]
        out += _table(report, [(s, "loss", s) for s in sets("loss")]) + [""]
        out += ["## Perplexity (exp of the loss)", ""]
        out += _table(report, [(s, "perplexity", s) for s in sets("perplexity")]) + [""]
    if "mc_accuracy" in present:
        out += [f"## Multiple-choice accuracy (log-likelihood, normalised per "
                f"{report.config.mc_normalization}; chance level in the header)", ""]
        out += _table(report, [(f"{s} (chance {chance[s]:.3f})", "mc_accuracy", s)
                               for s in sets("mc_accuracy")]) + [""]
    for title, p in (images or {}).items():
        out += [f"![{title}]({p.name})", ""]
    return "\n".join(out)


def _finite(obj):
    """Strict JSON: non-finite floats (a diverged model's NaN loss) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_report(report: ComparisonReport, out_dir: str | Path,
                 images: dict[str, Path] | None = None) -> dict[str, Path]:
    """report.md, report.json and report.parquet under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "report.md", "json": out / "report.json",
             "parquet": out / "report.parquet"}
    files["markdown"].write_text(to_markdown(report, images) + "\n")
    pq.write_table(report.to_table(), files["parquet"])
    payload = report.model_dump(mode="json", exclude={"files"})
    payload["metrics"] = {k: {"family": v.family, "higher_is_better": v.higher_is_better,
                              "label": v.label} for k, v in METRICS.items()}
    files["json"].write_text(json.dumps(_finite(payload), indent=1, allow_nan=False))
    return files
