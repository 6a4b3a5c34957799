"""The slice stage: a plan written as a smaller standard checkpoint, compensated in closed form
one layer at a time (cusprun.slicing), in the dense checkpoint's dtype. Its key is the weights'
(plan and compensation), so it carries no expert's card: publishing writes that."""
from __future__ import annotations

import json

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import (commit_stage, gram_set, load_stats, model_dir,
                                            read_plan, reused)
from cusprun.storage import ArtifactStore


def slice_stage(store: ArtifactStore, key: str, model: dict, plan: str,
                grams: list[str] | None = None, compensation: dict | None = None,
                means: list[str] | None = None, refresh: bool = False) -> dict:
    """`means`: statistics keys whose channel means the compensation reads instead of Grams
    (FLAP's bias from the general text it calibrated on)."""
    from cusprun.compensation import ChannelMeans, CompensationConfig
    from cusprun.slicing import slice_checkpoint
    from cusprun.slicing.compensated import Compensation

    if (done := reused(store, "slice", key, refresh)) is not None:
        return done
    p = read_plan(store, plan, local=True)       # a round's plan is on the round's model
    comp = CompensationConfig.model_validate(compensation or {"mode": "none"})
    with timed(f"slice {p.method} ({p.layout}, {p.achieved_ratio:.3f}, compensation {comp.mode})"), \
            scratch_dir("slice", key) as out:
        grams_set = None
        if comp.enabled:
            grams_set = (ChannelMeans.from_stats([load_stats(store, k) for k in means]) if means
                         else gram_set(store, grams or [], 0))
        source = model_dir(store, model)
        slice_checkpoint(source, p, out / "model", model_fingerprint=model["fingerprint"],
                         compensation=Compensation(comp, grams_set))
        if model.get("slice"):   # a later round: describe the expert against the base model
            from cusprun.steps.rounds import describe_against_base

            p = read_plan(store, plan)
            describe_against_base(out / "model", p, source)
        info = json.loads((out / "model" / "cusprun.json").read_text())
        return commit_stage(store, "slice", key, out / "model", {
            "method": p.method, "ratio": p.achieved_ratio, "target_ratio": p.target_ratio,
            "params": info.get("params", {})})
