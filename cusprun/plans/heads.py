"""Valid grouped-query head structures and which heads a layer keeps under one.

A structure (k, g) keeps k key/value groups with g query heads each. It is valid when the
family's own config class accepts k*g heads and k kv heads (Adapter.valid_head_count), so the
sliced model loads with stock transformers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cusprun.adapters import Adapter, Dims


@dataclass(frozen=True, order=True)
class HeadStructure:
    groups: int           # kept key/value groups
    per_group: int        # kept query heads in every kept group

    @property
    def heads(self) -> int:
        return self.groups * self.per_group


def valid_structures(adapter: Adapter, config: Any, dims: Dims) -> list[HeadStructure]:
    """Every valid structure, most kept heads first (then most kept groups)."""
    out = [HeadStructure(k, g) for k in range(1, dims.n_kv_heads + 1)
           for g in range(1, dims.group_size + 1)
           if adapter.valid_head_count(config, k * g, k)]
    return sorted(out, key=lambda s: (-s.heads, -s.groups))


def structure_cost(s: HeadStructure, dims: Dims, unit: dict[str, int]) -> int:
    """Parameters one layer removes under structure s."""
    return (dims.n_heads - s.heads) * unit["query_head"] + (dims.n_kv_heads - s.groups) * unit["kv_group"]


def choose_heads(rank: np.ndarray, protected: np.ndarray, dims: Dims,
                 s: HeadStructure) -> tuple[list[int], list[int]] | None:
    """Kept (query heads, kv groups) of one layer under s, keeping the highest-ranked heads:
    each group offers its protected heads plus its best others; groups holding protected heads
    stay, then the groups with the largest summed rank. None if protection makes s impossible."""
    gs = dims.group_size
    must, others = [], []
    for j in range(dims.n_kv_heads):
        idx = list(range(j * gs, (j + 1) * gs))
        prot = [h for h in idx if protected[h]]
        if len(prot) > s.per_group:
            return None
        rest = sorted((h for h in idx if not protected[h]), key=lambda h: -rank[h])
        chosen = prot + rest[:s.per_group - len(prot)]
        entry = (float(sum(rank[h] for h in chosen)), j, chosen)
        (must if prot else others).append(entry)
    if len(must) > s.groups:
        return None
    others.sort(key=lambda e: (-e[0], e[1]))
    kept = must + others[:s.groups - len(must)]
    return sorted(h for e in kept for h in e[2]), sorted(e[1] for e in kept)
