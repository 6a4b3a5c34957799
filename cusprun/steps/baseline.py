"""The baseline steps: every baseline's unit scores from one walk, and a plan from them."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def baseline_scores(lm, methods: Sequence[str], general, seed: int, fingerprint: str) -> dict:
    """method -> (ffn, heads) unit scores from one walk over the dense weights; every method is
    checked (a missing general corpus, say) before the walk."""
    from cusprun.baselines import unit_scores, validate_baseline

    for m in methods:
        validate_baseline(m, 0.25, "uniform", base_fingerprint=fingerprint, general=general,
                          model_config=lm.config)
    return unit_scores(lm, list(methods), general, seed)


def baseline_plan(job: dict, scores, model_config: Any, fingerprint: str):
    """A baseline's plan from its unit scores (job: plan_inputs.baseline_job), through
    Cus-Prun's own selection code."""
    from cusprun.baselines import plan_from_scores

    return plan_from_scores(job["method"], scores, model_config, job["ratio"], job["layout"],
                            base_fingerprint=fingerprint, seed=job.get("seed", 0),
                            ffn_multiple=job["ffn_multiple"], compensation=job["compensation"],
                            ridge=job["ridge"])
