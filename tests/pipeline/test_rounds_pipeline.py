"""Iterative pruning through the real build-expert flow on a tiny model: two rounds publish an
expert at exactly the target that stock transformers loads; round 2's statistics are the
pruned model's; a rebuild with another number of rounds reuses the dense statistics; and
cusprun.prune(rounds=2) keeps the same units as the pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.flow_helpers import run_build, tiny_spec


@pytest.mark.integration
def test_two_rounds_through_the_flow_match_prune_and_share_the_dense_pass(prefect_api, tiny_model,
                                                                          tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    import cusprun
    from cusprun.pipeline.plan_inputs import calibration_corpora
    from cusprun.plans.plan import PruningPlan
    from cusprun.scoring import load_stats
    from cusprun.storage.layout import stage_key

    root = tmp_path / "store"
    spec = tiny_spec(tiny_model, str(root), rounds=2)
    out = run_build(spec).result()
    assert out["plans"]["cusprun@0.25"] == pytest.approx(0.25, abs=0.01)
    expert = Path(out["expert"]["uri"])
    meta = json.loads((expert / "cusprun.json").read_text())
    assert meta["achieved_ratio"] == out["plans"]["cusprun@0.25"] and len(meta["report"]["rounds"]) == 2
    model = AutoModelForCausalLM.from_pretrained(expert, dtype=torch.float32)
    assert model.config.intermediate_size == len(meta["layers"][0]["ffn"])

    # round 2's statistics were collected on round 1's slice: one unit per unit round 1 kept
    plans = [PruningPlan.model_validate_json(p.read_text()) for p in root.rglob("plan.json")]
    round1 = next(p for p in plans if p.target_ratio == 0.125)
    round2 = next(p for p in plans if p.target_ratio == 0.25)
    stats = round2.dimensions["domain"]["stats"][0]
    s = load_stats(root / stage_key("stats", stats.rsplit("/stats/", 1)[1]))
    assert s.ffn_pct.shape[-1] == len(round1.layers[0].ffn)
    assert s.head_pct.shape[-1] == len(round1.layers[0].heads)
    dense = {p.parent.name for p in root.glob("stats/*/summary.json")}

    # a rebuild with 3 rounds reuses every dense statistics artifact
    again = run_build(tiny_spec(tiny_model, str(root), rounds=3)).result()
    row = next(r for r in again["timings"] if r["stage"] == "statistics")
    assert row["reused"] >= 4 and again["plans"]["cusprun@0.25"] == pytest.approx(0.25, abs=0.01)
    assert dense <= {p.parent.name for p in root.glob("stats/*/summary.json")}

    sources = {g: cs[0]["source"] for g, cs in calibration_corpora(spec).items()}
    pruned = cusprun.prune(tiny_model, {d: sources[d] for d in ("language", "domain", "task")},
                           general=sources["general"], ratio=0.25, rounds=2,
                           max_docs=spec.language.max_docs, max_tokens=spec.max_tokens,
                           min_docs=spec.min_docs, work_dir=tmp_path / "prune", progress=False)
    assert pruned.plan.layers == round2.layers
    assert pruned.ratio == round2.achieved_ratio
