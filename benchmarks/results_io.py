"""What every benchmark writes next to what it prints: benchmarks/results/<name>.json with the
commit, date and machine of the run and the same tables and lines the script prints, so
docs/results.md is rendered from data (benchmarks.render_results) and never typed by hand.

A script builds a `Result`, prints through it (`say`, `table`) and calls `write()` at the end.
CUSPRUN_RESULTS_DIR sends the file elsewhere (a run with other settings than the defaults the
committed results use, or a test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import ROOT
from benchmarks.machine import describe

RESULTS = ROOT / "benchmarks" / "results"


def results_dir() -> Path:
    return Path(os.environ.get("CUSPRUN_RESULTS_DIR") or RESULTS)


def git_state(root: Path = ROOT) -> dict:
    """{'commit': HEAD, 'dirty': uncommitted changes to tracked files}; commit None outside git.
    Untracked files do not count: the results file being written is one."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _command() -> str:
    """How the benchmark was run, as a command to run it again from the repository root:
    `python -m benchmarks.x ARGS` for a module (however it was started: by `python -m`, or by
    name through `python -m benchmarks run`), else the script's path relative to the repository
    (no home directories in results)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and (spec.name or "").startswith("benchmarks."):
        return " ".join(["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else Path(script.name)
    return " ".join(["python", str(shown), *sys.argv[1:]])


def _finite(obj):
    """Strict JSON: a non-finite number (a failed measurement) is written as null."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def md_table(columns: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A markdown table; align per column: 'l' or 'r' (default: left for the first, right else)."""
    align = align or ["l"] + ["r"] * (len(columns) - 1)
    sep = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(str(c) for c in r) + " |" for r in [columns, *rows]]
    return "\n".join([lines[0], sep, *lines[1:]])


class Result:
    """Prints a benchmark's output and records it in the same order; write() saves the JSON.

    `values`: the raw measured numbers (unrounded), for anyone reading the JSON by machine."""

    def __init__(self, name: str, title: str, settings: dict | None = None) -> None:
        self.name, self.title = name, title
        self.settings = dict(settings or {})
        self.blocks: list[dict] = []
        self.values: dict = {}
        self.headline: str | None = None

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        if text.strip():
            self.blocks.append({"text": text.strip("\n")})

    def table(self, columns: list[str], rows: list[list], align: list[str] | None = None,
              title: str | None = None) -> None:
        rows = [[str(c) for c in r] for r in rows]
        if title:
            self.say(title)
        print(md_table(columns, rows, align), flush=True)
        self.blocks.append({"table": {"columns": list(columns), "rows": rows,
                                      "align": align or ["l"] + ["r"] * (len(columns) - 1)}})

    def payload(self) -> dict:
        return {"benchmark": self.name, "title": self.title, **git_state(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": describe(), "command": _command(),
                "settings": self.settings, "headline": self.headline, "output": self.blocks,
                "values": self.values}

    def write(self, name: str | None = None) -> Path:
        path = results_dir() / f"{name or self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(self.payload()), indent=1, allow_nan=False) + "\n")
        print(f"\nresults: {path}", file=sys.stderr)
        return path
