"""Run every benchmark in one go and print their tables (paste the output into the README)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = ["bench_stats.py", "bench_prefill.py", "bench_slicing_memory.py"]


def main() -> int:
    status = 0
    for name in BENCHMARKS:
        path = HERE / name
        if not path.exists():
            print(f"## {name}: missing\n")
            status = 1
            continue
        print(f"## {name}\n", flush=True)
        rc = subprocess.call([sys.executable, str(path), *sys.argv[1:]])
        status = status or rc
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
