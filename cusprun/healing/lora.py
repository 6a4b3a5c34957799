"""Low-rank adapters for healing (train='lora'), written here rather than through peft: a
wrapper on each nn.Linear of the decoder layers, merged back into the weight before saving, so
the healed checkpoint has exactly the sliced checkpoint's tensors and loads in stock
transformers with no adapter code."""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T) B^T * scale; B starts at zero, so training starts at the sliced
    model itself."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        r = min(rank, base.in_features, base.out_features)
        self.a = nn.Parameter(torch.empty(r, base.in_features, dtype=torch.float32,
                                          device=base.weight.device))
        self.b = nn.Parameter(torch.zeros(base.out_features, r, dtype=torch.float32,
                                          device=base.weight.device))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = (alpha or 2 * r) / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x.to(self.a.dtype) @ self.a.T @ self.b.T * self.scale).to(x.dtype)

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            w = self.base.weight
            w.copy_((w.float() + self.b @ self.a * self.scale).to(w.dtype))
        return self.base


def add_lora(layers: nn.Module, rank: int) -> list[nn.Parameter]:
    """Wrap every nn.Linear under `layers` (the decoder layers); freeze everything else there.
    Returns the adapters' parameters."""
    for p in layers.parameters():
        p.requires_grad_(False)
    targets = [(parent, name, child) for parent in layers.modules()
               for name, child in parent.named_children() if isinstance(child, nn.Linear)]
    params: list[nn.Parameter] = []
    for parent, name, child in targets:
        wrapped = LoRALinear(child, rank)
        setattr(parent, name, wrapped)
        params += [wrapped.a, wrapped.b]
    return params


def merge_lora(layers: nn.Module) -> None:
    """Replace every adapter by its base linear with the adapter folded into the weight."""
    for parent in list(layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
