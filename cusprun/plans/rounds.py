"""Iterative pruning's plan algebra (pure): the cumulative target of each round, the ratio a
round asks of the partly pruned model, and a round's plan mapped back to the base model.

Round i of k removes, in total, target * i / k of the BASE model's prunable parameters. A unit
costs the same parameters in the sliced model as in the base (hidden size and head size are
not pruned), so the parameters a round must remove from the sliced model are the cumulative
target minus what earlier rounds removed, and the last round hits the target exactly as a
one-shot plan does (errors never accumulate: every round aims at a cumulative total)."""
from __future__ import annotations

from cusprun.errors import SpecError
from cusprun.plans.plan import LayerKeep, PruningPlan

MAX_ROUNDS = 16


def round_targets(target: float, rounds: int) -> list[float]:
    """Cumulative ratio (of the base model's prunable parameters) reached after each round."""
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= MAX_ROUNDS:
        raise SpecError(f"rounds={rounds!r}: give a whole number of pruning rounds from 1 to "
                        f"{MAX_ROUNDS} (1: one shot)")
    return [target * i / rounds for i in range(1, rounds + 1)]


def local_ratio(so_far: PruningPlan, cumulative: float) -> float:
    """The ratio of the partly pruned model's prunable parameters that the next round removes so
    that, with what `so_far` (base terms) removed, `cumulative` of the base's is gone."""
    total = so_far.prunable_params
    want = cumulative * total - so_far.removed_params
    left = total - so_far.removed_params
    if want <= 0:
        raise SpecError(f"Earlier rounds already removed {so_far.achieved_ratio:.4f} of the "
                        f"prunable parameters, not less than this round's target {cumulative:g} "
                        "(a coarse ffn_multiple overshoots): use fewer rounds or a smaller "
                        "ffn_multiple")
    return want / left


def compose(so_far: PruningPlan, local: PruningPlan, target: float) -> PruningPlan:
    """`local` (a plan on the model `so_far` sliced out of the base) in base-model terms: unit j
    of the sliced layer is the j-th kept unit of `so_far` (slicing keeps units in index order).
    The result is a valid plan on the base model (at cumulative `target`): which base units the
    expert keeps."""
    if len(so_far.layers) != len(local.layers):
        raise SpecError(f"Round plan has {len(local.layers)} layers, the model it was made on "
                        f"has {len(so_far.layers)}")
    layers = []
    for li, (base, step) in enumerate(zip(so_far.layers, local.layers)):
        try:
            layers.append(LayerKeep(ffn=[base.ffn[j] for j in step.ffn],
                                    heads=[base.heads[h] for h in step.heads],
                                    kv_heads=[base.kv_heads[g] for g in step.kv_heads]))
        except IndexError as e:
            raise SpecError(f"Round plan keeps a unit of layer {li} that the model it was made "
                            "on does not have: it was made for another model") from e
    removed = so_far.removed_params + local.removed_params
    history = so_far.report.get("rounds") or [_round_row(so_far, so_far)]
    plan = PruningPlan(
        base_fingerprint=so_far.base_fingerprint, architecture=so_far.architecture,
        method=local.method, rule=local.rule, layout=local.layout, target_ratio=target,
        achieved_ratio=removed / so_far.prunable_params, prunable_params=so_far.prunable_params,
        removed_params=removed, layers=layers, dimensions=so_far.dimensions,
        report={**local.report})
    plan.report["rounds"] = [*history, _round_row(local, plan)]
    return plan


def _round_row(step: PruningPlan, cumulative: PruningPlan) -> dict:
    return {"round_ratio": step.achieved_ratio, "removed_params": step.removed_params,
            "cumulative_ratio": cumulative.achieved_ratio}
