"""What an ExpertSpec implies before anything runs: its calibration and evaluation corpora and
the settings each stage derives from it. Pure functions (no I/O); keys are made from these by
cusprun.pipeline.worklist."""
from __future__ import annotations

from cusprun.pipeline.spec import DimensionSpec, ExpertSpec


def default_source(dimension: str, value: str, spec: ExpertSpec) -> str:
    """The bundled demo corpus for a dimension value, in the expert's language and domain where
    the bundled data has that combination."""
    from cusprun.corpora.bundled import default_bundled_source

    return default_bundled_source(
        dimension, value, language=spec.language.value if spec.language else None,
        domain=spec.domain.value if spec.domain and dimension == "task" else None)


def bundled_source(dimension: str, value: str, spec: ExpertSpec) -> str | None:
    """default_source, or None where the bundle has no corpus of this value."""
    from cusprun.errors import CorpusError

    try:
        return default_source(dimension, value, spec)
    except CorpusError:
        return None


def corpus_specs(dimension: str, dim: DimensionSpec, spec: ExpertSpec) -> list[dict]:
    """Calibration corpora of one dimension: every source, calibration side only. The expert's
    own dimensions also set holdback_docs aside (allocation search), general text does not."""
    sources = dim.sources or [default_source(dimension, dim.value, spec)]
    hold = spec.holdback_docs if dimension != "general" and uses_holdback(spec) else 0
    return [{"source": s, "text_field": dim.text_field, "max_docs": dim.max_docs, "seed": spec.seed,
             "min_docs": min(spec.min_docs, dim.max_docs), "max_eval_docs": 1, "min_eval_docs": 1,
             "dimension": dimension, "value": dim.value, **({"holdback_docs": hold} if hold else {})}
            for s in sources]


def uses_holdback(spec: ExpertSpec) -> bool:
    return spec.rule == "exact-ratio" and spec.allocation == "measured"


def probe_tokens(spec: ExpertSpec) -> int:
    """Tokens per held-back document when candidates are measured: the first 128 rank candidates
    as well as whole documents do, at a fraction of the cost on long documents."""
    return min(spec.max_tokens, 128)


def gram_tokens(spec: ExpertSpec) -> int:
    """Tokens per document in the compensation Grams: those the statistics see (capping them at
    128 cost up to 0.03 of held-out retention on the demo)."""
    return spec.max_tokens


def compensation_config(spec: ExpertSpec, mode: str | None = None) -> dict:
    return {"mode": mode or spec.compensation, "ridge": spec.ridge}


def needs_grams(spec: ExpertSpec) -> bool:
    """Grams feed the compensation, and the per-layer prior of a measured per_layer search."""
    return spec.compensation != "none" or (uses_holdback(spec) and spec.layout == "per_layer")


def calibration_corpora(spec: ExpertSpec) -> dict[str, list[dict]]:
    """dimension (and 'general') -> calibration corpus specs."""
    out = {d: corpus_specs(d, dim, spec) for d, dim in spec.dimensions().items()}
    if spec.general:
        out["general"] = corpus_specs("general", spec.general, spec)
    return out


