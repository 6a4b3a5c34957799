"""deployments/prefect.yaml: consistent with the customer profiles, and deployed for real with
`prefect deploy --all` against a temporary `prefect server start` (see tests/support/prefect_server.py)."""
from __future__ import annotations

import anyio
import pytest
import yaml

from tests.support.network import closed_port, tcp_connects
from tests.support.paths import REPO, render_script

PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
FIXED = {"build-expert": ("build-expert", "cpu"), "collect-stats": ("collect-stats", "gpu"),
         "rebuild-experts": ("rebuild-experts", "cpu"),
         "watch-base-models": ("watch-base-models", "cpu")}


def _yaml_deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


def test_prefect_yaml_is_rendered_from_the_current_profiles():
    render = render_script()
    assert render.render_file(PREFECT_YAML.read_text()) == PREFECT_YAML.read_text(), \
        "deployments/prefect.yaml is stale: run python deployments/render.py"
    assert render.main(["--check"]) == 0


def test_every_profile_has_its_deployment_with_the_same_spec_schedule_and_trigger():
    from cusprun.pipeline.profiles import BASE_MODEL_UPDATED, load_profiles
    from cusprun.pipeline.spec import load_spec

    deployments = _yaml_deployments()
    profiles = load_profiles()
    assert len(profiles) >= 3
    assert set(deployments) == set(FIXED) | {p.name for p in profiles}
    for p in profiles:
        d = deployments[p.name]
        assert d["entrypoint"] == "flows/build.py:build_expert"
        assert d["work_pool"]["name"] == "cpu"
        assert load_spec(d["parameters"]["spec"]) == p.spec
        assert d["schedules"] == [{"cron": p.schedule.cron, "timezone": p.schedule.timezone}]
        (trigger,) = d["triggers"]
        assert trigger["expect"] == [BASE_MODEL_UPDATED]
        assert trigger["match_related"]["prefect.resource.id"] == f"cusprun.profile.{p.name}"


def test_render_rejects_a_profile_with_an_unavailable_bundled_corpus(tmp_path):
    render = render_script()
    (tmp_path / "bad.yaml").write_text("language: {value: en}\ndomain: {value: cooking}\ntask: null\n")
    out = tmp_path / "prefect.yaml"
    assert render.main(["--profiles", str(tmp_path), "--output", str(out)]) == 2
    assert not out.exists()


# ---- against a real server -------------------------------------------------------------------

async def _server_state():
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
        automations = await client.read_automations()
        pools = {p.name: p.type for p in await client.read_work_pools()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in deployments}, automations, pools


@pytest.mark.prefect
def test_prefect_deploy_all_creates_every_deployment_schedule_and_trigger(deployed):
    from cusprun.pipeline.profiles import BASE_MODEL_UPDATED, load_profiles

    deps, automations, pools = anyio.run(_server_state)
    assert pools == {"cpu": "process", "gpu": "process"}
    for name, (flow, pool) in FIXED.items():
        d = deps[f"{flow}/{name}"]
        assert d.work_pool_name == pool, name
    assert deps["rebuild-experts/rebuild-experts"].parameters == {"profiles": None, "mode": "deployments"}
    (nightly,) = deps["rebuild-experts/rebuild-experts"].schedules
    assert nightly.schedule.cron == "0 0 * * *" and nightly.schedule.timezone == "UTC"
    (hourly,) = deps["watch-base-models/watch-base-models"].schedules
    assert hourly.schedule.interval.total_seconds() == 3600
    assert deps["watch-base-models/watch-base-models"].global_concurrency_limit.limit == 1
    assert deps["watch-base-models/watch-base-models"].parameters == {"rebuild": "automation"}
    # The UI form of build-expert is the ExpertSpec schema.
    schema = deps["build-expert/build-expert"].parameter_openapi_schema
    assert "spec" in schema["properties"] and "ExpertSpec" in str(schema)

    by_name = {a.name: a for a in automations}
    for p in load_profiles():
        d = deps[f"build-expert/{p.name}"]
        assert d.work_pool_name == "cpu" and d.global_concurrency_limit.limit == 1
        assert d.parameters["spec"] == p.spec.model_dump(mode="json", exclude_unset=True)
        (s,) = d.schedules
        assert (s.schedule.cron, s.schedule.timezone, s.active) == (p.schedule.cron, p.schedule.timezone, True)
        auto = by_name[f"rebuild {p.name} on base-model update"]
        assert auto.enabled
        assert auto.trigger.expect == {BASE_MODEL_UPDATED}
        assert auto.trigger.match_related.model_dump() == {
            "prefect.resource.role": "profile", "prefect.resource.id": p.resource_id}
        assert auto.trigger.match.model_dump() == {
            "prefect.resource.id": "cusprun.base-model.*", "cusprun.rebuild": "automation"}
        (action,) = auto.actions
        assert action.type == "run-deployment" and action.deployment_id == d.id


