"""build_plan: merge the impact statistics of an expert's dimensions into one PruningPlan.

Cus-Prun keeps a unit when any of the expert's dimensions needs it. With the default
score='centered', a dimension's need for a unit is the RMS over its tokens of the unit's centred
contribution (its impact once compensation restores its mean) relative to its layer's mean; with
score='impact', the unit's mean impact over the dimension's documents relative to its layer's
mean impact. Either way the expert's score is the max over dimensions.
With score='percentile' the score is the max, over every document of every dimension, of the
unit's per-document rank percentile: the paper rule (unit irrelevant to a document when it lies
in the lowest sigma of its layer; pruned when irrelevant to every document of every dimension) is
exactly "score < sigma". The exact-ratio rule removes the lowest scores until a parameter target
is met; ties are broken by the mean percentile, then layer, then index. An `allocation` (from the
measured search in cusprun.allocation) fixes head structures and per-layer FFN widths."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cusprun.adapters import Adapter
from cusprun.errors import SpecError
from cusprun.plans.config import PruneConfig
from cusprun.plans.overlap import overlap_report
from cusprun.plans.plan import PruningPlan
from cusprun.plans.select import UnitScores, select_sets, select_units, to_plan
from cusprun.scoring.stats import DimensionStats, check_statistics

log = logging.getLogger(__name__)


def _check_corpus(s: DimensionStats, where: str, config: PruneConfig, base_fingerprint: str,
                  shape: tuple[int, int, int]) -> None:
    check_statistics(s, where, base_fingerprint=base_fingerprint, shape=shape,
                     min_docs=config.min_docs)


def validate_inputs(stats: dict[str, list[DimensionStats]], config: PruneConfig, model_config: Any,
                    base_fingerprint: str, general: list[DimensionStats] | None) -> Adapter:
    """Every check that needs no computation; raises SpecError naming the bad input."""
    if not isinstance(stats, dict) or not stats:
        raise SpecError("An expert needs 1 to 3 dimensions (e.g. language, domain, task), got none.")
    if len(stats) > 3:
        raise SpecError(f"An expert uses 1 to 3 dimensions, got {len(stats)}: {sorted(stats)}.")
    adapter = Adapter.for_config(model_config)
    d = adapter.dims(model_config)
    shape = (d.n_layers, d.ffn, d.n_heads)
    for dim, items in stats.items():
        if not items:
            raise SpecError(f"Dimension {dim!r} has no corpus statistics; give it at least one corpus.")
        for s in items:
            _check_corpus(s, f"dimension {dim!r}", config, base_fingerprint, shape)
    for s in general or []:
        _check_corpus(s, "the general corpus", config, base_fingerprint, shape)
    return adapter


def _pct(items: list[DimensionStats], name: str) -> torch.Tensor:
    return torch.cat([getattr(s, name) for s in items])      # [docs, L, units] float16


def dimension_scores(items: list[DimensionStats]) -> dict[str, np.ndarray]:
    """Per unit over a dimension's documents: max and mean per-document percentile, and the mean
    impact relative to its layer's mean impact (a dimension's corpora weighted by documents)."""
    out = {}
    for kind, name, imp in (("ffn", "ffn_pct", "ffn_impact_mean"), ("heads", "head_pct", "head_impact_mean")):
        p = _pct(items, name)
        out[kind] = p.max(0).values.float().numpy()
        out[f"{kind}_mean"] = p.float().mean(0).numpy()
        out[f"{kind}_docs"] = p.shape[0]
        mean = sum(getattr(s, imp).double() * s.n_docs for s in items) / sum(s.n_docs for s in items)
        out[f"{kind}_impact"] = _relative(mean)
        cen = "ffn_centered" if kind == "ffn" else "head_centered"
        if all(getattr(s, cen) is not None for s in items):   # token-weighted mean square
            sq = sum(getattr(s, cen).double() ** 2 * s.n_tokens for s in items) / sum(s.n_tokens for s in items)
            out[f"{kind}_centered"] = _relative(sq.sqrt())
    return out


def _relative(x: torch.Tensor) -> np.ndarray:
    """Each unit relative to its layer's mean, so that dimensions compare on one scale."""
    layer = x.mean(1, keepdim=True)
    return (x / torch.where(layer > 0, layer, 1.0)).numpy()


def protected_units(general: list[DimensionStats] | None, fraction: float) -> dict[str, np.ndarray] | None:
    """Units whose mean percentile over general documents is >= 1 - fraction."""
    if not general or fraction <= 0:
        return None
    return {kind: _pct(general, name).float().mean(0).numpy() >= 1 - fraction
            for kind, name in (("ffn", "ffn_pct"), ("heads", "head_pct"))}


