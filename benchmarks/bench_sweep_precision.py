"""The ratio sweep in float32 vs bfloat16, side by side in one run: time per measured point and
how far the retention table moves.

Builds the demo expert (`cusprun demo`'s spec) into one artifact store, then builds it again
with the other sweep precision: the second build takes every stage from cache except the
evaluation, so both sweeps measure the same plans with the same Grams. bfloat16 is only fast
where matmuls are native in bfloat16 (`cusprun.models.precision.native_bf16`); the script says
whether they are here.

    python -m benchmarks run bench_sweep_precision [--store DIR]   # DIR: reuse (or keep) the store
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
from cusprun.models.precision import native_bf16
from cusprun.pipeline.demo import FULL_DEMO_SPEC as DEMO_SPEC


def points(rows: list[dict]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in rows:
        out.setdefault((r["method"], r["ratio"], r["compensation"]), {})[r["eval_set"]] = r
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="artifact store to build into (kept); default: a temporary one")
    args = ap.parse_args()
    store = Path(args.store or tempfile.mkdtemp(prefix="cusprun-precision-"))
    work = Path(tempfile.mkdtemp(prefix="cusprun-precision-specs-"))
    sweeps = {}
    for precision in ("float32", "bfloat16"):
        spec = {**DEMO_SPEC, "storage_root": str(store),
                "evaluation": {**DEMO_SPEC["evaluation"], "sweep_precision": precision}}
        report = build_process(spec, work, precision).check().report
        sweeps[precision] = points(json.loads((Path(report) / "sweep.json").read_text()))
        print(f"done: {precision}: {report}", file=sys.stderr, flush=True)
    f32, b16 = sweeps["float32"], sweeps["bfloat16"]
    result = Result("bench_sweep_precision", "Ratio sweep in float32 vs bfloat16: time per point "
                    "and retention moved", {"store": bool(args.store)})
    result.say(f"native bfloat16 matmuls on this machine: {native_bf16('cpu')}\n")
    per, table = {}, []
    for name, pts in sweeps.items():
        # a point the main comparison already measured (float32) has 0 s: not counted
        secs = [next(iter(p.values()))["seconds"] for p in pts.values()]
        measured = [s for s in secs if s > 0]
        per[name] = sum(measured) / len(measured)
        table.append([name, len(measured), f"{per[name]:.1f}", f"{per[name] / per['float32']:.2f}"])
    result.table(["sweep precision", "points measured", "seconds per point", "ratio"], table)
    diffs = sorted(((abs(b16[k][s]["retention"] - f32[k][s]["retention"]), k, s)
                    for k in f32 if k[0] != "dense" for s in f32[k]), reverse=True)
    mean = sum(d for d, _, _ in diffs) / len(diffs)
    result.say(f"\nretention, bfloat16 - float32 over {len(diffs)} cells: mean |diff| {mean:.4f}, "
               f"max {diffs[0][0]:.4f} ({diffs[0][1][0]}@{diffs[0][1][1]:g} {diffs[0][1][2]}, "
               f"{diffs[0][2]})")
    result.table(["point", "set", "float32", "bfloat16"],
                 [[f"{k[0]}@{k[1]:g} {k[2]}", s, f"{f32[k][s]['retention']:.4f}",
                   f"{b16[k][s]['retention']:.4f}"] for _, k, s in diffs[:5]],
                 title="The five largest differences in retention:")
    result.headline = (f"Sweep in bfloat16: {per['bfloat16'] / per['float32']:.2f}x the seconds per "
                       f"point of float32, retention moved by {mean:.4f} on average (max "
                       f"{diffs[0][0]:.4f})")
    result.values = {"seconds_per_point": per, "mean_abs_diff": mean, "max_abs_diff": diffs[0][0],
                     "native_bf16": native_bf16("cpu")}
    result.write()
    shutil.rmtree(work, ignore_errors=True)
    if not args.store:                   # a temporary store: about 9 GB
        shutil.rmtree(store, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
