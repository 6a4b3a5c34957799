"""The baseline scores stage: every baseline's unit scores from one walk over the dense weights
(streamed from disk when the model does not fit), once per build whatever the number of ratios;
plans at each ratio come from these scores without touching the model again."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import (artifact_dir, commit_stage, load_stats, open_base,
                                            reused)
from cusprun.storage import ArtifactStore

SCORES_FILE = "scores.safetensors"


def scores_stage(store: ArtifactStore, key: str, model: dict, runtime: dict,
                 methods: list[str], general: list[str], seed: int,
                 refresh: bool = False) -> dict:
    from cusprun.steps.baseline import baseline_scores

    if (done := reused(store, "scores", key, refresh)) is not None:
        return done
    gen = load_stats(store, general[0]) if general else None
    with timed(f"baseline scores ({', '.join(methods)})"), scratch_dir("scores", key) as out:
        lm, _ = open_base(store, model, runtime)
        scores = baseline_scores(lm, methods, gen, seed, model["fingerprint"])
        save_file({f"{m}.{kind}": torch.from_numpy(s[i]).contiguous()
                   for m, s in scores.items() for i, kind in enumerate(("ffn", "heads"))},
                  str(out / SCORES_FILE))
        (out / "scores.json").write_text(json.dumps({"methods": methods, "seed": seed,
                                                     "general": general}, indent=2))
        return commit_stage(store, "scores", key, out, {"methods": methods})


def read_scores(store: ArtifactStore, key: str) -> dict[str, tuple]:
    t = load_file(str(artifact_dir(store, "scores", key) / SCORES_FILE))
    methods = sorted({k.rsplit(".", 1)[0] for k in t})
    return {m: (t[f"{m}.ffn"].numpy(), t[f"{m}.heads"].numpy()) for m in methods}
