"""The benchmarks: one harness, run as modules from the repository root.

    python -m benchmarks list                  # every benchmark: name, cost, what it writes
    python -m benchmarks run NAME [ARGS...]    # one of them by name (ARGS go to it)
    python -m benchmarks cheap                 # all the cheap ones (`make bench`)
    python -m benchmarks.render_results        # docs/results.md from benchmarks/results/ (`make results`)

benchmarks/registry.py declares each benchmark; each is also a module of its own
(`python -m benchmarks.bench_stats ...`). Shared pieces: results_io (the JSON each writes),
machine (this machine and its processes: every reader of /proc), build_runner (the one way a
benchmark runs a `cusprun build`), scale/ (the scale benchmark's checkpoint, workload, monitor
and verification)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: where `python -m benchmarks...` runs from."""


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs `module` (`benchmarks.x`) with this Python: what a benchmark
    starts in a subprocess of its own, with `python_env` (so any working directory works)."""
    return [sys.executable, "-m", module, *args]


def python_env(env: dict | None = None) -> dict:
    """`env` (default: this process's environment) with the repository root first on
    PYTHONPATH, so a subprocess imports `benchmarks` (and `tests.support`, cusprun) from this
    checkout whatever its working directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env
