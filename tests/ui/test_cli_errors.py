"""How the CLI reports errors: a user error found inside the Prefect flow is still one line with
no traceback on the console; --debug shows the traceback; a bug keeps its traceback."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cusprun.cli import main
from tests.support.paths import CUSPRUN, cusprun_env


ENGLISH = "\n\n".join(f"Paragraph {i} of plain English text about the weather and the sea."
                      for i in range(40))   # one document per paragraph


def _write_failing_spec(tmp_path: Path, tiny_model: str) -> None:
    """spec.yaml whose domain corpus file exists (the input checks pass) but holds one document."""
    (tmp_path / "few.txt").write_text("Aspirin is an anti-inflammatory drug.\n")
    (tmp_path / "english.txt").write_text(ENGLISH)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({   # local corpora only: no data package
        "name": "few-docs", "base_model": tiny_model, "task": None, "general": None,
        "language": {"value": "en", "sources": ["english.txt"], "max_docs": 8},
        "domain": {"value": "health", "sources": ["few.txt"], "max_docs": 8},
        "baselines": [], "evaluation": {"enabled": False}, "storage_root": "artifacts"}))


@pytest.mark.prefect
def test_user_error_inside_the_flow_prints_no_traceback(prefect_api, tiny_model, tmp_path):
    """The corpus file exists (the input checks pass) but holds one document: the corpus
    task fails inside Prefect, whose console log would show the traceback. A real `cusprun build`
    process, reporting to the session's Prefect server."""
    _write_failing_spec(tmp_path, tiny_model)
    proc = subprocess.run([CUSPRUN, "build", "--spec", "spec.yaml"], cwd=tmp_path,
                          env=cusprun_env(prefect_api.env), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: Corpus 'few.txt' has too few documents: 1 usable")
    assert "ERROR prefect.task_runs" in proc.stderr   # Prefect's log lines stay, without tracebacks


@pytest.mark.prefect
def test_failed_build_on_the_temporary_server_ends_with_its_error(tiny_model, tmp_path):
    """Without PREFECT_API_URL the build runs on a temporary Prefect server, which used to be
    stopped at exit, after the error line, printing its own shutdown (tracebacks of cancelled
    database writes when busy). The error must be the last output, with no traceback after it,
    and the server's output must be in its log file instead."""
    _write_failing_spec(tmp_path, tiny_model)
    cache = tmp_path / "cache"
    env = cusprun_env({k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                      PREFECT_HOME=str(tmp_path / "prefect-home"), CUSPRUN_CACHE=str(cache))
    proc = subprocess.run([CUSPRUN, "build", "--spec", "spec.yaml"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert errors == [len(lines) - 1], proc.stdout[-3000:]
    assert lines[-1].startswith("error: Corpus 'few.txt' has too few documents: 1 usable")
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert "temporary Prefect server on http://127.0.0.1:" in proc.stdout
    server_log = (cache / "prefect-server.log").read_text()
    assert "Stopping temporary server" in server_log


def test_debug_shows_the_traceback_of_a_user_error(capsys):
    assert main(["--debug", "build", "--ratio", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "SpecError" in err
    assert err.strip().splitlines()[-1].startswith("error: Invalid expert spec: target_ratios")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import cusprun.cli.models as models

    def broken(_args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(models, "_resolve", broken)
    with pytest.raises(ZeroDivisionError):   # not turned into a one-line "error:"
        main(["model", "resolve", "smollm2-135m"])
