"""Exact per-unit impacts from one pass, via forward pre-hooks on down_proj and o_proj.

Removing FFN neuron k changes down_proj's output by a_k(t) * W_down[:, k], so its impact (RMS
over a document's tokens of the change's L2 norm) is ||a_k||_rms * ||W_down[:, k]||. Removing
query head h changes o_proj's output by W_h o_h(t) with W_h = W_o[:, h*d:(h+1)*d]; its squared
norm is o_h^T G_h o_h with G_h = W_h^T W_h (d x d, computed when the layer is attached); summed
over tokens that is <S_h, G_h> with S_h = sum_t o_h o_h^T, so no [B, T, H, hidden] tensor is ever
built and the diagonal of S_h gives the o_proj channel sums of squares for free. Documents are
processed one at a time (temporaries stay [T, channels] float32); padded positions are masked out.

Every accumulator (per-document percentiles included) stays on the compute device until the pass
ends, then comes to the host in one copy: no device sync per layer and batch."""
from __future__ import annotations

import torch
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.engine import Batch, Recorder
from cusprun.scoring.percentile import rank_percentile


class ImpactRecorder(Recorder):
    """Impact statistics of the batches whose `group` is `group` (one corpus of a pass)."""

    def __init__(self, adapter: Adapter, dims: Dims, n_docs: int, n_tokens: int,
                 device: torch.device, group: object = None) -> None:
        self.adapter, self.dims, self.group = adapter, dims, group
        self.n_tokens = n_tokens
        L, I, H, HD = dims.n_layers, dims.ffn, dims.n_heads, dims.n_heads * dims.head_dim
        z = lambda *shape, dt=torch.float64: torch.zeros(shape, dtype=dt, device=device)  # noqa: E731
        self.ffn_pct = torch.empty((n_docs, L, I), dtype=torch.float16, device=device)
        self.head_pct = torch.empty((n_docs, L, H), dtype=torch.float16, device=device)
        self.ffn_mean, self.head_mean = z(L, I), z(L, H)
        self.down_sum, self.down_sumsq, self.o_sum, self.o_sumsq = z(L, I), z(L, I), z(L, HD), z(L, HD)
        self.ffn_centered, self.head_centered = z(L, I, dt=torch.float32), z(L, H, dt=torch.float32)
        self._active = False
        self._batch: Batch | None = None
        self._mask: torch.Tensor | None = None
        self._col_norm: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._cross: torch.Tensor | None = None
        self._li = -1

    # ---- pass protocol -----------------------------------------------------------------
    def attach(self, li: int, layer: nn.Module) -> list:
        h, d = self.dims.n_heads, self.dims.head_dim
        down, o = self.adapter.down_proj(layer), self.adapter.o_proj(layer)
        with torch.no_grad():
            self._col_norm = down.weight.detach().float().norm(dim=0)
            w = o.weight.detach().float().view(o.weight.shape[0], h, d)
            self._gram = torch.einsum("ihd,ihe->hde", w, w)            # [H, d, d] = W_h^T W_h
        self._cross = torch.zeros((h, d, d), dtype=torch.float64, device=o.weight.device)
        self._li = li
        return [down.register_forward_pre_hook(self._ffn_hook),
                o.register_forward_pre_hook(self._head_hook)]

    def start_batch(self, li: int, batch: Batch, hidden: torch.Tensor) -> None:
        self._active = batch.group == self.group
        if self._active:
            self._batch = batch
            self._mask = batch.mask.to(hidden.device, torch.float32)

    def layer_done(self, li: int) -> None:
        """Centred impacts of this layer (the unit's mean contribution restored, as bias or
        least-squares compensation restores it): RMS over tokens of the centred contribution.
        FFN = std(a_k) ||W_down[:, k]||; heads = sqrt(<Cov(o_h), G_h>)."""
        n = max(self.n_tokens, 1)
        h, d = self.dims.n_heads, self.dims.head_dim
        mean = self.down_sum[li] / n
        var = (self.down_sumsq[li] / n - mean * mean).clamp_min(0)
        self.ffn_centered[li] = (var.sqrt() * self._col_norm.double()).float()
        mu = (self.o_sum[li] / n).view(h, d)
        cov = self._cross / n - mu[:, :, None] * mu[:, None, :]
        self.head_centered[li] = (cov * self._gram.double()).sum((1, 2)).clamp_min(0).sqrt().float()
        self._cross = self._gram = self._col_norm = None

    # ---- hooks ---------------------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._batch.rows, device=x.device)

    def _valid(self) -> torch.Tensor:
        return self._mask.sum(1).clamp_min(1)[:, None]

    def _ffn_hook(self, _module, args) -> None:
        if not self._active:
            return
        with torch.no_grad():
            x, li, mask = args[0], self._li, self._mask
            docs = []
            for i in range(x.shape[0]):          # mv with the 0/1 mask: fast BLAS, no copy
                xi = x[i].float()
                self.down_sum[li] += torch.mv(xi.t(), mask[i]).double()
                docs.append(torch.mv((xi * xi).t(), mask[i]))
            sq = torch.stack(docs)                                      # [B, I] sum of a_k^2
            self.down_sumsq[li] += sq.sum(0).double()
            impact = (sq / self._valid()).clamp_min(0).sqrt() * self._col_norm
            self._store(self.ffn_pct, self.ffn_mean, impact)

    def _head_hook(self, _module, args) -> None:
        if not self._active:
            return
        with torch.no_grad():
            x, li, mask = args[0], self._li, self._mask
            h, d = self.dims.n_heads, self.dims.head_dim
            docs = []
            for i in range(x.shape[0]):
                xi = x[i].float() * mask[i][:, None]               # [T, H*d], padding zeroed
                xh = xi.view(-1, h, d).transpose(0, 1)            # [H, T, d]
                s_h = torch.bmm(xh.transpose(1, 2), xh)           # [H, d, d] = sum_t o o^T
                docs.append((s_h * self._gram).sum((1, 2)))        # sum_t o^T G o
                self._cross += s_h.double()
                self.o_sum[li] += xi.sum(0).double()
                self.o_sumsq[li] += s_h.diagonal(dim1=1, dim2=2).reshape(-1).double()
            impact = (torch.stack(docs) / self._valid()).clamp_min(0).sqrt()
            self._store(self.head_pct, self.head_mean, impact)

    def _store(self, pct: torch.Tensor, mean: torch.Tensor, impact: torch.Tensor) -> None:
        rows = self._rows(impact)
        pct[rows, self._li] = rank_percentile(impact).half()
        mean[self._li] += impact.sum(0).double()
