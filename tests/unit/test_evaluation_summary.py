"""The compact summary (the Prefect UI artifact): five narrow columns per expert, the numbers of
the full report, and report.json read back for rendering elsewhere."""
from __future__ import annotations

import json
import math
import re

import pytest
from tests.support.report_helpers import LOSS_SETS, MODELS, synthetic_report

from cusprun.evaluation import EvaluationError, write_report
from cusprun.evaluation.markdown import summary_markdown, to_markdown
from cusprun.evaluation.report import read_report


def _tables(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("|")]


def test_summary_is_five_columns_and_narrower_than_the_full_report():
    report = synthetic_report()
    md = summary_markdown(report)
    rows = _tables(md)
    assert rows and all(len(r) == 5 for r in rows)
    assert rows[0] == ["set", "dense", "`cusprun@0.25`", "best baseline", "kept"]
    # every model name sits in a code span: a bare "x@0.25" renders as a mailto link in the UI
    assert not re.search(r"(?<!`)\b[\w.-]+@\d", md.replace("`cusprun@0.25`", "").replace("`wanda-sp@0.25`", ""))
    assert [r[0] for r in rows[2:]] == [*LOSS_SETS, "definition QA (acc.)"]
    widest = max(len(line) for line in md.splitlines())
    assert widest <= 120
    full = to_markdown(report)
    assert widest < max(len(line) for line in full.splitlines() if line.startswith("|"))


def test_summary_numbers_are_the_reports():
    report = synthetic_report()
    md = summary_markdown(report)
    for s in LOSS_SETS:
        row = report.get("cusprun@0.25", "loss", s)
        assert row.best_baseline == "wanda-sp@0.25"  # the lowest loss of the baselines at 0.25
        best, dense = report.get(row.best_baseline, "loss", s), report.get("dense", "loss", s)
        line = next(r for r in _tables(md) if r[0] == s)
        assert line[1] == f"{dense.value:.4f}"
        assert line[2].startswith(f"{row.value:.4f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
        assert "▲b" in line[2] and "▼d" in line[2]  # better than the baseline, worse than dense
        assert line[3] == f"`wanda-sp` {best.value:.4f}"
        assert line[4] == f"{100 * row.retention:.0f} / {100 * best.retention:.0f}%"
    params = report.get("cusprun@0.25", "params_total")
    assert f"({100 * params.retention:.1f}% of dense)" in md and "prefill 1.25x dense" in md


def test_long_names_are_shortened_and_missing_baselines_shown_as_dashes():
    name = "cusprun-expert-with-a-very-long-name@0.25"
    models = {"dense": MODELS["dense"], name: MODELS["cusprun@0.25"]}
    md = summary_markdown(synthetic_report(models), full_tables=None)
    rows = _tables(md)
    assert all(len(r) == 5 for r in rows) and max(len(line) for line in md.splitlines()) <= 120
    assert rows[0][2] == f"`{name[:23]}…`"
    assert all(r[3] == "–" for r in rows[2:]) and "report.md" not in md


def test_report_json_reads_back_with_nan_values(tmp_path):
    report = synthetic_report()
    bad = report.rows[0].model_copy(update={"value": math.nan})
    report = report.model_copy(update={"rows": [bad, *report.rows[1:]]})
    files = write_report(report, tmp_path)
    assert json.loads(files["json"].read_text())["rows"][0]["value"] is None
    back = read_report(files["json"])
    assert math.isnan(back.rows[0].value) and back.rows[1:] == report.rows[1:]
    assert back.models == report.models and back.dense == "dense"


def test_read_report_refuses_a_file_that_is_not_a_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"rows": [{"model": "x"}]}))
    with pytest.raises(EvaluationError, match="not a comparison report"):
        read_report(path)
