"""The `watch-base-models` flow: notice new revisions of the customer profiles' base models and
rebuild exactly the profiles built from them.

For every distinct base model it reads the current revision (cusprun.models.revisions) and
compares it with the last one seen, kept in the artifact store at `watch/base-models.json`.
A model seen for the first time is only recorded. A new revision emits the Prefect event
`cusprun.base-model.updated` (resource `cusprun.base-model.<ref>`, related resources
`cusprun.profile.<name>` for every affected profile, payload with old/new revision) and then:

  rebuild=automation  nothing more: each customer deployment's trigger (deployments/prefect.yaml)
                      starts its own run when its profile is among the related resources
  rebuild=direct      this flow starts those runs itself; the event is labelled so that the
                      triggers ignore it, so a profile is never rebuilt twice
  rebuild=none        only the event and the record
"""
from __future__ import annotations

import datetime as dt
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from cusprun.errors import CusprunError, SpecError
from cusprun.models.revisions import current_revision
from cusprun.pipeline.profiles import BASE_MODEL_UPDATED, Profile, load_profiles
from flows.rebuild import start_rebuilds
from tasks.common import open_store_ref

STATE_KEY = "watch/base-models.json"
Rebuild = Literal["automation", "direct", "none"]


def model_resource_id(ref: str) -> str:
    return f"cusprun.base-model.{ref}"


def state_root(profiles: list[Profile], storage_root: str | None) -> str:
    """Where the watcher keeps its record: the given root, else the profiles' common root."""
    if storage_root:
        return storage_root
    roots = sorted({p.spec.storage_root for p in profiles})
    if len(roots) != 1:
        raise SpecError(f"The profiles use {len(roots)} storage roots ({', '.join(roots)}); pass "
                        "storage_root to say where the watcher keeps watch/base-models.json.")
    return roots[0]


@task(name="detect-revision", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def detect_revision(ref: str, storage: dict) -> dict:
    """Current revision of one base model (S3 options come from the storage block)."""
    return current_revision(ref, open_store_ref(storage).storage_options or None).as_dict()


def _emit(ref: str, old: str, new: dict, profiles: list[Profile], rebuild: str) -> str | None:
    event = emit_event(
        BASE_MODEL_UPDATED,
        resource={"prefect.resource.id": model_resource_id(ref), "prefect.resource.name": ref,
                  "cusprun.revision": new["revision"], "cusprun.rebuild": rebuild},
        related=[{"prefect.resource.id": p.resource_id, "prefect.resource.role": "profile",
                  "prefect.resource.name": p.name} for p in profiles],
        payload={"base_model": ref, "old_revision": old, "new_revision": new["revision"],
                 "kind": new["kind"], "method": new["method"],
                 "profiles": [p.name for p in profiles], "rebuild": rebuild})
    return str(event.id) if event else None


@flow(name="watch-base-models", log_prints=True)
def watch_base_models(rebuild: Rebuild = "automation", profiles: list[str] | None = None,
                      storage_root: str | None = None, storage_block: str | None = None,
                      profiles_dir: str | None = None) -> dict:
    """Check the base models of the customer profiles (all when `profiles` is empty) for new
    revisions; rebuild the affected profiles (see the module docstring for `rebuild`)."""
    log = get_run_logger()
    selected = load_profiles(profiles or None, profiles_dir)
    storage = {"root": state_root(selected, storage_root), "block": storage_block}
    store = open_store_ref(storage)
    store.check()  # an unreachable store fails here, before anything is emitted or started
    state = store.read_json(STATE_KEY) if store.exists(STATE_KEY) else {"models": {}}

    by_model: dict[str, list[Profile]] = {}
    for p in selected:
        by_model.setdefault(p.spec.base_model, []).append(p)
    futures = {ref: detect_revision.submit(ref, storage) for ref in by_model}

    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report, problems = {}, []
    for ref, fut in futures.items():
        affected = by_model[ref]
        names = [p.name for p in affected]
        try:
            new = fut.result()
        except CusprunError as e:
            log.warning("cannot read the revision of %s (profiles %s): %s", ref, names, e)
            report[ref] = {"status": "unreachable", "error": str(e), "profiles": names}
            continue
        old = state["models"].get(ref)
        entry = {"status": "unchanged", "revision": new["revision"], "profiles": names}
        if old is None:
            entry["status"] = "first-seen"
            log.info("first sight of %s at revision %s: recorded, nothing rebuilt", ref,
                     new["revision"])
        elif old["revision"] != new["revision"]:
            entry.update(status="updated", old_revision=old["revision"])
            entry["event_id"] = _emit(ref, old["revision"], new, affected, rebuild)
            log.info("%s changed %s -> %s; affected profiles: %s (rebuild: %s)", ref,
                     old["revision"], new["revision"], ", ".join(names), rebuild)
            if rebuild == "direct":
                try:
                    entry["flow_runs"] = start_rebuilds(affected, reason=f"{new['revision'][:12]}",
                                                        tags=["base-model-update"])
                except CusprunError as e:
                    problems.append(str(e))
                    report[ref] = {**entry, "status": "rebuild-failed", "error": str(e)}
                    continue  # not recorded: the next watch tries again
        report[ref] = entry
        state["models"][ref] = {**new, "profiles": names, "checked": now,
                                "since": now if entry["status"] != "unchanged" else
                                old.get("since", now)}

    store.write_json(STATE_KEY, state)
    rows = "\n".join(f"| {ref} | {r['status']} | {r.get('old_revision', '')} | "
                     f"{r.get('revision', r.get('error', ''))} | {', '.join(r['profiles'])} |"
                     for ref, r in report.items())
    create_markdown_artifact(f"| base model | status | old | new | profiles |\n|---|---|---|---|---|\n"
                             f"{rows}", key="base-model-watch",
                             description="Base-model revisions seen by the watcher")
    if problems:
        raise CusprunError("Some rebuilds could not be started:\n  " + "\n  ".join(problems))
    return report
