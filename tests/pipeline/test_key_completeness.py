"""Every input in its key, and no more: each ExpertSpec field changes some stage key (or the card
a publication carries) or is listed, with the reason, among the fields that cannot change a
result; a stage's code version covers the modules it runs and nothing else; the tokenizers
release is in the keys of stages that tokenize; a worker refuses a key made for other code."""
from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from cusprun.pipeline import codehash, keys
from cusprun.pipeline.plan_inputs import expert_card
from cusprun.pipeline.runtime import resolve_runtime, statistics_runtime
from cusprun.healing import HealSpec
from cusprun.pipeline.spec import DimensionSpec, EvaluationOptions, ExpertSpec, load_spec
from cusprun.pipeline.worklist import corpus_jobs, plan_work
from tests.support.worklist import CORPORA, EVAL, MODEL, changed_keys, work, worklist_keys

BASE = {"baselines": ["magnitude", "flap"], "evaluation": {"sweep_ratios": [0.1, 0.25]}}

# Fields that cannot change what a build computes or publishes, and why.
NO_RESULT = {
    # Documents per forward pass: each document is padded and masked on its own, so its numbers
    # do not depend on its batch neighbours (test_batch_size_leaves_statistics_unchanged).
    "batch_size",
    # Where artifacts live, not what they hold.
    "storage_root",
    # Whole or streamed from disk: the same numbers (tests/unit/test_engine.py).
    "streaming",
    # How many models are measured at once: the same numbers (EvaluationOptions.SPEED_ONLY).
    "evaluation.sweep_workers",
}

# A changed value for every other field; {"base": ...} where the field acts only in a setting.
DIMENSION_CHANGES = {"sources": ["corpora/other.jsonl"], "text_field": "body",
                     "max_docs": 64, "eval_sources": ["corpora/held-out.jsonl"]}
CHANGES = {
    "name": "another-expert",
    "base_model": "qwen2.5-0.5b",
    "rule": "paper",
    "score": "impact",
    "allocation": "rank",
    "protect_fraction": 0.2,
    "probe_precision": "bfloat16",
    "holdback_docs": 4,
    "compensation": "none",
    "ridge": 0.5,
    "gram_docs": 16,
    "gram_precision": "bfloat16",
    "target_ratios": [0.3],
    "sigma": 0.3,
    "layout": "per_layer",
    "ffn_multiple": 8,
    "baselines": ["random"],
    "max_tokens": 128,
    "min_docs": 4,
    "execution": "distributed",
    "device": "cuda",
    "hub_kernels": (True, {"device": "cuda"}),   # kernels only change numbers on CUDA
    "seed": 1,
    "rounds": 2,
    "gguf": ["Q8_0"],
    "evaluation.enabled": False,
    "evaluation.out_of_source": False,
    "evaluation.other_languages": ["fr"],
    "evaluation.max_docs": 8,
    "evaluation.min_loss_tokens": 0,
    "evaluation.mc_items": 8,
    "evaluation.max_tokens": 64,
    "evaluation.measure_speed": False,
    "evaluation.speed_iters": 5,
    "evaluation.sweep_ratios": [0.4],
    "evaluation.sweep_compensation": False,
    "evaluation.sweep_precision": "bfloat16",
}
HEAL_ON = {"heal": {}}
CHANGES.update({f"heal.{f}": (v, HEAL_ON) for f, v in {
    "tokens": 100_000, "lr": 3e-4, "warmup": 0.2, "lr_floor": 0.0, "weight_decay": 0.01,
    "kl_weight": 0.5, "lm_weight": 0.5, "temperature": 2.0, "top_k": 16, "batch_size": 8,
    "micro_batch": 2, "seq_len": 512, "train": "lora", "lora_rank": 8, "general_share": 0.5,
    "gradient_checkpointing": True, "baselines": ["magnitude"], "seed": 1}.items()})