def eval_pool_docs(ev) -> int:
    """Held-out documents asked of each evaluation corpus: enough for max_docs, the MC items, and
    for min_loss_tokens where documents average 16+ scored tokens."""
    return max(ev.max_docs, ev.mc_items, -(-ev.min_loss_tokens // 16))


def evaluation_corpora(spec: ExpertSpec) -> dict[str, dict]:
    """'dimension=value' -> a held-out-only corpus spec. Held-out documents are chosen by a stable
    hash of their id, so they are never in any calibration corpus of the same source; keeping them
    in separate corpora means evaluation settings never invalidate the statistics. Each dimension
    also gets its out-of-source sets ('dimension=value (out-of-source: ...)', out_of_source.py)."""
    from cusprun.pipeline.out_of_source import out_of_source_corpora

    if not spec.evaluation.enabled:
        return {}
    ev = spec.evaluation
    n = eval_pool_docs(ev)
    dims = dict(spec.dimensions())
    if spec.general:
        dims["general"] = spec.general
    own = spec.language.value if spec.language else None
    for lang in ev.other_languages:
        if lang != own:
            dims[f"language:{lang}"] = DimensionSpec(value=lang)
    out = {}
    for d, dim in dims.items():
        dimension = d.split(":")[0]
        source = (dim.sources or [default_source(dimension, dim.value, spec)])[0]
        out[f"{dimension}={dim.value}"] = {
            "source": source, "text_field": dim.text_field, "max_docs": 1, "min_docs": 1,
            "max_eval_docs": n, "min_eval_docs": 1, "seed": spec.seed,
            "dimension": dimension, "value": dim.value}
        if ev.out_of_source and ":" not in d:  # other languages: no source of the expert's
            out.update(out_of_source_corpora(dimension, dim, dim.sources or [source],
                                             bundled_source(dimension, dim.value, spec), n,
                                             spec.seed))
    return out


def prune_config(spec: ExpertSpec, ratio: float) -> dict:
    return {"rule": spec.rule, "target_ratio": ratio, "sigma": spec.sigma, "layout": spec.layout,
            "min_docs": spec.min_docs, "ffn_multiple": spec.ffn_multiple, "score": spec.score,
            "allocation": spec.allocation,
            "protect_fraction": spec.protect_fraction}


def baseline_job(spec: ExpertSpec, method: str, ratio: float) -> dict:
    """What a baseline's plan is made from besides its scores (cusprun.steps.baseline_plan): the
    build's layout, alignment and compensation, which a method that brings its own overrides."""
    return {"method": method, "ratio": ratio, "layout": spec.layout,
            "ffn_multiple": spec.ffn_multiple, "seed": spec.seed,
            "compensation": spec.compensation, "ridge": spec.ridge}


def expert_card(spec: ExpertSpec, model: dict) -> dict:
    """What the published expert's model card says of it: its name, the base model as the user
    named it, and the base model's license (written at publish: cusprun.slicing.card)."""
    from cusprun.models.embedded import license_card

    return {"expert": spec.name, "base_model": spec.base_model, **license_card(model.get("license"))}


def check_fits_model(spec: ExpertSpec, model_config) -> None:
    """Spec values that only make sense for a given model, refused before any heavy work."""
    from cusprun.adapters import Adapter
    from cusprun.errors import SpecError

    from cusprun.compensation import CompensationConfig
    from cusprun.compensation.config import check_bias_support

    adapter = Adapter.for_config(model_config)
    check_bias_support(adapter, CompensationConfig.model_validate(compensation_config(spec)))
    ffn = adapter.dims(model_config).ffn
    if spec.ffn_multiple > ffn:
        raise SpecError(f"ffn_multiple={spec.ffn_multiple} exceeds the base model's FFN width {ffn}; "
                        f"use 1 (exact widths) up to {ffn}, typically 64 or 128.")


def baseline_setup(spec: ExpertSpec, method: str, architecture: str | None) -> dict:
    """Layout, FFN alignment and compensation of a baseline in this build: the build's, or the
    method's own (flap: per_layer widths and FLAP's bias from general text;
    cusprun.baselines.methods). `architecture`: the base model's; None (a test's model record)
    counts as a family that carries output biases."""
    from cusprun.adapters import Adapter
    from cusprun.baselines.methods import baseline_setup as setup, bias_family

    return setup(method, layout=spec.layout, compensation=spec.compensation, ridge=spec.ridge,
                 ffn_multiple=spec.ffn_multiple,
                 bias_family=bias_family(Adapter(architecture)) if architecture else None).as_dict()


def slice_compensation(spec: ExpertSpec, method: str, architecture: str | None,
                       grams: list[str], general: list[str]) -> dict:
    """What a method's slice (and its sweep points) compensate with: {compensation, grams} from
    the expert's own Grams, or, for a method that brings its own (flap), {compensation, grams:
    [], means}: the statistics keys of the general text whose channel means give its biases
    (the first general corpus, the one the baseline scores read)."""
    setup = ({"compensation": compensation_config(spec), "means": "own"} if method == "cusprun"
             else baseline_setup(spec, method, architecture))
    comp = setup["compensation"]
    if setup["means"] == "general":
        return {"compensation": comp, "grams": [], "means": general[:1]}
    return {"compensation": comp, "grams": grams if comp["mode"] != "none" else []}
