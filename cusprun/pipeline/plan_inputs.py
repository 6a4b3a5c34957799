"""Turn an ExpertSpec into the concrete work list of a build: which corpora, with which keys.
Pure functions (no I/O), so the flow stays a readable wiring diagram and tests can check keys."""
from __future__ import annotations

from cusprun.pipeline.keys import content_key
from cusprun.pipeline.spec import DimensionSpec, ExpertSpec


def default_source(dimension: str, value: str, spec: ExpertSpec) -> str:
    """The bundled demo corpus for a dimension value (tasks follow the expert's language/domain)."""
    if dimension in ("language", "general"):
        return f"bundled://{dimension}/{value}"
    lang = spec.language.value if spec.language else "en"
    if dimension == "domain":
        return f"bundled://domain/{value}?lang={lang}"
    dom = f"&domain={spec.domain.value}" if spec.domain else ""
    return f"bundled://task/{value}?lang={lang}{dom}"


def corpus_specs(dimension: str, dim: DimensionSpec, spec: ExpertSpec) -> list[dict]:
    sources = dim.sources or [default_source(dimension, dim.value, spec)]
    return [{"source": s, "text_field": dim.text_field, "max_docs": dim.max_docs, "seed": spec.seed,
             "dimension": dimension, "value": dim.value} for s in sources]


def all_corpora(spec: ExpertSpec) -> dict[str, list[dict]]:
    """dimension (incl. 'general' and 'eval:<lang>' sets) -> corpus specs."""
    out = {d: corpus_specs(d, dim, spec) for d, dim in spec.dimensions().items()}
    if spec.general:
        out["general"] = corpus_specs("general", spec.general, spec)
    if spec.evaluation.enabled:
        own = spec.language.value if spec.language else None
        for lang in spec.evaluation.other_languages:
            if lang != own:
                out[f"eval:{lang}"] = corpus_specs(
                    "language", DimensionSpec(value=lang, max_docs=spec.evaluation.max_docs * 3), spec)
    return out


def corpus_key(corpus: dict) -> str:
    return content_key("corpus", corpus)


def stats_key(model_fp: str, corpus_hash: str, spec: ExpertSpec) -> str:
    # batch_size is not identity: padding contributes nothing to the statistics.
    return content_key("stats", model_fp, corpus_hash, {"max_tokens": spec.max_tokens})


def prune_config(spec: ExpertSpec, ratio: float) -> dict:
    return {"rule": spec.rule, "target_ratio": ratio, "sigma": spec.sigma, "layout": spec.layout,
            "min_docs": spec.min_docs}
