"""What each piece of the selection contributes to the demo expert's quality, side by side.

One calibration (the demo's corpora, statistics and Grams), then the Cus-Prun plan at one ratio
(default 25 % of prunable parameters) with the pieces switched on one at a time: the unit score
(per-document percentile as before, relative mean impact, or the centred impact that
compensation leaves), the budget allocation (global rank
order, or measured on held-back documents), and the compensation (none, FLAP's bias, least-
squares refit, both), plus the per_layer layout. Each row masks + compensates SmolLM2-135M in
memory and scores the demo's held-out loss sets: retention = dense loss / model loss.

    python -m benchmarks run quality_ablation [--ratio 0.25]
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
from cusprun.pipeline.plan_inputs import probe_tokens, prune_config
from cusprun.steps.plan import cusprun_plan, damage_probe
from cusprun.pipeline.spec import ExpertSpec

# label, score, allocation, compensation, layout
VARIANTS = [
    ("previous default", "percentile", "rank", "none", "uniform"),
    ("+ impact score", "impact", "rank", "none", "uniform"),
    ("+ measured allocation", "impact", "measured", "none", "uniform"),
    ("+ bias compensation (FLAP)", "impact", "measured", "bias", "uniform"),
    ("+ least-squares refit", "impact", "measured", "ls", "uniform"),
    ("+ least squares with bias", "impact", "measured", "ls+bias", "uniform"),
    ("+ centred score, ls (default)", "centered", "measured", "ls", "uniform"),
    ("centred score, no compensation", "centered", "measured", "none", "uniform"),
    ("percentile score, measured, ls", "percentile", "measured", "ls", "uniform"),
    ("default, per_layer layout", "centered", "measured", "ls", "per_layer"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.25)
    args = ap.parse_args()
    model, tok, fp = demo_model()
    spec = ExpertSpec.model_validate(DEMO)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = eval_sets(spec, work, tok)
        dense = losses(model, tok, sets)
        cal = calibrate(model, tok, fp, spec, work)
        own = own_sets(sets, spec)
        session = MaskSession(model)
        for label, score, allocation, mode, layout in VARIANTS:
            comp = CompensationConfig(mode=mode, ridge=spec.ridge)
            t = time.perf_counter()
            probe = (damage_probe(model, tok, cal.heldback, grams=cal.grams,
                                  compensation=comp.model_dump(), max_tokens=probe_tokens(spec),
                                  precision=spec.probe_precision)
                     if allocation == "measured" else None)
            prune = {**prune_config(spec, args.ratio), "score": score, "allocation": allocation,
                     "layout": layout}
            plan = cusprun_plan(cal.stats, cal.general, prune, model.config, fp, probe=probe)
            t_plan = time.perf_counter() - t
            session.apply(plan, grams=cal.grams, config=comp)
            got = losses(model, tok, sets)
            session.restore()
            search = plan.report.get("allocation_search") or {}
            heads = plan.report["head_structure_per_layer"]
            ffn = plan.report["kept_per_layer"]["ffn"]
            rows.append({"variant": label, "score": score, "allocation": allocation,
                         "compensation": mode, "layout": layout,
                         "heads (k x g)": heads[0] if len(set(heads)) == 1 else "varies",
                         "FFN kept": str(ffn[0]) if len(set(ffn)) == 1 else f"{min(ffn)}-{max(ffn)}",
                         **{n: dense[n] / got[n] for n in sorted(got)},
                         "mean own": sum(dense[n] / got[n] for n in own) / len(own),
                         "candidates": len(search.get("candidates", [])), "plan s": t_plan})
            print(f"done: {label} ({t_plan:.0f}s)", file=sys.stderr, flush=True)
    result = Result("quality_ablation", "What each piece of the selection contributes to the demo "
                    "expert's quality", vars(args))
    result.say(f"ratio {args.ratio}; calibration: {cal.grams.n_tokens} tokens, statistics "
               f"{cal.seconds['stats + grams']:.0f}s (one pass)\n")
    cols, cells = table_cells(rows)
    result.table(cols, cells, align=["l"] * 7 + ["r"] * (len(cols) - 7))
    first, default = rows[0], next(r for r in rows if "(default)" in r["variant"])
    result.headline = (f"Selection ablation at ratio {args.ratio:g}: mean retention on the expert's own "
                       f"sets {first['mean own']:.3f} ({first['variant']}) -> "
                       f"{default['mean own']:.3f} ({default['variant']})")
    result.values = {"rows": rows, "calibration_tokens": cal.grams.n_tokens, "seconds": cal.seconds}
    result.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
