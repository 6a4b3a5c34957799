"""benchmarks/ is one harness: every module there that runs on its own is in the registry
(benchmarks/registry.py), every registry entry's module imports and has a main, nothing in
benchmarks/ (or in the tests that use it) patches sys.path, and the runner lists them."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import python_env
from benchmarks.registry import BENCHMARKS, BY_NAME, COSTS, TOOLS
from tests.support.paths import REPO

BENCH = REPO / "benchmarks"
MAIN_GUARD = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.M)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def test_every_runnable_module_is_in_the_registry():
    runnable = {_module(p) for p in BENCH.rglob("*.py")
                if p.name != "__main__.py" and MAIN_GUARD.search(p.read_text())}
    registered = {e.module for e in BY_NAME.values()}
    assert runnable - registered == set(), "add these to benchmarks/registry.py"
    assert registered - runnable == set(), "registered, but no such runnable module"


def test_registry_entries_are_well_formed():
    names = [e.name for e in (*BENCHMARKS, *TOOLS)]
    assert len(names) == len(set(names)) == len(BY_NAME)
    assert {e.cost for e in BENCHMARKS} <= set(COSTS) and {e.cost for e in TOOLS} == {"tool"}
    assert any(e.cost == "cheap" for e in BENCHMARKS)
    for e in BENCHMARKS:
        assert e.writes and e.about, e.name
        assert all(w.startswith("benchmarks/results/") and w.endswith(".json") for w in e.writes), e


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_entry_imports_and_has_a_main(name):
    module = importlib.import_module(BY_NAME[name].module)
    assert callable(getattr(module, "main", None)), f"{BY_NAME[name].module} has no main()"


def test_nothing_patches_sys_path_to_reach_the_benchmarks():
    needles = ("sys.path." + "insert", "sys.path." + "append")   # not found in this file itself
    files = [*BENCH.rglob("*.py"), *BENCH.rglob("*.sh"), *(REPO / "tests").rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in files if any(n in p.read_text() for n in needles)]
    assert offenders == []


def _runner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=120)


def test_the_runner_lists_every_benchmark_with_its_cost_and_files():
    out = _runner("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for e in (*BENCHMARKS, *TOOLS):
        line = next((ln for ln in lines if ln.split()[:2] == [e.name, e.cost]), None)
        assert line is not None, e.name
        assert e.writes[0].removeprefix("benchmarks/") in line


def test_cheap_runs_every_cheap_benchmark_as_a_module_and_unknown_names_are_refused():
    out = _runner("cheap", "--dry-run")
    assert out.returncode == 0, out.stderr
    expected = [" ".join([f"## {e.name}: python -m {e.module}", *e.args])
                for e in BENCHMARKS if e.cost == "cheap"]
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("## ")] == expected
    bad = _runner("run", "no-such-benchmark")
    assert bad.returncode == 2 and "no benchmark named 'no-such-benchmark'" in bad.stderr