@pytest.mark.prefect
def test_invalid_parameters_are_rejected_by_the_server(deployed):
    from prefect.client.orchestration import get_client

    async def create(parameters):
        async with get_client() as client:
            d = await client.read_deployment_by_name("build-expert/build-expert")
            return await client.create_flow_run_from_deployment(d.id, parameters=parameters)

    for bad in ({"spec": {"execution": "quantum"}}, {"spec": {"max_tokens": 1}},
                {"spec": {"name": "x", "no_such_field": 1}}):
        with pytest.raises(Exception) as e:
            anyio.run(create, bad)
        assert "422" in str(e.value) or "Validation" in str(e.value), bad
    # a valid one is accepted (it just waits for a cpu worker)
    run = anyio.run(create, {"spec": {"name": "ok-expert", "target_ratios": [0.3]}})
    assert run.parameters["spec"]["name"] == "ok-expert"


# ---- fast, clear failures ------------------------------------------------------------------------

@pytest.mark.prefect
def test_unknown_profile_fails_the_rebuild_at_once_and_starts_nothing(deployed, monkeypatch):
    """At once: the profiles are checked before any deployment is even asked for a run."""
    import flows.rebuild
    from flows.rebuild import rebuild_experts

    asked = []
    monkeypatch.setattr(flows.rebuild, "run_deployment", lambda *a, **kw: asked.append(a))
    state = rebuild_experts(profiles=["en-health-qa", "de-law-qa"], return_state=True)
    assert state.is_failed()
    msg = str(state.result(raise_on_failure=False))
    assert "Unknown profile 'de-law-qa'" in msg and "py-code-completion" in msg
    assert asked == [] and _child_runs(state) == []


@pytest.mark.prefect
def test_rebuild_starts_one_run_per_profile_deployment(deployed):
    from flows.rebuild import rebuild_experts

    state = rebuild_experts(profiles=["en-health-qa", "py-code-completion"], return_state=True)
    assert state.is_completed(), state.message
    runs = _child_runs(state)
    assert sorted(runs) == ["build-expert/en-health-qa", "build-expert/py-code-completion"]


@pytest.mark.prefect
def test_dead_s3_state_store_fails_the_watcher_in_seconds(deployed, monkeypatch):
    # Credentials present (the fault under test is the endpoint), whatever ran before: alone,
    # no other test's moto server has set dummy ones.
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)

    from prefect.blocks.system import Secret

    from flows.watch import watch_base_models

    port = closed_port()
    dead = f"http://127.0.0.1:{port}"
    Secret(value={"client_kwargs": {"endpoint_url": dead}}).save("dead-s3", overwrite=True)
    with tcp_connects() as connects:
        state = watch_base_models(storage_root="s3://cusprun-dead/state", storage_block="dead-s3",
                                  return_state=True)
    assert state.is_failed()
    msg = str(state.result(raise_on_failure=False))
    assert "cusprun-dead" in msg and dead in msg, msg
    # In seconds because bounded: the store check's attempts (each refused at once), then the
    # run fails; no retries elsewhere.
    from cusprun.storage.store import CHECK_POLICY
    assert connects.count(("127.0.0.1", port)) == CHECK_POLICY.attempts


def _child_runs(parent_state) -> list[str]:
    """Deployment names ('flow/deployment') of the runs a flow run started as subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(
                    any_=[parent_state.state_details.flow_run_id])))
            out = []
            for r in runs:
                d = await client.read_deployment(r.deployment_id)
                out.append(f"{(await client.read_flow(d.flow_id)).name}/{d.name}")
            return sorted(out)

    return anyio.run(read)


@pytest.mark.prefect
def test_dead_s3_artifact_store_fails_a_customer_build_in_seconds(deployed, monkeypatch):
    from cusprun.pipeline.profiles import load_profile
    from flows.build import build_expert

    port = closed_port()
    dead = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ENDPOINT_URL_S3": dead, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    spec = load_profile("en-health-qa").spec.model_copy(update={"storage_root": "s3://cusprun-gone/x"})
    with tcp_connects() as connects:
        state = build_expert(spec=spec, return_state=True)
    assert state.is_failed()
    msg = str(state.result(raise_on_failure=False))
    assert "cusprun-gone" in msg and "unreachable" in msg, msg
    # In seconds because bounded: it stopped in its first task, whose two runs (a transient
    # failure is retried once) each tried the store as often as the check policy says.
    from cusprun.storage.store import CHECK_POLICY
    from tests.support.flow_helpers import failed_task, task_states

    task = failed_task(state.state_details.flow_run_id, "check-inputs")
    assert task.run_count == 2 and [n for n, _ in task_states(state)] == ["check-inputs"]
    assert connects.count(("127.0.0.1", port)) == task.run_count * CHECK_POLICY.attempts
