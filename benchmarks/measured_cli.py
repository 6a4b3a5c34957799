"""Run the `cusprun` command line in this process and, as it ends, record what the process
itself used: peak RSS (VmHWM), bytes it read from storage (/proc/self/io read_bytes), CPU time.

    python benchmarks/measured_cli.py RESULT.json build --spec spec.yaml

Same entry point as the `cusprun` console script (cusprun.cli.main), so the build is the one a
user runs; the numbers are this process's own, not those of the temporary Prefect server the CLI
starts as a child (a child's reads are added to /proc/self/io only once the CLI has reaped it).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def proc_fields(path: str) -> dict[str, int]:
    """'Key: value [kB]' lines of a /proc file as ints (kB values stay in kB)."""
    out = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key.strip()] = int(parts[0])
    except OSError:
        pass
    return out


def usage(pid: int | str = "self") -> dict:
    """Peak and current RSS (bytes), storage reads (bytes) of one process."""
    status, io = proc_fields(f"/proc/{pid}/status"), proc_fields(f"/proc/{pid}/io")
    return {"vmhwm": status.get("VmHWM", 0) * 1024, "vmrss": status.get("VmRSS", 0) * 1024,
            "read_bytes": io.get("read_bytes", 0), "rchar": io.get("rchar", 0)}


def main() -> int:
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
        u = usage()
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
