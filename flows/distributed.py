"""Distributed statistics: each corpus's statistics run as a `collect-stats` deployment run on
the `gpu` work pool; the parent flow waits for all of them and reads their results from the
artifact store (never from Prefect's result storage, which need not be shared)."""
from __future__ import annotations

import os

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from cusprun.errors import CusprunError
from cusprun.pipeline.context import invalidate, is_done
from tasks import stages as t
from tasks.common import open_store_ref

STATS_DEPLOYMENT = os.environ.get("CUSPRUN_STATS_DEPLOYMENT", "collect-stats/collect-stats")


@flow(name="collect-stats", log_prints=True)
def collect_stats_flow(key: str, storage: dict, model: dict, corpus: dict, max_tokens: int = 512,
                       batch_size: int = 8, refresh: bool = False) -> dict:
    """Statistics for one corpus on this worker (runs on the gpu pool in distributed mode)."""
    store = open_store_ref(storage)
    if refresh:
        invalidate(store, f"stats/{key}")
    force = refresh or not is_done(store, f"stats/{key}")
    return t.collect_stats.with_options(refresh_cache=force)(
        stage="stats", key=key, storage=storage, model=model, corpus=corpus,
        max_tokens=max_tokens, batch_size=batch_size)


def collect_stats_remote(jobs: dict, storage: dict, model: dict, spec, refresh: list[str],
                         timeout_s: float = 6 * 3600) -> dict:
    """Start one `collect-stats` run per job, wait for all, return their DONE records."""
    log = get_run_logger()
    store = open_store_ref(storage)
    runs = {}
    for job, (key, corpus) in jobs.items():
        if "stats" not in refresh and is_done(store, f"stats/{key}"):
            log.info("statistics %s already in the store", key)
            continue
        runs[job] = run_deployment(
            STATS_DEPLOYMENT, timeout=0, as_subflow=True,
            parameters={"key": key, "storage": storage, "model": model, "corpus": corpus,
                        "max_tokens": spec.max_tokens, "batch_size": spec.batch_size,
                        "refresh": "stats" in refresh},
            flow_run_name=f"stats-{corpus['dimension']}-{corpus['value']}-{key[:8]}")
        log.info("started %s for %s=%s on the gpu pool", runs[job].name, corpus["dimension"],
                 corpus["value"])
    for job, run in runs.items():
        # wait_for_flow_run is async-only in Prefect 3.9: run it to completion from this sync flow
        final = run_coro_as_sync(wait_for_flow_run(run.id, timeout=int(timeout_s), log_states=True))
        if not final.state or not final.state.is_completed():
            raise CusprunError(f"collect-stats run {run.name} ended {final.state.name if final.state else '?'}")
    return {job: store.read_json(f"stats/{key}/DONE.json") for job, (key, _) in jobs.items()}