def _merged(per_dim: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Max over dimensions of the max percentile and of the relative impact; mean percentile
    over all documents of all dimensions."""
    out = {}
    for kind in ("ffn", "heads"):
        out[kind] = np.max([v[kind] for v in per_dim.values()], axis=0)
        out[f"{kind}_impact"] = np.max([v[f"{kind}_impact"] for v in per_dim.values()], axis=0)
        if all(f"{kind}_centered" in v for v in per_dim.values()):
            out[f"{kind}_centered"] = np.max([v[f"{kind}_centered"] for v in per_dim.values()], axis=0)
        n = sum(v[f"{kind}_docs"] for v in per_dim.values())
        out[f"{kind}_mean"] = sum(v[f"{kind}_mean"] * v[f"{kind}_docs"] for v in per_dim.values()) / n
    return out


def _paper_target(adapter: Adapter, model_config: Any, ffn_rm: np.ndarray, heads_rm: np.ndarray) -> int:
    """Parameters the paper rule's raw irrelevant sets would remove (kv counted for whole groups)."""
    d, u = adapter.dims(model_config), adapter.unit_params(model_config)
    groups = heads_rm.reshape(d.n_layers, d.n_kv_heads, d.group_size).all(-1).sum()
    return int(ffn_rm.sum() * u["ffn_neuron"] + heads_rm.sum() * u["query_head"] + groups * u["kv_group"])


def build_plan(stats: dict[str, list[DimensionStats]], config: PruneConfig | dict, model_config: Any, *,
               base_fingerprint: str, general: list[DimensionStats] | None = None,
               probe: Any = None) -> PruningPlan:
    """The Cus-Prun plan for an expert whose dimensions are described by `stats`
    (dimension name -> statistics of its corpora). `general` statistics, if given, protect the
    units general text needs most (config.protect_fraction). With allocation='measured' (exact-
    ratio rule), `probe` (cusprun.allocation.DamageProbe) measures candidate allocations."""
    if not isinstance(config, PruneConfig):
        config = PruneConfig.model_validate(config)
    adapter = validate_inputs(stats, config, model_config, base_fingerprint, general)
    measured = config.rule == "exact-ratio" and config.allocation == "measured"
    if measured and probe is None:
        raise SpecError("allocation='measured' needs a damage probe (the model and held-back "
                        "documents, cusprun.allocation.DamageProbe); pass probe= or use "
                        "allocation='rank'.")
    per_dim = {dim: dimension_scores(items) for dim, items in stats.items()}
    merged = _merged(per_dim)
    prot = protected_units(general, config.protect_fraction)
    source = {"centered": "_centered", "impact": "_impact", "percentile": ""}[config.score] \
        if config.rule == "exact-ratio" else ""
    if source == "_centered" and "ffn_centered" not in merged:
        raise SpecError("score='centered' needs statistics with centred impacts (collected by "
                        "cusprun >= this version); recollect the statistics or use score='impact'.")
    scores = UnitScores(ffn=merged[f"ffn{source}"], heads=merged[f"heads{source}"],
                        ffn_tie=merged["ffn_mean"], heads_tie=merged["heads_mean"],
                        ffn_protected=None if prot is None else prot["ffn"],
                        heads_protected=None if prot is None else prot["heads"])
    notes: list[str] = []
    target_ratio: float | None = config.target_ratio
    if config.rule == "paper":
        free_f = ~scores.ffn_protected if prot else np.ones_like(scores.ffn, bool)
        free_h = ~scores.heads_protected if prot else np.ones_like(scores.heads, bool)
        ffn_rm, heads_rm = (scores.ffn < config.sigma) & free_f, (scores.heads < config.sigma) & free_h
        target_ratio = None
        if config.layout == "per_layer":
            sel = select_sets(scores, adapter, model_config, ffn_remove=ffn_rm, heads_remove=heads_rm,
                              ffn_multiple=config.ffn_multiple)
        else:
            paper = _paper_target(adapter, model_config, ffn_rm, heads_rm)
            notes.append(f"paper rule, uniform: the paper's irrelevant sets remove {paper} parameters; "
                         f"that total is spread evenly over layers by the same score")
            sel = select_units(scores, adapter, model_config, layout="uniform", target_params=paper,
                               ffn_multiple=config.ffn_multiple) \
                if paper > 0 else select_sets(scores, adapter, model_config, ffn_remove=ffn_rm,
                                              heads_remove=heads_rm, ffn_multiple=config.ffn_multiple)
        threshold = {"ffn": config.sigma, "heads": config.sigma}
    elif measured:
        from cusprun.allocation import search_allocation

        found = search_allocation(scores, adapter, model_config, probe, layout=config.layout,
                                  target_ratio=config.target_ratio, ffn_multiple=config.ffn_multiple)
        sel, threshold = found.selection, None
        sel.report["allocation_search"] = found.report(probe)
    else:
        sel = select_units(scores, adapter, model_config, layout=config.layout,
                           target_ratio=config.target_ratio, ffn_multiple=config.ffn_multiple)
        threshold = None
    report = {
        "rule": config.rule, "layout": config.layout, "ffn_multiple": config.ffn_multiple,
        "score_kind": config.score, "allocation": config.allocation if config.rule == "exact-ratio" else None,
        "sigma": config.sigma if config.rule == "paper" else None,
        "score": {"_centered": "max over dimensions of the unit's centred impact (its mean "
                               "contribution restored) relative to its layer's mean",
                  "_impact": "max over dimensions of the unit's mean impact relative to its layer's mean",
                  "": "max over all documents of all dimensions of the per-document rank percentile"}[source],
        "docs_per_dimension": {dim: int(v["ffn_docs"]) for dim, v in per_dim.items()},
        "protected": {"ffn": int(prot["ffn"].sum()) if prot else 0,
                      "heads": int(prot["heads"].sum()) if prot else 0,
                      "protect_fraction": config.protect_fraction,
                      "general_docs": sum(s.n_docs for s in general or [])},
        "overlap": overlap_report(per_dim, sel, threshold),
    }
    sel.report["notes"] = sel.report.get("notes", []) + notes
    log.info("cusprun plan (%s, %s): removed %.4f of prunable parameters (target %s)",
             config.rule, config.layout, sel.achieved_ratio, target_ratio)
    plan = to_plan(sel, adapter=adapter, method="cusprun", layout=config.layout,
                   base_fingerprint=base_fingerprint, target_ratio=target_ratio, rule=config.rule,
                   report=report)
    plan.dimensions = {dim: {"value": (items[0].summary.get("extra") or {}).get("value"),
                             "corpus_hashes": [s.corpus_hash for s in items]}
                       for dim, items in stats.items()}
    return plan
