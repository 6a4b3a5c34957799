"""The baselines on the demo, each as it defines itself, and how much general text FLAP needs.

One calibration (the demo's corpora, statistics and Grams), then every baseline's plan at one
ratio (default 25 % of prunable parameters) as the build makes it (cusprun.baselines: each
method's own layout and compensation; the others under the demo's uniform layout and 'ls'),
masked and compensated in memory on SmolLM2-135M, and the demo's held-out loss sets scored:
retention = dense loss / model loss. Each plan is also measured without compensation. Then
wanda-sp, flap and flap-score again with more general-text calibration documents (their scores,
and FLAP's bias, come from general text; the demo gives it 40 documents, FLAP's reference
calibrates on 1024 x 128 = 131k tokens). The larger general sets' channel sums come from plain
forwards (`moments`, checked against the statistics pass on the demo's own 40 documents).

    python -m benchmarks run quality_baselines [--ratio 0.25] [--general-docs 128 512]
                                               [--store ./artifacts]

`--store`: take the statistics and Grams of a `cusprun demo` build from its artifact store
instead of computing them again (the same files the build's plans and slices read).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.quality_common import (DEMO, Calibration, calibrate, demo_model, eval_sets, losses,
                                       own_sets, table_cells)
from benchmarks.results_io import Result

import torch

from cusprun.adapters import Adapter
from cusprun.baselines import BASELINES, unit_scores
from cusprun.baselines.scorers import flap_ffn_metric
from cusprun.compensation import ChannelMeans, CompensationConfig, GramSet
from cusprun.corpora import prepare_corpus
from cusprun.engine import MaskSession
from cusprun.evaluation.set_names import is_out_of_source
from cusprun.pipeline.plan_inputs import baseline_job, calibration_corpora
from cusprun.pipeline.spec import ExpertSpec
from cusprun.scoring.collect import tokenize_docs
from cusprun.scoring.stats import DimensionStats, load_stats
from cusprun.steps.baseline import baseline_plan

GENERAL_METHODS = ("wanda-sp", "flap", "flap-score")


@dataclass
class Moments:
    """The channel sums the general-text baselines read (DimensionStats' down_sum/_sumsq, o_sum/
    _sumsq, n_tokens and their accessors), from plain forwards: the statistics pass also ranks
    every unit in every document, which larger general corpora do not need here."""

    down_sum: torch.Tensor
    down_sumsq: torch.Tensor
    o_sum: torch.Tensor
    o_sumsq: torch.Tensor
    n_tokens: int

    channel_moments = DimensionStats.channel_moments
    channel_sq_norm = DimensionStats.channel_sq_norm


@torch.no_grad()
def moments(model, tok, texts: list[str], max_tokens: int) -> Moments:
    """Per-channel sums of x and x^2 of every down_proj / o_proj input over the documents' tokens
    (tokenized as the statistics pass does), float64."""
    ad = Adapter.for_model(model)
    acc: dict = {}

    def hook(key):
        def fn(_m, args):
            x = args[0].double().reshape(-1, args[0].shape[-1])
            s, q = acc.get(key, (0, 0))
            acc[key] = (s + x.sum(0), q + x.pow(2).sum(0))
        return fn

    hs = [h for li, layer in enumerate(ad.layers(model)) for h in (
        ad.down_proj(layer).register_forward_pre_hook(hook(("down", li))),
        ad.o_proj(layer).register_forward_pre_hook(hook(("o", li))))]
    n = 0
    try:
        for ids in tokenize_docs(tok, texts, max_tokens):
            if ids:
                model.get_decoder()(input_ids=torch.tensor([ids]), use_cache=False)
                n += len(ids)
    finally:
        for h in hs:
            h.remove()
    layers = range(len(ad.layers(model)))
    stack = lambda role, i: torch.stack([acc[(role, li)][i] for li in layers])  # noqa: E731
    return Moments(stack("down", 0), stack("down", 1), stack("o", 0), stack("o", 1), n)


def stored_calibration(root: Path, fp: str) -> Calibration:
    """The statistics and Grams a build of the demo committed under `root` (its stats/ and
    grams/ folders), for this model; every dimension's, general text's statistics apart."""
    cal = Calibration()
    for d in sorted((root / "stats").iterdir()):
        s = load_stats(d)
        if s.model_fingerprint == fp:
            dim = (s.summary.get("extra") or {}).get("dimension")
            (cal.general if dim == "general" else cal.stats.setdefault(dim, [])).append(s)
    grams = [d for d in sorted((root / "grams").iterdir())
             if json.loads((d / "grams.json").read_text()).get("model_fingerprint") == fp]
    cal.grams = GramSet(grams)
    return cal


@torch.no_grad()
def flap_top_share(model, general) -> list[float]:
    """Per layer, the share of the layer's summed FLAP FFN metric (input variance x squared
    down_proj column norm) held by its largest neuron: where one neuron dominates, standardising
    within the layer puts every other neuron of it near the mean, and FLAP's global threshold
    keeps that layer almost whole."""
    ad = Adapter.for_model(model)
    metrics = (flap_ffn_metric(layer, ad, li, general) for li, layer in enumerate(ad.layers(model)))
    return [float(m.max() / m.sum()) for m in metrics]


def general_texts(spec: ExpertSpec, docs: int, work: Path) -> list[str]:
    """The calibration documents of the demo's general corpus with max_docs = `docs`."""
    s = spec.model_copy(update={"general": spec.general.model_copy(update={"max_docs": docs})})
    corpus = calibration_corpora(s)["general"][0]
    return prepare_corpus(corpus, work / f"general-{docs}").texts("calib")


