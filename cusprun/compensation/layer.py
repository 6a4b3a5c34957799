"""Compensation of one loaded decoder layer: its down_proj and o_proj corrected for the units a
plan removes, from that layer's calibration Grams (cusprun.compensation.solve)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cusprun.adapters import Adapter
from cusprun.compensation.config import CompensationConfig
from cusprun.compensation.gram_set import LayerGrams
from cusprun.compensation.solve import compensate


def head_channels(heads: list[int], head_dim: int) -> list[int]:
    """o_proj input columns of the given query heads."""
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def _gram(grams: LayerGrams | None, role: str, config: CompensationConfig):
    """The role's Gram, unless the solve needs none ('bias': means only) or works from the
    stored inputs ('ls' with factor)."""
    if grams is None or config.mode == "bias" or (config.mode == "ls" and role in grams.factor):
        return None
    return grams.gram[role]


def compensate_role(weight: torch.Tensor, bias: torch.Tensor | None, role: str, cols: list[int],
                    grams: LayerGrams | None, config: CompensationConfig):
    """(compensated kept columns, bias) of one projection ('down' or 'o') of a layer."""
    return compensate(weight, bias, cols, _gram(grams, role, config),
                      grams.total[role] if grams else torch.zeros(weight.shape[1]),
                      grams.n_tokens if grams else 0, mode=config.mode, ridge=config.ridge,
                      factor=grams.factor.get(role) if grams else None)


def compensated_projections(adapter: Adapter, layer: nn.Module, keep: Any, head_dim: int,
                            grams: LayerGrams | None, config: CompensationConfig
                            ) -> Iterator[tuple[str, nn.Linear, list[int], torch.Tensor, torch.Tensor | None]]:
    """(role, linear, kept input columns, compensated kept columns [out, |K|] float64, bias) for
    the layer's down_proj and o_proj under `config`; `keep` has .ffn and .heads (a LayerKeep)."""
    for role, lin, cols in (("down", adapter.down_proj(layer), list(keep.ffn)),
                            ("o", adapter.o_proj(layer), head_channels(keep.heads, head_dim))):
        w, b = compensate_role(lin.weight, lin.bias, role, cols, grams, config)
        yield role, lin, cols, w, b
