"""Baseline plans: a baseline's unit scores through Cus-Prun's own selection code."""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from cusprun.adapters import Adapter
from cusprun.baselines.scorers import BASELINES, NEEDS_GENERAL, Scores, standardise, unit_scores
from cusprun.errors import SpecError
from cusprun.masks.config import check_ratio
from cusprun.masks.plan import PruningPlan
from cusprun.masks.select import UnitScores, select_units, to_plan
from cusprun.scoring.stats import DimensionStats, check_statistics

log = logging.getLogger(__name__)

DESCRIBE = {
    "random": "uniform random scores (seeded)",
    "magnitude": "L2 norm of all the unit's weights",
    "wanda-sp": "sum over the unit's down/o weights of |W| x input channel L2 norm (general text)",
    "flap": "sum over the unit's channels of input variance (general text) x squared weight column norm",
}


def validate_baseline(method: str, target_ratio: float, layout: str, *, base_fingerprint: str,
                      general: DimensionStats | None, model_config: Any = None) -> None:
    """Every check that needs no computation; raises SpecError naming the bad input."""
    if method not in BASELINES:
        raise SpecError(f"Unknown baseline {method!r}; available: {', '.join(BASELINES)}.")
    check_ratio(target_ratio)
    if layout not in ("uniform", "per_layer"):
        raise SpecError(f"Unknown layout {layout!r}; allowed: 'uniform', 'per_layer'.")
    if method in NEEDS_GENERAL:
        if general is None:
            raise SpecError(f"Baseline {method!r} needs channel statistics of general text: pass "
                            f"general=<DimensionStats of the base model on a general corpus>.")
        shape = None
        if model_config is not None:
            d = Adapter.for_config(model_config).dims(model_config)
            shape = (d.n_layers, d.ffn, d.n_heads)
        check_statistics(general, "the general corpus", base_fingerprint=base_fingerprint,
                         shape=shape)


def plan_from_scores(method: str, scores: Scores, model_config: Any, target_ratio: float,
                     layout: str = "uniform", *, base_fingerprint: str, seed: int = 0,
                     ffn_multiple: int = 1) -> PruningPlan:
    """Prune the lowest-scored units of `method` to `target_ratio` of prunable parameters.
    Scores are standardised per unit type over all layers before the shared global selection;
    ffn_multiple rounds kept FFN widths exactly as for Cus-Prun, so comparisons stay one to one."""
    check_ratio(target_ratio)
    adapter = Adapter.for_config(model_config)
    ffn, heads = scores
    sel = select_units(UnitScores(ffn=standardise(ffn), heads=standardise(heads)), adapter,
                       model_config, layout=layout, target_ratio=target_ratio,
                       ffn_multiple=ffn_multiple)
    log.info("baseline %s (%s): removed %.4f of prunable parameters (target %.4f)",
             method, layout, sel.achieved_ratio, target_ratio)
    report = {"method": method, "score": DESCRIBE[method],
              "standardised": "per unit type over all layers", "seed": seed if method == "random" else None}
    return to_plan(sel, adapter=adapter, method=method, layout=layout, base_fingerprint=base_fingerprint,
                   target_ratio=target_ratio, report=report)


def baseline_plan(method: str, model: nn.Module, target_ratio: float, layout: str = "uniform", *,
                  base_fingerprint: str, general: DimensionStats | None = None, seed: int = 0,
                  ffn_multiple: int = 1) -> PruningPlan:
    """Score `model`'s units with `method` and plan `target_ratio` (see plan_from_scores)."""
    validate_baseline(method, target_ratio, layout, base_fingerprint=base_fingerprint,
                      general=general, model_config=model.config)
    scores = unit_scores(model, [method], general, seed)[method]
    return plan_from_scores(method, scores, model.config, target_ratio, layout,
                            base_fingerprint=base_fingerprint, seed=seed, ffn_multiple=ffn_multiple)