def rows_mode(rows: list[dict], method: str) -> str:
    """The compensation `method` was first measured under: its own."""
    return next(r["compensation"] for r in rows if r["method"] == method)


def _shape(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--general-docs", type=int, nargs="*", default=[128, 512])
    ap.add_argument("--store", type=Path, help="a demo build's artifact store to read its "
                                               "statistics and Grams from")
    ap.add_argument("--methods", nargs="*", default=list(BASELINES), choices=BASELINES)
    args = ap.parse_args()
    model, tok, fp = demo_model()
    spec = ExpertSpec.model_validate(DEMO)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = eval_sets(spec, work, tok)
        own = [n for n in own_sets(sets, spec) if not is_out_of_source(n)]
        # the expert's own sets and general text (what the sweep reports: a baseline's damage)
        sets = {n: ex for n, ex in sets.items() if n in own or n == f"general={spec.general.value}"}
        dense = losses(model, tok, sets)
        cal = (stored_calibration(args.store, fp) if args.store
               else calibrate(model, tok, fp, spec, work))
        session = MaskSession(model)
        runs = [(m, spec.general.max_docs, cal.general[0]) for m in args.methods]
        same = moments(model, tok, general_texts(spec, spec.general.max_docs, work), spec.max_tokens)
        check = max(float((a - b).abs().max() / b.abs().max()) for a, b in (
            (same.down_sum, cal.general[0].down_sum), (same.o_sumsq, cal.general[0].o_sumsq)))
        assert same.n_tokens == cal.general[0].n_tokens and check < 1e-4, check
        for docs in args.general_docs:
            t = time.perf_counter()
            g = moments(model, tok, general_texts(spec, docs, work), spec.max_tokens)
            print(f"general text, {docs} docs ({g.n_tokens} tokens): {time.perf_counter() - t:.0f}s",
                  file=sys.stderr, flush=True)
            runs += [(m, docs, g) for m in GENERAL_METHODS if m in args.methods]
        flap_kept = None
        for method, docs, general in runs:
            scores = unit_scores(model, [method], general, spec.seed)[method]
            # general text of varying size: Moments, which the library's scores step (checking
            # a DimensionStats) would refuse; the plan is the build's own step
            plan = baseline_plan(baseline_job(spec, method, args.ratio), scores, model.config, fp)
            setup = plan.report["setup"]
            means = ChannelMeans.from_stats([general]) if setup["means"] == "general" else None
            kept = plan.report["kept_per_layer"]
            if method == "flap" and docs == spec.general.max_docs:
                flap_kept = kept["ffn"]
            # its own compensation; at the demo's general text also none, and (a method that
            # brings its own) the build's: what its structure is worth under cusprun's refit
            points = [(setup["compensation"], means or cal.grams)]
            if docs == spec.general.max_docs:
                points += [({"mode": "none", "ridge": 0.0}, None)]
                points += [({"mode": spec.compensation, "ridge": spec.ridge}, cal.grams)]
            for i, (comp, source) in enumerate(points):
                mode = comp["mode"]
                if mode in [c["mode"] for c, _ in points[:i]]:
                    continue
                session.apply(plan, grams=source, config=CompensationConfig.model_validate(comp))
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
                    "FLAP with more general-text calibration",
                    {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    result.say(f"ratio {args.ratio}; expert calibration {cal.grams.n_tokens} tokens; retention = "
               "dense loss / model loss on the demo's held-out sets\n")
    cols, cells = table_cells(rows)
    result.table(cols, cells, align=["l"] * 7 + ["r"] * (len(cols) - 7))
    at = {(r["method"], r["general docs"], r["compensation"]): r["mean own"] for r in rows}
    own_comp = ", ".join(f"{m} {v:.3f} ({c})" for (m, d, c), v in at.items()
                         if d == spec.general.max_docs and c == rows_mode(rows, m))
    result.headline = (f"Baselines at ratio {args.ratio:g}, each with its own compensation (mean "
                       f"retention on the expert's own sets): {own_comp}")
    shares = flap_top_share(model, cal.general[0])
    dominated = [li for li, v in enumerate(shares) if v >= 0.25]
    others = [k for li, k in enumerate(flap_kept or []) if li not in dominated]
    result.say(f"\nFLAP's FFN metric on the demo's general text: in {len(dominated)} of "
               f"{len(shares)} layers one neuron holds at least 25 % of the layer's sum (layers "
               f"{dominated}); FFN neurons `flap` keeps in those layers: "
               f"{[flap_kept[li] for li in dominated] if flap_kept else 'not measured'}, in the "
               f"others: {_shape(sorted(others)) if others else '-'}\n")
    result.values = {"rows": rows, "flap_top_neuron_share": shares, "flap_ffn_kept": flap_kept}
    result.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
