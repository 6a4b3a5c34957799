"""The pipeline's stages as plain functions: inputs are URIs, hashes and specs; outputs are small
dicts. Each stage reads its inputs from the artifact store, works in a local scratch directory,
uploads its artifact under a content key and marks it done last. Prefect tasks wrap these."""
from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from cusprun.errors import SpecError
from cusprun.models import resolve_model
from cusprun.pipeline.context import commit, local_copy, scratch_dir, timed
from cusprun.storage import ArtifactStore


def model_info(ref: str, storage_options: dict | None = None) -> dict:
    """Resolve the base model on this machine; downstream stages carry only ref + fingerprint."""
    r = resolve_model(ref, storage_options=storage_options)
    return {"ref": ref, "fingerprint": r.fingerprint, "architecture": r.architecture,
            "path": str(r.path), "license": r.license}


def local_model(ref: str, fingerprint: str, storage_options: dict | None = None) -> Path:
    """The base model on this worker, refusing a model that changed since the flow started."""
    r = resolve_model(ref, storage_options=storage_options)
    if r.fingerprint != fingerprint:
        raise SpecError(f"Base model {ref!r} has fingerprint {r.fingerprint} on this worker, but the "
                        f"flow started with {fingerprint}; rerun the flow to use the new revision.")
    return r.path


def prepare_corpus_stage(store: ArtifactStore, key: str, corpus: dict) -> dict:
    from cusprun.corpora import CorpusSpec, prepare_corpus

    if corpus["source"].startswith("s3://") and not corpus.get("storage_options"):
        corpus = {**corpus, "storage_options": store.storage_options}  # same endpoint as the store
    spec = CorpusSpec.model_validate(corpus)
    with timed(f"corpus {spec.source}"), scratch_dir("corpus", key) as out:
        prepared = prepare_corpus(spec, out)
        return commit(store, out, f"corpora/{key}", {
            "hash": prepared.hash, "n_docs": prepared.n_docs, "n_calib": prepared.n_calib,
            "n_eval": prepared.n_eval, "file": Path(prepared.path).name, "source": spec.source,
            "dimension": spec.dimension, "value": spec.value})


def _corpus_table(store: ArtifactStore, corpus: dict, split: str | None):
    from cusprun.corpora import read_corpus

    return read_corpus(local_copy(store, corpus["key"]) / corpus["file"], split=split)


def collect_stats_stage(store: ArtifactStore, key: str, model: dict, corpus: dict, *,
                        max_tokens: int, batch_size: int,
                        on_progress: Callable[[int, int], None] | None = None,
                        grams_key: str | None = None, grams_precision: str = "float32") -> dict:
    """Impact statistics of one calibration corpus. With `grams_key`, the same forward pass also
    collects its compensation Grams and commits them under grams/<grams_key> (before the
    statistics), returned as result["grams"]: what grams_stage would have written (at
    `grams_precision`)."""
    from cusprun.models import load_model
    from cusprun.scoring import collect_stats, save_stats

    texts = _corpus_table(store, corpus, "calib").column("text").to_pylist()
    path = local_model(model["ref"], model["fingerprint"], store.storage_options or None)
    what = "statistics" + (" + compensation Grams" if grams_key else "")
    with timed(f"{what} {corpus['dimension']}={corpus['value']} ({len(texts)} docs)"), \
            ExitStack() as tmp:
        m, tok = load_model(path)
        gram_out = tmp.enter_context(scratch_dir("grams", grams_key)) if grams_key else None
        stats = collect_stats(m, tok, texts, max_tokens=max_tokens, batch_size=batch_size,
                              on_progress=on_progress, grams_dir=gram_out,
                              grams_precision=grams_precision,
                              grams_extra={"model_fingerprint": model["fingerprint"],
                                           "corpus_hash": corpus["hash"], "fused": True})
        grams = (_commit_grams(store, gram_out, grams_key, corpus, stats.summary["n_tokens"])
                 if grams_key else None)
        out = tmp.enter_context(scratch_dir("stats", key))
        save_stats(stats, out, model_fingerprint=model["fingerprint"], corpus_hash=corpus["hash"],
                   extra={"dimension": corpus["dimension"], "value": corpus["value"]})
        result = commit(store, out, f"stats/{key}", {
            "n_docs": len(texts), "corpus_hash": corpus["hash"], "dimension": corpus["dimension"],
            "value": corpus["value"]})
        return {**result, "grams": grams} if grams else result


def _commit_grams(store: ArtifactStore, out: Path, key: str, corpus: dict, n_tokens: int) -> dict:
    return commit(store, out, f"grams/{key}", {
        "n_tokens": n_tokens, "corpus_hash": corpus["hash"],
        "dimension": corpus["dimension"], "value": corpus["value"]})


def grams_stage(store: ArtifactStore, key: str, model: dict, corpus: dict, *, max_tokens: int,
                batch_size: int, max_docs: int | None = None, precision: str = "float32") -> dict:
    """Input Gram matrices of down_proj / o_proj on (the first max_docs documents of) one
    calibration corpus (compensation); `precision` of their products (collect_grams)."""
    from cusprun.compensation import collect_grams
    from cusprun.models import load_model

    texts = _corpus_table(store, corpus, "calib").column("text").to_pylist()[:max_docs]
    path = local_model(model["ref"], model["fingerprint"], store.storage_options or None)
    with timed(f"compensation Grams {corpus['dimension']}={corpus['value']} ({len(texts)} docs)"), \
            scratch_dir("grams", key) as out:
        m, tok = load_model(path)
        summary = collect_grams(m, tok, texts, out, max_tokens=max_tokens, batch_size=batch_size,
                                precision=precision,
                                extra={"model_fingerprint": model["fingerprint"],
                                       "corpus_hash": corpus["hash"]})
        return _commit_grams(store, out, key, corpus, summary["n_tokens"])


