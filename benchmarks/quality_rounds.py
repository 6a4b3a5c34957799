"""Iterative pruning on the demo expert: held-out retention per loss set and wall time for
k = 1, 2, 4 rounds at 25 %, each built with `cusprun.prune` (the pipeline's steps) from the demo's
calibration corpora with `cusprun demo --full`'s settings. Retention = dense loss / expert loss
(1 = dense), the expert being what its saved checkpoint computes (the last round's plan applied
to the round before's checkpoint).

    python -m benchmarks run quality_rounds                  # k = 1, 2, 4 at 0.25 (hours on 2 cores)
    CUSPRUN_RESULTS_DIR=/tmp/r python -m benchmarks.quality_rounds --rounds 1 2 --max-docs 12 \\
        --max-tokens 64 --eval-docs 4                          # a tiny end-to-end check
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.quality_common import DEMO, demo_model, eval_sets, losses, own_sets
from benchmarks.results_io import Result

from cusprun.pipeline.plan_inputs import calibration_corpora
from cusprun.pipeline.spec import ExpertSpec


def build(k: int, spec: ExpertSpec, ratio: float, work: Path):
    import cusprun

    sources = {g: cs[0]["source"] for g, cs in calibration_corpora(spec).items()}
    dims = {d: sources[d] for d in ("language", "domain", "task") if d in sources}
    settings = {s: getattr(spec, s) for s in ("max_tokens", "min_docs", "compensation",
                                              "allocation", "layout", "ffn_multiple")}
    t0 = time.perf_counter()
    expert = cusprun.prune("smollm2-135m", dims, general=sources.get("general"), ratio=ratio,
                           rounds=k, max_docs=spec.language.max_docs, work_dir=work / f"k{k}",
                           progress=False, **settings)
    return expert, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--max-docs", type=int, help="calibration docs per corpus (default: the demo's)")
    ap.add_argument("--max-tokens", type=int, help="tokens per calibration doc (default: the demo's)")
    ap.add_argument("--eval-docs", type=int, help="held-out docs per loss set (default: the demo's)")
    args = ap.parse_args(argv)
    data = dict(DEMO)
    if args.max_docs:
        data.update({d: {**(data.get(d) or {}), "max_docs": args.max_docs}
                     for d in ("language", "domain", "task", "general") if data.get(d)})
    if args.max_tokens:
        data["max_tokens"] = args.max_tokens
    if args.eval_docs:
        data["evaluation"] = {**data.get("evaluation", {}), "max_docs": args.eval_docs,
                              "min_loss_tokens": 0}
    spec = ExpertSpec.model_validate(data)
    res = Result("quality_rounds", f"Iterative pruning: k rounds to {args.ratio:g} on the demo",
                 {"rounds": args.rounds, "ratio": args.ratio, "max_docs": spec.language.max_docs,
                  "max_tokens": spec.max_tokens, "eval_docs": spec.evaluation.max_docs})
    with tempfile.TemporaryDirectory(prefix="quality-rounds-") as tmp:
        work = Path(tmp)
        model, tok, _ = demo_model()
        sets = eval_sets(spec, work, tok)
        dense = losses(model, tok, sets)
        del model
        rows, values = [], {}
        for k in args.rounds:
            expert, seconds = build(k, spec, args.ratio, work)
            got = losses(expert.model(), tok, sets)
            ret = {n: dense[n] / got[n] for n in sets}
            own = own_sets(sets, spec)
            values[str(k)] = {"seconds": round(seconds, 1), "achieved_ratio": expert.ratio,
                              "retention": ret,
                              "own_mean": sum(ret[n] for n in own) / max(len(own), 1)}
            rows.append([k, f"{expert.ratio:.4f}", f"{seconds:.0f}",
                         f"{values[str(k)]['own_mean']:.3f}", *(f"{ret[n]:.3f}" for n in sets)])
        res.table(["rounds", "ratio", "build s", "own mean", *sets], rows)
        res.values = values
        best = max(values, key=lambda k: values[k]["own_mean"])
        res.headline = (f"k={best} keeps the most of the expert's own sets "
                        f"({values[best]['own_mean']:.3f}) at {args.ratio:g}")
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
