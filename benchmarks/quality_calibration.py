"""Held-out loss retention of the demo expert against calibration size, measured side by side.

For each (documents per dimension, tokens per document) setting: prepare the demo's calibration
corpora (English Bible, English health Wikipedia leads, templated health QA; 8 held-back docs
each), collect impact statistics and compensation Grams, build the Cus-Prun plan at 25 % with the
build's defaults (centred score, measured allocation, least-squares compensation, general-English
protection), mask + compensate SmolLM2-135M in memory and score the demo's held-out loss sets.
Prints one row per setting: retention = dense loss / expert loss (1 = dense), with its costs.

    python -m benchmarks run quality_calibration      # 40/128/512 docs x 256 tokens, 128 docs x 128/512
    python -m benchmarks run quality_calibration --docs 40 128 --tokens 256 --extra-tokens
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.quality_common import (DEMO, calibrate, demo_model, eval_sets, losses, own_sets,
                                       table_cells)
from benchmarks.results_io import Result

from cusprun.compensation import CompensationConfig
from cusprun.engine import MaskSession
from cusprun.pipeline.plan_inputs import compensation_config, probe_tokens, prune_config
from cusprun.steps.plan import cusprun_plan, damage_probe
from cusprun.pipeline.spec import ExpertSpec


def setting(model, tok, fp, n_docs: int, max_tokens: int, sets, dense, work: Path) -> dict:
    spec = ExpertSpec.model_validate({**DEMO, "max_tokens": max_tokens, **{
        d: {"value": DEMO[d]["value"], "max_docs": n_docs} for d in ("language", "domain", "task")}})
    t0 = time.perf_counter()
    cal = calibrate(model, tok, fp, spec, work)
    comp = CompensationConfig.model_validate(compensation_config(spec))
    t = time.perf_counter()
    probe = damage_probe(model, tok, cal.heldback, grams=cal.grams, compensation=comp.model_dump(),
                         max_tokens=probe_tokens(spec), precision=spec.probe_precision)
    plan = cusprun_plan(cal.stats, cal.general, prune_config(spec, 0.25), model.config, fp,
                        probe=probe)
    t_plan = time.perf_counter() - t
    session = MaskSession(model)
    session.apply(plan, grams=cal.grams, config=comp)
    got = losses(model, tok, sets)
    session.restore()
    own = own_sets(sets, spec)
    return {"docs/dim": n_docs, "tokens/doc": max_tokens, "calib tokens": cal.grams.n_tokens,
            "allocation": plan.report["allocation_search"]["chosen"],
            **{n: dense[n] / got[n] for n in sorted(got)},
            "mean own": sum(dense[n] / got[n] for n in own) / len(own),
            "stats + grams s": cal.seconds["stats + grams"], "plan s": t_plan,
            "total s": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[40, 128, 512])
    ap.add_argument("--tokens", type=int, nargs="+", default=[256])
    ap.add_argument("--extra-tokens", type=int, nargs="*", default=[128, 512],
                    help="also run these tokens/doc at the middle --docs value")
    args = ap.parse_args()
    model, tok, fp = demo_model()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = eval_sets(ExpertSpec.model_validate(DEMO), work, tok)
        dense = losses(model, tok, sets)
        grid = [(d, t) for d in args.docs for t in args.tokens]
        mid = sorted(args.docs)[len(args.docs) // 2]
        grid += [(mid, t) for t in args.extra_tokens if (mid, t) not in grid]
        rows = []
        for d, t in grid:
            rows.append(setting(model, tok, fp, d, t, sets, dense, work))
            print(f"done: {d} docs x {t} tokens ({rows[-1]['total s']:.0f}s)", file=sys.stderr, flush=True)
    result = Result("quality_calibration", "Held-out loss retention of the demo expert against "
                    "calibration size", vars(args))
    cols, cells = table_cells(rows)
    result.table(cols, cells, align=["r", "r", "r", "l"] + ["r"] * (len(cols) - 4))
    best = max(rows, key=lambda r: r["mean own"])
    result.headline = (f"Calibration size: mean retention on the expert's own sets from "
                       f"{min(r['mean own'] for r in rows):.3f} to {best['mean own']:.3f} "
                       f"({best['docs/dim']} docs x {best['tokens/doc']} tokens)")
    result.values = {"rows": rows}
    result.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
