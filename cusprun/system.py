"""Facts about this machine that decide how work is laid out (free memory, CPU cores), and
handing memory the process freed back to it."""
from __future__ import annotations

import ctypes
import os
import sys


def meminfo(field: str) -> int | None:
    """One field of Linux's /proc/meminfo in bytes (MemAvailable, MemTotal, ...), None where
    there is no such file or field."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None if unknown."""
    avail = meminfo("MemAvailable")
    if avail is not None:
        return avail
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                if hasattr(libc, "malloc_trim"):
                    _LIBC = libc
                    if hasattr(libc, "mallinfo2"):
                        libc.mallinfo2.restype = _MallInfo2
            except OSError:
                pass
    return _LIBC


def release_free_memory(min_free: int = 256 << 20) -> bool:
    """Hand memory that malloc holds free back to the OS (glibc's malloc_trim; elsewhere
    nothing) once at least `min_free` bytes of it have piled up. Returns whether it trimmed.

    glibc keeps freed chunks below its mmap threshold (up to 32 MB: a layer's activations,
    Gram factors, head chunks) in per-thread heaps and only shrinks a heap from its top, so a
    long layer-by-layer build accumulated free but resident memory with every layer: 2.5 GB
    of a 5.2 GB RSS at 32 layers of Llama-3.1-8B widths (benchmarks/bench_scale.py). Called
    after each layer of a pass, each layer the slicer compensates and each pipeline stage.
    Below `min_free` it leaves the heap alone: trimming a small model's few free megabytes
    after every layer only made the next layer fault the same pages in again (evaluation of
    Gemma 3 270M ran 8 % slower)."""
    libc = _libc()
    if not libc:
        return False
    if min_free > 0 and hasattr(libc, "mallinfo2") and libc.mallinfo2().fordblks < min_free:
        return False
    libc.malloc_trim(0)
    return True
