"""The benchmarks' runner (benchmarks/registry.py lists them), from the repository root:

    python -m benchmarks list                  # name, cost class, what each writes
    python -m benchmarks run NAME [ARGS...]    # one benchmark (or tool) by name; ARGS go to it
    python -m benchmarks cheap [--dry-run]     # every cheap benchmark, one process each (make bench)

`run NAME ARGS` is `python -m MODULE ARGS` (the entry's default arguments when ARGS is empty),
run in this process; `cheap` runs each in a process of its own and goes on after a failure."""
from __future__ import annotations

import runpy
import shlex
import subprocess
import sys

from benchmarks import ROOT, module_command, python_env
from benchmarks.registry import BENCHMARKS, BY_NAME, TOOLS, Entry, cheap


def _table(entries: tuple[Entry, ...], header: str) -> list[str]:
    rows = [(e.name, e.cost, ", ".join(w.removeprefix("benchmarks/") for w in e.writes), e.about + (f" [default args: "
                                                              f"{' '.join(e.args)}]" if e.args else ""))
            for e in entries]
    cols = [header, "cost", "writes", "what"]
    width = [max(len(r[i]) for r in [cols, *rows]) for i in range(3)]
    fmt = "  ".join(f"{{:{w}}}" for w in width) + "  {}"
    return [fmt.format(*cols), *(fmt.format(*r) for r in rows)]


def list_entries() -> str:
    return "\n".join([*_table(BENCHMARKS, "benchmark"), "", *_table(TOOLS, "tool"), "",
                      "Run one: python -m benchmarks run NAME [ARGS...] (ARGS --help: its options); "
                      "all cheap ones: python -m benchmarks cheap (make bench)."])


def run(name: str, args: list[str]) -> int:
    """Run one entry in this process, as `python -m MODULE ARGS` would."""
    entry = BY_NAME.get(name)
    if entry is None:
        print(f"error: no benchmark named {name!r}; `python -m benchmarks list` shows them: "
              + ", ".join(BY_NAME), file=sys.stderr)
        return 2
    sys.argv = [entry.module, *(args or entry.args)]
    try:
        runpy.run_module(entry.module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0


def run_cheap(dry_run: bool = False) -> int:
    """Every cheap benchmark in a process of its own, one after the other; 1 if any failed."""
    failed = []
    for entry in cheap():
        cmd = module_command(entry.module, *entry.args)
        print(f"## {entry.name}: {shlex.join(['python', *cmd[1:]])}\n", flush=True)
        if dry_run:
            continue
        if subprocess.call(cmd, cwd=ROOT, env=python_env()) != 0:
            failed.append(entry.name)
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    if command == "list" and len(argv) == 1:
        print(list_entries())
        return 0
    if command == "run" and len(argv) >= 2:
        return run(argv[1], argv[2:])
    if command == "cheap" and argv[1:] in ([], ["--dry-run"]):
        return run_cheap(dry_run=argv[1:] == ["--dry-run"])
    asked = argv in (["-h"], ["--help"])
    print(__doc__, file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


if __name__ == "__main__":
    sys.exit(main())
