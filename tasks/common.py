"""How every heavy cusprun task is cached: by a content key the flow computes, never by run id.

Results are tiny JSON dicts (URIs, hashes, counts); the artifacts themselves live in the
artifact store. A cached result is only trusted while its artifact still exists there: the
flow passes refresh_cache=True when the store lost it, or when the user asks to refresh a stage.
"""
from __future__ import annotations

from typing import Any, Callable

from prefect import task


def _key_from_params(_ctx: Any, params: dict) -> str:
    return f"{params['stage']}-{params['key']}"


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only failures that could pass on a second try (a dropped
    connection, a timeout, HTTP 5xx or throttling, after the store's own retries gave up). User
    errors (missing credentials or bucket, access denied, bad input) and bugs fail at once."""
    from cusprun.storage import is_transient

    exc = state.data   # a user error keeps what caused it: a hub download cut mid-way is transient
    return isinstance(exc, BaseException) and (getattr(exc, "transient", False) or is_transient(exc))


def heavy_task(name: str, **options) -> Callable:
    """A task cached by its `stage` + `key` parameters, results serialised as JSON."""
    return task(name=name, cache_key_fn=_key_from_params, persist_result=True,
                result_serializer="json", retries=options.pop("retries", 1),
                retry_delay_seconds=options.pop("retry_delay_seconds", 5),
                retry_condition_fn=retry_if_transient, **options)


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
