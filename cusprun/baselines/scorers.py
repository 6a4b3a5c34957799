"""Baseline importance scores per FFN neuron and query head (higher = keep).

Same units as Cus-Prun: FFN neuron k owns row k of gate and up and column k of down; query
head h owns its rows of q and its columns of o. Channel statistics come from the general corpus
(DimensionStats of the base model on general text)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.scoring.stats import DimensionStats

Scores = tuple[np.ndarray, np.ndarray]           # ffn [L, I], heads [L, H]
Scorer = Callable[[nn.Module, Adapter, Dims, "DimensionStats | None", int], Scores]


def _per_head(x: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Sum a per-channel quantity [H*d] over each head's channels -> [H]."""
    return x.view(dims.n_heads, dims.head_dim).sum(-1)


def _np(rows: list[torch.Tensor]) -> np.ndarray:
    return torch.stack([r.detach().float().cpu() for r in rows]).double().numpy()


def random_scores(model, adapter, dims, general, seed) -> Scores:
    g = np.random.default_rng(seed)
    return g.random((dims.n_layers, dims.ffn)), g.random((dims.n_layers, dims.n_heads))


@torch.no_grad()
def magnitude_scores(model, adapter, dims, general, seed) -> Scores:
    """L2 norm of all of a unit's weights."""
    ffn, heads = [], []
    for layer in adapter.layers(model):
        down = adapter.down_proj(layer).weight.float()
        sq = down.pow(2).sum(0)
        for part in adapter.ffn_in_parts(layer, dims):
            rows = part.linear.weight[part.start:part.start + part.width]
            sq = sq + rows.float().pow(2).sum(1).to(sq.device)
        ffn.append(sq.sqrt())
        q = adapter.qkv_parts(layer, dims.n_heads, dims.n_kv_heads, dims.head_dim)["q"]
        qw = q.linear.weight[q.start:q.start + q.width].float().pow(2).sum(1)
        ow = adapter.o_proj(layer).weight.float().pow(2).sum(0)
        heads.append((_per_head(qw, dims).to(ow.device) + _per_head(ow, dims)).sqrt())
    return _np(ffn), _np(heads)


@torch.no_grad()
def wanda_sp_scores(model, adapter, dims, general, seed) -> Scores:
    """Structured Wanda: sum over the unit's down/o weights of |W_ij| * ||X_j||_2, with ||X_j|| the
    input channel's L2 norm over the general corpus's tokens."""
    x_down = general.channel_sq_norm("down").sqrt().float()
    x_o = general.channel_sq_norm("o").sqrt().float()
    ffn, heads = [], []
    for li, layer in enumerate(adapter.layers(model)):
        down = adapter.down_proj(layer).weight.float().abs().sum(0).cpu()
        ffn.append(down * x_down[li])
        o = adapter.o_proj(layer).weight.float().abs().sum(0).cpu()
        heads.append(_per_head(o * x_o[li], dims))
    return _np(ffn), _np(heads)


@torch.no_grad()
def flap_scores(model, adapter, dims, general, seed) -> Scores:
    """FLAP fluctuation: per input channel, variance over tokens times the squared norm of the
    weight column it feeds; summed over a head's channels."""
    _, var_down = general.channel_moments("down")
    _, var_o = general.channel_moments("o")
    ffn, heads = [], []
    for li, layer in enumerate(adapter.layers(model)):
        down = adapter.down_proj(layer).weight.float().pow(2).sum(0).cpu()
        ffn.append(down * var_down[li].float())
        o = adapter.o_proj(layer).weight.float().pow(2).sum(0).cpu()
        heads.append(_per_head(o * var_o[li].float(), dims))
    return _np(ffn), _np(heads)


BASELINES: dict[str, Scorer] = {
    "random": random_scores,
    "magnitude": magnitude_scores,
    "wanda-sp": wanda_sp_scores,
    "flap": flap_scores,
}
NEEDS_GENERAL = frozenset({"wanda-sp", "flap"})


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over all units of one type in all layers (as FLAP does before
    its global sort), so heads and neurons compete on one scale."""
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)
