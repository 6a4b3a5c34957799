"""The plan step: Cus-Prun's plan at one ratio, with the probe its measured allocation uses."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cusprun.compensation import CompensationConfig


def damage_probe(lm, tok, heldback: Mapping[str, Sequence[str]], *, grams, compensation: dict,
                 max_tokens: int, precision: str, dense_key: str | None = None):
    """The allocation search's probe: candidates masked (and compensated as slicing will) on the
    held-back documents of each dimension."""
    from cusprun.allocation import DamageProbe

    return DamageProbe(lm, tok, heldback, grams=grams,
                       compensation=CompensationConfig.model_validate(compensation),
                       max_tokens=max_tokens, dense_key=dense_key, precision=precision)


def cusprun_plan(stats: Mapping[str, list], general: list | None, prune: dict, model_config: Any,
                 fingerprint: str, *, probe=None, compensation: dict | None = None):
    """Cus-Prun's plan at prune['target_ratio'] (prune: plan_inputs.prune_config); the
    compensation its slice applies is recorded in the plan's report."""
    from cusprun.plans import PruneConfig, build_plan

    plan = build_plan(dict(stats), PruneConfig.model_validate(prune), model_config,
                      base_fingerprint=fingerprint, general=general or None, probe=probe)
    if compensation:
        plan.report["compensation"] = compensation
    return plan
