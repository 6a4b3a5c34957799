"""How the CLI reports errors: a user error found inside the Prefect flow is still one line with
no traceback on the console; --debug shows the traceback; a bug keeps its traceback."""
from __future__ import annotations

import pytest
import yaml

from cusprun.cli import main

pytest_plugins = ["prefect_server"]


@pytest.mark.prefect
def test_user_error_inside_the_flow_prints_no_traceback(prefect_api, tmp_path, monkeypatch, capfd):
    """The corpus file exists (the input checks pass) but holds one document: the prepare-corpus
    task fails inside Prefect, whose console log would show the traceback."""
    from cusprun.testing import make_tiny_model

    _, model = make_tiny_model("LlamaForCausalLM", tmp_path / "tiny")
    (tmp_path / "few.txt").write_text("Aspirin is an anti-inflammatory drug.\n")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "few-docs", "base_model": str(model), "task": None, "general": None,
        "language": {"value": "en", "max_docs": 8},
        "domain": {"value": "health", "sources": ["few.txt"], "max_docs": 8},
        "baselines": [], "evaluation": {"enabled": False}, "storage_root": "artifacts"}))
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert main(["build", "--spec", "spec.yaml"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "error: Corpus 'few.txt' has too few documents: 1 usable")
    assert "prepare-corpus" in err     # Prefect's own log lines are still there, without tracebacks


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
