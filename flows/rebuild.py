"""The `rebuild-experts` flow: rebuild customer profiles, as runs of their own deployments
(`build-expert/<profile>`, on the cpu pool) or, in local mode, in this process.

All profiles are loaded and validated before anything starts, so a typo in one name fails the run
at once and rebuilds nothing."""
from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from cusprun.errors import CusprunError
from cusprun.pipeline.profiles import Profile, load_profiles


def start_rebuilds(profiles: list[Profile], *, reason: str, tags: list[str] | None = None) -> dict:
    """Start a run of each profile's deployment (with the deployment's own parameters, i.e. the
    profile as last deployed) without waiting; returns profile -> {flow_run_id, name}."""
    log = get_run_logger()
    runs = {}
    for p in profiles:
        try:
            run = run_deployment(p.deployment, timeout=0, as_subflow=True,
                                 tags=["cusprun-rebuild", *(tags or [])],
                                 flow_run_name=f"{p.name}-{reason}")
        except ObjectNotFound:
            raise CusprunError(
                f"Deployment {p.deployment!r} of profile {p.name!r} does not exist on this Prefect "
                "server; deploy the profiles first: python deployments/render.py && prefect deploy "
                "--all --prefect-file deployments/prefect.yaml") from None
        log.info("started %s (%s) for profile %s", run.name, run.id, p.name)
        runs[p.name] = {"flow_run_id": str(run.id), "name": run.name}
    return runs


def _wait(runs: dict, timeout_s: float) -> list[str]:
    failed = []
    for name, r in runs.items():
        final = run_coro_as_sync(wait_for_flow_run(r["flow_run_id"], timeout=int(timeout_s)))
        r["state"] = final.state.name if final.state else None
        if not final.state or not final.state.is_completed():
            failed.append(f"{name} ({r['state']})")
    return failed


@flow(name="rebuild-experts", log_prints=True)
def rebuild_experts(profiles: list[str] | None = None,
                    mode: Literal["deployments", "local"] = "deployments",
                    wait: bool = False, wait_timeout_s: float = 12 * 3600,
                    profiles_dir: str | None = None) -> dict:
    """Rebuild the given customer profiles (all when empty).

    mode=deployments starts a run of each profile's deployment (workers build them; `wait`
    waits for them); mode=local builds each profile here, one after the other."""
    log = get_run_logger()
    selected = load_profiles(profiles or None, profiles_dir)  # SpecError here: nothing started
    log.info("rebuilding %d profile(s): %s", len(selected), ", ".join(p.name for p in selected))
    if mode == "deployments":
        runs = start_rebuilds(selected, reason="rebuild")
        failed = _wait(runs, wait_timeout_s) if wait else []
    else:
        from flows.build import build_expert

        runs, failed = {}, []
        for p in selected:
            state = build_expert(spec=p.spec, storage_block=p.storage_block, return_state=True)
            runs[p.name] = {"state": state.name}
            if state.is_completed():
                runs[p.name]["expert"] = state.result()["expert"]
            else:
                failed.append(f"{p.name} ({state.name}: {state.message})")
    if failed:
        raise CusprunError(f"Rebuild failed for: {', '.join(failed)}")
    return runs
