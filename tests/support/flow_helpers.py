"""Test helpers (import as `from flow_helpers import ...`) for tests that run the build-expert flow
against the session's real Prefect server (tests/support/prefect_server.py).

  tiny_spec(model, root, **over)   a small, fast ExpertSpec on a tiny local model
  settled_task_runs(flow_run_id)   the flow run's task runs once the server has them all
  failed_task(flow_run_id, name)   the one failed task run of that name
"""
from __future__ import annotations

import time


def tiny_spec(model: str, root: str, **over):
    from cusprun.pipeline.spec import load_spec

    dim = {"max_docs": 24}
    data = {
        "name": "tiny-expert", "base_model": model,
        "language": {"value": "en", **dim}, "domain": {"value": "health", **dim},
        "task": {"value": "qa", **dim}, "general": {"value": "en", **dim},
        "target_ratios": [0.25], "max_tokens": 64, "min_docs": 4,
        "baselines": [], "evaluation": {"enabled": False},
        "storage_root": root,
    }
    data.update(over)
    return load_spec(data)


def settled_task_runs(flow_run_id, timeout: float = 90) -> list:
    """Task runs reach the server as events, processed asynchronously: poll until every one has
    a final state and the listing stops changing."""
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id])), limit=200)

    seen, stable, deadline = None, 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = anyio.run(read)
        key = sorted((r.name, r.state.name if r.state else "") for r in runs)
        final = bool(runs) and all(r.state and r.state.is_final() for r in runs)
        stable = stable + 1 if key == seen and final else 0
        if stable >= 4:
            return runs
        seen = key
        time.sleep(0.5)
    raise AssertionError(f"task runs of flow run {flow_run_id} never settled: {seen}")


def failed_task(flow_run_id, name: str):
    runs = [r for r in settled_task_runs(flow_run_id) if r.name.rsplit("-", 1)[0] == name]
    assert len(runs) == 1, [(r.name, r.state.name) for r in runs]
    assert runs[0].state.is_failed(), runs[0].state
    return runs[0]
