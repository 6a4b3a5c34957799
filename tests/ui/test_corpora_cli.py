"""`cusprun corpora list | prepare | show` through the real CLI entry point."""
from __future__ import annotations

import json
import re

import pytest

from cusprun.cli import main
from cusprun.corpora import corpus_info, list_bundled


@pytest.mark.integration
def test_list_prints_every_bundled_corpus_with_counts(capsys):
    assert main(["corpora", "list", "--width", "200"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.match(r"dimension\s+value\s+docs\s+description", lines[0])
    table = {tuple(line.split()[:3]) for line in lines[1:]}
    for c in list_bundled():
        assert (c.dimension, c.value, str(c.n_docs)) in table
    assert ("domain", "health", "1358") in table and ("task", "code-completion", "164") in table
    assert ("language", "sw") in {t[:2] for t in table}


@pytest.mark.integration
def test_list_json_and_dimension_filter(capsys):
    assert main(["corpora", "list", "--dimension", "general", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["value"], r["uri"]) for r in rows] == [
        ("en", "bundled://general/en"), ("fr", "bundled://general/fr"),
        ("es", "bundled://general/es")]
    assert all(r["n_docs"] > 6000 for r in rows)


def test_list_help_explains_sources(capsys):
    with pytest.raises(SystemExit) as e:
        main(["corpora", "list", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: cusprun corpora list" in out
    assert "bundled://task/qa?lang=en&domain=health" in out and "held out" in out


@pytest.mark.integration
def test_prepare_then_show(tmp_path, capsys):
    assert main(["corpora", "prepare", "bundled://task/qa?domain=health", "--out",
                 str(tmp_path), "--max-docs", "5", "--max-eval-docs", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n_calib"], summary["n_eval"], summary["dimension"]) == (5, 2, "task")
    assert corpus_info(summary["path"], verify=True).hash == summary["hash"]
    assert main(["corpora", "show", summary["path"], "--split", "eval", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"5 calib + 2 eval, hash {summary['hash'][:16]}" in out
    assert "[eval]" in out and "Question: What is" in out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["corpora", "prepare", "bundled://language/xx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Bundled language 'xx' is not available") and "zh" in err
    assert main(["corpora", "prepare", "bundled://language/de", "--max-docs", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: Invalid corpus options: Input should be")
    assert main(["corpora", "show", str(tmp_path / "missing.parquet")]) == 2
    assert "not found" in capsys.readouterr().err
