"""Synthetic plans with correct accounting, for tests and benchmarks (not a pruning method)."""
from __future__ import annotations

import random
from typing import Any

from cusprun.adapters import Adapter
from cusprun.masks.plan import LayerKeep, PruningPlan
from cusprun.slicing.validate import LayerWidths, removed_params


def plan_from_keeps(config: Any, layers: list[LayerKeep], *, fingerprint: str,
                    layout: str = "per_layer", method: str = "random") -> PruningPlan:
    """A PruningPlan for explicit kept units, with prunable/removed params and ratio filled in."""
    ad = Adapter.for_config(config)
    widths = [LayerWidths(len(k.ffn), len(k.heads), len(k.kv_heads)) for k in layers]
    prunable = ad.prunable_params(config)
    removed = removed_params(ad, config, widths)
    return PruningPlan(base_fingerprint=fingerprint, architecture=ad.architecture, method=method,
                       layout=layout, achieved_ratio=removed / prunable, prunable_params=prunable,
                       removed_params=removed, layers=layers)


def _per_layer(value: int | list[int], n: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def random_plan(config: Any, *, fingerprint: str, ffn: int | list[int], groups: int | list[int],
                heads_per_group: int | list[int], layout: str = "per_layer", seed: int = 0) -> PruningPlan:
    """Random kept units: per layer `ffn` neurons, `groups` KV groups with `heads_per_group`
    query heads each (ints apply to every layer, lists give one value per layer)."""
    ad = Adapter.for_config(config)
    d = ad.dims(config)
    rng = random.Random(seed)
    layers = []
    for f, g, h in zip(_per_layer(ffn, d.n_layers), _per_layer(groups, d.n_layers),
                       _per_layer(heads_per_group, d.n_layers)):
        kv = sorted(rng.sample(range(d.n_kv_heads), g))
        heads = sorted(q for grp in kv
                       for q in rng.sample(range(grp * d.group_size, (grp + 1) * d.group_size), h))
        layers.append(LayerKeep(ffn=sorted(rng.sample(range(d.ffn), f)), heads=heads, kv_heads=kv))
    return plan_from_keeps(config, layers, fingerprint=fingerprint, layout=layout)


def uniform_plan_for_ratio(config: Any, ratio: float, *, fingerprint: str, seed: int = 0) -> PruningPlan:
    """A random uniform plan removing about `ratio` of the prunable params, pruning FFN neurons
    and whole KV groups (so the head count stays one the family accepts when possible)."""
    ad = Adapter.for_config(config)
    d, u = ad.dims(config), ad.unit_params(config)
    target = ratio * ad.prunable_params(config) / d.n_layers
    best = None
    for g in range(d.n_kv_heads, 0, -1):
        if not ad.valid_head_count(config, g * d.group_size, g):
            continue
        attn = (d.n_kv_heads - g) * (d.group_size * u["query_head"] + u["kv_group"])
        f = d.ffn - max(0, round((target - attn) / u["ffn_neuron"]))
        if 1 <= f <= d.ffn:
            err = abs(attn + (d.ffn - f) * u["ffn_neuron"] - target)
            if best is None or err < best[0]:
                best = (err, f, g)
    if best is None:
        raise ValueError(f"no uniform plan reaches ratio {ratio}")
    _, f, g = best
    return random_plan(config, fingerprint=fingerprint, ffn=f, groups=g, heads_per_group=d.group_size,
                       layout="uniform", seed=seed)
