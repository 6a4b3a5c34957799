"""Rank percentiles of units within their layer."""
from __future__ import annotations

import torch


def rank_percentile(values: torch.Tensor) -> torch.Tensor:
    """Percentile of each entry along the last dim: rank / (n - 1), 0 = lowest, 1 = highest.

    Tied values share their mean rank, so a unit's percentile never depends on its index.
    With a single unit the percentile is 1 (it is the layer's most important unit)."""
    n = values.shape[-1]
    if n == 1:
        return torch.ones_like(values, dtype=torch.float32)
    v = values.float().contiguous()
    s = v.sort(dim=-1).values
    lo = torch.searchsorted(s, v, side="left")
    hi = torch.searchsorted(s, v, side="right")
    return (lo + hi - 1).float() / (2 * (n - 1))
