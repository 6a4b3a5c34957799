"""The language-specificity table from two recorded reports: retention of each expert on each
language's held-out set, and the paired difference of the two experts on the same documents."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cusprun.evaluation import EvalConfig, MetricValue, ModelEntry, ModelResult, build_report
from cusprun.evaluation.report_files import write_report


def _loss(offset: float, s: str) -> MetricValue:
    den = [float(40 + i) for i in range(20)]
    num = [(2.0 + 0.01 * i + offset) * n for i, n in enumerate(den)]
    return MetricValue(metric="loss", eval_set=s, value=sum(num) / sum(den), n=int(sum(den)),
                       n_units=20, unit_num=num, unit_den=den)


def _report(tmp: Path, own: str, other: str) -> dict:
    """An expert that loses 0.1 nats on its own language and 0.6 on the other."""
    res = [ModelResult(name="dense", entry=ModelEntry(path=Path("/x/d"), method="dense"),
                       values=[_loss(0.0, f"language={own}"), _loss(0.0, f"language={other}")]),
           ModelResult(name="cusprun@0.25", entry=ModelEntry(path=Path("/x/e"), method="cusprun",
                                                             ratio=0.25),
                       values=[_loss(0.1, f"language={own}"), _loss(0.6, f"language={other}")])]
    write_report(build_report(res, EvalConfig(progress=False)), tmp)
    return json.loads((tmp / "report.json").read_text())


def test_each_expert_ahead_on_its_own_language(tmp_path):
    from benchmarks.language_cross import cross_table

    reports = {"fr-x": _report(tmp_path / "fr", "fr", "es"), "es-x": _report(tmp_path / "es", "es", "fr")}
    retention, diffs, raw = cross_table(reports)
    assert retention[0] == ["expert", "language=es", "language=fr"]
    own, other = raw["retention"]["fr-x|language=fr"], raw["retention"]["fr-x|language=es"]
    assert own == pytest.approx(raw["retention"]["es-x|language=es"]) and own > other
    verdicts = {row[0]: row[2] for row in diffs[1:]}
    assert verdicts == {"language=es": "es-x better", "language=fr": "fr-x better"}
    assert raw["difference"]["language=fr"]["diff"] == pytest.approx(-0.5)
