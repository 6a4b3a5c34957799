"""A plan applied to a model in memory: what the sliced expert computes, without writing it.

Pruned FFN neurons are cut out for real (narrower gate/up rows and down_proj columns, as the
sliced checkpoint has them), so a forward costs what the expert's would; pruned heads are zeroed
at o_proj (their q/k/v still run: head counts live in each family's attention code), which
makes their contribution nothing. With compensation, the kept down_proj / o_proj columns and
output biases get the closed-form correction slicing writes (cusprun.compensation).

`prune_layer` edits one layer for the duration of a block (a pass's Variant edit: the layer may
be streamed from disk); `MaskSession` does every layer of a loaded model and restores it between
plans instead of reloading; `mask_model` zeroes in place (the tests' reference for slicing)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.compensation.config import CompensationConfig, check_bias_support
from cusprun.compensation.gram_set import GramSet
from cusprun.compensation.layer import compensated_projections
from cusprun.errors import SpecError


def _check(adapter: Adapter, config: CompensationConfig, grams: GramSet | None) -> None:
    check_bias_support(adapter, config)
    if config.enabled and grams is None:
        raise SpecError(f"compensation mode {config.mode!r} needs calibration Grams (GramSet).")


def _swap(lin: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give `lin` new Parameters (whoever called keeps the old ones to restore)."""
    dense = lin.weight
    lin.weight = nn.Parameter(weight.to(dense.dtype).contiguous(), requires_grad=False)
    lin.out_features, lin.in_features = lin.weight.shape
    if bias is not None:
        lin.bias = nn.Parameter(bias.to(dense.dtype), requires_grad=False)


def _state(lin: nn.Linear) -> tuple:
    return lin.weight, lin.bias, lin.in_features, lin.out_features


def _restore(lin: nn.Linear, state: tuple) -> None:
    lin.weight, lin.bias, lin.in_features, lin.out_features = state


def layer_linears(adapter: Adapter, layer: nn.Module, dims: Dims) -> list[nn.Linear]:
    """The Linears pruning changes in one layer."""
    return list(dict.fromkeys([adapter.down_proj(layer), adapter.o_proj(layer),
                               *[p.linear for p in adapter.ffn_in_parts(layer, dims)]]))


@torch.no_grad()
def _apply(adapter: Adapter, dims: Dims, layer: nn.Module, keep: Any, grams, config,
           dense: dict[nn.Linear, tuple]) -> None:
    for role, lin, cols, w, b in compensated_projections(adapter, layer, keep, dims.head_dim,
                                                         grams, config):
        if role == "down":       # narrower: the kept neurons' columns only
            _swap(lin, w, b)
        else:                    # heads: zeroed columns, same width
            full = torch.zeros_like(dense[lin][0])
            full[:, cols] = w.to(full.dtype)
            _swap(lin, full, b)
    ffn = torch.as_tensor(keep.ffn, dtype=torch.long, device=adapter.down_proj(layer).weight.device)
    by_linear: dict[nn.Linear, list[torch.Tensor]] = {}
    for part in adapter.ffn_in_parts(layer, dims):
        by_linear.setdefault(part.linear, []).append(part.start + ffn)
    for lin, rows in by_linear.items():
        idx = torch.cat(rows)
        w0, b0 = dense[lin][:2]
        _swap(lin, w0.index_select(0, idx), None if b0 is None else b0.index_select(0, idx))


@contextmanager
def prune_layer(adapter: Adapter, dims: Dims, layer: nn.Module, keep: Any, *,
                grams: GramSet | None = None, li: int | None = None,
                config: CompensationConfig | None = None) -> Iterator[nn.Module]:
    """Layer `li` with `keep` (a LayerKeep) applied and compensated from grams.layer(li) for
    the block; its dense Parameters are put back after."""
    config = config or CompensationConfig(mode="none")
    _check(adapter, config, grams)
    dense = {lin: _state(lin) for lin in layer_linears(adapter, layer, dims)}
    try:
        _apply(adapter, dims, layer, keep, grams.layer(li) if config.enabled else None, config, dense)
        yield layer
    finally:
        for lin, st in dense.items():
            _restore(lin, st)


def plan_edit(adapter: Adapter, dims: Dims, plan: Any, *, grams: GramSet | None = None,
              config: CompensationConfig | None = None):
    """An edit for cusprun.engine.run.Variant: every layer pruned by `plan` (per-layer .layers)."""
    config = config or CompensationConfig(mode="none")
    _check(adapter, config, grams)

    def edit(li: int, layer: nn.Module):
        return prune_layer(adapter, dims, layer, plan.layers[li], grams=grams, li=li, config=config)
    return edit


class MaskSession:
    """One loaded dense model, pruned by plan after plan in memory, restored between plans
    instead of reloaded (nothing is copied and the dense weights are never written)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.adapter = Adapter.for_model(model)
        self.dims = self.adapter.dims(model.config)
        self._dense: dict[nn.Linear, tuple] = {}
        for layer in self.adapter.layers(model):
            for lin in layer_linears(self.adapter, layer, self.dims):
                self._dense[lin] = _state(lin)

    @torch.no_grad()
    def restore(self) -> None:
        for lin, st in self._dense.items():
            _restore(lin, st)

    @torch.no_grad()
    def apply(self, plan: Any, *, grams: GramSet | None = None,
              config: CompensationConfig | None = None) -> nn.Module:
        """The dense model with `plan` pruned (and compensated); restore() undoes it. Computes
        what mask_model's zeroed model computes (tests/unit/test_compensation.py)."""
        self.restore()
        config = config or CompensationConfig(mode="none")
        _check(self.adapter, config, grams)
        for li, (layer, keep) in enumerate(zip(self.adapter.layers(self.model), plan.layers)):
            g = grams.layer(li) if config.enabled else None
            _apply(self.adapter, self.dims, layer, keep, g, config, self._dense)
        return self.model


@torch.no_grad()
def mask_model(model: nn.Module, plan: Any, *, grams: GramSet | None = None,
               config: CompensationConfig | None = None) -> nn.Module:
    """Zero what `plan` (anything with per-layer `.layers`) prunes in `model`, in place, and
    apply `config`'s compensation: the dense-width reference the sliced checkpoint must equal."""
    config = config or CompensationConfig(mode="none")
    adapter = Adapter.for_model(model)
    _check(adapter, config, grams)
    d = adapter.dims(model.config)
    for li, (layer, keep) in enumerate(zip(adapter.layers(model), plan.layers)):
        g = grams.layer(li) if config.enabled else None
        for _role, lin, cols, w, b in compensated_projections(adapter, layer, keep, d.head_dim,
                                                              g, config):
            new = torch.zeros_like(lin.weight)
            new[:, cols] = w.to(new.dtype)
            lin.weight.copy_(new)
            if b is not None:
                if lin.bias is None:
                    lin.bias = nn.Parameter(torch.zeros(new.shape[0], dtype=new.dtype,
                                                        device=new.device), requires_grad=False)
                lin.bias.copy_(b.to(lin.bias.dtype))
    return model
