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


def compensated_projections(adapter: Adapter, layer: nn.Module, keep: Any, head_dim: int,
                            grams: LayerGrams | None, config: CompensationConfig
                            ) -> Iterator[tuple[str, nn.Linear, list[int], torch.Tensor, torch.Tensor | None]]:
    """(role, linear, kept input columns, compensated kept columns [out, |K|] float64, bias) for
    the layer's down_proj and o_proj under `config`; `keep` has .ffn and .heads (a LayerKeep)."""
    for role, lin, cols in (("down", adapter.down_proj(layer), list(keep.ffn)),
                            ("o", adapter.o_proj(layer), head_channels(keep.heads, head_dim))):
        w, b = compensate(lin.weight, lin.bias, cols, grams.gram[role] if grams else None,
                          grams.total[role] if grams else torch.zeros(lin.in_features),
                          grams.n_tokens if grams else 0, mode=config.mode, ridge=config.ridge)
        yield role, lin, cols, w, b
