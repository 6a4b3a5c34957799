"""The baseline plans stage: every (method, ratio) plan from the build's baseline scores,
through Cus-Prun's own selection code; each plan committed under its own key."""
from __future__ import annotations

from cusprun.pipeline.context import timed
from cusprun.pipeline.stages.common import base_path, reused, write_plan
from cusprun.pipeline.stages.scores import read_scores
from cusprun.storage import ArtifactStore


def baseline_stage(store: ArtifactStore, jobs: list[dict], model: dict,
                   refresh: bool = False) -> list[dict]:
    """`jobs`: [{key, method, ratio, layout, ffn_multiple, compensation, ridge, scores (key)}]
    -> their records. Layout, ffn_multiple and compensation are the build's; a method that brings
    its own (flap) uses those instead, and its plan's report says which it ran with."""
    from cusprun.steps.baseline import baseline_plan
    from cusprun.models.loading import load_config

    out = [reused(store, "baseline", j["key"], refresh) for j in jobs]
    todo = [i for i, r in enumerate(out) if r is None]
    if not todo:
        return out
    config = load_config(base_path(store, model))
    with timed(f"baseline plans ({len(todo)})"):
        scores = {k: read_scores(store, k) for k in {jobs[i]["scores"] for i in todo}}
        for i in todo:
            j = jobs[i]
            plan = baseline_plan(j, scores[j["scores"]][j["method"]], config,
                                       model["fingerprint"])
            out[i] = write_plan(store, "baseline", j["key"], plan)
    return out
