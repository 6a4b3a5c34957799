"""release_free_memory hands malloc's free heap memory back to the OS: without it a layer-by-layer
build kept every layer's freed temporaries resident (benchmarks/bench_scale.py, 32 layers)."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
from cusprun.system import release_free_memory
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024
blocks = [bytearray(100_000) for _ in range(4000)]   # below malloc's mmap threshold: heap memory
for b in blocks:
    b[::4096] = b"\\1" * len(b[::4096])              # touch every page
keep = blocks[9::10]                                  # live blocks pin the heap's top
del blocks
before = anon()
assert not release_free_memory(min_free=1 << 40)     # under the threshold: left alone
assert anon() > before - (50 << 20)
assert release_free_memory()
print(before, anon())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_os():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    freed = 4000 * 100_000 * 0.9
    assert before - after > 0.5 * freed, (before, after)

