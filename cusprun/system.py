"""Facts about this machine that decide how work is laid out (free memory, CPU cores), and
handing memory the process freed back to it."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_LIBC = None


def release_free_memory() -> None:
    """Hand memory that malloc holds free back to the OS (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed chunks below its mmap threshold (up to 32 MB: a layer's activations,
    Gram factors, head chunks) in per-thread heaps and only shrinks a heap from its top, so a
    long layer-by-layer build accumulated free but resident memory with every layer: 2.5 GB
    of a 5.2 GB RSS at 32 layers of Llama-3.1-8B widths (benchmarks/bench_scale.py). Called
    after each streamed layer and each pipeline stage."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = libc if hasattr(libc, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
