"""One implementation of the build steps: `cusprun.prune` and a pipeline build (the real
build-expert flow) of the same model, corpora and settings make the same plan."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.flow_helpers import tiny_spec


@pytest.mark.integration
def test_prune_and_the_pipeline_make_the_same_plan(prefect_api, tiny_model, tmp_path):
    import cusprun
    from cusprun.pipeline.plan_inputs import calibration_corpora
    from cusprun.plans.plan import PruningPlan
    from flows.build import build_expert

    spec = tiny_spec(tiny_model, str(tmp_path / "store"))
    state = build_expert(spec=spec, return_state=True)
    assert state.is_completed(), state
    found = sorted((tmp_path / "store").rglob("plan.json"))
    assert len(found) == 1, found
    built = PruningPlan.model_validate_json(found[0].read_text())

    sources = {g: cs[0]["source"] for g, cs in calibration_corpora(spec).items()}
    expert = cusprun.prune(tiny_model, {d: sources[d] for d in ("language", "domain", "task")},
                           general=sources["general"], ratio=spec.target_ratios[0],
                           max_docs=spec.language.max_docs, max_tokens=spec.max_tokens,
                           min_docs=spec.min_docs, work_dir=tmp_path / "prune", progress=False)
    assert expert.plan.layers == built.layers
    assert expert.plan.achieved_ratio == built.achieved_ratio
    assert expert.plan.report["allocation_search"]["chosen"] == \
        built.report["allocation_search"]["chosen"]
    assert Path(expert.base).resolve() == Path(tiny_model).resolve()
