"""The build-expert flow under a real temporary Prefect server: caching by content, partial
reruns, S3 artifact store, and fast failures on bad input."""
from __future__ import annotations

import json

import torch

import pytest

from tests.support.flow_helpers import failed_task, run_build as run, task_states, tiny_spec

pytestmark = pytest.mark.prefect

HEAVY = {"corpus", "stats", "scores", "plan", "baseline", "slice", "evaluate"}
# The builds that are evaluated: every baseline, a small evaluation with one other language and
# a one-point sweep (tiny_spec alone builds the expert without either).
BASELINES = ["random", "magnitude", "wanda-sp", "flap", "flap-score"]
EVALUATION = {"max_docs": 8, "mc_items": 8, "max_tokens": 64, "other_languages": ["de"],
              "sweep_ratios": [0.25]}
EVALUATED = {"baselines": BASELINES, "evaluation": EVALUATION}


def _stage_files(root: str) -> dict[str, int]:
    """Every stage artifact file under a local store root with its modification time (ns)."""
    from pathlib import Path

    files = {str(p.relative_to(root)): p.stat().st_mtime_ns
             for stage in ("corpus", "stats", "grams", "plan", "slice", "evaluate")
             for p in (Path(root) / stage).rglob("*") if p.is_file()}
    assert files, f"no stage artifacts under {root}"
    return files


