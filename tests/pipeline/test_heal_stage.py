"""The heal stage without Prefect: its keys (what changes them, what healing leaves alone),
its cache in a real local store, its data (never a held-out evaluation document), and bad heal
settings refused before any model load."""
from __future__ import annotations

import pytest

from cusprun.errors import SpecError
from cusprun.pipeline.spec import load_spec
from tests.support.worklist import changed_keys, work

BASE = {"baselines": ["magnitude", "flap"], "evaluation": {"sweep_ratios": [0.1, 0.25]}}
HEAL = {"tokens": 4096, "seq_len": 32, "batch_size": 4, "lr": 3e-3, "top_k": 8}


def test_heal_is_off_by_default_and_on_adds_one_heal_per_slice_leaving_the_rest():
    off = work(load_spec(BASE))
    on = work(load_spec({**BASE, "heal": HEAL}))
    assert not [k for k in off if k.startswith("heal")]
    assert {k for k in on if k.startswith("heal")} == {
        "heal cusprun@0.25", "heal magnitude@0.25", "heal flap@0.25"}
    assert changed_keys(off, {k: on[k] for k in off}) == {"evaluate"}   # slices stay shared
    only = work(load_spec({**BASE, "heal": {**HEAL, "baselines": []}}))
    assert {k for k in only if k.startswith("heal")} == {"heal cusprun@0.25"}
    more = work(load_spec({**BASE, "heal": {**HEAL, "tokens": 8192}}))
    assert changed_keys(on, more) == {"heal cusprun@0.25", "heal magnitude@0.25",
                                      "heal flap@0.25", "evaluate"}


def test_the_evaluation_compares_each_healed_slice_with_its_one_shot_slice():
    from cusprun.pipeline.worklist import plan_work
    from tests.support.worklist import CORPORA, CPU, EVAL, MODEL

    spec = load_spec({**BASE, "heal": {**HEAL, "baselines": ["magnitude"]}})
    wl = plan_work(spec, MODEL, CORPORA, EVAL, CPU)
    ev = wl.evaluation.inputs
    assert ev["healing"] == {"cusprun@0.25+heal": {"one_shot": "cusprun@0.25",
                                                   "key": wl.heals[("cusprun", 0.25)].key},
                             "magnitude@0.25+heal": {"one_shot": "magnitude@0.25",
                                                     "key": wl.heals[("magnitude", 0.25)].key}}
    assert ev["candidates"]["cusprun@0.25+heal"]["stage"] == "heal"
    # healing data: the calibration corpora of every dimension and of general text
    assert set(wl.heals[("cusprun", 0.25)].inputs["corpora"]) == set(CORPORA)


@pytest.mark.parametrize("over, words", [
    ({"heal": {"lr": 0}}, "heal.lr"),
    ({"heal": {"train": "heads"}}, "heal.train"),
    ({"heal": {"kl_weight": 0, "lm_weight": 0}}, "both 0"),
    ({"heal": {"tokens": 100}}, "heal.tokens"),
])
def test_bad_heal_settings_are_refused_by_the_spec(over, words):
    with pytest.raises(SpecError, match=words):
        load_spec({**BASE, **over})


def test_healing_a_baseline_the_build_does_not_compare_fails_before_any_model_load():
    from cusprun.pipeline.validate import validate_build

    spec = load_spec({**BASE, "heal": {"baselines": ["wanda-sp"]}})
    with pytest.raises(SpecError, match="heal.baselines names 'wanda-sp'.*accepted: magnitude, flap"):
        validate_build(spec)


@pytest.fixture
def prepared(local_store, tiny_model, tmp_path):
    """(store, spec, model record, corpora by group, slice key): bundled corpora prepared by the
    corpus stage, and a random uniform slice of the tiny model committed as a slice artifact."""
    from cusprun.models.loading import load_config
    from cusprun.pipeline.keys import content_key
    from cusprun.pipeline.stages.common import commit_stage, model_info
    from cusprun.pipeline.stages.corpus import corpus_stage
    from cusprun.pipeline.worklist import corpus_jobs
    from cusprun.slicing import slice_checkpoint
    from tests.support.flow_helpers import tiny_spec
    from tests.support.synthetic import uniform_plan_for_ratio

    spec = tiny_spec(tiny_model, str(local_store.root), task=None, heal=HEAL)
    model = model_info(tiny_model)
    calib, _ = corpus_jobs(spec, {})
    corpora = {g: [corpus_stage(local_store, j.key, j.inputs["corpus"]) for j in js]
               for g, js in calib.items()}
    plan = uniform_plan_for_ratio(load_config(tiny_model), 0.25, fingerprint=model["fingerprint"])
    out = slice_checkpoint(tiny_model, plan, tmp_path / "slice", model_fingerprint=model["fingerprint"],
                           progress=False)
    key = content_key("slice", "test-slice")
    commit_stage(local_store, "slice", key, out, {"method": "random"})
    return local_store, spec, model, corpora, key


def test_heal_stage_commits_once_reuses_and_never_reads_held_out_documents(prepared):
    from cusprun.pipeline.runtime import resolve_runtime
    from cusprun.pipeline.stages.common import artifact_dir, corpus_table
    from cusprun.pipeline.stages.heal import heal_stage, healing_documents
    from cusprun.pipeline.worklist import heal_jobs, Job

    store, spec, model, corpora, slice_key = prepared
    docs = healing_documents(store, corpora)
    assert set(docs) == {"language", "domain", "general"}
    for g, records in corpora.items():
        held_out = {i for c in records for i in corpus_table(store, c, "eval").column("doc_id").to_pylist()}
        assert held_out, g                              # there are evaluation documents ...
        assert not held_out & {i for i, _ in docs[g]}   # ... and none of them is trained on

    rt = resolve_runtime(spec)
    job = heal_jobs(spec, model["fingerprint"], corpora, {("cusprun", 0.25): Job("slice", slice_key, "")},
                    rt)[("cusprun", 0.25)]
    first = heal_stage(store, job.key, model, rt.model_dump(), **job.inputs)
    assert not first["reused"] and first["tokens"] == HEAL["tokens"]
    assert first["key"] == f"heal/{job.key}" and first["kl_before"] > 0
    assert (artifact_dir(store, "heal", job.key) / "healing.json").exists()
    again = heal_stage(store, job.key, model, rt.model_dump(), **job.inputs)
    assert again["reused"] and again["generation"] == first["generation"]
