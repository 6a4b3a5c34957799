"""Which rows/columns of which state-dict tensors a plan keeps."""
from __future__ import annotations

import torch

from cusprun.adapters import Adapter, Dims
from cusprun.plans.plan import LayerKeep


def _blocks(units: list[int], width: int, offset: int = 0) -> torch.Tensor:
    """Rows [offset + u*width, offset + (u+1)*width) for every unit u, in order."""
    if not units:
        return torch.empty(0, dtype=torch.long)
    u = torch.tensor(units, dtype=torch.long)
    return (offset + u[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def layer_slices(adapter: Adapter, d: Dims, li: int, keep: LayerKeep) -> dict[str, tuple[int, torch.Tensor, int]]:
    """State-dict tensor name -> (dim, kept indices, dense size along dim) for one layer.

    Rows of q/k/v (or the fused qkv), gate/up (or the fused gate_up) and their biases;
    columns of o and down. Biases of o and down are per hidden unit and stay whole."""
    names = adapter.module_names(li)
    q_rows = _blocks(keep.heads, d.head_dim)
    kv_rows = _blocks(keep.kv_heads, d.head_dim)
    ffn = torch.tensor(keep.ffn, dtype=torch.long)
    q_w, kv_w = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    rows: dict[str, tuple[torch.Tensor, int]] = {}
    if "qkv" in names:
        rows[names["qkv"]] = (torch.cat([q_rows, q_w + kv_rows, q_w + kv_w + kv_rows]), q_w + 2 * kv_w)
    else:
        rows[names["q"]] = (q_rows, q_w)
        rows[names["k"]] = (kv_rows, kv_w)
        rows[names["v"]] = (kv_rows, kv_w)
    if "gate_up" in names:
        rows[names["gate_up"]] = (torch.cat([ffn, d.ffn + ffn]), 2 * d.ffn)
    else:
        rows[names["gate"]] = (ffn, d.ffn)
        rows[names["up"]] = (ffn, d.ffn)
    out: dict[str, tuple[int, torch.Tensor, int]] = {}
    for prefix, (idx, size) in rows.items():
        out[f"{prefix}.weight"] = (0, idx, size)
        out[f"{prefix}.bias"] = (0, idx, size)  # used only where the checkpoint has the bias
    out[f"{names['o']}.weight"] = (1, q_rows, q_w)
    out[f"{names['down']}.weight"] = (1, ffn, d.ffn)
    return out