@pytest.mark.integration
def test_second_run_is_cached_and_one_corpus_change_reruns_only_its_branch(prefect_api, tiny_model, tmp_path):
    from cusprun.pipeline.context import open_store
    from cusprun.storage import list_versions

    root = str(tmp_path / "artifacts")
    spec = tiny_spec(tiny_model, root, **EVALUATED)
    first = run(spec)
    heavy_first = [(n, s) for n, s in task_states(first) if n in HEAVY]
    # Statistics and Grams of the four calibration corpora come from one pass (one task).
    assert {n for n, _ in heavy_first} == HEAVY
    assert [n for n, _ in heavy_first].count("stats") == 1
    assert all(s == "Completed" for _, s in heavy_first), heavy_first
    from pathlib import Path
    assert len([p for p in Path(root, "grams").glob("*/grams.json")]) == 3
    result = first.result()
    store = open_store(root)
    assert list_versions(store, "tiny-expert") == [result["expert"]["version"]]
    assert set(result["plans"]) == {"cusprun@0.25", "random@0.25", "magnitude@0.25",
                                    "wanda-sp@0.25", "flap@0.25", "flap-score@0.25"}
    assert all(abs(r - 0.25) < 0.02 for r in result["plans"].values())
    # The Cus-Prun plan was chosen by measured damage and every checkpoint is compensated.
    report_dir = store.key_of(result["report"])
    md = store.read_bytes(report_dir + "/report.md").decode()
    assert "## Retention vs pruning ratio" in md and "| cusprun | 0.25 | ls |" in md
    # The compact summary the Prefect UI artifact shows: five columns, narrow lines.
    summary = store.read_json(report_dir + "/DONE.json")["summary_markdown"]
    assert "| set | dense | `cusprun@0.25` | best baseline |" in summary
    assert max(len(line) for line in summary.splitlines()) <= 120
    # Every loss set scores the spec's min_loss_tokens (QA answers: several times max_docs of them).
    rows = json.loads(store.read_bytes(report_dir + "/report.json"))["rows"]
    scored = {r["eval_set"]: (r["n"], r["n_units"]) for r in rows if r["metric"] == "loss"}
    assert scored and all(n >= spec.evaluation.min_loss_tokens for n, _ in scored.values()), scored
    assert scored["task=qa"][1] > 2 * spec.evaluation.max_docs
    sweep = json.loads(store.read_bytes(report_dir + "/sweep.json"))
    assert {(r["method"], r["compensation"]) for r in sweep} >= {
        ("cusprun", "ls"), ("cusprun", "none"), ("flap-score", "ls"), ("flap-score", "none"),
        ("flap", "bias"), ("flap", "none")}         # FLAP with its own bias compensation
    from cusprun.models.precision import resolve_precision
    assert {r["precision"] for r in sweep} == {resolve_precision("auto", "cpu")}  # the spec's default
    expert = store.read_json(f"experts/tiny-expert/{result['expert']['version']}/cusprun.json")
    assert expert["compensation"]["mode"] == "ls" and expert["compensation"]["calibration_tokens"] > 0
    assert expert["report"]["allocation_search"]["candidates"]

    before = _stage_files(root)
    # Sweep points measured one at a time instead of 'auto' (two at once here): same report,
    # so the same key: nothing recomputes.
    serial = tiny_spec(tiny_model, root, baselines=BASELINES,
                       evaluation={**spec.evaluation.model_dump(), "sweep_workers": 1})
    second = run(serial)
    heavy_second = [(n, s) for n, s in task_states(second) if n in HEAVY]
    assert len(heavy_second) == len(heavy_first)
    assert all(s == "Cached" for _, s in heavy_second), heavy_second
    assert _stage_files(root) == before          # nothing was recomputed or rewritten
    timed = {r["stage"]: r for r in second.result()["timings"]}
    assert {"corpora", "statistics", "baseline scores", "plan cusprun@0.25", "baseline plans",
            "slice cusprun@0.25", "evaluation", "publish"} <= set(timed)
    assert all(r["reused"] == r["artifacts"] for s, r in timed.items() if s != "publish"), timed
    first_timed = {r["stage"]: r for r in result["timings"]}
    assert first_timed["statistics"]["reused"] == 0 and first_timed["statistics"]["seconds"] > 0
    again = second.result()["expert"]
    assert again["unchanged"] and again["version"] == result["expert"]["version"]
    assert list_versions(store, "tiny-expert") == [result["expert"]["version"]]  # no duplicate

    # The same expert copied under another name: every stage reused, and it is published with
    # its own card (the stored slice, hard-linked into both publications, is left as it was).
    copied = run(tiny_spec(tiny_model, root, name="tiny-copy", **EVALUATED))
    assert all(s == "Cached" for n, s in task_states(copied) if n in HEAVY)
    version = copied.result()["expert"]["version"]
    card = store.read_bytes(f"experts/tiny-copy/{version}/README.md").decode()
    assert "\n# tiny-copy\n" in card and "tiny-expert" not in card
    own = store.read_bytes(f"experts/tiny-expert/{result['expert']['version']}/README.md").decode()
    assert "\n# tiny-expert\n" in own
    assert _stage_files(root) == before

    # Change only the domain corpus: its corpus + statistics and everything downstream of the
    # Cus-Prun plan recompute; other corpora, statistics and the baselines stay cached.
    changed = tiny_spec(tiny_model, root, domain={"value": "health", "max_docs": 20}, **EVALUATED)
    third = run(changed)
    states = task_states(third)
    recomputed = sorted(n for n, s in states if n in HEAVY and s == "Completed")
    # Compensation of every checkpoint reads the domain's Grams (recollected by its statistics
    # pass): all five slices redo their solve.
    assert recomputed == sorted(["corpus", "stats", "plan", *["slice"] * 5, "evaluate"])
    cached = [n for n, s in states if s == "Cached"]
    assert cached.count("scores") == 1 and cached.count("baseline") == 1
    after = _stage_files(root)
    calib = lambda files: {f.split("/")[1] for f in files if f.startswith(("stats/", "grams/"))}  # noqa: E731
    assert len(calib(after) - calib(before)) == 2     # the domain's new statistics and Grams
    assert all(after[f] == before[f] for f in before if f.startswith(("stats/", "grams/")))


@pytest.mark.integration
def test_refreshing_the_grams_reuses_the_statistics_and_gives_the_same_grams(prefect_api,
                                                                           tiny_model, tmp_path):
    """With the statistics in the store, refreshing the Grams runs a pass for the Grams alone;
    they equal the ones the statistics pass made, so the plan (keyed by their keys) is the same."""
    from pathlib import Path

    from cusprun.compensation import GramSet
    from cusprun.pipeline.artifacts import local_copy, read_done
    from cusprun.storage import ArtifactStore

    root = tmp_path / "a"
    first = run(tiny_spec(tiny_model, str(root)))
    gram_dirs = sorted(Path(root, "grams").iterdir())
    fused = [GramSet([d]).layer(1) for d in gram_dirs]
    stats_before = {k: v for k, v in _stage_files(str(root)).items() if k.startswith("stats/")}
    again = run(tiny_spec(tiny_model, str(root)), refresh=["grams"])
    states = dict(task_states(again))
    assert states["stats"] == "Completed" and states["plan"] == "Cached"
    assert {k: v for k, v in _stage_files(str(root)).items() if k.startswith("stats/")} == stats_before
    store = ArtifactStore(str(root))
    for d, want in zip(gram_dirs, fused):   # the refreshed Grams, where their new record points
        assert read_done(store, f"grams/{d.name}")["generation"] == 1
        got = GramSet([local_copy(store, f"grams/{d.name}")]).layer(1)
        assert got.n_tokens == want.n_tokens
        assert torch.allclose(got.gram["down"], want.gram["down"], rtol=1e-4, atol=1e-6)
    assert again.result()["plans"] == first.result()["plans"]


