"""Test helpers (import as `from tests.support.flow_helpers import ...`) for tests that run the
build-expert flow in this process against the session's real Prefect server
(tests/support/prefect_server.py).

  tiny_spec(model, root, **over)   a small, fast ExpertSpec on a tiny local model
  run_build(spec, **kw)            build_expert's final state, which must be Completed
  record_task_run_states()         from now on, note every task-run state this process reports
  settled_task_runs(flow_run_id)   the flow run's task runs once the server has them all
  task_states(flow_state)          (task name, state name) of a finished flow run's task runs
  failed_task(flow_run_id, name)   the one failed task run of that name
"""
from __future__ import annotations

import threading
import uuid

from tests.support.wait import wait_until


def tiny_spec(model: str, root: str, **over):
    """24 documents per dimension, 64 tokens, one ratio; no baselines and no evaluation unless
    `over` gives them (over replaces whole top-level fields)."""
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


def run_build(spec, **kw):
    """build_expert(spec, **kw) in this process; its final state, asserted Completed."""
    from flows.build import build_expert

    state = build_expert(spec=spec, return_state=True, **kw)
    assert state.is_completed(), state
    return state


# Task runs reach the server as events that it records asynchronously, so a listing read right
# after a flow run may lack some, or show an older state. This process knows what it reported:
# flow run id -> {task run id: (name, last state name, final?)}.
_reported: dict[uuid.UUID, dict[uuid.UUID, tuple[str, str, bool]]] = {}
_lock = threading.Lock()
_installed = False


def record_task_run_states() -> None:
    """Note every task-run state change this process's task engine reports from now on (called
    by the prefect_api fixture; idempotent)."""
    global _installed
    import prefect.task_engine as engine

    with _lock:
        if _installed:
            return
        real = engine.emit_task_run_state_change_event

        def emit(task_run, initial_state, validated_state, *args, **kwargs):
            with _lock:
                _reported.setdefault(task_run.flow_run_id, {})[task_run.id] = (
                    task_run.name, validated_state.name, validated_state.is_final())
            return real(task_run, initial_state, validated_state, *args, **kwargs)

        engine.emit_task_run_state_change_event = emit
        _installed = True


def _read_task_runs(flow_run_id) -> list:
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id])), limit=200)

    return anyio.run(read)


def settled_task_runs(flow_run_id, timeout: float = 120) -> list:
    """The flow run's task runs as the server lists them, once every task run this process ran
    for it has ended and the server shows each in the last state this process reported."""
    assert _installed, "task-run states are recorded by the prefect_api fixture: use it"
    flow_run_id = uuid.UUID(str(flow_run_id))

    def settled():
        with _lock:
            expected = dict(_reported.get(flow_run_id, {}))
        if not all(final for _, _, final in expected.values()):
            return None                       # a task still running here
        runs = _read_task_runs(flow_run_id)
        shown = {r.id: r.state.name if r.state else None for r in runs}
        if any(shown.get(i) != state for i, (_, state, _) in expected.items()):
            return None
        return (runs,)                        # truthy even when no task ran

    (runs,) = wait_until(settled, what=f"the server to record the task runs of flow run "
                                       f"{flow_run_id}: {_reported.get(flow_run_id)}",
                         timeout=timeout, every=0.25)
    return runs


def task_name(task_run) -> str:
    """'stats' for the task run named 'stats-3f2'."""
    return task_run.name.rsplit("-", 1)[0]


def task_states(flow_state) -> list[tuple[str, str]]:
    """(task name, state name) of every task run of a finished flow run, as the server has them."""
    return [(task_name(r), r.state.name if r.state else "Pending")
            for r in settled_task_runs(flow_state.state_details.flow_run_id)]


def failed_task(flow_run_id, name: str):
    runs = [r for r in settled_task_runs(flow_run_id) if task_name(r) == name]
    assert len(runs) == 1, [(r.name, r.state.name) for r in runs]
    assert runs[0].state.is_failed(), runs[0].state
    return runs[0]
