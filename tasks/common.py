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


def heavy_task(name: str, **options) -> Callable:
    """A task cached by its `stage` + `key` parameters, results serialised as JSON."""
    return task(name=name, cache_key_fn=_key_from_params, persist_result=True,
                result_serializer="json", retries=options.pop("retries", 1),
                retry_delay_seconds=options.pop("retry_delay_seconds", 5), **options)


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
