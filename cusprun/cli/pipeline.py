"""`cusprun build` and `cusprun demo`: run the build-expert Prefect flow from the terminal.

Without PREFECT_API_URL, the flow runs against a temporary local server (embedded) that the
command starts and stops (flows/temporary_server.py; its output goes to prefect-server.log in
the cusprun cache, ~/.cache/cusprun by default); with it, runs show up in that server's UI like any
deployment run."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import get_args

from cusprun.errors import SpecError
from cusprun.pipeline.spec import DimensionSpec, ExpertSpec, Stage, load_spec

STAGES: tuple[str, ...] = get_args(Stage)

_EXAMPLE = {"language": "de", "domain": "health", "task": "qa"}

def _spec_from_args(args) -> ExpertSpec:
    if args.profile:
        from cusprun.pipeline.profiles import load_profile

        data = load_profile(args.profile).spec.model_dump()
    elif args.spec:
        data = load_spec(args.spec).model_dump()
    else:
        data = ExpertSpec().model_dump()
    for dim in ("language", "domain", "task"):
        value, sources = getattr(args, dim), getattr(args, f"{dim}_source")
        if sources and (not value or value == "none"):
            raise SpecError(f"--{dim}-source {sources[0]!r} needs --{dim} VALUE (what the corpus "
                            f"shows, e.g. --{dim} {_EXAMPLE[dim]}).")
        if value == "none":
            data[dim] = None
        elif value:
            data[dim] = {"value": value, "sources": sources or []}
        if (held := getattr(args, f"{dim}_eval_source", None)):
            if not data.get(dim):
                raise SpecError(f"--{dim}-eval-source {held[0]!r} needs a {dim} to measure (--{dim} "
                                f"VALUE, e.g. --{dim} {_EXAMPLE[dim]}).")
            data[dim] = {**data[dim], "eval_sources": held}
    if args.general == "none":
        data["general"] = None
    elif args.general:
        data["general"] = DimensionSpec(value=args.general).model_dump()
    if args.no_evaluation:
        data["evaluation"] = {**(data.get("evaluation") or {}), "enabled": False}
    for field in ("name", "base_model", "rule", "layout", "storage_root", "execution", "score",
                  "allocation", "compensation", "streaming", "device"):
        if getattr(args, field, None):
            data[field] = getattr(args, field)
    if args.ratio:
        data["target_ratios"] = args.ratio
    if getattr(args, "ffn_multiple", None) is not None:
        data["ffn_multiple"] = args.ffn_multiple
    if getattr(args, "gguf", None):
        data["gguf"] = [t.upper() for t in args.gguf]
    if getattr(args, "rounds", None) is not None:
        data["rounds"] = args.rounds
    if getattr(args, "protect_fraction", None) is not None:
        data["protect_fraction"] = args.protect_fraction
    if getattr(args, "hub_kernels", False):
        data["hub_kernels"] = True
    if args.baselines is not None:
        data["baselines"] = [b for b in args.baselines.split(",") if b]
    return load_spec(data)


def _prefect_defaults() -> None:
    """Embedded mode (no PREFECT_API_URL) starts a temporary server: give it time on a loaded
    2-core box and keep its telemetry off. Explicit user settings win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextlib.contextmanager
def _quiet_retries():
    retry_log = logging.getLogger("cusprun.storage.retry")
    if retry_log.isEnabledFor(logging.DEBUG):   # -v / --debug: show every attempt
        yield
        return
    level = retry_log.level
    retry_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retry_log.setLevel(level)


def run_build(spec: ExpertSpec, refresh: list[str] | None = None) -> dict:
    """Check the inputs (seconds, before Prefect starts), then run the flow."""
    from cusprun.pipeline.preflight import check_inputs

    with _quiet_retries():  # two quick attempts; the error line says it all
        check_inputs(spec)
    _prefect_defaults()
    from cusprun.paths import cache_root
    from flows.build import build_expert
    from flows.temporary_server import temporary_server

    t0 = time.perf_counter()
    # Stopped before this returns or raises: the build's result or error is the last output.
    with temporary_server(cache_root() / "prefect-server.log"):
        result = build_expert(spec=spec, refresh=refresh or [])
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def _print_result(spec: ExpertSpec, result: dict) -> None:
    from cusprun.pipeline.artifacts import read_file
    from cusprun.pipeline.context import open_store

    if result.get("report"):
        store = open_store(spec.storage_root)
        print("\n" + read_file(store, store.key_of(result["report"]), "report.md").decode())
        print(f"report:  {result['report']}")
    exp = result["expert"]
    print(f"expert:  {exp['name']} version {exp['version']}\n         {exp['uri']}")
    print(f"load it: python -c \"import cusprun; m, tok = cusprun.load_expert('{exp['uri']}')\"")
    print_timings(result)


