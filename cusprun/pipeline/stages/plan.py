"""The Cus-Prun plan stage: merge the dimensions' statistics into a plan at one ratio. With
allocation='measured', candidate allocations are scored on the held-back documents, removed and
compensated as slicing will do it, on the base model held whole or streamed (cusprun.engine)."""
from __future__ import annotations

import json

from cusprun.pipeline.context import timed
from cusprun.pipeline.stages.common import (gram_set, heldback_texts, load_stats, model_dir,
                                            open_base, read_plan, reused, write_plan)
from cusprun.storage import ArtifactStore
from cusprun.storage.layout import stage_key


def plan_stage(store: ArtifactStore, key: str, model: dict, runtime: dict,
               stats: dict[str, list[str]], general: list[str], prune: dict,
               grams: list[str] | None = None, heldback: dict[str, list[dict]] | None = None,
               compensation: dict | None = None, probe_max_tokens: int = 128,
               probe_precision: str = "float32", previous: str | None = None,
               refresh: bool = False) -> dict:
    """`stats`: dimension -> statistics keys; `general`: statistics keys of general text;
    `heldback`: dimension -> corpus records whose held-back split the probe scores.
    `previous`: the plan key of the round before (iterative pruning): `model` is then that
    round's slice, prune['target_ratio'] the cumulative target in base terms, and the plan is
    written in base terms (plan.json) and in the round model's (what its slice applies)."""
    from cusprun.steps.plan import cusprun_plan, damage_probe
    from cusprun.models.loading import load_config
    from cusprun.plans import PruneConfig

    if (done := reused(store, "plan", key, refresh)) is not None:
        return done
    config = PruneConfig.model_validate(prune)
    with timed(f"plan ({config.rule}, target {config.target_ratio}, {config.allocation})"):
        loaded = {dim: [load_stats(store, k) for k in keys] for dim, keys in stats.items()}
        gen = [load_stats(store, k) for k in general] or None
        model_config = load_config(model_dir(store, model))
        probe = None
        if config.rule == "exact-ratio" and config.allocation == "measured":
            lm, tok = open_base(store, model, runtime, "probe_precision")
            dense_key = json.dumps([model["fingerprint"], probe_max_tokens, probe_precision, {
                d: [c["hash"] for c in cs] for d, cs in (heldback or {}).items()}], sort_keys=True)
            probe = damage_probe(lm, tok, heldback_texts(store, heldback or {}),
                                 grams=gram_set(store, grams or []),
                                 compensation=compensation or {}, max_tokens=probe_max_tokens,
                                 precision=probe_precision, dense_key=dense_key)
        local = None
        if previous:
            from cusprun.steps.rounds import round_plan

            local, plan = round_plan(read_plan(store, previous), loaded, gen, prune, model_config,
                                     model["fingerprint"], probe=probe, compensation=compensation)
        else:
            plan = cusprun_plan(loaded, gen, prune, model_config, model["fingerprint"],
                                probe=probe, compensation=compensation)
        for dim, keys in stats.items():              # build_plan filled value and corpus hashes
            for p in (plan, local) if local is not None else (plan,):
                p.dimensions[dim]["stats"] = [store.uri(stage_key("stats", k)) for k in keys]
        return write_plan(store, "plan", key, plan, local)
