"""Test order must not decide outcomes: a `capsys` test that imports Prefect first used to bind
Prefect's console handler to its captured stream, and later tests then logged into a closed
file ('--- Logging error ---' in their output)."""
from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO


def test_cli_then_bad_inputs_in_that_order_pass():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "tests/ui/test_cli.py", "tests/ui/test_bad_inputs.py"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Logging error" not in run.stdout + run.stderr
