"""Checks a plan against the dense model before any weight is read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cusprun.adapters import Adapter, Dims
from cusprun.errors import SpecError
from cusprun.plans.plan import LayerKeep, PruningPlan

LAYOUTS = ("uniform", "per_layer")


@dataclass(frozen=True)
class LayerWidths:
    """What one sliced layer keeps."""

    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int

    def as_config(self) -> dict[str, int]:
        return {"intermediate_size": self.intermediate_size,
                "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads}


def _sorted_unique_in_range(values: list[int], n: int, what: str, li: int) -> None:
    if any(not isinstance(v, int) or v < 0 or v >= n for v in values):
        bad = [v for v in values if not isinstance(v, int) or v < 0 or v >= n]
        raise SpecError(f"Plan layer {li}: {what} indices {bad[:5]} are outside 0..{n - 1}")
    if list(values) != sorted(set(values)):
        raise SpecError(f"Plan layer {li}: {what} indices must be sorted ascending without repeats")


def _check_layer(li: int, keep: LayerKeep, d: Dims, layout: str) -> LayerWidths:
    _sorted_unique_in_range(keep.ffn, d.ffn, "ffn", li)
    _sorted_unique_in_range(keep.heads, d.n_heads, "query head", li)
    _sorted_unique_in_range(keep.kv_heads, d.n_kv_heads, "kv head", li)
    if not keep.heads:
        raise SpecError(f"Plan layer {li} keeps no query head; every layer must keep at least one "
                        f"head (of {d.n_heads}) and one key/value group")
    if layout == "uniform" and not keep.ffn:
        raise SpecError(f"Plan layer {li} keeps no FFN neuron; the uniform layout needs at least one "
                        "(use layout 'per_layer' to drop whole FFN blocks)")
    g = d.group_size
    groups = sorted({h // g for h in keep.heads})
    if groups != list(keep.kv_heads):
        raise SpecError(f"Plan layer {li}: kv_heads {keep.kv_heads} do not match the groups of the kept "
                        f"query heads {keep.heads} (head h belongs to group h // {g}), expected {groups}")
    counts = {grp: sum(1 for h in keep.heads if h // g == grp) for grp in groups}
    if len(set(counts.values())) != 1:
        raise SpecError(f"Plan layer {li}: kept KV groups keep different numbers of query heads "
                        f"{counts}; every kept group must keep the same number (grouped-query attention)")
    return LayerWidths(len(keep.ffn), len(keep.heads), len(keep.kv_heads))


def removed_params(adapter: Adapter, config: Any, widths: list[LayerWidths]) -> int:
    """Parameters the kept widths remove, by the adapter's unit arithmetic."""
    d, u = adapter.dims(config), adapter.unit_params(config)
    return sum((d.ffn - w.intermediate_size) * u["ffn_neuron"]
               + (d.n_heads - w.num_attention_heads) * u["query_head"]
               + (d.n_kv_heads - w.num_key_value_heads) * u["kv_group"] for w in widths)


def check_identity(plan: PruningPlan, model_fingerprint: str) -> None:
    """The cheap checks: the plan is for this model and has a known layout."""
    if plan.base_fingerprint != model_fingerprint:
        raise SpecError(f"Plan was made for base model fingerprint {plan.base_fingerprint!r}, but the "
                        f"model to slice has fingerprint {model_fingerprint!r}; rebuild the plan on "
                        "this model")
    if plan.layout not in LAYOUTS:
        raise SpecError(f"Unknown plan layout {plan.layout!r}; expected one of {', '.join(LAYOUTS)}")


def validate_plan(plan: PruningPlan, config: Any, *, model_fingerprint: str) -> list[LayerWidths]:
    """Per-layer widths of a plan that is safe to slice with; SpecError naming the problem otherwise."""
    check_identity(plan, model_fingerprint)
    adapter = Adapter.for_config(config)
    if plan.architecture != adapter.architecture:
        raise SpecError(f"Plan is for architecture {plan.architecture!r}, the model is "
                        f"{adapter.architecture!r}")
    d = adapter.dims(config)
    if len(plan.layers) != d.n_layers:
        raise SpecError(f"Plan has {len(plan.layers)} layers, the model has {d.n_layers}")
    widths = [_check_layer(i, k, d, plan.layout) for i, k in enumerate(plan.layers)]
    if plan.layout == "uniform":
        if len(set(widths)) != 1:
            shown = sorted({(w.intermediate_size, w.num_attention_heads, w.num_key_value_heads)
                            for w in widths})
            raise SpecError(f"Plan layout is 'uniform' but layers keep different widths "
                            f"(ffn, heads, kv_heads) {shown[:4]}; use layout 'per_layer' or a plan "
                            "that keeps the same counts in every layer")
        w = widths[0]
        if not adapter.valid_head_count(config, w.num_attention_heads, w.num_key_value_heads):
            raise SpecError(
                f"Uniform plan keeps {w.num_attention_heads} query heads / {w.num_key_value_heads} KV "
                f"heads, which transformers' {adapter.spec.config_class} refuses for hidden size "
                f"{d.hidden} (it requires hidden_size % num_attention_heads == 0 for this family, even "
                "with an explicit head_dim). Snap the head count to a divisor of the hidden size, or "
                "use layout 'per_layer'")
    prunable = adapter.prunable_params(config)
    if plan.prunable_params != prunable:
        raise SpecError(f"Plan says the model has {plan.prunable_params} prunable parameters; by the "
                        f"adapter's arithmetic it has {prunable}")
    removed = removed_params(adapter, config, widths)
    if plan.removed_params != removed:
        raise SpecError(f"Plan says it removes {plan.removed_params} parameters, but its kept units "
                        f"remove {removed} (Adapter.unit_params arithmetic); the plan is inconsistent")
    return widths
