"""Exact per-unit impacts from one forward pass, via forward pre-hooks on down_proj and o_proj.

Removing FFN neuron k changes down_proj's output by a_k(t) * W_down[:, k], so its impact (RMS
over a document's tokens of the change's L2 norm) is ||a_k||_rms * ||W_down[:, k]||. Removing
query head h changes o_proj's output by W_h o_h(t) with W_h = W_o[:, h*d:(h+1)*d]; its squared
norm is o_h^T G_h o_h with G_h = W_h^T W_h (d x d, precomputed); summed over tokens that is
<S_h, G_h> with S_h = sum_t o_h o_h^T, so no [B, T, H, hidden] tensor is ever built and the
diagonal of S_h gives the o_proj channel sums of squares for free. Documents are processed one
at a time (temporaries stay [T, channels] float32); padded positions are masked out; every
accumulator lives on its layer's device.

Models dispatched by accelerate (device_map="auto", or "cpu"/"disk" offload) work too: an offloaded
module's weight is a meta tensor outside forward, so the precomputation onloads it briefly (see
`_from_weight`).
"""
from __future__ import annotations

import torch
from accelerate.utils import align_module_device
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.errors import CusprunError


def _from_weight(module: nn.Module, fn) -> torch.Tensor:
    """fn(float32 weight) computed on the device where the module's inputs will arrive.

    accelerate's offload (device_map entries "cpu"/"disk" when a GPU executes, or any "disk") keeps
    the weight on the meta device and onloads it only inside forward via the module's
    AlignDevicesHook; align_module_device runs that onload for us (a no-op for plain modules), and
    fn runs inside it because the onloaded tensor may be a view of the offload storage. The hook's
    execution_device is where forward (and so our pre-hooks' activations) runs; without a hook
    that is simply the weight's own device."""
    dev = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    with align_module_device(module):
        w = module.weight
        if w.is_meta:
            raise CusprunError(
                f"{type(module).__name__} weight is on the meta device and no accelerate hook "
                "onloads it; load the model with real weights (or a device_map) before scoring.")
        return fn(w.detach().to(torch.device(dev) if dev is not None else w.device, torch.float32))


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
        self.cross: torch.Tensor | None = None   # heads: [H, d, d] sum over tokens of o_h o_h^T
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

        def gram(w: torch.Tensor) -> torch.Tensor:            # [H, d, d] = W_h^T W_h
            w = w.view(w.shape[0], h, d)
            return torch.einsum("ihd,ihe->hde", w, w)

        with torch.no_grad():
            for li, layer in enumerate(adapter.layers(model)):
                down, o = adapter.down_proj(layer), adapter.o_proj(layer)
                self._col_norm.append(_from_weight(down, lambda w: w.norm(dim=0)))
                self._gram.append(_from_weight(o, gram))
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

    def centered_impacts(self, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Corpus-level impact of every unit with its mean contribution restored (what bias or
        least-squares compensation restores): the RMS over tokens of the unit's centred
        contribution. FFN [L, I] = std(a_k) ||W_down[:, k]||; heads [L, H] = sqrt(<Cov(o_h), G_h>)."""
        n = max(n_tokens, 1)
        ffn, heads = [], []
        h, d = self.dims.n_heads, self.dims.head_dim
        for li in range(self.dims.n_layers):
            a = self.ffn[li]
            mean = a.sum / n
            var = (a.sumsq / n - mean * mean).clamp_min(0)
            ffn.append((var.sqrt() * self._col_norm[li].double().to(var.device)).float().cpu())
            o = self.heads[li]
            mu = (o.sum / n).view(h, d)
            cov = o.cross / n - mu[:, :, None] * mu[:, None, :]
            g = self._gram[li].double().to(cov.device)
            heads.append((cov * g).sum((1, 2)).clamp_min(0).sqrt().float().cpu())
        return torch.stack(ffn), torch.stack(heads)

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
                cross = torch.zeros((h, d, d), dtype=torch.float64, device=x.device)
                docs = []
                for i in range(x.shape[0]):
                    xi = x[i].float() * mask[i][:, None]               # [T, H*d], padding zeroed
                    xh = xi.view(-1, h, d).transpose(0, 1)            # [H, T, d]
                    s_h = torch.bmm(xh.transpose(1, 2), xh)           # [H, d, d] = sum_t o o^T
                    docs.append((s_h * g).sum((1, 2)))                 # sum_t o^T G o
                    cross += s_h.double()
                    ch_s += xi.sum(0)
                    ch_sq += s_h.diagonal(dim1=1, dim2=2).reshape(-1)
                acc.batch = torch.stack(docs)                          # [B, H]
                acc.add_channels(ch_s, ch_sq)
                acc.cross = cross if acc.cross is None else acc.cross + cross
        return hook
