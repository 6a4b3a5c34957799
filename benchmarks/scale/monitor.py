"""Run one build command and watch it: its log (stage times), its memory and disk reads, the
free disk space. Used by bench_scale through benchmarks.build_runner.build_process(monitor=...)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from benchmarks.machine import process_usage as usage

STAGE_LINE = re.compile(r"cusprun\.pipeline: (?P<label>.+?): (?:started|done in (?P<s>[0-9.]+)s)\s*$")
KINDS = [("corpus ", "corpus"), ("statistics + compensation Grams", "stats+grams"),
         ("statistics", "stats"), ("compensation Grams", "grams"), ("plan (", "plan"),
         ("baseline ", "baseline"), ("slice ", "slice"), ("ratio sweep", "sweep"),
         ("evaluate ", "evaluate"), ("publish expert", "publish")]
"""Stage kinds by the start of cusprun.pipeline.context.timed's label (first match wins)."""


def stage_kind(label: str) -> str:
    return next((kind for prefix, kind in KINDS if label.startswith(prefix)), "other")


class _Log:
    """Reads the build's merged stdout/stderr: keeps it in a file, the last lines in memory,
    the stages running now, every finished stage (label, seconds, when it ended, seconds since
    t0) and the process's usage when the first stage started (what imports and the Prefect
    client cost before any model work)."""

    def __init__(self, stream, path: Path, pid: int, t0: float) -> None:
        self.stream, self.path, self.pid, self.t0 = stream, path, pid, t0
        self.tail: deque[str] = deque(maxlen=40)
        self.active: dict[str, int] = {}
        self.stages: list[tuple[str, float, float]] = []
        self.first: dict | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.path, "w") as f:
            for line in self.stream:
                f.write(line)
                self.tail.append(line.rstrip()[:300])
                m = STAGE_LINE.search(line.rstrip())
                if not m:
                    continue
                label, now = m["label"], time.perf_counter() - self.t0
                if self.first is None:
                    self.first = usage(self.pid)
                with self.lock:
                    if m["s"] is None:
                        self.active[label] = self.active.get(label, 0) + 1
                    else:
                        self.stages.append((label, float(m["s"]), now))
                        if self.active.get(label, 0) > 1:
                            self.active[label] -= 1
                        else:
                            self.active.pop(label, None)

    def running(self) -> list[str]:
        with self.lock:
            return sorted(self.active)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _kill(proc: subprocess.Popen) -> None:
    """Stop the build and what it started: its process group (start_new_session made the
    build's pid its id), the temporary Prefect server included."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            proc.poll()                        # reap the build: a zombie still counts as alive
            if not _group_alive(proc.pid):
                return
            time.sleep(0.2)


def run_monitored(cmd: list[str], *, env: dict, cwd: Path, log_path: Path, usage_path: Path,
                  timeout_s: float, disk_path: str | Path, rss_limit: int | None = None,
                  every_s: float = 1.0) -> dict:
    """Run `cmd` (benchmarks.build_runner's measured command line, writing usage_path as it exits) and return what was measured:
    rc, wall_s, peak_rss_gb (+ how it was measured, the stages running at the largest RSS
    sampled, the RSS when the first stage started), read_gb, cpu_s, stage_s (per stage kind:
    wall time from its first start to its last end; runs of a kind overlap, and so do kinds
    that the flow runs concurrently), stage_sum_s (the kind's runs' durations added up),
    stages_wall_s (first stage start to last stage end: the wall time without process start,
    imports and the temporary Prefect server), stages (every run: label, seconds),
    disk_peak_gb, log_tail. A build whose RSS passes `rss_limit` bytes (sampled) is stopped
    (stopped_over_rss_limit), before the kernel's OOM killer picks a process on a shared machine."""
    free0 = min_free = shutil.disk_usage(disk_path).free
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    log = _Log(proc.stdout, log_path, proc.pid, t0)
    last, max_rss, at_max, timed_out, over = usage(proc.pid), 0, [], False, False
    by_kind: dict[str, int] = {}   # largest RSS sampled while a stage of each kind ran
    try:
        while proc.poll() is None:
            u = usage(proc.pid)
            if u["vmhwm"]:
                last = u
            running = log.running()
            if u["vmrss"] > max_rss:
                max_rss, at_max = u["vmrss"], running
            for k in {stage_kind(label) for label in running}:
                by_kind[k] = max(by_kind.get(k, 0), u["vmrss"])
            min_free = min(min_free, shutil.disk_usage(disk_path).free)
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                break
            if rss_limit and u["vmrss"] > rss_limit:
                over = True
                break
            time.sleep(every_s)
    finally:   # timed out, or this process is being stopped: the build goes too
        if proc.poll() is None:
            _kill(proc)
    rc = proc.wait()
    _kill(proc)   # what the build left in its session: a build killed by the OOM killer
    #               leaves its temporary Prefect server running
    wall = time.perf_counter() - t0
    log.thread.join(timeout=30)
    exact = json.loads(usage_path.read_text()) if usage_path.exists() else None
    peak = exact["peak_rss_bytes"] if exact else last["vmhwm"]
    reads = exact["read_bytes"] if exact else last["read_bytes"]
    spans: dict[str, list[float]] = {}
    sums: dict[str, float] = {}
    for label, s, end in log.stages:
        k = stage_kind(label)
        lo, hi = spans.get(k, [end - s, end])
        spans[k] = [min(lo, end - s), max(hi, end)]
        sums[k] = round(sums.get(k, 0.0) + s, 2)
    first = log.first or {"vmrss": 0, "read_bytes": 0}
    return {"rc": rc, "timed_out": timed_out, "stopped_over_rss_limit": over,
            "rss_limit_gb": round(rss_limit / 1e9, 2) if rss_limit else None, "wall_s": round(wall, 1),
            "peak_rss_gb": round(peak / 1e9, 3),
            "peak_rss_source": ("VmHWM of the build process at exit" if exact else
                                f"VmHWM of the build process, last of samples every {every_s:g}s"),
            "peak_rss_stages": at_max, "sampled_max_rss_gb": round(max_rss / 1e9, 3),
            "rss_by_stage_gb": {k: round(v / 1e9, 3) for k, v in by_kind.items()},
            "rss_at_first_stage_gb": round(first["vmrss"] / 1e9, 3),
            "read_gb": round(reads / 1e9, 3), "read_before_stages_gb": round(first["read_bytes"] / 1e9, 3),
            "cpu_s": exact["cpu_s"] if exact else None,
            "stages_wall_s": round(max(h for _, h in spans.values()) - min(lo for lo, _ in spans.values()), 1)
            if spans else None,
            "stage_s": {k: round(hi - lo, 1) for k, (lo, hi) in spans.items()}, "stage_sum_s": sums,
            "stages": [[label, s] for label, s, _ in log.stages],
            "disk_peak_gb": round((free0 - min_free) / 1e9, 3), "log_tail": list(log.tail)[-12:]}
