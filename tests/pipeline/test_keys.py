"""Cache keys correct by construction, checked on the work list alone (no Prefect): editing the
code a stage runs changes its key and the keys downstream of it and no other; comments and
docstrings change nothing; what 'auto' resolved to (precision, device) is in the keys; a stored
artifact under an old key is never handed to changed code."""
from __future__ import annotations

import pytest

from cusprun.pipeline import codehash
from cusprun.pipeline.runtime import Runtime, resolve_runtime
from cusprun.pipeline.spec import load_spec
from cusprun.pipeline.worklist import plan_work
from tests.support.worklist import CORPORA, CPU, EVAL, MODEL, changed_keys, corpus_record, work


def test_editing_the_slicer_changes_slices_and_the_evaluation_only(edit_code):
    before = work()
    edit_code("cusprun.slicing.slicer", lambda src: src + "\nEDITED = 1\n")
    changed = changed_keys(before, work())
    assert changed == {k for k in before if k.startswith("slice ")} | {"evaluate"}


def test_editing_the_impact_recorder_changes_statistics_and_everything_after(edit_code):
    before = work()
    edit_code("cusprun.scoring.impact", lambda src: src.replace("clamp_min(0).sqrt()", "clamp_min(0.0).sqrt()", 1))
    changed = changed_keys(before, work())
    assert set(before) - changed == set()          # every stage reads statistics
    assert all(k in changed for k in before if k.startswith(("stats ", "grams ")))


def test_editing_the_report_changes_the_evaluation_only(edit_code):
    before = work()
    edit_code("cusprun.evaluation.report", lambda src: src + "\ndef _extra():\n    return 1\n")
    assert changed_keys(before, work()) == {"evaluate"}


def test_editing_baseline_scores_leaves_cusprun_plans_alone(edit_code):
    before = work()
    edit_code("cusprun.baselines.scorers", lambda src: src + "\nEDITED = 1\n")
    changed = changed_keys(before, work())
    assert "scores" in changed and "plan cusprun@0.25" not in changed
    assert {k for k in changed if k.startswith("plan ")} == {k for k in before if k.startswith(
        ("plan magnitude", "plan flap"))}
    assert not {k for k in changed if k.startswith(("stats ", "grams "))}


def test_comments_and_docstrings_change_no_key(edit_code):
    before = work()
    edit_code("cusprun.scoring.impact", lambda src: src.replace('"""Exact per-unit impacts',
                                                           '"""Exactly computed per-unit impacts', 1)
         + "\n# a comment\n")
    assert changed_keys(before, work()) == set()


def test_resolved_precision_and_device_are_in_the_keys():
    f32 = work()
    bf16 = work(runtime=CPU.model_copy(update={"gram_precision": "bfloat16"}))
    diff = changed_keys(f32, bf16)
    assert all(k in diff for k in f32 if k.startswith("grams "))
    assert not {k for k in diff if k.startswith("stats ")}     # statistics never use Gram precision
    cuda = work(runtime=Runtime(device="cuda", dtype="bfloat16", gram_precision="bfloat16",
                                probe_precision="bfloat16", sweep_precision="bfloat16"))
    assert not set(f32.values()) & set(cuda.values())
    streamed = work(runtime=CPU.model_copy(update={"streaming": "always"}))
    assert streamed == f32                            # streaming gives the same numbers


def test_auto_resolves_before_keys_are_made():
    spec = load_spec({"gram_precision": "auto", "device": "cpu"})
    rt = resolve_runtime(spec)
    assert rt.device == "cpu" and rt.gram_precision in ("float32", "bfloat16")
    assert "auto" not in rt.identity("gram_precision", "probe_precision").values()
    gpu = resolve_runtime(load_spec({"execution": "distributed"}), "cuda")
    assert (gpu.device, gpu.dtype, gpu.gram_precision) == ("cuda", "bfloat16", "bfloat16")


def test_an_artifact_stored_by_old_code_is_not_reused_by_new_code(edit_code, tmp_path):
    from cusprun.pipeline.stages.common import commit_stage, reused
    from cusprun.storage import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    old = work()["stats language"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("old")
    commit_stage(store, "stats", old, tmp_path / "a", {})
    assert reused(store, "stats", old)["reused"] is True
    edit_code("cusprun.scoring.collect", lambda src: src + "\nEDITED = 1\n")
    new = work()["stats language"]
    assert new != old and reused(store, "stats", new) is None


def test_every_stage_module_reaches_only_library_code():
    """What a stage key hashes: its own module and what it imports, never the CLI or Prefect."""
    for stage_module in ("stats", "plan", "baseline", "slice", "evaluate", "corpus", "scores"):
        mods = codehash.closure([f"cusprun.pipeline.stages.{stage_module}"])
        assert not [m for m in mods if m.startswith(("cusprun.cli", "cusprun.storage"))], mods
    assert "cusprun.evaluation.report" not in codehash.closure(["cusprun.pipeline.stages.stats"])


def test_a_new_ratio_or_new_baselines_keep_the_dense_evaluation():
    """The dense model's evaluation is keyed by its fingerprint, the evaluation sets and their
    settings only: rebuilding at another ratio (or with other baselines or calibration data)
    does not evaluate dense again; other evaluation sets do."""
    dense = lambda spec, ev=EVAL: plan_work(load_spec(spec), MODEL, CORPORA, ev,  # noqa: E731
                                            CPU).evaluation.inputs["dense_key"]
    base = dense({})
    assert dense({"target_ratios": [0.4]}) == base
    assert dense({"baselines": ["random"], "language": {"value": "en", "max_docs": 12}}) == base
    assert dense({}, {**EVAL, "task=qa": corpus_record("task", "qa", "e3")}) != base
    assert dense({"evaluation": {"mc_items": 50}}) != base


def test_protect_fraction_changes_the_cusprun_plans_and_what_follows_them_only():
    """General-text protection is a Cus-Prun plan setting: its plans (the sweep's too), their
    slices and the evaluation get new keys; statistics, baseline plans and their slices are
    reused."""
    spec = {"baselines": ["magnitude", "flap"], "evaluation": {"sweep_ratios": [0.1, 0.25]}}
    before, after = work(load_spec(spec)), work(load_spec({**spec, "protect_fraction": 0.4}))
    assert changed_keys(before, after) == {"plan cusprun@0.1", "plan cusprun@0.25",
                                           "slice cusprun@0.25", "evaluate"}


def test_a_protect_fraction_outside_its_range_names_the_field():
    from cusprun.errors import SpecError

    with pytest.raises((SpecError, ValueError), match="protect_fraction"):
        load_spec({"protect_fraction": 1.0})
