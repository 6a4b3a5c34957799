"""Input Gram matrices of down_proj and o_proj on calibration tokens: what a closed-form
compensation needs to know about the dense model's activations.

For every layer, G = sum_t x_t x_t^T and s = sum_t x_t over the real (unpadded) tokens, where x is
the input of down_proj (the FFN neurons) or of o_proj (the concatenated head outputs). They are
additive over corpora, so each corpus is collected (and cached) on its own and an expert sums the
corpora of its dimensions. Two ways to collect the same sums:

- `collect_grams`: a pass of its own, layer by layer (cusprun.compensation.layerwise), so memory
  holds one layer's matrices plus the hidden states of the calibration tokens; each layer is
  written to its own safetensors file as soon as it is done. Fits any model.
- `GramRecorder`: hooks that ride along another full forward pass (the statistics pass), saving
  that pass's forward compute but holding every layer's matrices at once (`gram_bytes`); used
  when those fit (cusprun.pipeline.plan_inputs.fuse_grams)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from cusprun.adapters import Adapter
from cusprun.compensation.layerwise import capture_batches, layer_by_layer
from cusprun.errors import CorpusError, SpecError
from cusprun.models.loading import input_device
from cusprun.models.precision import resolve_precision

log = logging.getLogger(__name__)

SUMMARY_FILE = "grams.json"
ROLES = ("down", "o")


def layer_file(li: int) -> str:
    return f"layer-{li:04d}.safetensors"


@dataclass
class LayerGrams:
    """Sums over calibration tokens for one layer: gram[role] [n, n] float64, total[role] [n]."""

    gram: dict[str, torch.Tensor]
    total: dict[str, torch.Tensor]
    n_tokens: float          # tokens (weighted, when the corpora carry weights)
    resid_sq: float = 0.0   # sum over tokens of ||hidden state entering the layer||^2

    def __add__(self, other: "LayerGrams") -> "LayerGrams":
        return LayerGrams({r: self.gram[r] + other.gram[r] for r in ROLES},
                          {r: self.total[r] + other.total[r] for r in ROLES},
                          self.n_tokens + other.n_tokens, self.resid_sq + other.resid_sq)

    def mean(self, role: str) -> torch.Tensor:
        return self.total[role] / (self.n_tokens if self.n_tokens > 0 else 1)


def gram_bytes(dims) -> int:
    """Memory of every layer's Gram sums at once (what a GramRecorder holds): float64 sums plus
    the float32 partial sums of the batches since the last flush."""
    return (8 + 4) * dims.n_layers * (dims.ffn ** 2 + (dims.n_heads * dims.head_dim) ** 2)


def _xtx(x: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """x^T x for x [T, n] (float32 or bfloat16; the result is float32). Wide inputs go by
    upper-triangular blocks, mirrored: the product is symmetric, so that is about 5/8 of the
    multiply-adds (a third less time here)."""
    n = x.shape[1]
    if n < 1024:
        return (x.t() @ x).float()
    xt = x.t().contiguous()
    out = torch.empty((n, n), dtype=torch.float32, device=x.device)
    e = [round(i * n / blocks) for i in range(blocks + 1)]
    for i in range(blocks):
        for j in range(i, blocks):
            b = xt[e[i]:e[i + 1]] @ xt[e[j]:e[j + 1]].t()
            out[e[i]:e[i + 1], e[j]:e[j + 1]] = b
            if j != i:
                out[e[j]:e[j + 1], e[i]:e[i + 1]] = b.t()
    return out


class _Acc:
    """One layer's running sums. The per-batch product runs in `precision` ('float32', or
    'bfloat16': inputs rounded to bfloat16, products summed in float32 by the matmul); batches
    add up in float32 for up to FLUSH batches, then into float64 (a float64 add per batch cost
    about 2 ms per layer on the demo). The sums s always come from float32 inputs."""

    FLUSH = 16

    def __init__(self, precision: str = "float32") -> None:
        self.gram: dict[str, torch.Tensor] = {}      # float64, after flush()
        self.total: dict[str, torch.Tensor] = {}
        self._part: dict[str, list] = {}              # role -> [gram, total, batches] in float32
        self.mask: torch.Tensor | None = None
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

    def hook(self, role: str):
        def fn(_module, args):
            x = args[0]
            m = self.mask.to(x.device, torch.float32)
            xf = x.float().reshape(-1, x.shape[-1]) * m.reshape(-1, 1)
            g, s = _xtx(xf.to(self.dtype)), xf.sum(0)
            part = self._part.get(role)
            if part is None:
                self._part[role] = [g, s, 1]
            else:
                part[0] += g
                part[1] += s
                part[2] += 1
                if part[2] >= self.FLUSH:
                    self._flush(role)
        return fn

    def _flush(self, role: str) -> None:
        g, s, _ = self._part.pop(role)
        if role in self.gram:
            self.gram[role] += g.double()
            self.total[role] += s.double()
        else:
            self.gram[role], self.total[role] = g.double(), s.double()

    def flush(self) -> None:
        for role in list(self._part):
            self._flush(role)


def _batches(tokenizer, texts: Sequence[str], max_tokens: int, batch_size: int):
    from cusprun.scoring.collect import length_batches, pad_right, tokenize_docs

    seqs = [s for s in tokenize_docs(tokenizer, texts, max_tokens) if s]
    if not seqs:
        raise CorpusError(f"All {len(texts)} documents tokenize to zero tokens; nothing to measure.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return [pad_right([seqs[i] for i in idx], pad, "cpu")
            for idx in length_batches([len(s) for s in seqs], batch_size)]


def _write_layer(out: Path, li: int, acc: _Acc, resid: float, n_tokens: int) -> None:
    acc.flush()
    tensors = {f"gram_{r}": acc.gram[r].float().cpu().contiguous() for r in ROLES}
    tensors.update({f"total_{r}": acc.total[r].cpu().contiguous() for r in ROLES})
    tensors["resid_sq"] = torch.tensor([resid], dtype=torch.float64)
    tmp = out / f".{layer_file(li)}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={"n_tokens": str(n_tokens)})
    os.replace(tmp, out / layer_file(li))


def _write_summary(out: Path, adapter: Adapter, d, *, n_docs: int, n_tokens: int, max_tokens: int,
                   seconds: float, extra: dict | None) -> dict:
    summary = {"n_docs": n_docs, "n_tokens": n_tokens, "n_layers": d.n_layers,
               "max_tokens": max_tokens, "architecture": adapter.architecture,
               "shapes": {"down": d.ffn, "o": d.n_heads * d.head_dim},
               "seconds": round(seconds, 3), **(extra or {})}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


class GramRecorder:
    """Every layer's Gram sums from hooks on a full forward pass run by someone else.

    Call `start_batch(mask)` before each forward (padding rows are zeroed, as in collect_grams),
    then `write(...)` once: the same files collect_grams writes for the same documents and
    batches. Holds `gram_bytes(dims)` of sums until then."""

    def __init__(self, model: nn.Module, adapter: Adapter, precision: str = "float32") -> None:
        self.adapter, self.dims = adapter, adapter.dims(model.config)
        self.precision = resolve_precision(precision, input_device(model))
        self.accs = [_Acc(self.precision) for _ in range(self.dims.n_layers)]
        self.resid = [0.0] * self.dims.n_layers
        self.t0 = time.perf_counter()
        self._handles = []
        for li, layer in enumerate(adapter.layers(model)):
            acc = self.accs[li]
            self._handles += [adapter.down_proj(layer).register_forward_pre_hook(acc.hook("down")),
                              adapter.o_proj(layer).register_forward_pre_hook(acc.hook("o")),
                              layer.register_forward_pre_hook(self._resid_hook(li), with_kwargs=True)]

    def _resid_hook(self, li: int):
        def fn(_module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            m = self.accs[li].mask.to(h.device, torch.float32)
            self.resid[li] += float(((h.float() ** 2).sum(-1) * m).sum())
        return fn

    def start_batch(self, mask: torch.Tensor) -> None:
        for acc in self.accs:
            acc.mask = mask

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def write(self, out_dir: str | Path, *, n_docs: int, n_tokens: int, max_tokens: int,
              extra: dict | None = None) -> dict:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for li, acc in enumerate(self.accs):
            _write_layer(out, li, acc, self.resid[li], n_tokens)
            acc.gram.clear()                # free the layer's sums as soon as they are on disk
            acc.total.clear()               # (the hooks keep the _Acc itself until remove())
        return _write_summary(out, self.adapter, self.dims, n_docs=n_docs, n_tokens=n_tokens,
                              max_tokens=max_tokens, seconds=time.perf_counter() - self.t0,
                              extra={"precision": self.precision, **(extra or {})})


@torch.no_grad()
def collect_grams(model: nn.Module, tokenizer, texts: Sequence[str], out_dir: str | Path, *,
                  max_tokens: int = 256, batch_size: int = 8, progress: bool = True,
                  extra: dict | None = None, precision: str = "float32") -> dict:
    """Write one `layer-NNNN.safetensors` per decoder layer (gram_down, total_down, gram_o,
    total_o, resid_sq: the squared norm of the hidden states entering it) and `grams.json`
    (token count, shapes, precision) into out_dir; returns the summary. `precision`: of the
    per-batch x^T x products (cusprun.models.precision; the forward itself stays float32)."""
    if isinstance(texts, str) or not texts:
        raise CorpusError("collect_grams needs a non-empty list of documents.")
    if max_tokens < 1 or batch_size < 1:
        raise SpecError(f"max_tokens={max_tokens} and batch_size={batch_size} must be positive.")
    adapter = Adapter.for_model(model)
    d = adapter.dims(model.config)
    precision = resolve_precision(precision, input_device(model))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    batches = capture_batches(model, _batches(tokenizer, texts, max_tokens, batch_size))
    n_tokens = int(sum(int(b.mask.sum()) for b in batches))
    log.info("compensation Grams over %d docs (%d tokens), layer by layer", len(texts), n_tokens)
    bar = tqdm(total=d.n_layers, desc="compensation Grams", unit="layer", disable=not progress)
    for li, layer, run in layer_by_layer(model, batches):
        acc = _Acc(precision)
        resid = sum(float(((b.hidden.float() ** 2).sum(-1) * b.mask.to(b.hidden.device)).sum())
                    for b in batches)
        handles = [adapter.down_proj(layer).register_forward_pre_hook(acc.hook("down")),
                   adapter.o_proj(layer).register_forward_pre_hook(acc.hook("o"))]
        try:
            run(before=lambda b: setattr(acc, "mask", b.mask))
        finally:
            for h in handles:
                h.remove()
        _write_layer(out, li, acc, resid, n_tokens)
        bar.update(1)
    bar.close()
    return _write_summary(out, adapter, d, n_docs=len(texts), n_tokens=n_tokens,
                          max_tokens=max_tokens, seconds=time.perf_counter() - t0,
                          extra={"precision": precision, **(extra or {})})


class GramSet:
    """The Grams of one or more corpora (directories written by collect_grams), summed per layer
    on demand: one layer in memory at a time."""

    def __init__(self, dirs: Sequence[str | Path], cache_bytes: int = 1 << 30,
                 weights: Sequence[float] | None = None):
        """`cache_bytes`: summed layers kept in memory up to this size (an allocation search
        reads every layer once per candidate; slicing reads each layer once). `weights`: one
        factor per directory applied to its sums (default 1: every token counts the same)."""
        if not dirs:
            raise SpecError("Compensation needs the Grams of at least one calibration corpus.")
        if weights is not None and (len(weights) != len(dirs) or any(w <= 0 for w in weights)):
            raise SpecError(f"Gram weights {list(weights)} must be one positive number per "
                            f"directory ({len(dirs)}).")
        self.weights = [1.0] * len(dirs) if weights is None else [float(w) for w in weights]
        self.dirs = [Path(p) for p in dirs]
        self.summaries = []
        for p in self.dirs:
            f = p / SUMMARY_FILE
            if not f.is_file():
                raise CorpusError(f"{p} holds no {SUMMARY_FILE}; it was not written by collect_grams.")
            self.summaries.append(json.loads(f.read_text()))
        layers = {s["n_layers"] for s in self.summaries}
        if len(layers) != 1:
            raise SpecError(f"Gram sets disagree on the number of layers: {sorted(layers)}")
        self.n_layers = layers.pop()
        self.n_tokens = sum(s["n_tokens"] for s in self.summaries)   # real tokens, unweighted
        self._cache: dict[int, LayerGrams] = {}
        self._cache_left = cache_bytes
        self._lock = threading.Lock()   # sweep points measured at once share one GramSet

    def layer(self, li: int) -> LayerGrams:
        if not 0 <= li < self.n_layers:
            raise IndexError(f"layer {li} outside 0..{self.n_layers - 1}")
        with self._lock:
            if li in self._cache:
                return self._cache[li]
            total = self._read(li)
            size = sum(t.numel() * t.element_size() for t in (*total.gram.values(), *total.total.values()))
            if size <= self._cache_left:
                self._cache[li] = total
                self._cache_left -= size
            return total

    def _read(self, li: int) -> LayerGrams:
        total = None
        for p, summary, w in zip(self.dirs, self.summaries, self.weights):
            t = load_file(str(p / layer_file(li)))
            g = LayerGrams({r: w * t[f"gram_{r}"].double() for r in ROLES},
                           {r: w * t[f"total_{r}"].double() for r in ROLES},
                           w * int(summary["n_tokens"]), w * float(t["resid_sq"]))
            total = g if total is None else total + g
        return total
