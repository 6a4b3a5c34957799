"""The iterative-pruning steps (rounds > 1), shared by `cusprun.prune` and the pipeline's plan
and slice stages: a round's plan on the partly pruned model, and its sliced checkpoint described
against the base model (cusprun.plans.rounds holds the plan algebra)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cusprun.plans.plan import PruningPlan


def round_plan(so_far: PruningPlan, stats: Mapping[str, list], general: list | None, prune: dict,
               model_config: Any, fingerprint: str, *, probe=None,
               compensation: dict | None = None) -> tuple[PruningPlan, PruningPlan]:
    """(the round's plan on the model `so_far` left, that plan in base-model terms).
    `prune['target_ratio']` is the cumulative target in base terms; `stats`, `general`, `probe`
    and `model_config` are the partly pruned model's (`fingerprint` names it)."""
    from cusprun.plans.rounds import compose, local_ratio
    from cusprun.steps.plan import cusprun_plan

    target = prune["target_ratio"]
    local = cusprun_plan(stats, general, {**prune, "target_ratio": local_ratio(so_far, target)},
                         model_config, fingerprint, probe=probe, compensation=compensation)
    return local, compose(so_far, local, target)


def describe_against_base(out: Path, base_plan: PruningPlan, previous: Path) -> None:
    """Rewrite a round's slice metadata (cusprun.json, README.md) to describe the expert against
    the BASE model: its plan in base terms, the base's fingerprint and parameter counts, the
    parameters every round removed. `previous`: the checkpoint this round sliced (whose
    cusprun.json already describes itself against the base)."""
    from cusprun.slicing.card import model_card
    from cusprun.version import __version__

    meta = json.loads((out / "cusprun.json").read_text())
    prev = json.loads((previous / "cusprun.json").read_text())
    step, before = meta["params"], prev["params"]
    params = {"dense": before["dense"], "pruned": step["pruned"],
              "removed": before["removed"] + step["removed"],
              "added_biases": before.get("added_biases", 0) + step.get("added_biases", 0)}
    meta.update(base_plan.model_dump(mode="json"))
    meta.update({"base_model": prev["base_model"], "params": params,
                 "base_model_fingerprint": prev["base_model_fingerprint"]})
    (out / "cusprun.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(model_card(base_plan, base_model=meta["base_model"],
                                              params=params, widths=meta["layer_widths"],
                                              version=__version__,
                                              compensation=meta.get("compensation")))
