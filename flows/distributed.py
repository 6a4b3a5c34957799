"""Distributed statistics: each calibration corpus's statistics (and Grams) run as a
`collect-stats` deployment run on the `gpu` work pool; the parent flow waits for all of them and
reads their records from the artifact store (never from Prefect's result storage, which need not
be shared)."""
from __future__ import annotations

import os

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from cusprun.errors import CusprunError
from cusprun.pipeline.artifacts import read_done
from cusprun.storage.layout import stage_key
from tasks import build as t
from tasks.common import open_store_ref

STATS_DEPLOYMENT = os.environ.get("CUSPRUN_STATS_DEPLOYMENT", "collect-stats/collect-stats")


@flow(name="collect-stats", log_prints=True)
def collect_stats_flow(job: dict, storage: dict, model: dict, runtime: dict, max_tokens: int = 512,
                       batch_size: int = 8, refresh: list[str] = ()) -> list[dict]:  # noqa: B006
    """Statistics (and Grams) of one corpus on this worker (the gpu pool in distributed mode)."""
    return t.stats_task.submit(storage, [job], model, runtime, max_tokens, batch_size,
                                       list(refresh)).result()


def _done(store, job: dict) -> bool:
    return read_done(store, stage_key("stats", job["stats"])) is not None and (
        not job["grams"] or read_done(store, stage_key("grams", job["grams"])) is not None)


def collect_stats_remote(jobs: list[dict], storage: dict, model: dict, runtime: dict, spec,
                         refresh: list[str], timeout_s: float = 6 * 3600) -> list[dict]:
    """Start one `collect-stats` run per corpus still missing, wait for all, return every job's
    {stats, grams} records from the store."""
    log = get_run_logger()
    store = open_store_ref(storage)
    runs = {}
    for i, job in enumerate(jobs):
        if not {"stats", "grams"} & set(refresh) and _done(store, job):
            log.info("statistics of %s=%s already in the store", job["group"], job["corpus"]["value"])
            continue
        runs[i] = run_deployment(
            STATS_DEPLOYMENT, timeout=0, as_subflow=True,
            parameters={"job": job, "storage": storage, "model": model, "runtime": runtime,
                        "max_tokens": spec.max_tokens, "batch_size": spec.batch_size,
                        "refresh": [s for s in refresh if s in ("stats", "grams")]},
            flow_run_name=f"stats-{job['group']}-{job['corpus']['value']}-{job['stats'][:8]}")
        log.info("started %s for %s=%s on the gpu pool", runs[i].name, job["group"],
                 job["corpus"]["value"])
    for run in runs.values():
        # wait_for_flow_run is async-only in Prefect 3.9: run it to completion from this sync flow
        final = run_coro_as_sync(wait_for_flow_run(run.id, timeout=int(timeout_s), log_states=True))
        if not final.state or not final.state.is_completed():
            raise CusprunError(f"collect-stats run {run.name} ended {final.state.name if final.state else '?'}")
    return [{"stats": read_done(store, stage_key("stats", j["stats"])),
             "grams": read_done(store, stage_key("grams", j["grams"])) if j["grams"] else None}
            for j in jobs]
