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


def _check(adapter: Adapter, config: CompensationConfig, grams: GramSet | None) -> None:
    check_bias_support(adapter, config)
    if config.enabled and grams is None:
        raise SpecError(f"compensation mode {config.mode!r} needs calibration Grams (GramSet).")


def _compensated(adapter: Adapter, layer: nn.Module, keep: Any, head_dim: int, g,
                 config: CompensationConfig):
    """(role, linear, kept input columns, compensated kept columns [out, |K|], bias) for the
    layer's down_proj and o_proj under `config` (g: the layer's Grams, or None)."""
    for role, lin, cols in (("down", adapter.down_proj(layer), keep.ffn),
                            ("o", adapter.o_proj(layer), head_channels(keep.heads, head_dim))):
        w, b = compensate(lin.weight, lin.bias, cols, g.gram[role] if g else None,
                          g.total[role] if g else torch.zeros(lin.in_features),
                          g.n_tokens if g else 0, mode=config.mode, ridge=config.ridge)
        yield role, lin, cols, w, b


@torch.no_grad()
def mask_model(model: nn.Module, plan: PruningPlan | Any, *, grams: GramSet | None = None,
               config: CompensationConfig | None = None) -> nn.Module:
    """Zero what `plan` (a PruningPlan or a Selection: anything with per-layer `.layers`) prunes
    in `model`, in place, and apply `config`'s compensation."""
    config = config or CompensationConfig(mode="none")
    adapter = Adapter.for_model(model)
    _check(adapter, config, grams)
    d = adapter.dims(model.config)
    for li, (layer, keep) in enumerate(zip(adapter.layers(model), plan.layers)):
        g = grams.layer(li) if config.enabled else None
        for _role, lin, cols, w, b in _compensated(adapter, layer, keep, d.head_dim, g, config):
            _set(lin, w, cols, b)
    return model


class MaskSession:
    """One loaded dense model, pruned by plan after plan in memory, restored between plans
    instead of reloaded.

    Pruned FFN neurons are cut out for real (narrower gate/up rows and down_proj columns, as the
    sliced checkpoint has them), so every forward costs what the expert's would; pruned heads
    are zeroed at o_proj (their q/k/v still run: head counts live in each family's attention
    code). Modules get new Parameters and restore() puts the dense ones back: nothing is copied
    and the dense weights are never written."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.adapter = Adapter.for_model(model)
        self.dims = self.adapter.dims(model.config)
        self._dense: dict[nn.Linear, tuple] = {}
        for layer in self.adapter.layers(model):
            lins = [self.adapter.down_proj(layer), self.adapter.o_proj(layer),
                    *[p.linear for p in self.adapter.ffn_in_parts(layer, self.dims)]]
            for lin in lins:
                self._dense[lin] = (lin.weight, lin.bias, lin.in_features, lin.out_features)

    @torch.no_grad()
    def restore(self) -> None:
        for lin, (w, b, n_in, n_out) in self._dense.items():
            lin.weight, lin.bias, lin.in_features, lin.out_features = w, b, n_in, n_out

    @torch.no_grad()
    def apply(self, plan: Any, *, grams: GramSet | None = None,
              config: CompensationConfig | None = None) -> nn.Module:
        """The dense model with `plan` pruned (and compensated); restore() undoes it. Computes
        what mask_model's zeroed model computes (tests/test_compensation.py)."""
        self.restore()
        config = config or CompensationConfig(mode="none")
        ad, d = self.adapter, self.dims
        _check(ad, config, grams)
        for li, (layer, keep) in enumerate(zip(ad.layers(self.model), plan.layers)):
            g = grams.layer(li) if config.enabled else None
            for role, lin, cols, w, b in _compensated(ad, layer, keep, d.head_dim, g, config):
                if role == "down":       # narrower: the kept neurons' columns only
                    _swap(lin, w, b)
                else:                    # heads: zeroed columns, same width
                    full = torch.zeros_like(lin.weight)
                    full[:, cols] = w.to(full.dtype)
                    _swap(lin, full, b)
            ffn = torch.as_tensor(keep.ffn, dtype=torch.long, device=ad.down_proj(layer).weight.device)
            by_linear: dict[nn.Linear, list[torch.Tensor]] = {}
            for part in ad.ffn_in_parts(layer, d):
                by_linear.setdefault(part.linear, []).append(part.start + ffn)
            for lin, rows in by_linear.items():
                idx = torch.cat(rows)
                w0, b0 = self._dense[lin][:2]
                _swap(lin, w0.index_select(0, idx), None if b0 is None else b0.index_select(0, idx))
        return self.model


def _swap(lin: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give `lin` new Parameters (its dense ones stay with the MaskSession)."""
    dense = lin.weight
    lin.weight = nn.Parameter(weight.to(dense.dtype).contiguous(), requires_grad=False)
    lin.out_features, lin.in_features = lin.weight.shape
    if bias is not None:
        lin.bias = nn.Parameter(bias.to(dense.dtype), requires_grad=False)
