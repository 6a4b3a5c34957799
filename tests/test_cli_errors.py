"""How the CLI reports errors: a user error found inside the Prefect flow is still one line with
no traceback on the console; --debug shows the traceback; a bug keeps its traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cusprun.cli import main

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["prefect_server"]


@pytest.mark.prefect
def test_user_error_inside_the_flow_prints_no_traceback(prefect_api, tmp_path):
    """The corpus file exists (the input checks pass) but holds one document: the prepare-corpus
    task fails inside Prefect, whose console log would show the traceback. A real `cusprun build`
    process, reporting to the session's Prefect server."""
    from cusprun.testing import make_tiny_model

    _, model = make_tiny_model("LlamaForCausalLM", tmp_path / "tiny")
    (tmp_path / "few.txt").write_text("Aspirin is an anti-inflammatory drug.\n")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "few-docs", "base_model": str(model), "task": None, "general": None,
        "language": {"value": "en", "max_docs": 8},
        "domain": {"value": "health", "sources": ["few.txt"], "max_docs": 8},
        "baselines": [], "evaluation": {"enabled": False}, "storage_root": "artifacts"}))
    env = {**prefect_api.env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "CUSPRUN_CACHE": os.environ.get("CUSPRUN_CACHE", str(Path.home() / ".cache/cusprun"))}
    proc = subprocess.run([str(Path(sys.executable).with_name("cusprun")), "build", "--spec",
                           "spec.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: Corpus 'few.txt' has too few documents: 1 usable")
    assert "ERROR prefect.task_runs" in proc.stderr   # Prefect's log lines stay, without tracebacks


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