def print_timings(result: dict) -> None:
    """The build's stages, each with its wall time or 'reused' (artifacts from the store)."""
    rows = result.get("timings") or []
    if rows:
        print("\nstage timings (wall seconds; stages of one kind ran concurrently):")
        width = max(len(r["stage"]) for r in rows)
        for r in rows:
            note = ("reused" if r["reused"] == r["artifacts"] else
                    f"{r['seconds']:7.1f}s" + (f"  ({r['reused']} of {r['artifacts']} reused)"
                                               if r["reused"] else ""))
            print(f"  {r['stage']:<{width}}  {note}")
    print(f"wall time: {result['wall_s']}s")


def _build(args) -> int:
    spec = _spec_from_args(args)
    _print_result(spec, run_build(spec, args.refresh))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="build, evaluate and publish an expert (runs the Prefect flow)",
                       description="Build an expert from a YAML spec, a customer profile, or flags "
                                   "(flags override the spec/profile).")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--spec", help="YAML file with an ExpertSpec")
    src.add_argument("--profile", help="customer profile name in deployments/customers/")
    b.add_argument("--name")
    b.add_argument("--base-model", help="alias, hub id[@rev], local dir, s3:// prefix or .gguf")
    for dim in ("language", "domain", "task"):
        b.add_argument(f"--{dim}", help=f"{dim} value ('none' to leave the dimension out)")
        b.add_argument(f"--{dim}-source", action="append",
                       help=f"corpus URI for the {dim} (repeatable; default: the bundled corpus)")
        b.add_argument(f"--{dim}-eval-source", action="append",
                       help=f"out-of-source text of the {dim}, e.g. the customer's own documents "
                            "(repeatable): all held out, scored beside the in-source set")
    b.add_argument("--general", help="general-text language protecting the units it needs and "
                                     "feeding wanda-sp/flap/flap-score ('none': no general corpus)")
    b.add_argument("--no-evaluation", action="store_true",
                   help="skip the comparison with dense and baselines (e.g. experts built only "
                        "for `cusprun overlap`)")
    b.add_argument("--ratio", type=float, action="append", help="target ratio (repeatable)")
    b.add_argument("--gguf", action="append", metavar="TYPE",
                   help="also publish this GGUF type for llama.cpp (repeatable): F16, Q8_0, Q4_K_M")
    b.add_argument("--rounds", type=int, help="reach each ratio in this many rounds, re-measuring "
                   "the partly pruned model between them (1-16; default 1: one shot)")
    b.add_argument("--rule", choices=["exact-ratio", "paper"])
    b.add_argument("--layout", choices=["uniform", "per_layer"])
    b.add_argument("--score", choices=["centered", "impact", "percentile"],
                   help="unit score of the exact-ratio rule (default centered)")
    b.add_argument("--allocation", choices=["measured", "rank"],
                   help="head/FFN and per-layer budget: measured on held-back docs (default) or by rank")
    b.add_argument("--compensation", choices=["none", "bias", "ls", "ls+bias"],
                   help="closed-form correction of kept weights (default ls), for every method "
                        "but flap (FLAP's own bias)")
    b.add_argument("--ffn-multiple", type=int, help="round kept FFN widths to a multiple of this "
                   "(1: exact target; 64/128: faster matmuls)")
    b.add_argument("--protect-fraction", type=float, help="never prune the units general text "
                   "needs most: those whose mean rank percentile is >= 1 - this (default 0.05; 0: off)")
    b.add_argument("--baselines", help="comma-separated: random,magnitude,wanda-sp,flap,flap-score "
                                       "('' for none)")
    b.add_argument("--storage-root", help="artifact store: local dir or s3://bucket/prefix")
    b.add_argument("--execution", choices=["local", "distributed"])
    b.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where passes run (default auto: CUDA when available)")
    b.add_argument("--streaming", choices=["auto", "always", "never"],
                   help="read one decoder layer at a time from the checkpoint ('always'), load the "
                        "model whole ('never'), or decide from free memory (default auto)")
    b.add_argument("--hub-kernels", action="store_true",
                   help="let transformers fetch Hub kernels at load (needs the hub; off by default "
                        "so air-gapped workers load)")
    b.add_argument("--refresh", action="append", default=[], choices=list(STAGES),
                   help="force a stage to recompute (repeatable)")
    b.set_defaults(func=_build)

