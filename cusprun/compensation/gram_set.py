"""Input Gram matrices of down_proj and o_proj on calibration tokens: what a closed-form
compensation needs to know about the dense model's activations, and their files.

For every layer and role (down: the FFN neurons, o: the concatenated head outputs),
G = sum_t x_t x_t^T and s = sum_t x_t over real (unpadded) tokens. They add up over corpora, so
each corpus is collected (and cached) on its own and an expert sums its dimensions' corpora.

A layer file stores G itself, or, when the corpus has fewer tokens than the role's width, the
tokens' inputs X [tokens, width] with G = X^T X: a Gram of Llama-3-8B's down_proj is 14336^2
floats (0.8 GB per layer and corpus, 26 GB per corpus), while 8 calibration documents of 64
tokens need 512 x 14336 (29 MB). Readers see the same G either way."""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cusprun.errors import CorpusError, SpecError

SUMMARY_FILE = "grams.json"
ROLES = ("down", "o")


def layer_file(li: int) -> str:
    return f"layer-{li:04d}.safetensors"


def xtx(x: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """x^T x for x [T, n] (float32 or bfloat16; the result is float32). Wide inputs go by
    upper-triangular blocks, mirrored: the product is symmetric, so that is about 5/8 of the
    multiply-adds (a third less time)."""
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


def store_factor(n_tokens: int, width: int) -> bool:
    """Whether a layer file keeps the inputs themselves rather than their Gram (smaller)."""
    return n_tokens < width


def write_layer(out: Path, li: int, *, grams: dict[str, torch.Tensor],
                factors: dict[str, torch.Tensor], totals: dict[str, torch.Tensor],
                resid_sq: float, n_tokens: int) -> None:
    """One layer's file: per role either gram_<role> [n, n] float32 or factor_<role> [T, n]
    (G = factor^T factor), total_<role> [n] float64, and resid_sq (the squared norm of the hidden
    states entering the layer, summed over tokens). Written whole, then renamed."""
    tensors = {f"gram_{r}": g.float().cpu().contiguous() for r, g in grams.items()}
    tensors.update({f"factor_{r}": f.cpu().contiguous() for r, f in factors.items()})
    tensors.update({f"total_{r}": t.double().cpu().contiguous() for r, t in totals.items()})
    tensors["resid_sq"] = torch.tensor([resid_sq], dtype=torch.float64)
    tmp = out / f".{layer_file(li)}.{os.getpid()}.{threading.get_ident()}.tmp"
    save_file(tensors, str(tmp), metadata={"n_tokens": str(n_tokens)})
    os.replace(tmp, out / layer_file(li))


class _Grams(dict):
    """role -> Gram [n, n] float64, computed from the stored inputs on first use (a solve that
    works from the inputs themselves never builds it)."""

    def __init__(self, dense: dict[str, torch.Tensor], factor: dict[str, torch.Tensor]):
        super().__init__(dense)
        self.factor = factor

    def __missing__(self, role: str) -> torch.Tensor:
        g = xtx(self.factor[role]).double()
        self[role] = g
        return g


@dataclass
class LayerGrams:
    """Sums over calibration tokens for one layer: gram[role] [n, n] float64, total[role] [n].
    factor[role] [T, n] (float32), where every corpus stored its inputs: gram = factor^T factor,
    and compensation then solves from the inputs (cusprun.compensation.solve)."""

    gram: dict[str, torch.Tensor]
    total: dict[str, torch.Tensor]
    n_tokens: float          # tokens (weighted, when the corpora carry weights)
    resid_sq: float = 0.0   # sum over tokens of ||hidden state entering the layer||^2
    factor: dict[str, torch.Tensor] = field(default_factory=dict)

    def __add__(self, other: "LayerGrams") -> "LayerGrams":
        return LayerGrams({r: self.gram[r] + other.gram[r] for r in ROLES},
                          {r: self.total[r] + other.total[r] for r in ROLES},
                          self.n_tokens + other.n_tokens, self.resid_sq + other.resid_sq)

    def mean(self, role: str) -> torch.Tensor:
        return self.total[role] / (self.n_tokens if self.n_tokens > 0 else 1)


def gram_file_bytes(n_layers: int, widths: dict[str, int], n_tokens: int) -> int:
    """Bytes on disk of one corpus's Grams (float32 Grams or inputs, whichever is smaller)."""
    per = sum(4 * min(n * n, n_tokens * n) + 8 * n for n in widths.values())
    return n_layers * per


class GramSet:
    """The Grams of one or more corpora (directories of layer files), summed per layer on
    demand: one layer in memory at a time."""

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
        weights = [1.0] * len(dirs) if weights is None else [float(w) for w in weights]
        found = []
        for p, w in zip(dirs, weights):
            f = Path(p) / SUMMARY_FILE
            if not f.is_file():
                raise CorpusError(f"{p} holds no {SUMMARY_FILE}; it was not written by collect_grams.")
            found.append((json.loads(f.read_text()), Path(p), w))
        # One order whatever order the caller lists them in: float sums and a solve from the
        # concatenated inputs depend on it, and a reference rebuilt later (benchmarks/
        # scale/verify.py) must round to the very bits the slicer wrote.
        found.sort(key=lambda t: (str(t[0].get("corpus_hash", "")),
                                  str(t[0].get("model_fingerprint", "")), str(t[1])))
        self.summaries = [s for s, _, _ in found]
        self.dirs = [p for _, p, _ in found]
        self.weights = [w for _, _, w in found]
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
            size = sum(t.numel() * t.element_size() for t in (*total.gram.values(),
                                                               *total.factor.values(),
                                                               *total.total.values()))
            if size <= self._cache_left:
                self._cache[li] = total
                self._cache_left -= size
            return total

    def _read(self, li: int) -> LayerGrams:
        files = [load_file(str(p / layer_file(li))) for p in self.dirs]
        dense, factor, total = {}, {}, {}
        for r in ROLES:
            factors = [(w ** 0.5) * t[f"factor_{r}"].float() for t, w in zip(files, self.weights)
                       if f"factor_{r}" in t]
            if len(factors) == len(files):         # every corpus kept its inputs
                factor[r] = torch.cat(factors)
            else:
                g = sum(w * t[f"gram_{r}"].double() for t, w in zip(files, self.weights)
                        if f"gram_{r}" in t)
                dense[r] = g + xtx(torch.cat(factors)).double() if factors else g
            total[r] = sum(w * t[f"total_{r}"].double() for t, w in zip(files, self.weights))
        n = sum(w * int(s["n_tokens"]) for s, w in zip(self.summaries, self.weights))
        resid = sum(w * float(t["resid_sq"]) for t, w in zip(files, self.weights))
        return LayerGrams(_Grams(dense, factor), total, n, resid, factor)
