"""The comparison report on disk: report.md (cusprun.evaluation.markdown), report.json (strict
JSON, with the metric definitions) and report.parquet (the rows, cusprun.evaluation.report.SCHEMA)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq

from cusprun.evaluation.markdown import to_markdown
from cusprun.evaluation.metrics import METRICS
from cusprun.evaluation.report import ComparisonReport


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
