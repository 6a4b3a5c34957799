"""The baselines on the demo, each as it defines itself, and how much general text FLAP needs.

One calibration (the demo's corpora, statistics and Grams), then every baseline's plan at one
ratio (default 25 % of prunable parameters) as the build makes it (cusprun.baselines: each
method's own layout and compensation; the others under the demo's uniform layout and 'ls'),
masked and compensated in memory on SmolLM2-135M, and the demo's held-out loss sets scored:
retention = dense loss / model loss. Each plan is also measured without compensation. Then
wanda-sp, flap and flap-score again with more general-text calibration documents (their scores,
and FLAP's bias, come from general text; the demo gives it 40 documents, FLAP's reference
calibrates on 1024 x 128 = 131k tokens).

    python benchmarks/quality_baselines.py [--ratio 0.25] [--general-docs 128 512 1536]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from quality_common import DEMO, calibrate, demo_model, eval_sets, losses, own_sets, table_cells
from results_io import Result

from cusprun.baselines import BASELINES, plan_from_scores, unit_scores
from cusprun.compensation import ChannelMeans, CompensationConfig
from cusprun.corpora import prepare_corpus
from cusprun.engine import MaskSession
from cusprun.pipeline.plan_inputs import calibration_corpora
from cusprun.pipeline.spec import ExpertSpec
from cusprun.scoring import CorpusJob, collect_corpora

GENERAL_METHODS = ("wanda-sp", "flap", "flap-score")


def general_stats(model, tok, fp: str, spec: ExpertSpec, docs: int, work: Path):
    """Statistics of the demo's general corpus with `docs` calibration documents."""
    s = spec.model_copy(update={"general": spec.general.model_copy(update={"max_docs": docs})})
    c = calibration_corpora(s)["general"][0]
    texts = prepare_corpus(c, work / f"general-{docs}").texts("calib")
    st = collect_corpora(model, tok, {"g": CorpusJob(texts)}, max_tokens=spec.max_tokens,
                         progress=False)["g"]
    st.summary["model_fingerprint"] = fp
    return st


def _shape(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--general-docs", type=int, nargs="*", default=[128, 512, 1536])
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
        runs = [(m, spec.general.max_docs, cal.general[0]) for m in BASELINES]
        for docs in args.general_docs:
            t = time.perf_counter()
            g = general_stats(model, tok, fp, spec, docs, work)
            print(f"general text, {docs} docs ({g.n_tokens} tokens): {time.perf_counter() - t:.0f}s",
                  file=sys.stderr, flush=True)
            runs += [(m, docs, g) for m in GENERAL_METHODS]
        for method, docs, general in runs:
            scores = unit_scores(model, [method], general, spec.seed)[method]
            plan = plan_from_scores(method, scores, model.config, args.ratio, spec.layout,
                                    base_fingerprint=fp, seed=spec.seed,
                                    compensation=spec.compensation, ridge=spec.ridge)
            setup = plan.report["setup"]
            source = ChannelMeans.from_stats([general]) if setup["means"] == "general" else cal.grams
            kept = plan.report["kept_per_layer"]
            modes = [setup["compensation"]["mode"]] + (["none"] if docs == spec.general.max_docs
                                                       else [])
            for mode in dict.fromkeys(modes):
                session.apply(plan, grams=source, config=CompensationConfig(
                    mode=mode, ridge=setup["compensation"]["ridge"]))
                got = losses(model, tok, sets)
                session.restore()
                rows.append({"method": method, "general docs": docs,
                             "general tokens": general.n_tokens, "layout": plan.layout,
                             "compensation": mode, "query heads kept": _shape(kept["heads"]),
                             "FFN kept": _shape(kept["ffn"]),
                             **{n: dense[n] / got[n] for n in sorted(got)},
                             "mean own": sum(dense[n] / got[n] for n in own) / len(own)})
                print(f"done: {method} ({docs} general docs, {mode})", file=sys.stderr, flush=True)
    result = Result("quality_baselines", "The baselines on the demo as each defines itself, and "
                    "FLAP with more general-text calibration", vars(args))
    result.say(f"ratio {args.ratio}; expert calibration {cal.grams.n_tokens} tokens; retention = "
               "dense loss / model loss on the demo's held-out sets\n")
    cols, cells = table_cells(rows)
    result.table(cols, cells, align=["l"] * 7 + ["r"] * (len(cols) - 7))
    at = {(r["method"], r["general docs"], r["compensation"]): r["mean own"] for r in rows}
    rnd = at[("random", spec.general.max_docs, spec.compensation)]
    flap = max(v for (m, _, c), v in at.items() if m == "flap")
    result.headline = (f"Baselines at ratio {args.ratio:g}: random {rnd:.3f}, faithful FLAP at "
                       f"best {flap:.3f} (mean retention on the expert's own sets)")
    result.values = {"rows": rows}
    result.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
