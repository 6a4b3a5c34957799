"""docs/results.md (and the README's results block) are rendered from benchmarks/results/*.json:
the committed page is what the committed data renders, and each kind of result file renders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.render_results as rr
from benchmarks import results_io
from tests.support.paths import REPO
from tests.support.report_helpers import synthetic_report


def test_committed_results_page_is_what_the_committed_data_renders():
    assert (REPO / "docs" / "results.md").read_text() == rr.render_doc(rr.RESULTS), \
        "docs/results.md is stale: run `make results`"
    readme = (REPO / "README.md").read_text()
    filled = rr.fill_readme(readme, rr.render_readme_block(rr.RESULTS))
    assert filled is None or filled == readme, "README results block is stale: run `make results`"


def test_the_quick_demo_compares_with_the_strongest_baseline_of_the_recorded_full_demo():
    """demo_baseline.json (what `make demo` compares with) is what the committed full comparison
    ranks, and that ranking is the highest mean retention of the record's baselines."""
    from cusprun.pipeline.demo import BASELINE_FILE, FULL_RECORD, demo_spec

    pick = rr.demo_baseline(rr.RESULTS)
    assert pick is not None, f"no recorded full demo comparison (benchmarks/results/{FULL_RECORD})"
    assert BASELINE_FILE.read_text() == pick, "demo_baseline.json is stale: run `make results`"
    data = json.loads(pick)
    assert data["baseline"] == max(data["mean_retention"], key=data["mean_retention"].get)
    assert {"random", "wanda-sp"} <= set(data["mean_retention"])
    assert demo_spec()["baselines"] == [data["baseline"]]


def test_strongest_baseline_ranks_by_mean_retention_over_the_experts_own_sets():
    from cusprun.evaluation.ranking import strongest_baseline

    def row(method, s, retention, ratio=0.25):
        return {"model": f"{method}@{ratio}", "method": method, "ratio": ratio, "metric": "loss",
                "eval_set": s, "retention": retention}

    rows = [row("cusprun", s, 0.9) for s in ("domain=health", "language=en", "language=de")]
    rows += [row("flap", "domain=health", 0.5), row("flap", "language=en", 0.9),
             row("flap", "language=de", 0.99),                # another language does not count
             row("random", "domain=health", 0.6), row("random", "language=en", 0.7),
             row("random", "language=de", 0.1),
             row("magnitude", "domain=health", 0.99)]          # not measured on every set
    pick = strongest_baseline({"rows": rows}, own_language="en")
    assert pick["sets"] == ["domain=health", "language=en"]
    assert pick["mean_retention"] == {"flap": 0.7, "random": 0.65} and pick["baseline"] == "flap"
    assert pick["expert_mean_retention"] == 0.9


def test_every_committed_result_records_commit_date_and_machine():
    found = sorted(rr.RESULTS.glob("*.json"))
    assert found, "no committed benchmark results"
    for path in found:
        data = json.loads(path.read_text())
        assert len(data["commit"]) == 40 and isinstance(data["dirty"], bool), path
        assert data["date"].endswith("+00:00") and data["machine"]["cores"] >= 1, path
        assert data["machine"]["torch"] and "load_avg_1m" in data["machine"], path
        # printed output (results_io) or, for the scale benchmark, its runs
        assert any("table" in b for b in data.get("output", [])) or data.get("runs"), path


def _benchmark(tmp_path, monkeypatch, capsys) -> tuple[Path, str]:
    """A result written by the real results_io path, and what it printed."""
    monkeypatch.setenv("CUSPRUN_RESULTS_DIR", str(tmp_path))
    res = results_io.Result("bench_x", "A made-up benchmark", {"tokens": 64, "model": None})
    res.say("model: tiny; 64 tokens")
    res.table(["mode", "seconds", "ratio"], [["plain", "1.00", "1.000"], ["stats", "1.10", "1.100"]])
    res.say("PASS: x1.100")
    res.headline = "stats pass x1.100 of plain"
    res.values = {"ratio": 1.1, "bad": float("nan")}
    path = res.write()
    return path, capsys.readouterr().out


def test_benchmark_result_renders_the_printed_lines_with_provenance(tmp_path, monkeypatch, capsys):
    path, printed = _benchmark(tmp_path, monkeypatch, capsys)
    data = json.loads(path.read_text())
    assert data["values"] == {"ratio": 1.1, "bad": None}  # strict JSON: NaN written as null
    assert data["benchmark"] == "bench_x" and data["machine"]["cores"] >= 1
    doc = rr.render_doc(tmp_path)
    for line in printed.strip().splitlines():  # every printed line, tables included, verbatim
        assert line in doc
    assert "## A made-up benchmark" in doc and "`benchmarks/results/bench_x.json`" in doc
    assert f"Measured at commit `{data['commit'][:10]}`" in doc and "Machine: " in doc
    assert "Settings: tokens=64." in doc  # unset settings left out
    block = rr.render_readme_block(tmp_path)
    assert "- stats pass x1.100 of plain (`bench_x.json`)" in block and "docs/results.md" in block


