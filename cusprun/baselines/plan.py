"""Baseline plans: a baseline's unit scores through Cus-Prun's own selection code, as each
baseline defines its structure (cusprun.baselines.methods)."""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from cusprun.adapters import Adapter
from cusprun.baselines.methods import (BASELINES, METHODS, NEEDS_GENERAL, BaselineSetup,
                                       baseline_setup, bias_family)
from cusprun.baselines.scorers import Scores, standardise, unit_scores
from cusprun.errors import SpecError
from cusprun.plans.config import check_ratio
from cusprun.plans.heads import HeadStructure, structure_cost, valid_structures
from cusprun.plans.plan import PruningPlan
from cusprun.plans.select import Allocation, UnitScores, select_units, to_plan
from cusprun.scoring.stats import DimensionStats, check_statistics

log = logging.getLogger(__name__)


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


def layer_fraction_structure(adapter: Adapter, config: Any, ratio: float) -> HeadStructure:
    """The valid head structure that removes the largest share of a layer's attention parameters
    not above `ratio` (ties: more heads kept). With one key/value head per query head this is
    int(ratio x heads) heads, Wanda-sp's per-layer rule in the reference code; with grouped
    query heads it counts each group's k/v with the group, so 25 % of SmolLM2's 9 heads in 3
    groups is 3 query heads (a quarter of the attention's parameters), not 2."""
    d, u = adapter.dims(config), adapter.unit_params(config)
    budget = ratio * (d.n_heads * u["query_head"] + d.n_kv_heads * u["kv_group"]) * (1 + 1e-9)
    fits = [s for s in valid_structures(adapter, config, d) if structure_cost(s, d, u) <= budget]
    return max(fits, key=lambda s: (structure_cost(s, d, u), s.heads, s.groups))


def plan_from_scores(method: str, scores: Scores, model_config: Any, target_ratio: float,
                     layout: str = "uniform", *, base_fingerprint: str, seed: int = 0,
                     ffn_multiple: int = 1, compensation: str = "ls",
                     ridge: float = 0.1) -> PruningPlan:
    """Prune `method`'s lowest-scored units to `target_ratio` of prunable parameters, in the
    method's own structure (methods.py): `layout`, `ffn_multiple` and `compensation` are the
    build's, which a method that brings its own (flap) overrides; the plan's report records the
    setup it ran with (report['setup']) and the compensation its slice applies."""
    check_ratio(target_ratio)
    adapter = Adapter.for_config(model_config)
    setup = baseline_setup(method, layout=layout, compensation=compensation, ridge=ridge,
                           ffn_multiple=ffn_multiple, bias_family=bias_family(adapter))
    m = METHODS[method]
    ffn, heads = scores
    if m.standardise:
        ffn, heads = standardise(ffn), standardise(heads)
    allocation = None
    if m.selection == "layer-fraction":
        st = layer_fraction_structure(adapter, model_config, target_ratio)
        n = adapter.dims(model_config).n_layers
        allocation = Allocation(heads=(st,) * n, ffn_share=(1.0,) * n,
                                label=f"{method}: {st.groups}x{st.per_group} heads in every layer")
    sel = select_units(UnitScores(ffn=ffn, heads=heads), adapter, model_config,
                       layout=setup.layout, target_ratio=target_ratio,
                       ffn_multiple=setup.ffn_multiple, allocation=allocation)
    log.info("baseline %s (%s): removed %.4f of prunable parameters (target %.4f)",
             method, setup.layout, sel.achieved_ratio, target_ratio)
    if setup.note:
        log.warning("baseline %s: %s", method, setup.note)
    report = {"method": method, "score": m.score, "selection": _selection_note(m, setup),
              "setup": setup.as_dict(), "compensation": setup.compensation,
              "seed": seed if method == "random" else None}
    return to_plan(sel, adapter=adapter, method=method, layout=setup.layout,
                   base_fingerprint=base_fingerprint, target_ratio=target_ratio, report=report)


def _selection_note(m, setup: BaselineSetup) -> str:
    if m.selection == "layer-fraction":
        return ("per layer: the head structure nearest the ratio from below, the FFN width that "
                "meets the target (equal in every layer, within one neuron for per_layer)")
    scale = ("scores standardised per unit type over all layers" if m.standardise
             else "scores as given")
    return f"one global order ({scale}), cost-weighted, {setup.layout} layout"


def baseline_plan(method: str, model: nn.Module, target_ratio: float, layout: str = "uniform", *,
                  base_fingerprint: str, general: DimensionStats | None = None, seed: int = 0,
                  ffn_multiple: int = 1, compensation: str = "ls", ridge: float = 0.1) -> PruningPlan:
    """Score `model`'s units with `method` and plan `target_ratio` (see plan_from_scores)."""
    validate_baseline(method, target_ratio, layout, base_fingerprint=base_fingerprint,
                      general=general, model_config=model.config)
    scores = unit_scores(model, [method], general, seed)[method]
    return plan_from_scores(method, scores, model.config, target_ratio, layout,
                            base_fingerprint=base_fingerprint, seed=seed, ffn_multiple=ffn_multiple,
                            compensation=compensation, ridge=ridge)