@pytest.mark.integration
def test_a_rebuild_at_a_new_ratio_does_not_evaluate_dense_again(prefect_api, tiny_model,
                                                                 tmp_path):
    from pathlib import Path

    from cusprun.pipeline.context import open_store

    root = str(tmp_path / "artifacts")
    over = {"baselines": ["magnitude"], "evaluation": EVALUATION}
    first = run(tiny_spec(tiny_model, root, **over))
    dense_dir = Path(root, "dense-eval")
    before = {p: p.stat().st_mtime_ns for p in dense_dir.rglob("dense.json")}
    assert len(before) == 1
    ev = {**EVALUATION, "sweep_ratios": [0.3]}
    second = run(tiny_spec(tiny_model, root, target_ratios=[0.3], baselines=["magnitude"],
                           evaluation=ev))
    assert {p: p.stat().st_mtime_ns for p in dense_dir.rglob("dense.json")} == before
    store = open_store(root)
    rows = [json.loads(store.read_bytes(store.key_of(r["report"]) + "/report.json"))["rows"]
            for r in (first.result(), second.result())]
    dense = [{(x["metric"], x["eval_set"]): x["value"] for x in rs if x["model"] == "dense"
              and x["metric"] in ("loss", "mc_accuracy")} for rs in rows]
    assert dense[0] and dense[0] == dense[1]
    assert first.result()["report"] != second.result()["report"]


@pytest.mark.integration
def test_ffn_multiple_reruns_plans_not_statistics_and_aligns_the_published_expert(prefect_api, tiny_model,
                                                                                 tmp_path):
    from cusprun.pipeline.context import open_store
    from cusprun.storage import get_expert

    root = str(tmp_path / "artifacts")
    over = {"baselines": ["magnitude"]}
    run(tiny_spec(tiny_model, root, **over))
    aligned = run(tiny_spec(tiny_model, root, ffn_multiple=16, **over))
    states = task_states(aligned)
    recomputed = sorted(n for n, s in states if n in HEAVY and s == "Completed")
    assert recomputed == ["baseline", "plan", "slice", "slice"]
    assert not [n for n, s in states if n in ("corpus", "stats",
                                              "scores") and s != "Cached"]
    expert = get_expert(open_store(root), "tiny-expert", aligned.result()["expert"]["version"],
                        tmp_path / "cache", progress=False)
    meta = json.loads((expert / "cusprun.json").read_text())
    assert meta["report"]["ffn_multiple"] == 16
    assert {w["intermediate_size"] % 16 for w in meta["layer_widths"]} == {0}
    # The plan records, per dimension, its value, corpus hashes and the statistics it came from.
    assert {d: v["value"] for d, v in meta["dimensions"].items()} == {
        "language": "en", "domain": "health", "task": "qa"}
    for v in meta["dimensions"].values():
        assert len(v["stats"]) == len(v["corpus_hashes"]) == 1
        assert v["stats"][0].startswith(root) and "/stats/" in v["stats"][0]


