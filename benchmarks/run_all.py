"""Run the quick benchmarks in one go: each prints its tables and writes them, with the commit,
date and machine, to benchmarks/results/<name>.json; `make results` then renders docs/results.md.
The quality benchmarks (quality_*.py, bench_quality_overhead.py, bench_sweep_precision.py,
bench_mc.py, bench_lm_head.py, base_model_loss.py) take from minutes to hours on a CPU: run them one by one."""
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
