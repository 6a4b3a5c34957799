"""Baseline importance scores per FFN neuron and query head (higher = keep).

Same units as Cus-Prun: FFN neuron k owns row k of gate and up and column k of down; query
head h owns its rows of q and its columns of o. Channel statistics come from the general corpus
(DimensionStats of the base model on general text). `unit_scores` computes every asked method in
one walk over the layers (cusprun.engine: a streamed model is read once), so a build scores each
method once whatever the number of ratios."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.engine import LayeredModel
from cusprun.scoring.stats import DimensionStats

Scores = tuple[np.ndarray, np.ndarray]           # ffn [L, I], heads [L, H]
LayerScorer = Callable[[nn.Module, Adapter, Dims, int, "DimensionStats | None"],
                       tuple[torch.Tensor, torch.Tensor]]


def _per_head(x: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Sum a per-channel quantity [H*d] over each head's channels -> [H]."""
    return x.view(dims.n_heads, dims.head_dim).sum(-1)


@torch.no_grad()
def magnitude(layer, adapter, dims, li, general):
    """L2 norm of all of a unit's weights."""
    sq = adapter.down_proj(layer).weight.float().pow(2).sum(0)
    for part in adapter.ffn_in_parts(layer, dims):
        rows = part.linear.weight[part.start:part.start + part.width]
        sq = sq + rows.float().pow(2).sum(1).to(sq.device)
    q = adapter.qkv_parts(layer, dims.n_heads, dims.n_kv_heads, dims.head_dim)["q"]
    qw = q.linear.weight[q.start:q.start + q.width].float().pow(2).sum(1)
    ow = adapter.o_proj(layer).weight.float().pow(2).sum(0)
    return sq.sqrt(), (_per_head(qw, dims).to(ow.device) + _per_head(ow, dims)).sqrt()


@torch.no_grad()
def wanda_sp(layer, adapter, dims, li, general):
    """Structured Wanda: sum over the unit's down/o weights of |W_ij| * ||X_j||_2, with ||X_j|| the
    input channel's L2 norm over the general corpus's tokens."""
    x_down = general.channel_sq_norm("down")[li].sqrt().float()
    x_o = general.channel_sq_norm("o")[li].sqrt().float()
    down = adapter.down_proj(layer).weight.float().abs().sum(0).cpu()
    o = adapter.o_proj(layer).weight.float().abs().sum(0).cpu()
    return down * x_down, _per_head(o * x_o, dims)


def _zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over one module of one layer (std with n - 1, as torch.std in the
    reference); all equal -> zeros."""
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


@torch.no_grad()
def flap_ffn_metric(layer, adapter, li, general) -> torch.Tensor:
    """FLAP's fluctuation metric of each FFN neuron of layer `li`, before standardising: its
    down_proj input variance over the general text times its down_proj column's squared norm."""
    var_down = general.channel_moments("down")[1][li].double()
    return adapter.down_proj(layer).weight.double().pow(2).sum(0).cpu() * var_down


@torch.no_grad()
def flap(layer, adapter, dims, li, general):
    """FLAP (metric WIFV, structure AL-AM of CASIA-IVA-Lab/FLAP lib/prune.py): a channel's
    fluctuation is its input variance over the general text's tokens times the squared norm of
    the weight column it feeds; the attention metric is squared as a whole, as the reference
    squares its o_proj metric. Each module's channel metrics are standardised within the layer,
    and a head scores the mean of its channels' standardised metrics. The scores of all layers
    and both unit types are then on one scale for FLAP's one global threshold."""
    var_o = general.channel_moments("o")[1][li].double()
    o = adapter.o_proj(layer).weight.double().pow(2).sum(0).cpu()
    heads = _zscore((o * var_o) ** 2).view(dims.n_heads, dims.head_dim).mean(-1)
    return _zscore(flap_ffn_metric(layer, adapter, li, general)), heads


# Scorer of each method ('flap-score' ranks by FLAP's scores under the build's selection).
LAYER_SCORERS: dict[str, LayerScorer] = {"magnitude": magnitude, "wanda-sp": wanda_sp, "flap": flap,
                                         "flap-score": flap}


def random_scores(dims: Dims, seed: int) -> Scores:
    g = np.random.default_rng(seed)
    return g.random((dims.n_layers, dims.ffn)), g.random((dims.n_layers, dims.n_heads))


def unit_scores(model: nn.Module | LayeredModel, methods: Sequence[str],
                general: DimensionStats | None = None, seed: int = 0) -> dict[str, Scores]:
    """method -> (ffn [L, I], heads [L, H]) raw scores, every method from one walk over the
    layers."""
    lm = model if isinstance(model, LayeredModel) else LayeredModel.resident(model)
    ad, d = lm.adapter, lm.dims
    out = {m: random_scores(d, seed) for m in methods if m == "random"}
    scorers = {LAYER_SCORERS[m] for m in methods if m in LAYER_SCORERS}   # shared ones run once
    rows: dict[LayerScorer, list] = {f: [] for f in scorers}
    if scorers:
        for li in range(d.n_layers):
            with lm.layer(li) as layer:
                for fn in scorers:
                    f, h = fn(layer, ad, d, li, general)
                    rows[fn].append((f.detach().double().cpu(), h.detach().double().cpu()))
    for m in methods:
        if m in LAYER_SCORERS:
            r = rows[LAYER_SCORERS[m]]
            out[m] = (torch.stack([f for f, _ in r]).numpy(), torch.stack([h for _, h in r]).numpy())
    return {m: out[m] for m in methods}


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over all units of one type in all layers, so that random and
    magnitude heads and neurons compete on one scale in cusprun's global selection. (FLAP
    standardises per layer and module instead: see `flap`.)"""
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)
