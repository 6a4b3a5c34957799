"""The pruning plan: which units every layer keeps. Shared by Cus-Prun and every baseline,
consumed by slicing. JSON-serialisable so it can live in the artifact store."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Layout = Literal["uniform", "per_layer"]


class LayerKeep(BaseModel):
    """Kept unit indices of one decoder layer, each list sorted ascending.

    Query head h belongs to key/value group h // (n_heads // n_kv_heads). Every kept group keeps
    the same number of query heads, so the sliced layer is a valid grouped-query layer."""

    ffn: list[int]
    heads: list[int]
    kv_heads: list[int]


class PruningPlan(BaseModel):
    base_fingerprint: str = Field(description="Fingerprint of the dense model this plan applies to")
    architecture: str
    method: str = Field(description="'cusprun' or a baseline name (random, magnitude, wanda-sp, "
                                    "flap, flap-score)")
    rule: str | None = Field(None, description="Cus-Prun rule: 'exact-ratio' or 'paper'")
    layout: Layout = "uniform"
    target_ratio: float | None = None
    achieved_ratio: float
    prunable_params: int
    removed_params: int
    layers: list[LayerKeep]
    dimensions: dict[str, dict] = Field(default_factory=dict,
                                        description="dimension -> {value, corpus_hashes, stats}")
    report: dict = Field(default_factory=dict, description="overlaps, protected counts, notes")

    def pruned(self, n_ffn: int, n_heads: int) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """Pruned (not kept) FFN neurons and query heads per layer."""
        ffn = {i: sorted(set(range(n_ffn)) - set(l.ffn)) for i, l in enumerate(self.layers)}
        heads = {i: sorted(set(range(n_heads)) - set(l.heads)) for i, l in enumerate(self.layers)}
        return ffn, heads
