"""How every heavy cusprun task runs: the artifact store is the one cache layer.

A stage function returns its artifact's commit record, computing it only when the store does not
hold it under the stage's content key (cusprun.pipeline.stages.common.reused). Tasks carry no
Prefect cache of their own (two caches could disagree, and Prefect's result storage is not shared
by workers that share a store); a stage that found its artifact ends in a Completed state named
'Cached', so the UI still shows what was reused. Results are tiny JSON dicts."""
from __future__ import annotations

import time
from typing import Any, Callable


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only failures that could pass on a second try (a dropped
    connection, a timeout, HTTP 5xx or throttling, after the store's own retries gave up). User
    errors (missing credentials or bucket, access denied, bad input) and bugs fail at once."""
    from cusprun.storage import is_transient

    exc = state.data   # a user error keeps what caused it: a hub download cut mid-way is transient
    return isinstance(exc, BaseException) and (getattr(exc, "transient", False) or is_transient(exc))


def heavy_task(name: str, **options) -> Callable:
    """A stage task: retried once on transient failures, never cached by Prefect (see above)."""
    from prefect import task

    return task(name=name, retries=options.pop("retries", 1),
                retry_delay_seconds=options.pop("retry_delay_seconds", 5),
                retry_condition_fn=retry_if_transient, **options)


def finished(result: Any, records: list[dict] | None = None, started: float | None = None):
    """`result` as the task's return value: in a 'Cached' Completed state when every record
    (`records`, default [result]) was reused from the store. With `started` (perf_counter at
    the task's start), each record gets task_s, the task's wall time, for the build's timings."""
    from prefect.states import Completed

    records = [result] if records is None else records
    if started is not None:
        spent = round(time.perf_counter() - started, 1)
        for r in records:
            if r is not None:
                r["task_s"] = spent
    if records and all(r and r.get("reused") for r in records):
        return Completed(data=result, name="Cached", message="reused from the artifact store")
    return result


def open_store_ref(storage: dict):
    """Open the artifact store named by a flow's storage reference: {'root', 'block'}. Options
    (endpoint, credentials) come from the named Prefect Secret block holding a dict, loaded inside
    the task, so they never appear as task parameters or in the UI."""
    from cusprun.pipeline.context import open_store

    options = None
    if storage.get("block"):
        from prefect.blocks.system import Secret

        options = Secret.load(storage["block"]).get()
    return open_store(storage["root"], options)