for _dim, _value in (("language", "de"), ("domain", "history"), ("task", "summarization"),
                     ("general", "fr")):
    CHANGES.update({f"{_dim}.{f}": v for f, v in {"value": _value, **DIMENSION_CHANGES}.items()})


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every setting, nested dimension and evaluation fields included."""
    nested = {"language": DimensionSpec, "domain": DimensionSpec, "task": DimensionSpec,
              "general": DimensionSpec, "evaluation": EvaluationOptions, "heal": HealSpec}
    out = []
    for name in model.model_fields:
        if prefix == "" and name in nested:
            out += leaf_fields(nested[name], f"{name}.")
        else:
            out.append(prefix + name)
    return out


def _set(data: dict, path: str, value) -> dict:
    data = json.loads(json.dumps(data))
    head, _, rest = path.partition(".")
    if rest:
        default = (HealSpec() if head == "heal" else
                   ExpertSpec.model_fields[head].default_factory())
        data[head] = {**(data.get(head) or default.model_dump()), rest: value}
    else:
        data[head] = value
    return data


def build_keys(data: dict) -> dict[str, str]:
    """Every key a build of `data` computes (corpora, work list) and the card it publishes."""
    spec = load_spec(data)
    calib, held = corpus_jobs(spec, {})
    out = {f"corpus {g}#{i}": j.key for g, js in calib.items() for i, j in enumerate(js)}
    out.update({f"corpus held-out {n}": j.key for n, j in held.items()})
    out.update(worklist_keys(plan_work(spec, MODEL, CORPORA, EVAL, resolve_runtime(spec),
                                       statistics_runtime(spec))))
    out["published card"] = json.dumps(expert_card(spec, MODEL), sort_keys=True)
    # GGUF files are made at publication: their types are in publish_stage's build record.
    out["published gguf"] = json.dumps(spec.gguf)
    return out


def test_every_spec_field_changes_a_key_or_is_listed_as_changing_no_result():
    fields = leaf_fields(ExpertSpec)
    unlisted = sorted(set(fields) - set(CHANGES) - NO_RESULT)
    assert not unlisted, f"fields neither in CHANGES nor in NO_RESULT: {unlisted}"
    unchanged = []
    for path in fields:
        if path in NO_RESULT:
            assert build_keys(_set(BASE, path, _other(path))) == build_keys(BASE), path
            continue
        change = CHANGES[path]
        value, base = change if isinstance(change, tuple) else (change, {})
        before = build_keys({**BASE, **base})
        if build_keys(_set({**BASE, **base}, path, value)) == before:
            unchanged.append(path)
    assert not unchanged, f"changing these fields changes no key: {unchanged}"


def _other(path: str):
    return {"batch_size": 2, "storage_root": "s3://bucket/elsewhere", "streaming": "always",
            "evaluation.sweep_workers": 1}[path]


def test_the_card_is_published_not_sliced():
    """A renamed or copied profile publishes its own card; the slices stay shared."""
    a, b = build_keys(BASE), build_keys({**BASE, "name": "copy-of-en-health-qa"})
    assert changed_keys(a, b) == {"published card"}


def test_editing_the_compensation_solver_changes_plans_slices_and_evaluation_only(edit_code):
    before = work()
    edit_code("cusprun.compensation.solve", lambda src: src + "\nEDITED = 1\n")
    changed = changed_keys(before, work())
    assert not {k for k in changed if k.startswith(("stats ", "grams ", "corpus"))}
    assert {"plan cusprun@0.25", "slice cusprun@0.25", "evaluate"} <= changed


def test_corpus_keys_do_not_depend_on_model_code(edit_code):
    spec = load_spec(BASE)
    before = corpus_jobs(spec, {})[0]["language"][0].key
    edit_code("cusprun.compensation.solve", lambda src: src + "\nEDITED = 1\n")
    assert corpus_jobs(spec, {})[0]["language"][0].key == before


def test_a_field_description_edit_changes_no_key(edit_code):
    before = work()
    edit_code("cusprun.pipeline.spec", lambda src: src.replace(
        'description="Tokens per calibration document"',
        'description="Tokens of each calibration document (its first ones)"', 1))
    assert codehash.source("cusprun.pipeline.spec") != codehash.module_file(
        "cusprun.pipeline.spec").read_text()
    assert changed_keys(before, work()) == set()


def test_a_new_spec_field_changes_no_stage_code_version(edit_code):
    """The spec is read by the flow, which puts every setting a stage uses into its key; no stage
    runs the spec's code, so a new field (a real code edit) reruns nothing by itself."""
    versions = {s: keys.code_version(s) for s in keys.STAGES}
    edit_code("cusprun.pipeline.spec", lambda src: src.replace(
        "    seed: int = 0\n", "    seed: int = 0\n    new_setting: int = 1\n", 1))
    assert "new_setting" in codehash.source("cusprun.pipeline.spec")
    assert {s: keys.code_version(s) for s in keys.STAGES} == versions


