"""The masked model: a dense model in memory that behaves exactly like the sliced expert.

Pruned FFN neurons and query heads are zeroed at their output projection (their contribution
is then nothing, exactly as if their rows and columns were gone) and, with compensation, the
kept columns and the output biases get the closed-form correction the slicer writes. Used to
measure candidate allocations without slicing, and by tests as the reference for slicing."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cusprun.adapters import Adapter
from cusprun.compensation.config import CompensationConfig
from cusprun.compensation.grams import GramSet
from cusprun.compensation.solve import compensate
from cusprun.errors import SpecError
from cusprun.masks.plan import PruningPlan


def head_channels(heads: list[int], head_dim: int) -> list[int]:
    """o_proj input columns of the given query heads."""
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def check_bias_support(adapter: Adapter, config: CompensationConfig) -> None:
    """Bias compensation needs a stock config key that gives down_proj and o_proj a bias."""
    if config.adds_bias and not (adapter.spec.down_bias_key and adapter.spec.o_bias_key):
        raise SpecError(
            f"compensation mode {config.mode!r} adds output biases, which {adapter.spec.family} "
            f"({adapter.architecture}) cannot carry in its stock config; use mode 'ls' or 'none'.")


def _set(lin: nn.Linear, weight_cols: torch.Tensor, keep: list[int], bias: torch.Tensor | None) -> None:
    w = lin.weight
    new = torch.zeros_like(w)
    new[:, keep] = weight_cols.to(w.dtype)
    w.copy_(new)
    if bias is not None:
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                    requires_grad=False)
        lin.bias.copy_(bias.to(lin.bias.dtype))


@torch.no_grad()
def mask_model(model: nn.Module, plan: PruningPlan | Any, *, grams: GramSet | None = None,
               config: CompensationConfig | None = None) -> nn.Module:
    """Zero what `plan` (a PruningPlan or a Selection: anything with per-layer `.layers`) prunes
    in `model`, in place, and apply `config`'s compensation."""
    config = config or CompensationConfig(mode="none")
    adapter = Adapter.for_model(model)
    check_bias_support(adapter, config)
    if config.enabled and grams is None:
        raise SpecError(f"compensation mode {config.mode!r} needs calibration Grams (GramSet).")
    d = adapter.dims(model.config)
    for li, (layer, keep) in enumerate(zip(adapter.layers(model), plan.layers)):
        g = grams.layer(li) if config.enabled else None
        for role, lin, cols in (("down", adapter.down_proj(layer), keep.ffn),
                                ("o", adapter.o_proj(layer), head_channels(keep.heads, d.head_dim))):
            w, b = compensate(lin.weight, lin.bias, cols, g.gram[role] if g else None,
                              g.total[role] if g else torch.zeros(lin.in_features),
                              g.n_tokens if g else 0, mode=config.mode, ridge=config.ridge)
            _set(lin, w, cols, b)
    return model


class MaskSession:
    """Masks one loaded dense model again and again: keeps the dense down_proj / o_proj weights
    (the only ones a mask changes) and restores them, instead of reloading the model."""

    def __init__(self, model: nn.Module):
        self.model = model
        ad = Adapter.for_model(model)
        self._saved = [(lin, lin.weight.detach().clone(),
                        None if lin.bias is None else lin.bias.detach().clone())
                       for layer in ad.layers(model) for lin in (ad.down_proj(layer), ad.o_proj(layer))]

    @torch.no_grad()
    def restore(self) -> None:
        for lin, w, b in self._saved:
            lin.weight.copy_(w)
            if b is None:
                lin.bias = None
            else:
                lin.bias.copy_(b)

    def apply(self, plan: Any, *, grams: GramSet | None = None,
              config: CompensationConfig | None = None) -> nn.Module:
        """The dense model with `plan` masked (and compensated); restore() undoes it."""
        self.restore()
        return mask_model(self.model, plan, grams=grams, config=config)