@pytest.mark.integration
def test_lost_artifact_is_recomputed_not_trusted(prefect_api, tiny_model, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    spec = tiny_spec(tiny_model, str(root))
    run(spec)
    shutil.rmtree(root / "plan")
    again = run(spec)
    states = dict((n, s) for n, s in task_states(again) if n == "plan")
    assert states == {"plan": "Completed"}


@pytest.mark.integration
def test_refresh_forces_a_stage(prefect_api, tiny_model, tmp_path):
    spec = tiny_spec(tiny_model, str(tmp_path / "a"))
    run(spec)
    again = run(spec, refresh=["stats"])
    st = [s for n, s in task_states(again) if n == "stats"]
    assert st and all(s == "Completed" for s in st)


@pytest.mark.integration
@pytest.mark.s3
def test_flow_on_s3_artifact_store(prefect_api, tiny_model, s3_bucket):
    from prefect.blocks.system import Secret

    from cusprun.storage import ArtifactStore, latest_version

    uri, opts = s3_bucket
    Secret(value=opts).save("cusprun-test-s3", overwrite=True)
    spec = tiny_spec(tiny_model, uri, baselines=["magnitude"], evaluation=EVALUATION)
    state = run(spec, storage_block="cusprun-test-s3")
    result = state.result()
    store = ArtifactStore(uri, opts)
    assert result["expert"]["uri"].startswith("s3://")
    assert latest_version(store, "tiny-expert") == result["expert"]["version"]
    assert store.exists(store.key_of(result["report"]) + "/report.md")
    manifest = store.read_json(f"experts/tiny-expert/{result['expert']['version']}/MANIFEST.json")
    assert "cusprun.json" in json.dumps(manifest)


@pytest.mark.s3
def test_bad_input_fails_before_heavy_work(prefect_api, tiny_model, tmp_path, s3_server):
    from prefect.blocks.system import Secret

    from cusprun.errors import SpecError
    from flows.build import build_expert

    with pytest.raises(SpecError, match="target ratio 1.5"):
        tiny_spec(tiny_model, str(tmp_path), target_ratios=[1.5])
    Secret(value={"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}).save(
        "cusprun-test-s3-missing", overwrite=True)
    state = build_expert(spec=tiny_spec(tiny_model, "s3://no-such-bucket/x", **EVALUATED),
                         storage_block="cusprun-test-s3-missing", return_state=True)
    assert state.is_failed()
    assert "no-such-bucket" in str(state.result(raise_on_failure=False))
    # It stopped at the first task, which ran once (a missing bucket is not worth a retry):
    # nothing else started, heavy or not.
    assert failed_task(state.state_details.flow_run_id, "check-inputs").run_count == 1
    assert [n for n, _ in task_states(state)] == ["check-inputs"]


def test_spec_that_does_not_fit_the_model_fails_before_heavy_work(prefect_api, tiny_model, tmp_path):
    from flows.build import build_expert

    state = build_expert(spec=tiny_spec(tiny_model, str(tmp_path), ffn_multiple=128, **EVALUATED),
                         return_state=True)
    assert state.is_failed()
    assert "ffn_multiple=128 exceeds the base model's FFN width 96" in str(state.result(raise_on_failure=False))
    assert not [n for n, _ in task_states(state) if n in HEAVY]


_KILL_FLOW = """
import json, sys, threading
from cusprun.storage import ArtifactStore
from cusprun.pipeline.spec import load_spec
from flows.build import build_expert

spec, ready = load_spec(json.loads(sys.argv[1])), sys.argv[2]
real_put = ArtifactStore.put_file

def pausing_put(self, local, key, **kw):  # publishing: stop after the expert's 2nd file, until killed
    out = real_put(self, local, key, **kw)
    if key.startswith("experts/"):
        pausing_put.n = getattr(pausing_put, "n", 0) + 1
        if pausing_put.n == 2:
            open(ready, "w").write(key)
            threading.Event().wait()   # until the test kills this process
    return out

ArtifactStore.put_file = pausing_put
build_expert(spec=spec, storage_block="cusprun-test-kill")
"""


@pytest.mark.s3
def test_killing_the_flow_mid_publish_on_s3_leaves_no_visible_version(prefect_api, tiny_model,
                                                                      s3_bucket, tmp_path):
    import subprocess
    import sys

    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    from cusprun.storage import ArtifactStore, latest_version, list_versions
    from tests.support.paths import REPO, cusprun_env
    from tests.support.sigkill import killed_at_marker

    uri, opts = s3_bucket
    Secret(value=opts).save("cusprun-test-kill", overwrite=True)
    spec = tiny_spec(tiny_model, uri)
    ready = tmp_path / "ready"
    env = cusprun_env(PREFECT_API_URL=PREFECT_API_URL.value())
    store = ArtifactStore(uri, opts)
    with killed_at_marker([sys.executable, "-c", _KILL_FLOW, spec.model_dump_json(), str(ready)],
                          ready, timeout=600, what="the flow (publishing)", cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL):
        assert [k for k in store.list("experts/tiny-expert") if k.endswith("/config.json")
                or k.endswith(".json")], "publishing had really started"
    assert store.list("experts/tiny-expert"), "partial upload is there..."
    assert list_versions(store, "tiny-expert") == [] and latest_version(store, "tiny-expert") is None