def gram_set(store: ArtifactStore, grams: list[dict], cache_bytes: int = 1 << 30):
    """The summed Grams of the given grams artifacts, or None when there are none."""
    from cusprun.compensation import GramSet

    return GramSet([local_copy(store, g["key"]) for g in grams], cache_bytes) if grams else None


def heldback_texts(store: ArtifactStore, corpora: dict[str, list[dict]]) -> dict[str, list[str]]:
    """dimension -> its corpora's held-back documents (split 'holdback')."""
    return {dim: [t for c in cs for t in _corpus_table(store, c, "holdback").column("text").to_pylist()]
            for dim, cs in corpora.items()}


def _load_stats(store: ArtifactStore, stats: dict):
    from cusprun.scoring import load_stats

    return load_stats(local_copy(store, stats["key"]))


def _write_plan(store: ArtifactStore, key: str, plan) -> dict:
    with scratch_dir("plan", key) as out:
        (out / "plan.json").write_text(plan.model_dump_json(indent=2))
        return commit(store, out, f"plans/{key}", {
            "method": plan.method, "target_ratio": plan.target_ratio,
            "achieved_ratio": plan.achieved_ratio, "layout": plan.layout})


def read_plan(store: ArtifactStore, plan: dict):
    from cusprun.masks.plan import PruningPlan

    return PruningPlan.model_validate_json((local_copy(store, plan["key"]) / "plan.json").read_text())


def cusprun_plan_stage(store: ArtifactStore, key: str, model: dict, stats: dict[str, list[dict]],
                       general: list[dict], prune: dict, grams: list[dict] | None = None,
                       heldback: dict[str, list[dict]] | None = None,
                       compensation: dict | None = None, probe_max_tokens: int = 256,
                       probe_precision: str = "float32") -> dict:
    """Cus-Prun's plan. With allocation='measured' the dense model is loaded and candidate
    allocations are scored on the held-back documents of `heldback` (dimension -> corpora),
    masked and compensated with `compensation` from `grams`, as slicing will do it."""
    from cusprun.models.loading import load_config

    from cusprun.masks import PruneConfig, build_plan

    config = PruneConfig.model_validate(prune)
    with timed(f"merge masks ({config.rule}, target {config.target_ratio}, {config.allocation})"):
        loaded = {dim: [_load_stats(store, s) for s in items] for dim, items in stats.items()}
        gen = [_load_stats(store, s) for s in general] or None
        path = local_model(model["ref"], model["fingerprint"], store.storage_options or None)
        model_config = load_config(path)
        probe = None
        if config.rule == "exact-ratio" and config.allocation == "measured":
            from cusprun.allocation import DamageProbe
            from cusprun.compensation import CompensationConfig
            from cusprun.models import load_model

            m, tok = load_model(path)
            dense_key = json.dumps([model["fingerprint"], probe_max_tokens, probe_precision, {
                d: [c["hash"] for c in cs] for d, cs in (heldback or {}).items()}], sort_keys=True)
            probe = DamageProbe(m, tok, heldback_texts(store, heldback or {}),
                                grams=gram_set(store, grams or []),
                                compensation=CompensationConfig.model_validate(compensation or {}),
                                max_tokens=probe_max_tokens, dense_key=dense_key,
                                precision=probe_precision)
        plan = build_plan(loaded, config, model_config, base_fingerprint=model["fingerprint"],
                          general=gen, probe=probe)
        if compensation:
            plan.report["compensation"] = compensation
        for dim, items in stats.items():              # build_plan filled value and corpus hashes
            plan.dimensions[dim]["stats"] = [s["uri"] for s in items]
        return _write_plan(store, key, plan)


def baseline_plan_stage(store: ArtifactStore, key: str, model: dict, method: str, ratio: float,
                        layout: str, general: list[dict], seed: int, ffn_multiple: int = 1) -> dict:
    from cusprun.baselines import baseline_plan
    from cusprun.models import load_model

    with timed(f"baseline {method} at {ratio}"):
        m, _ = load_model(local_model(model["ref"], model["fingerprint"], store.storage_options or None), device="cpu")
        gen = _load_stats(store, general[0]) if general else None
        plan = baseline_plan(method, m, ratio, layout, base_fingerprint=model["fingerprint"],
                             general=gen, seed=seed, ffn_multiple=ffn_multiple)
        return _write_plan(store, key, plan)


def slice_stage(store: ArtifactStore, key: str, model: dict, plan: dict, card: dict,
                grams: list[dict] | None = None, compensation: dict | None = None) -> dict:
    from cusprun.compensation import CompensationConfig
    from cusprun.slicing import slice_checkpoint
    from cusprun.slicing.compensated import Compensation

    p = read_plan(store, plan)
    comp = CompensationConfig.model_validate(compensation or {"mode": "none"})
    with timed(f"slice {p.method} ({p.layout}, {p.achieved_ratio:.3f}, compensation {comp.mode})"), \
            scratch_dir("slice", key) as out:
        slice_checkpoint(local_model(model["ref"], model["fingerprint"], store.storage_options or None),
                         p, out / "model", model_fingerprint=model["fingerprint"], card=card,
                         compensation=Compensation(comp, gram_set(store, grams or [], 0) if comp.enabled else None))
        info = json.loads((out / "model" / "cusprun.json").read_text())
        return commit(store, out / "model", f"sliced/{key}", {
            "method": p.method, "ratio": p.achieved_ratio, "target_ratio": p.target_ratio,
            "params": info.get("params", {})})
