"""The build's Prefect tasks: each opens the artifact store and calls the library stage of
the same name (cusprun.pipeline.stages.<stage>), which reuses its committed artifact or computes
it. A task is named like its stage, its spec `refresh` entry and its store prefix."""
from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from cusprun.pipeline import preflight
from cusprun.pipeline.spec import ExpertSpec
from cusprun.pipeline.stages import baseline as baseline_stage
from cusprun.pipeline.stages import common
from cusprun.pipeline.stages import corpus as corpus_stage
from cusprun.pipeline.stages import evaluate as evaluate_stage
from cusprun.pipeline.stages import heal as heal_stage
from cusprun.pipeline.stages import plan as plan_stage
from cusprun.pipeline.stages import publish as publish_stage
from cusprun.pipeline.stages import scores as scores_stage
from cusprun.pipeline.stages import slice as slice_stage
from cusprun.pipeline.stages import stats as stats_stage
from tasks.common import finished, heavy_task, open_store_ref, retry_if_transient


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
    return common.model_info(ref, open_store_ref(storage).storage_options or None)


@heavy_task("corpus")
def corpus_task(key: str, storage: dict, corpus: dict, refresh: bool = False):
    t0 = time.perf_counter()
    return finished(corpus_stage.corpus_stage(open_store_ref(storage), key, corpus, refresh),
                    started=t0)


@heavy_task("stats")
def stats_task(storage: dict, jobs: list[dict], model: dict, runtime: dict,
                       max_tokens: int, batch_size: int, refresh: list[str] = ()):
    """Statistics (and Grams) of every calibration corpus missing from the store, one pass."""
    t0 = time.perf_counter()
    artifact = create_progress_artifact(0.0, description="Statistics pass (layers done)")

    def progress(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    out = stats_stage.stats_stage(open_store_ref(storage), jobs, model, runtime,
                                  max_tokens=max_tokens, batch_size=batch_size,
                                  refresh=list(refresh), on_progress=progress)
    return finished(out, [r for o in out for r in o.values() if r is not None], started=t0)


@heavy_task("scores")
def scores_task(key: str, storage: dict, model: dict, runtime: dict, methods: list[str],
                general: list[str], seed: int, refresh: bool = False):
    t0 = time.perf_counter()
    return finished(scores_stage.scores_stage(open_store_ref(storage), key, model, runtime,
                                              methods, general, seed, refresh), started=t0)


@heavy_task("plan")
def plan_task(key: str, storage: dict, model: dict, runtime: dict, inputs: dict,
              refresh: bool = False):
    t0 = time.perf_counter()
    return finished(plan_stage.plan_stage(open_store_ref(storage), key, model, runtime,
                                          refresh=refresh, **inputs), started=t0)


@heavy_task("baseline")
def baseline_task(storage: dict, jobs: list[dict], model: dict, refresh: bool = False):
    t0 = time.perf_counter()
    out = baseline_stage.baseline_stage(open_store_ref(storage), jobs, model, refresh)
    return finished(out, out, started=t0)


@heavy_task("slice")
def slice_task(key: str, storage: dict, model: dict, inputs: dict, refresh: bool = False):
    t0 = time.perf_counter()
    return finished(slice_stage.slice_stage(open_store_ref(storage), key, model, refresh=refresh,
                                            **inputs), started=t0)


@heavy_task("heal")
def heal_task(key: str, storage: dict, model: dict, runtime: dict, inputs: dict,
              refresh: bool = False):
    """Distil one sliced checkpoint from the dense model (spec `heal:`); on CUDA with bf16
    autocast, on a CPU in float32."""
    t0 = time.perf_counter()
    artifact = create_progress_artifact(0.0, description="Healing (optimizer steps done)")

    def progress(done: int, total: int) -> None:
        if done == total or done % max(total // 50, 1) == 0:
            update_progress_artifact(artifact, 100.0 * done / max(total, 1))

    return finished(heal_stage.heal_stage(open_store_ref(storage), key, model, runtime,
                                          refresh=refresh, on_step=progress, **inputs), started=t0)


@heavy_task("evaluate")
def evaluate_task(key: str, storage: dict, model: dict, runtime: dict, inputs: dict,
                  refresh: bool = False):
    t0 = time.perf_counter()
    return finished(evaluate_stage.evaluate_stage(open_store_ref(storage), key, model, runtime,
                                                  refresh=refresh, **inputs), started=t0)


@task(name="publish", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_if_transient)
def publish_task(storage: dict, name: str, sliced: dict, report: dict | None, card: dict,
                 gguf: list[str] | None = None) -> dict:
    """Publishes a new immutable version (atomically), with the GGUF files `gguf` names, unless
    the latest version holds the same checkpoint, report, card and GGUF types."""
    return publish_stage.publish_stage(open_store_ref(storage), name, sliced, report, card, gguf)
