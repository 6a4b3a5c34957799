"""A fault in the middle of a build: the S3 endpoint goes away right after the statistics stage.
The build fails with a clear message and leaves nothing partial visible; once the endpoint is
back, a rerun takes the finished stages from the cache and publishes an expert equal to an
undisturbed build's (same plan, same weights). Real moto server, real Prefect server."""
from __future__ import annotations

import json

import pytest

from tests.support.flow_helpers import task_states, tiny_spec
from tests.support.s3_faults import RestartableS3

pytestmark = [pytest.mark.prefect, pytest.mark.s3]


@pytest.fixture
def endpoint(s3_server):
    """Our own moto endpoint (credentials come from the s3_server fixture's environment)."""
    server = RestartableS3().start()
    yield server
    server.stop()


def _stats_done_put(method: str, path: str) -> bool:
    return method == "PUT" and "/stats/" in path and path.endswith("/DONE.json")


def _build(spec, block: str):
    from flows.build import build_expert

    return build_expert(spec=spec, storage_block=block, return_state=True)


def _plan_without_locations(store, key: str) -> dict:
    """plan.json minus the URIs of the statistics (they name the bucket)."""
    from cusprun.pipeline.artifacts import local_copy

    plan = json.loads((local_copy(store, key) / "plan.json").read_text())
    for dim in plan["dimensions"].values():
        dim.pop("stats", None)
    return plan


@pytest.mark.integration
def test_endpoint_lost_after_statistics_then_rerun_equals_an_undisturbed_build(
        prefect_api, tiny_model, endpoint, s3_bucket):
    import boto3
    from prefect.blocks.system import Secret

    from cusprun.pipeline.artifacts import local_copy, read_done
    from cusprun.storage import ArtifactStore, list_versions, read_expert

    # The reference: the same spec built without trouble (the session's moto server).
    Secret(value=s3_bucket.storage_options).save("cusprun-test-calm", overwrite=True)
    calm = _build(tiny_spec(tiny_model, s3_bucket.uri), "cusprun-test-calm")
    assert calm.is_completed(), calm.message

    bucket = "cusprun-fault-mid-build"
    boto3.client("s3", endpoint_url=endpoint.url).create_bucket(Bucket=bucket)
    opts = {"client_kwargs": {"endpoint_url": endpoint.url}}
    Secret(value=opts).save("cusprun-test-fault", overwrite=True)
    spec = tiny_spec(tiny_model, f"s3://{bucket}/cusprun")
    n_stats = 4  # language, domain, task, general

    endpoint.go_down_after(n_stats, _stats_done_put)
    broken = _build(spec, "cusprun-test-fault")
    assert endpoint.went_down.is_set()
    assert broken.is_failed()
    assert f"endpoint {endpoint.url} is unreachable" in broken.message, broken.message
    assert "Traceback" not in broken.message and "\n" not in broken.message.strip()

    endpoint.start()    # the endpoint is back, same port, same data
    store = ArtifactStore(spec.storage_root, opts)
    assert list_versions(store, spec.name) == []               # no expert version visible
    done = {o.key.rsplit("/", 1)[0] for o in store.list_info("") if o.key.endswith("/DONE.json")}
    # Compensation Grams run beside the statistics: done or not when the endpoint went away.
    assert {"corpus", "stats"} <= {k.split("/")[0] for k in done} <= {"corpus", "stats", "grams"}
    assert len([k for k in done if k.startswith("stats/")]) == n_stats
    for key in done:                                           # each complete, as recorded
        local_copy(store, key)
    stats_written = {o.key: o.etag for o in store.list_info("stats")}

    rerun = _build(spec, "cusprun-test-fault")
    assert rerun.is_completed(), rerun.message
    states = {}
    for name, state in task_states(rerun):
        states.setdefault(name, set()).add(state)
    assert states["corpus"] == {"Cached"} and states["stats"] == {"Cached"}, states
    assert states["plan"] == {"Completed"} and states["slice"] == {"Completed"}, states
    assert {o.key: o.etag for o in store.list_info("stats")} == stats_written   # not rewritten

    # Equal to the undisturbed build: same plan, same weights.
    calm_store = ArtifactStore(*s3_bucket)
    ours, ref = read_expert(store, spec.name), read_expert(calm_store, spec.name)
    weights = [f for f in ref.manifest.files if f.endswith(".safetensors")]
    assert weights and all(ours.manifest.files[f].sha256 == ref.manifest.files[f].sha256
                           for f in weights)
    plans = sorted(k.rsplit("/", 1)[0] for k in store.list("plan") if k.endswith("/DONE.json"))
    assert plans == sorted(k.rsplit("/", 1)[0] for k in calm_store.list("plan")
                           if k.endswith("/DONE.json"))
    assert read_done(store, plans[0])["achieved_ratio"] == read_done(calm_store, plans[0])["achieved_ratio"]
    assert _plan_without_locations(store, plans[0]) == _plan_without_locations(calm_store, plans[0])
