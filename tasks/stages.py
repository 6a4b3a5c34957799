"""Prefect tasks: thin wrappers that open the artifact store and call a library stage.
Every heavy task is cached by `stage` + content `key` (see tasks.common)."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from cusprun.pipeline import evaluate_stage as ev
from cusprun.pipeline import preflight, stages
from cusprun.pipeline.spec import ExpertSpec
from tasks.common import heavy_task, open_store_ref, retry_if_transient


@task(name="check-inputs", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_if_transient)
def check_inputs(spec: ExpertSpec, storage: dict) -> None:
    """Seconds, before any heavy work: the store is reachable and writable, the base model and
    every corpus source exist. Fails with the same one-line message `cusprun build` prints."""
    preflight.check_inputs(spec, open_store_ref(storage).storage_options or None)


@task(name="resolve-base-model", retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_if_transient)
def resolve_base_model(ref: str, storage: dict) -> dict:
    """Fetch (or find in the local cache) the base model and fingerprint it."""
    return stages.model_info(ref, open_store_ref(storage).storage_options or None)


@heavy_task("prepare-corpus")
def prepare_corpus(stage: str, key: str, storage: dict, corpus: dict) -> dict:
    return stages.prepare_corpus_stage(open_store_ref(storage), key, corpus)


@heavy_task("collect-stats")
def collect_stats(stage: str, key: str, storage: dict, model: dict, corpus: dict,
                  max_tokens: int, batch_size: int, grams_key: str | None = None,
                  grams_precision: str = "float32") -> dict:
    """Statistics of one calibration corpus; with grams_key, its compensation Grams too (one pass)."""
    label = f"{corpus['dimension']}={corpus['value']}"
    artifact = create_progress_artifact(0.0, description=f"Statistics for {label}")

    def progress(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    return stages.collect_stats_stage(open_store_ref(storage), key, model, corpus,
                                      max_tokens=max_tokens, batch_size=batch_size,
                                      on_progress=progress, grams_key=grams_key,
                                      grams_precision=grams_precision)


@heavy_task("collect-grams")
def collect_grams(stage: str, key: str, storage: dict, model: dict, corpus: dict,
                  max_tokens: int, batch_size: int, max_docs: int | None = None,
                  precision: str = "float32") -> dict:
    """Compensation Grams of one calibration corpus (layer by layer)."""
    return stages.grams_stage(open_store_ref(storage), key, model, corpus, max_tokens=max_tokens,
                              batch_size=batch_size, max_docs=max_docs, precision=precision)


@heavy_task("merge-masks")
def merge_masks(stage: str, key: str, storage: dict, model: dict, stats: dict, general: list,
                prune: dict, grams: list | None = None, heldback: dict | None = None,
                compensation: dict | None = None, probe_max_tokens: int = 256,
                probe_precision: str = "float32") -> dict:
    return stages.cusprun_plan_stage(open_store_ref(storage), key, model, stats, general, prune,
                                     grams=grams, heldback=heldback, compensation=compensation,
                                     probe_max_tokens=probe_max_tokens,
                                     probe_precision=probe_precision)


@heavy_task("baseline-plan")
def baseline_plan(stage: str, key: str, storage: dict, model: dict, method: str, ratio: float,
                  layout: str, general: list, seed: int, ffn_multiple: int = 1) -> dict:
    return stages.baseline_plan_stage(open_store_ref(storage), key, model, method, ratio, layout,
                                      general, seed, ffn_multiple)


@heavy_task("slice-weights")
def slice_weights(stage: str, key: str, storage: dict, model: dict, plan: dict, card: dict,
                  grams: list | None = None, compensation: dict | None = None) -> dict:
    return stages.slice_stage(open_store_ref(storage), key, model, plan, card, grams=grams,
                              compensation=compensation)


@heavy_task("evaluate")
def evaluate(stage: str, key: str, storage: dict, model: dict, candidates: dict,
             eval_corpora: dict, options: dict, overlap_plan: dict | None = None,
             sweep: dict | None = None, grams: list | None = None) -> dict:
    return ev.evaluate_stage(open_store_ref(storage), key, model, candidates, eval_corpora, options,
                             overlap_plan, sweep=sweep, grams=grams)


@task(name="publish-expert", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_if_transient)
def publish(storage: dict, name: str, sliced: dict, report: dict | None) -> dict:
    """Not cached: every build publishes a new immutable version (atomically)."""
    return ev.publish_stage(open_store_ref(storage), name, sliced, report)
