"""Exact per-unit impacts from one forward pass, via forward pre-hooks on down_proj and o_proj.

Removing FFN neuron k changes down_proj's output by a_k(t) * W_down[:, k], so its impact (RMS
over a document's tokens of the change's L2 norm) is ||a_k||_rms * ||W_down[:, k]||. Removing
query head h changes o_proj's output by W_h o_h(t) with W_h = W_o[:, h*d:(h+1)*d]; its squared
norm is o_h^T G_h o_h with G_h = W_h^T W_h (d x d, precomputed); summed over tokens that is
<S_h, G_h> with S_h = sum_t o_h o_h^T, so no [B, T, H, hidden] tensor is ever built and the
diagonal of S_h gives the o_proj channel sums of squares for free. Documents are processed one
at a time (temporaries stay [T, channels] float32); padded positions are masked out; every
accumulator lives on its layer's device.
"""
from __future__ import annotations

import torch
from torch import nn

from cusprun.adapters import Adapter, Dims


class _Masked:
    """The current batch's token mask, cached per device (layers may sit on different GPUs)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self._by_device: dict[torch.device, torch.Tensor] = {}

    def set(self, mask: torch.Tensor) -> None:
        self.mask = mask.float()
        self._by_device = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._by_device:
            self._by_device[device] = self.mask.to(device)
        return self._by_device[device]


class _LayerAcc:
    """Corpus-wide per-channel sums for one module plus this batch's per-doc squared impacts."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.batch: torch.Tensor | None = None   # [B, units] sum over tokens of squared change

    def add_channels(self, s: torch.Tensor, sq: torch.Tensor) -> None:
        s, sq = s.double(), sq.double()
        if self.sum is None:
            self.sum, self.sumsq = s, sq
        else:
            self.sum += s
            self.sumsq += sq


class ImpactRecorder:
    """Registers the hooks; after each forward, `take_batch()` returns per-doc impacts."""

    def __init__(self, model: nn.Module, adapter: Adapter, dims: Dims) -> None:
        self.dims = dims
        self.masked = _Masked()
        self.n_valid: torch.Tensor | None = None
        self.ffn = [_LayerAcc() for _ in range(dims.n_layers)]
        self.heads = [_LayerAcc() for _ in range(dims.n_layers)]
        self._handles = []
        self._col_norm: list[torch.Tensor] = []
        self._gram: list[torch.Tensor] = []
        h, d = dims.n_heads, dims.head_dim
        with torch.no_grad():
            for li, layer in enumerate(adapter.layers(model)):
                down, o = adapter.down_proj(layer), adapter.o_proj(layer)
                self._col_norm.append(down.weight.float().norm(dim=0))
                w = o.weight.float().view(o.weight.shape[0], h, d)
                self._gram.append(torch.einsum("ihd,ihe->hde", w, w))
                self._handles.append(down.register_forward_pre_hook(self._ffn_hook(li)))
                self._handles.append(o.register_forward_pre_hook(self._head_hook(li)))

    # ---- batch protocol -------------------------------------------------------
    def start_batch(self, attention_mask: torch.Tensor) -> None:
        self.masked.set(attention_mask)
        self.n_valid = attention_mask.sum(dim=1).float().cpu()

    def take_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-doc impacts of this batch: FFN [B, L, I], heads [B, L, H] (float32, CPU)."""
        n = self.n_valid.clamp_min(1)[:, None]
        ffn = torch.stack([(a.batch.cpu() / n).clamp_min(0).sqrt() * self._col_norm[i].cpu()
                           for i, a in enumerate(self.ffn)], dim=1)
        heads = torch.stack([(a.batch.cpu() / n).clamp_min(0).sqrt() for a in self.heads], dim=1)
        for a in (*self.ffn, *self.heads):
            a.batch = None
        return ffn, heads

    def remove(self) -> None:
        for hd in self._handles:
            hd.remove()
        self._handles.clear()

    # ---- hooks ------------------------------------------------------------------
    def _ffn_hook(self, li: int):
        acc = self.ffn[li]

        def hook(_module, args):
            with torch.no_grad():
                x = args[0]
                mask = self.masked.on(x.device)
                ch_s = torch.zeros(x.shape[-1], device=x.device)
                docs = []
                for i in range(x.shape[0]):           # mv with the 0/1 mask: fast BLAS, no copy
                    xi = x[i].float()
                    ch_s += torch.mv(xi.t(), mask[i])
                    docs.append(torch.mv((xi * xi).t(), mask[i]))
                acc.batch = torch.stack(docs)                      # [B, I] sum of a_k^2
                acc.add_channels(ch_s, acc.batch.sum(0))
        return hook

    def _head_hook(self, li: int):
        acc, (h, d) = self.heads[li], (self.dims.n_heads, self.dims.head_dim)

        def hook(_module, args):
            with torch.no_grad():
                x = args[0]
                mask = self.masked.on(x.device)
                g = self._gram[li].to(x.device)
                ch_s = torch.zeros(x.shape[-1], device=x.device)
                ch_sq = torch.zeros(x.shape[-1], device=x.device)
                docs = []
                for i in range(x.shape[0]):
                    xi = x[i].float() * mask[i][:, None]               # [T, H*d], padding zeroed
                    xh = xi.view(-1, h, d).transpose(0, 1)            # [H, T, d]
                    s_h = torch.bmm(xh.transpose(1, 2), xh)           # [H, d, d] = sum_t o o^T
                    docs.append((s_h * g).sum((1, 2)))                 # sum_t o^T G o
                    ch_s += xi.sum(0)
                    ch_sq += s_h.diagonal(dim1=1, dim2=2).reshape(-1)
                acc.batch = torch.stack(docs)                          # [B, H]
                acc.add_channels(ch_s, ch_sq)
        return hook
