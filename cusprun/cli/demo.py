"""`cusprun demo`: the quick demo (the expert against dense and the best baseline, then a short
summary), `--full` (every baseline and the retention-vs-ratio sweep), or a customer profile."""
from __future__ import annotations

import argparse

from cusprun.cli.pipeline import STAGES, print_timings, run_build
from cusprun.pipeline.spec import ExpertSpec, load_spec

# What the demo asks the dense model first, per expert language.
DEMO_PROMPTS = {"en": "The capital of France is", "fr": "La capitale de la France est",
                "es": "La capital de Francia es", "de": "Die Hauptstadt von Frankreich ist"}


def demo_spec(args) -> ExpertSpec:
    """The quick or full English demo, or a customer profile (its own ratios, corpora and
    evaluation)."""
    from cusprun.pipeline.demo import demo_spec as data

    if not args.profile:
        return load_spec(data(full=args.full, storage_root=args.storage_root))
    from cusprun.pipeline.profiles import load_profile

    spec = load_profile(args.profile).spec.model_dump()
    if args.storage_root:
        spec["storage_root"] = args.storage_root
    return load_spec(spec)


def _introduce(spec: ExpertSpec) -> None:
    from cusprun.models import ALIASES, greedy_continuation, load_model, resolve_model, summarize

    dims = ", ".join(f"{d}={v.value}" for d, v in spec.dimensions().items())
    emb = ALIASES.get(spec.base_model)
    print(f"cusprun demo: expert {spec.name} ({dims}) from {emb.description if emb else spec.base_model}")
    r = resolve_model(spec.base_model)
    terms = emb.license_name if emb else r.license
    print(f"base model license: {terms or 'not stated'} (the expert is a derivative under the same terms)\n")
    print(summarize(r.path).as_text() + "\n")
    model, tok = load_model(r.path)
    lang = spec.language.value if spec.language else "en"
    prompt = DEMO_PROMPTS.get(lang, DEMO_PROMPTS["en"])
    print(f"dense model says: {prompt}{greedy_continuation(model, tok, prompt, 12)!s}\n")


def print_summary(spec: ExpertSpec, result: dict, full: bool) -> None:
    """The short ending: the expert against dense and the best baseline (size, speed, retention
    per set with intervals), where it is, how to load it, where the full comparison is."""
    from cusprun.pipeline.artifacts import read_file
    from cusprun.pipeline.context import open_store

    exp = result["expert"]
    if result.get("report"):
        store = open_store(spec.storage_root)
        key = store.key_of(result["report"])
        print("\n" + read_file(store, key, "report.md" if full else "summary.md").decode())
        if not full:
            print(baseline_note())
        print(f"full report: {result['report']}/report.md")
    print(f"\nexpert:  {exp['name']} version {exp['version']}\n         {exp['uri']}")
    print(f"load it: python -c \"import cusprun; m, tok = cusprun.load_expert('{exp['uri']}')\"")
    if not full:
        print("every baseline and the retention-vs-ratio sweep: cusprun demo --full")
    print_timings(result)


def baseline_note() -> str:
    """Why the quick demo shows this baseline: the record that ranks it, with its numbers."""
    from cusprun.pipeline.demo import recorded_baseline

    pick = recorded_baseline()
    means = ", ".join(f"{m} {v:.3f}" for m, v in sorted(pick["mean_retention"].items(),
                                                        key=lambda mv: -mv[1]))
    return (f"baseline `{pick['baseline']}`: the strongest of the full comparison recorded in "
            f"{pick['record']} ({(pick.get('date') or '')[:10]}); mean loss retention at "
            f"{pick['ratio']:g} over {', '.join(pick['sets'])}: {means}")


def _demo(args) -> int:
    spec = demo_spec(args)
    _introduce(spec)
    print_summary(spec, run_build(spec, args.refresh), full=args.full or bool(args.profile))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="build the English health QA expert from the embedded model",
                       description="End-to-end demo on the embedded SmolLM2-135M and bundled corpora: "
                                   "builds the expert, compares it with dense and the best baseline, "
                                   "prints a short summary. --full adds every baseline and the "
                                   "retention-vs-ratio sweep; --profile runs a customer profile "
                                   "instead (e.g. fr-health-qa on the embedded Gemma 3 270M).")
    d.add_argument("--full", action="store_true",
                   help="the full comparison: every baseline and the retention-vs-ratio sweep")
    d.add_argument("--profile", help="run this customer profile of deployments/customers/ instead "
                                     "of the English demo (e.g. fr-health-qa)")
    d.add_argument("--storage-root", help="artifact store (default ./artifacts)")
    d.add_argument("--refresh", action="append", default=[], choices=list(STAGES))
    d.set_defaults(func=_demo)
