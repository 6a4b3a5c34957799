"""The one way a benchmark runs a `cusprun build`: the build a user runs (cusprun.cli), either in
the benchmark's own process or in a process of its own that measures itself.

- `build_in_process(spec)`: cusprun.cli.pipeline.run_build in this process, against a temporary
  Prefect server, as `cusprun build` does; returns the build's own wall time and stage timings
  and its report (record_build);
- `build_process(spec, work, name)`: the measured command line below in a subprocess; returns
  its wall time seen from outside, the report directory it printed, and what the process itself
  used (bench_quality_overhead, bench_sweep_precision); with `monitor=` it is also watched while
  it runs (benchmarks.scale.monitor: stage times from its log, RSS sampled every second, free
  disk, a timeout and an RSS limit), as bench_scale runs it.

The measured command line runs `cusprun` in this process and, as it ends, records what the
process itself used: peak RSS (VmHWM), bytes it read from storage (/proc/self/io read_bytes),
CPU time:

    python -m benchmarks.build_runner RESULT.json build --spec spec.yaml

Same entry point as the `cusprun` console script (cusprun.cli.main), so the build is the one a
user runs; the numbers are this process's own, not those of the temporary Prefect server the CLI
starts as a child (a child's reads are added to /proc/self/io only once the CLI has reaped it).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ROOT, module_command, python_env
from benchmarks.machine import process_usage


@dataclass
class InProcessBuild:
    """A build run in this process: run_build's result (wall_s, timings, report, ...), the
    report.json bytes and the ratio sweep's sweep.json bytes (None where it ran none)."""

    result: dict
    report: bytes
    sweep: bytes | None


def build_in_process(spec) -> InProcessBuild:
    """Run the build of `spec` (a cusprun.pipeline.spec.ExpertSpec) in this process, as `cusprun
    build` does, and read its report files back from its artifact store."""
    from cusprun.cli.pipeline import run_build
    from cusprun.pipeline.artifacts import read_file
    from cusprun.pipeline.context import open_store
    from cusprun.storage import ArtifactNotFoundError

    result = run_build(spec)
    store = open_store(spec.storage_root)
    key = store.key_of(result["report"])
    report = read_file(store, key, "report.json")
    try:    # the retention-vs-ratio sweep, where the build ran one
        sweep = read_file(store, key, "sweep.json")
    except ArtifactNotFoundError:
        sweep = None
    return InProcessBuild(result, report, sweep)


@dataclass
class BuildProcess:
    """A build run in a process of its own (build_process)."""

    name: str
    rc: int
    wall_s: float          # seen from outside: process start to exit
    output: str            # its stdout and stderr (monitored: the end of its log)
    report: str            # the report directory its `report:` line names ("" when none)
    usage: dict | None     # what the process itself used, as it exited (None if it was killed)
    monitored: dict | None = None   # benchmarks.scale.monitor.run_monitored's measurements

    def check(self) -> BuildProcess:
        """This run, or SystemExit with the end of its output when the build failed."""
        if self.rc != 0:
            sys.stderr.write(self.output[-8000:])
            raise SystemExit(f"{self.name} failed (exit {self.rc})")
        return self


def build_command(usage_path: Path, *cli_args: str) -> list[str]:
    """The measured `cusprun` command line: `cusprun CLI_ARGS...` that writes its own usage to
    usage_path as it exits."""
    return module_command("benchmarks.build_runner", str(usage_path), *cli_args)


def build_process(spec: dict | str, work: Path, name: str, *, env: dict | None = None,
                  cwd: Path = ROOT, monitor: dict | None = None) -> BuildProcess:
    """Write `spec` (a dict, or YAML text) to work/NAME.yaml and run `cusprun build --spec` on it
    in a subprocess (the measured command line, its usage in work/NAME.usage.json), from `cwd`
    with `env` (default: this process's environment). `monitor`: keyword arguments of
    benchmarks.scale.monitor.run_monitored (timeout_s, disk_path, rss_limit, ...): watch the
    build while it runs, its log in work/NAME.log."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    spec_path, usage_path = work / f"{name}.yaml", work / f"{name}.usage.json"
    spec_path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    cmd = build_command(usage_path, "build", "--spec", str(spec_path))
    env = python_env(env)
    if monitor is not None:
        from benchmarks.scale.monitor import run_monitored

        mon = run_monitored(cmd, env=env, cwd=cwd, log_path=work / f"{name}.log",
                            usage_path=usage_path, **monitor)
        output, wall, rc, report = "\n".join(mon["log_tail"]), mon["wall_s"], mon["rc"], ""
    else:
        mon = None
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        wall, rc = time.perf_counter() - t0, out.returncode
        output = out.stdout[-4000:] + out.stderr[-4000:]
        report = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                       if line.startswith("report:")), "")
    usage = json.loads(usage_path.read_text()) if usage_path.exists() else None
    return BuildProcess(name, rc, wall, output, report, usage, mon)


def main() -> int:
    """The measured command line (see the module docstring)."""
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    result, argv = Path(sys.argv[1]), sys.argv[2:]
    t0, rc = time.perf_counter(), 1
    try:
        from cusprun.cli import main as cli

        rc = cli(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        u = process_usage()
        self_ru = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        result.write_text(json.dumps({
            "rc": rc, "pid": os.getpid(), "wall_s": round(time.perf_counter() - t0, 2),
            "peak_rss_bytes": u["vmhwm"], "read_bytes": u["read_bytes"], "rchar": u["rchar"],
            "cpu_s": round(self_ru.ru_utime + self_ru.ru_stime, 2),
            "reaped_children_max_rss_bytes": kids.ru_maxrss * 1024}) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
