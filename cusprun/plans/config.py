"""PruneConfig: how Cus-Prun turns impact statistics into a pruning plan."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from cusprun.config_base import SpecModel
from cusprun.errors import SpecError

Rule = Literal["exact-ratio", "paper"]
Score = Literal["centered", "impact", "percentile"]
AllocationName = Literal["measured", "rank"]
LayoutName = Literal["uniform", "per_layer"]

MAX_RATIO = 0.9   # beyond this, too little of a layer is left to be a model


def ratio_problem(ratio) -> str | None:
    """Why `ratio` is not a fraction of prunable parameters that can be removed, or None."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= MAX_RATIO:
        return f"ratio {ratio!r} is outside (0, {MAX_RATIO:g}]"
    return None


def check_ratio(ratio, what: str = "target_ratio") -> float:
    """`ratio` itself, or a SpecError naming it and the accepted range."""
    if ratio_problem(ratio) is not None:
        raise SpecError(f"{what}={ratio!r} is outside (0, {MAX_RATIO:g}]: give the fraction of "
                        "prunable parameters to remove.")
    return float(ratio)


ALLOWED = {
    "rule": "'exact-ratio' or 'paper'",
    "score": "'centered', 'impact' or 'percentile'",
    "allocation": "'measured' or 'rank'",
    "target_ratio": f"a fraction of prunable parameters in (0, {MAX_RATIO:g}]",
    "sigma": "a per-document irrelevant fraction in (0, 1)",
    "layout": "'uniform' or 'per_layer'",
    "min_docs": "an integer >= 1",
    "protect_fraction": "a fraction in [0, 1) (0 disables general-text protection)",
    "ffn_multiple": "an integer >= 1 (1 = exact widths; 64 or 128 for faster matmuls)",
}


class PruneConfig(SpecModel):
    """Rule, target and layout of a Cus-Prun plan. Invalid values raise SpecError."""

    spec_name: ClassVar[str] = "prune config"
    allowed: ClassVar[dict[str, str]] = ALLOWED
    model_config = ConfigDict(extra="forbid")
    rule: Rule = Field("exact-ratio", description=(
        "'exact-ratio': prune the lowest max-percentile units until target_ratio is met; "
        "'paper': prune units in the lowest sigma fraction of every document of every dimension"))
    score: Score = Field("centered", description=(
        "exact-ratio's unit score. Per dimension, relative to the unit's layer: 'centered' "
        "(default) the RMS over the dimension's tokens of the unit's centred contribution, i.e. "
        "its impact once compensation restores its mean; 'impact' its mean impact over the "
        "dimension's documents; the expert keeps a unit that any dimension needs (max over "
        "dimensions). 'percentile': the max over all documents of all dimensions of the unit's "
        "per-document rank percentile (the quantity the paper rule thresholds)"))
    allocation: AllocationName = Field("measured", description=(
        "exact-ratio's budget split between heads and FFN neurons and over layers. 'measured': "
        "candidate allocations are scored by the held-back loss of the masked (and compensated) "
        "model; 'rank': one global order of unit scores decides"))
    target_ratio: float = Field(0.25, gt=0, le=MAX_RATIO,
                                description="Fraction of prunable parameters to remove (exact-ratio)")
    sigma: float = Field(0.5, gt=0, lt=1, description="Per-document irrelevant fraction (paper rule)")
    layout: LayoutName = Field("uniform", description=(
        "'uniform': every layer keeps the same counts (stock transformers config); "
        "'per_layer': counts vary by layer"))
    min_docs: int = Field(8, ge=1, description="Fewest documents a corpus's statistics may hold")
    protect_fraction: float = Field(0.05, ge=0, lt=1, description=(
        "With general statistics: units whose mean percentile over general documents is at least "
        "1 - protect_fraction are never pruned"))
    ffn_multiple: int = Field(1, ge=1, le=65536, description=(
        "Round every layer's kept FFN width to a multiple of this: 1 hits the target to one neuron; "
        "64 or 128 give widths that CPU and GPU matmuls run at full speed, within about that many "
        "neurons per layer of the target"))
