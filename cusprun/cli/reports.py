"""`cusprun overlap`: how much several experts of one base model keep the same units, per layer."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _overlap(args) -> int:
    from cusprun.evaluation.config import EvaluationError
    from cusprun.evaluation.layer_overlap import (expert_name, kept_from_plan, layer_overlap,
                                                  overlap_markdown, read_expert_plan)
    from cusprun.evaluation.plots import plot_layer_overlap

    if len(args.experts) < 2:
        raise EvaluationError("Give at least two experts (directories with cusprun.json).")
    if args.names and len(args.names.split(",")) != len(args.experts):
        raise EvaluationError(f"--names gives {len(args.names.split(','))} names for "
                              f"{len(args.experts)} experts.")
    plans = [read_expert_plan(e) for e in args.experts]  # every input checked before any work
    names = (args.names.split(",") if args.names else
             [expert_name(p, Path(e.rstrip("/")).name) for p, e in zip(plans, args.experts)])
    if len(set(names)) != len(names):
        raise EvaluationError(f"Expert names {names} repeat; give distinct ones with --names.")
    fingerprints = {p.get("base_fingerprint") for p in plans}
    if len(fingerprints) > 1:
        raise EvaluationError(f"The experts come from different base models ({sorted(map(str, fingerprints))}); "
                              "their units cannot be compared.")
    kept = {n: kept_from_plan(p) for n, p in zip(names, plans)}
    rows = {kind: layer_overlap({n: kept[n][kind] for n in names}) for kind in ("ffn", "heads")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = plot_layer_overlap(rows["ffn"], names, out / "layer_overlap.png")
    plot_layer_overlap(rows["heads"], names, out / "layer_overlap_heads.png", unit="query heads")
    md = overlap_markdown(rows, names, image)
    (out / "layer_overlap.md").write_text(md + "\n")
    (out / "layer_overlap.json").write_text(json.dumps({"experts": dict(zip(names, args.experts)),
                                                        "layers": rows}, indent=1))
    print(md)
    print(f"written: {out / 'layer_overlap.md'}, {image}, {out / 'layer_overlap.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("overlap", help="shared vs expert-specific kept units per layer (plot)",
                       description="Compare the kept units of several experts cut from the same "
                                   "base model (e.g. en, fr and es language experts): per layer, "
                                   "the share of kept FFN neurons and heads shared by all experts, "
                                   "by some, or specific to one; writes a table, a plot and JSON.")
    p.add_argument("experts", nargs="+", help="expert directories (or their cusprun.json, or "
                                              "s3:// expert prefixes)")
    p.add_argument("--names", help="comma-separated names (default: each expert's language)")
    p.add_argument("--out", default="./artifacts/reports/overlap", help="output directory")
    p.set_defaults(func=_overlap)
