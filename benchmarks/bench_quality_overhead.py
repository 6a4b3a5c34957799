"""What allocation + compensation cost: the demo's build-expert flow with and without them, side by
side in one run.

Each run builds the demo expert (`cusprun demo`'s spec: same corpora, ratios, baselines, sweep and
evaluation) from scratch into its own fresh artifact store, one after the other, each as a
`cusprun build` process (benchmarks.build_runner.build_process): 'without' uses the global rank
order and no compensation (the selection before measured allocation and compensation existed;
its sweep has only uncompensated points), 'with' the defaults (measured allocation, least-squares
compensation, every sweep point measured with and without it: twice the sweep points), and
'with, same sweep' the defaults with the sweep measured with compensation only
(`sweep_compensation: false`: as many sweep points as 'without', so the difference is the
allocation and compensation alone). All three sweep at the spec's default precision (`auto`:
bf16 where matmuls are native). Prints the wall times and their ratios to 'without' (goal:
<= 1.5), and with --keep where each run's report is.

    python -m benchmarks run bench_quality_overhead [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.build_runner import build_process
from benchmarks.results_io import Result
from cusprun.pipeline.demo import FULL_DEMO_SPEC as DEMO_SPEC

VARIANTS = [("without (rank order, no compensation)", {"allocation": "rank", "compensation": "none"}),
            ("with (measured allocation, ls compensation; sweep with and without it)", {}),
            ("with, same sweep (sweep with compensation only)",
             {"evaluation": {**DEMO_SPEC["evaluation"], "sweep_compensation": False}})]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", help="keep the three artifact stores (about 9 GB each) under this "
                                   "directory; without it each is removed once its run is timed")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cusprun-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (label, over) in enumerate(VARIANTS):
        spec = {**DEMO_SPEC, **over, "storage_root": str(work / f"store-{i}")}
        build = build_process(spec, work, f"variant-{i}").check()
        wall, report = build.wall_s, build.report
        rows.append((label, wall, report))
        if not args.keep:
            shutil.rmtree(work / f"store-{i}", ignore_errors=True)
        print(f"done: {label}: {wall:.0f}s", file=sys.stderr, flush=True)
    base = rows[0][1]
    result = Result("bench_quality_overhead", "What allocation + compensation cost: the demo build "
                    "with and without them", {"keep": bool(args.keep)})
    result.table(["flow", "wall time (s)", "ratio"],
                 [[label, f"{wall:.0f}", f"{wall / base:.2f}"] for label, wall, _ in rows])
    result.say(f"\nratio with/without: {rows[1][1] / base:.2f}; same sweep: {rows[2][1] / base:.2f} "
               "(goal <= 1.5)")
    result.headline = (f"The demo build with measured allocation and compensation takes "
                       f"{rows[2][1] / base:.2f}x the time of the rank-order build without "
                       f"compensation at the same sweep ({rows[1][1] / base:.2f}x with the "
                       f"doubled sweep); goal <= 1.5")
    result.values = {"wall_s": {label: wall for label, wall, _ in rows},
                     "ratio": rows[1][1] / base, "ratio_same_sweep": rows[2][1] / base}
    result.write()
    if args.keep:
        print(json.dumps({"reports": {label: report for label, _, report in rows}}, indent=1))
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
