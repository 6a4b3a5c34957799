"""What each baseline is: how it selects units, and which layout and compensation it runs with.

Most baselines score units and go through the build's own selection, layout and compensation, so
a comparison with Cus-Prun differs only in the scores. Two follow their reference code
(CASIA-IVA-Lab/FLAP, lib/prune.py) instead, because their structure is part of the method:

- `wanda-sp` removes the same fraction of every layer (prune_wanda_sp): each layer drops the
  head structure closest to the ratio from below, and the FFN takes the rest of the budget;
- `flap` is FLAP as published (prune_flap, WIFV + AL-AM): one global threshold over scores
  standardised per layer and module, so each layer gets its own widths (layout `per_layer`),
  and the mean of what it removes is put back as output biases, from the general text it
  calibrates on (its bias compensation), in place of the build's compensation.

`flap-score` is FLAP's scores under the build's selection, layout and compensation: the two FLAP
entries together separate what FLAP's score is worth from what its structure and bias are."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Selection = Literal["global", "layer-fraction"]


@dataclass(frozen=True)
class BaselineMethod:
    score: str                     # what a unit's score is (the plan's report says it)
    selection: Selection           # 'global': one order over all units; 'layer-fraction': per layer
    standardise: bool = False      # z-score each unit type over all layers before a global order
    layout: str | None = None      # its own layout; None: the build's
    own_bias: bool = False         # FLAP's bias compensation from general text, not the build's
    needs_general: bool = True


METHODS: dict[str, BaselineMethod] = {
    "random": BaselineMethod("uniform random scores (seeded)", "global", standardise=True,
                             needs_general=False),
    "magnitude": BaselineMethod("L2 norm of all the unit's weights", "global", standardise=True,
                                needs_general=False),
    "wanda-sp": BaselineMethod(
        "sum over the unit's down/o weight columns of |W| x the input channel's L2 norm on general "
        "text; every layer loses the same head structure and FFN width", "layer-fraction"),
    "flap": BaselineMethod(
        "FLAP: input variance on general text x squared column norm (squared for attention), "
        "standardised per layer and module, heads by their channels' mean; one global "
        "cost-weighted threshold; bias compensation from general text", "global",
        layout="per_layer", own_bias=True),
    "flap-score": BaselineMethod(
        "FLAP's unit scores (see flap) through cusprun's selection, layout and compensation",
        "global"),
}

BASELINES: tuple[str, ...] = tuple(METHODS)
NEEDS_GENERAL = frozenset(m for m, d in METHODS.items() if d.needs_general)


@dataclass(frozen=True)
class BaselineSetup:
    """What one baseline runs with in a build: layout and FFN alignment of its plan, and the
    compensation its slice and sweep points apply. `means`: where that compensation's statistics
    come from ('own': the expert's Grams, as Cus-Prun; 'general': the channel means of the
    general text, FLAP's calibration). `note`: how it differs from its definition, if at all."""

    layout: str
    ffn_multiple: int
    compensation: dict
    means: Literal["own", "general"] = "own"
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def baseline_setup(method: str, *, layout: str, compensation: str, ridge: float,
                   ffn_multiple: int, bias_family: str | None = None) -> BaselineSetup:
    """The setup of `method` in a build with these settings. `bias_family`: None when the base
    model's family can carry output biases on down_proj and o_proj, else its name: FLAP then runs
    without its bias compensation, and the setup's note says so (the plan report carries it)."""
    m = METHODS[method]
    own_layout = m.layout or layout
    if not m.own_bias:
        return BaselineSetup(own_layout, ffn_multiple, {"mode": compensation, "ridge": ridge})
    # FLAP's own widths are exact (no ffn_multiple); its bias needs no ridge
    if bias_family is not None:
        return BaselineSetup(own_layout, 1, {"mode": "none", "ridge": 0.0}, note=(
            f"{bias_family} cannot carry output biases on down_proj and o_proj in its stock "
            f"config, so {method} runs without FLAP's bias compensation (its structure is FLAP's)"))
    return BaselineSetup(own_layout, 1, {"mode": "bias", "ridge": 0.0}, "general")


def bias_family(adapter) -> str | None:
    """None when `adapter`'s family can carry FLAP's biases, else a name for messages."""
    spec = adapter.spec
    if spec.down_bias_key and spec.o_bias_key:
        return None
    return f"{spec.family} ({adapter.architecture})"
