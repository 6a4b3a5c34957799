"""This machine and its processes as the benchmarks measure them: the one place in benchmarks/
that reads /proc (a process's memory and storage reads, the CPU model), on top of
cusprun.system (memory available and total, what the library itself reads)."""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

from cusprun.system import available_memory, meminfo


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


def process_usage(pid: int | str = "self") -> dict:
    """Peak and current RSS (bytes), storage reads (bytes) of one process (0 where unknown)."""
    status, io = proc_fields(f"/proc/{pid}/status"), proc_fields(f"/proc/{pid}/io")
    return {"vmhwm": status.get("VmHWM", 0) * 1024, "vmrss": status.get("VmRSS", 0) * 1024,
            "read_bytes": io.get("read_bytes", 0), "rchar": io.get("rchar", 0)}


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM, this process image's own. (ru_maxrss, the fallback
    without /proc, would include the RSS of the parent at fork time, which Linux carries
    across fork + exec.)"""
    hwm = proc_fields("/proc/self/status").get("VmHWM")
    return hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """This process's RSS now, from /proc/self/statm (cheap enough to sample every 2 ms)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mem_available_bytes() -> int:
    """Memory available to new allocations (MemAvailable), 0 if unknown."""
    return available_memory() or 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gb() -> float | None:
    total = meminfo("MemTotal")
    return round(total / 2**30, 1) if total is not None else None


def describe() -> dict:
    """CPU model, cores, RAM, GPU (when torch sees one), torch and Python versions, and the
    1-minute load average now (a shared machine's load moves timings): the `machine` record of
    every result file."""
    info: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gb": ram_gb(), "gpu": None,
                  "torch": None, "python": platform.python_version(),
                  "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info