def test_an_import_for_annotations_only_is_not_code_a_stage_runs(edit_code):
    """`if TYPE_CHECKING:` imports never run: runtime.py names ExpertSpec only in annotations."""
    assert "cusprun.pipeline.spec" not in codehash.closure(["cusprun.pipeline.stages.stats"])
    edit_code("cusprun.pipeline.runtime", lambda src: src.replace(
        "if TYPE_CHECKING:", "if True:", 1))
    assert "cusprun.pipeline.spec" in codehash.closure(["cusprun.pipeline.stages.stats"])


def test_from_package_imports_resolve_to_the_defining_module():
    assert codehash.defining_module("cusprun.compensation", "GramSet") == \
        "cusprun.compensation.gram_set"
    assert codehash.defining_module("cusprun.scoring", "load_stats") == "cusprun.scoring.stats"
    stats = codehash.closure(["cusprun.pipeline.stages.stats"])
    assert "cusprun.compensation.solve" not in stats and "cusprun.evaluation.report" not in stats
    assert "cusprun.scoring.impact" in stats


def test_the_tokenizers_release_is_in_the_keys_of_stages_that_tokenize(monkeypatch):
    from importlib import metadata

    before = {s: keys.code_version(s) for s in keys.STAGES}
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda pkg: "0.0.1-other" if pkg == "tokenizers" else real(pkg))
    keys.forget_code_versions()
    try:
        after = {s: keys.code_version(s) for s in keys.STAGES}
    finally:
        monkeypatch.undo()
        keys.forget_code_versions()
    assert {s for s in keys.STAGES if before[s] != after[s]} == set(keys.TOKENIZES)


def test_a_cuda_and_a_cpu_build_of_one_torch_release_share_code_versions(monkeypatch):
    import torch

    before = keys.code_version("stats")
    monkeypatch.setattr(torch, "__version__", torch.__version__.split("+")[0] + "+cu128")
    keys.forget_code_versions()
    try:
        assert keys.code_version("stats") == before
    finally:
        monkeypatch.undo()
        keys.forget_code_versions()


def test_batch_size_leaves_statistics_unchanged():
    """Why batch_size is in NO_RESULT: per-document statistics do not depend on batching."""
    import numpy as np

    from cusprun.scoring import collect_stats
    from tests.support import make_tiny_model, tiny_tokenizer

    model, _ = make_tiny_model("LlamaForCausalLM")
    docs = [f"Document {i}: " + "words and more words " * (1 + i % 4) for i in range(6)]
    a = collect_stats(model, tiny_tokenizer(), docs, batch_size=1, progress=False)
    b = collect_stats(model, tiny_tokenizer(), docs, batch_size=4, progress=False)
    for name in ("ffn_pct", "head_pct", "ffn_impact_mean", "head_impact_mean", "down_sumsq",
                 "o_sumsq", "doc_tokens"):
        np.testing.assert_allclose(getattr(a, name).double().numpy(),
                                   getattr(b, name).double().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_a_worker_with_other_code_refuses_the_key_and_records_name_their_code(edit_code, tmp_path):
    from cusprun.errors import SpecError
    from cusprun.pipeline.artifacts import read_done
    from cusprun.pipeline.stages.common import commit_stage, reused
    from cusprun.storage import ArtifactStore
    from cusprun.storage.layout import stage_key

    store = ArtifactStore(tmp_path / "store")
    key = work()["stats language"]                  # made by the flow's code
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("statistics")
    commit_stage(store, "stats", key, tmp_path / "a", {})
    assert read_done(store, stage_key("stats", key))["code_version"] == keys.code_version("stats")
    flow_code = keys.code_version("stats")[:keys.CODE_CHARS]
    edit_code("cusprun.scoring.impact", lambda src: src + "\nEDITED = 1\n")   # the worker's code
    worker_code = keys.code_version("stats")[:keys.CODE_CHARS]
    with pytest.raises(SpecError) as err:
        reused(store, "stats", key)
    msg = str(err.value)
    assert flow_code in msg and worker_code in msg and "\n" not in msg
