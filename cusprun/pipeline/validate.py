"""Every check of a build's settings that needs neither a model nor any I/O, in one function that
both entry points call first: `cusprun.prune` and the pipeline (preflight.check_inputs, which
`cusprun build` and the flow's first task run). A bad value fails in milliseconds with a
SpecError or CorpusError naming it, not after a statistics pass."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from cusprun.errors import CorpusError, SpecError
from cusprun.pipeline.spec import ExpertSpec


def validate_build(spec: ExpertSpec, methods: Sequence[str] | None = None,
                   documents: Mapping[str, Sequence] | None = None) -> None:
    """`spec` passed pydantic already (layout, allocation, compensation, ratios, protect fraction
    and every other field's own range). Here: what spans fields or needs the machine.
    `methods`: what will be planned (default: Cus-Prun and the spec's baselines);
    `documents`: group -> in-memory documents (cusprun.prune), checked for shape and count."""
    from cusprun.baselines.methods import BASELINES, NEEDS_GENERAL
    from cusprun.pipeline.plan_inputs import uses_holdback

    methods = list(methods) if methods is not None else ["cusprun", *spec.baselines]
    for m in methods:
        if m != "cusprun" and m not in BASELINES:
            raise SpecError(f"method={m!r}; accepted: {', '.join(('cusprun', *BASELINES))}")
        if m in NEEDS_GENERAL and spec.general is None:
            raise SpecError(f"method {m!r} scores with general-text statistics: give a general "
                            "corpus (general: in the spec, general= in cusprun.prune)")
    _check_device(spec)
    _check_rounds(spec, methods)
    _check_heal(spec, methods)
    if spec.gguf:          # layout, and the converter / quantizer installed here
        from cusprun.export import check_gguf_request

        check_gguf_request(spec.gguf, spec.layout)
    hold = spec.holdback_docs if uses_holdback(spec) and "cusprun" in methods else 0
    dims = {**spec.dimensions(), **({"general": spec.general} if spec.general else {})}
    for group, docs in (documents or {}).items():
        if not isinstance(docs, (list, tuple)) or not docs or not all(isinstance(t, str) for t in docs):
            raise CorpusError(f"corpus {group!r}: give a non-empty list of strings or a source")
        max_docs = dims[group].max_docs
        held = hold if group != "general" else 0
        calib = min(len(docs), max_docs + held) - held
        need = min(spec.min_docs, max_docs)
        if calib < need:
            raise CorpusError(
                f"corpus {group!r} has {len(docs)} documents; its statistics need at least {need} "
                f"(min_docs) after {held} held back to measure allocations (holdback_docs): give "
                f"at least {need + held}, or lower min_docs / holdback_docs, or allocation='rank'")


def _check_rounds(spec: ExpertSpec, methods: Sequence[str]) -> None:
    """Iterative pruning re-plans on each round's sliced checkpoint: its statistics hold one
    width per unit type for all layers, and each round needs a ratio to aim at."""
    if spec.rounds == 1:
        return
    if spec.rule != "exact-ratio":
        raise SpecError(f"rounds={spec.rounds} needs rule='exact-ratio': the paper rule removes "
                        "what its sigma threshold finds, not a ratio that rounds can split; "
                        "use rounds=1 with rule='paper'")
    if spec.layout != "uniform":
        raise SpecError(f"rounds={spec.rounds} needs layout='uniform': a per_layer round leaves "
                        "layers of different widths, and the next round's statistics hold one "
                        "width per layer kind; use layout='uniform' or rounds=1")
    if "cusprun" not in methods:
        raise SpecError(f"rounds={spec.rounds} prunes Cus-Prun iteratively; baselines "
                        f"({', '.join(methods)}) are one shot: use rounds=1 with method=...")


def _check_heal(spec: ExpertSpec, methods: Sequence[str]) -> None:
    """heal.baselines names baselines this build compares (healing one it never slices would
    silently do nothing)."""
    if spec.heal is None or spec.heal.baselines is None:
        return
    compared = [m for m in methods if m != "cusprun"]
    for b in spec.heal.baselines:
        if b not in compared:
            raise SpecError(f"heal.baselines names {b!r}, which this build does not compare; "
                            f"accepted: {', '.join(compared) or '(none: the build has no baselines)'}")


def _check_device(spec: ExpertSpec) -> None:
    """device='cuda' on a machine without CUDA fails here, not at the first pass (in
    distributed mode the gpu pool's workers run the passes, so this machine may lack it)."""
    if spec.device != "cuda" or spec.execution == "distributed":
        return
    import torch

    if not torch.cuda.is_available():
        raise SpecError("device='cuda' but this machine has no CUDA device; use device='cpu', "
                        "or 'auto' (CUDA where there is one)")
