"""Distributed build for real: build_expert with execution=distributed starts `collect-stats`
deployment runs; a `prefect worker start --pool gpu --type process` subprocess runs them; the
build merges their statistics and publishes the expert."""
from __future__ import annotations

from pathlib import Path

import anyio
import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.integration]   # builds on the bundled corpora


@pytest.fixture
def gpu_worker(deployed, tmp_path):
    from tests.support.prefect_server import start_worker, stop_process

    log = tmp_path / "worker.log"
    # The worker's flow runs resolve the model and write scratch files in their own cache.
    worker = start_worker(deployed, "gpu", log, env={"CUSPRUN_CACHE": str(tmp_path / "worker-cache"),
                                                     "HF_HUB_OFFLINE": "1",
                                                     "TRANSFORMERS_OFFLINE": "1"})
    yield log
    stop_process(worker)


async def _stats_runs(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        dep = await client.read_deployment_by_name("collect-stats/collect-stats")
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))
    return [r for r in runs if r.deployment_id == dep.id]


def test_distributed_build_runs_statistics_on_the_gpu_pool_and_publishes(gpu_worker, tiny_model,
                                                                           tmp_path):
    from cusprun.pipeline.spec import load_spec
    from cusprun.storage import ArtifactStore, latest_version
    from flows.build import build_expert

    root = tmp_path / "artifacts"
    spec = load_spec({
        "name": "tiny-distributed", "base_model": tiny_model,
        "language": {"value": "en", "max_docs": 8}, "domain": {"value": "health", "max_docs": 8},
        "task": None, "general": None, "baselines": [], "target_ratios": [0.25],
        "max_tokens": 32, "min_docs": 4, "evaluation": {"enabled": False},
        "storage_root": str(root), "execution": "distributed",
        "device": "cpu"})   # this test's gpu pool is a CPU worker (auto would mean CUDA there)
    state = build_expert(spec=spec, return_state=True)
    worker_log = Path(gpu_worker).read_text()
    assert state.is_completed(), f"{state.message}\n--- worker log ---\n{worker_log[-6000:]}"

    runs = anyio.run(_stats_runs, state.state_details.flow_run_id)
    assert len(runs) == 2 and all(r.state.is_completed() for r in runs), runs
    assert {r.work_pool_name for r in runs} == {"gpu"}
    assert all(str(r.id) in worker_log for r in runs)  # this worker ran them
    result = state.result()
    store = ArtifactStore(str(root))
    assert latest_version(store, "tiny-distributed") == result["expert"]["version"]


def test_a_worker_without_cuda_refuses_statistics_keyed_for_cuda(tmp_path):
    """Distributed statistics default to CUDA (the gpu pool); a worker without it must not
    compute them in float32 under a CUDA key."""
    import pytest

    from cusprun.errors import SpecError
    from cusprun.pipeline.runtime import statistics_runtime
    from cusprun.pipeline.spec import load_spec
    from cusprun.pipeline.stages.common import check_runtime

    rt = statistics_runtime(load_spec({"execution": "distributed"}))
    assert rt.device == "cuda"
    with pytest.raises(SpecError, match="no CUDA.*device: cpu"):
        check_runtime(rt.model_dump())


def test_rebuild_in_local_mode_builds_each_profile_in_process(deployed, tmp_path):
    from cusprun.storage import ArtifactStore, list_versions
    from flows.rebuild import rebuild_experts
    from tests.support import make_tiny_model

    _, model = make_tiny_model("Qwen2ForCausalLM", tmp_path / "tiny-qwen2")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for name, domain in (("tiny-health", "health"), ("tiny-science", "science")):
        (profiles / f"{name}.yaml").write_text(
            f"base_model: {model}\nlanguage: {{value: en, max_docs: 8}}\n"
            f"domain: {{value: {domain}, max_docs: 8}}\ntask: null\ngeneral: null\nbaselines: []\n"
            f"max_tokens: 32\nmin_docs: 4\nevaluation: {{enabled: false}}\n"
            f"storage_root: {tmp_path / 'artifacts'}\n")
    state = rebuild_experts(mode="local", profiles_dir=str(profiles), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    store = ArtifactStore(str(tmp_path / "artifacts"))
    for name in ("tiny-health", "tiny-science"):
        assert list_versions(store, name) == [result[name]["expert"]["version"]]