def test_scale_runs_table_from_partial_records(tmp_path):
    """Runs written by other versions (fields missing, machine as text) still render."""
    (tmp_path / "scale.json").write_text(json.dumps({
        "commit": "a" * 40, "machine": "H200, 16 cores",
        "runs": [{"layers": 30, "hidden": 576, "ffn": 1536, "peak_rss_gb": 1.234, "wall_s": 321.5,
                  "completed": True, "stock_load_ok": True, "params": 134515008},
                 {"layers": 80, "hidden": 8192, "ffn": 28672, "peak_rss_gb": 40.5, "wall_s": 4000.0,
                  "completed": False, "stock_load_ok": None, "error": "over the RSS limit"}]}))
    doc = rr.render_doc(tmp_path)
    assert "| " + " | ".join(rr.SCALE_COLUMNS) + " |" in doc
    assert "| 30 | 576 | 1536 | – | yes | yes | – | 1.23 | 322 | – | – | – |" in doc
    assert "| 80 | 8192 | 28672 | – | no | – | – | 40.50 | 4,000 | – | – | over the RSS limit |" in doc
    assert "Default build of a random 30-layer model at hidden 576, FFN 1536 on H200, 16 cores" in doc
    assert "Machine: H200, 16 cores." in doc and "`aaaaaaaaaa`" in doc


def test_expert_report_renders_the_compact_comparison(tmp_path):
    from cusprun.evaluation import write_report

    report = synthetic_report()
    folder = tmp_path / "demo-expert"
    write_report(report, folder)  # report.json exactly as a build writes it
    (folder / "build.json").write_text(json.dumps({"build_s": 231.4, "commit": "b" * 40}))
    doc = rr.render_doc(tmp_path)
    assert "## Expert `demo-expert`" in doc and "Expert built in 231 s at commit `bbbbbbbbbb`." in doc
    row = report.get("cusprun@0.25", "loss", "domain=health")
    best = report.get(row.best_baseline, "loss", "domain=health")
    line = next(ln for ln in doc.splitlines() if ln.startswith("| domain=health |"))
    assert f"{100 * row.retention:.0f} / {100 * best.retention:.0f}%" in line
    assert f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" in line and f"`{report.models[row.best_baseline].method}`" in line
    # the README block carries the same table
    assert line in rr.render_readme_block(tmp_path)


def test_unknown_files_render_as_key_value_tables(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps({"a": {"b": 1.5, "c": [1, 2]}, "d": "x|y"}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.json").write_text("[1, 2, 3]")
    doc = rr.render_doc(tmp_path)
    assert "| a.b | 1.50 |" in doc and "| a.c | [1, 2] |" in doc and "| d | x\\|y |" in doc
    assert "## sub/list.json" in doc and "| value | [1, 2, 3] |" in doc


def test_readme_filled_between_markers_and_untouched_without(tmp_path, monkeypatch, capsys):
    _benchmark(tmp_path / "results", monkeypatch, capsys)
    doc, readme = tmp_path / "results.md", tmp_path / "README.md"
    plain = "# Project\n\nNo markers here.\n"
    readme.write_text(plain)
    argv = ["--results", str(tmp_path / "results"), "--doc", str(doc), "--readme", str(readme)]
    assert rr.main(argv + ["--check"]) == 1  # no results.md yet
    assert rr.main(argv) == 0 and readme.read_text() == plain
    assert doc.read_text() == rr.render_doc(tmp_path / "results") and rr.main(argv + ["--check"]) == 0

    readme.write_text(f"# Project\n\n{rr.START}\nold numbers\n{rr.END}\n\nMore.\n")
    assert rr.main(argv + ["--check"]) == 1
    assert rr.main(argv) == 0
    text = readme.read_text()
    assert "old numbers" not in text and "stats pass x1.100 of plain" in text
    assert text.startswith(f"# Project\n\n{rr.START}\n") and text.endswith(f"{rr.END}\n\nMore.\n")
    assert rr.main(argv + ["--check"]) == 0


@pytest.mark.parametrize("text", ["no markers", f"{rr.END} before {rr.START}", f"only {rr.START}"])
def test_fill_readme_needs_both_markers_in_order(text):
    assert rr.fill_readme(text, "block") is None
