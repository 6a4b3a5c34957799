"""GramRecorder: the compensation Grams of one corpus, collected by the pass that computes its
impact statistics (or a pass of their own), one layer in memory at a time.

Per layer and role it sums x^T x over real tokens (or keeps the tokens' inputs when they are
fewer than the role's width, see cusprun.compensation.gram_set) and writes the layer's file as
soon as the pass leaves the layer. The per-batch products run in `precision` ('float32', or
'bfloat16': inputs rounded to bfloat16, products summed in float32 by the matmul); batches add up
in float32 for up to FLUSH batches, then into float64 (a float64 add per batch cost about 2 ms
per layer on the demo). The sums s always come from float32 inputs."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cusprun.adapters import Adapter, Dims
from cusprun.compensation.gram_set import ROLES, SUMMARY_FILE, store_factor, write_layer, xtx
from cusprun.engine import Batch, Recorder

FLUSH = 16


class GramRecorder(Recorder):
    """Grams of the batches of `group`, documents with row < `max_docs` only (all when None),
    written into `out_dir` layer by layer; `finish` writes grams.json."""

    def __init__(self, adapter: Adapter, dims: Dims, batches: Sequence[Batch], out_dir: str | Path,
                 *, precision: str = "float32", group: object = None, max_docs: int | None = None,
                 extra: dict | None = None) -> None:
        self.adapter, self.dims, self.group, self.max_docs = adapter, dims, group, max_docs
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.extra = extra or {}
        mine = [b for b in batches if b.group == group]
        self.n_tokens = int(sum(float(self._weights(b).sum()) for b in mine))
        self.n_docs = len({r for b in mine for r in b.rows if max_docs is None or r < max_docs})
        self.widths = {"down": dims.ffn, "o": dims.n_heads * dims.head_dim}
        self.factor = {r: store_factor(self.n_tokens, n) for r, n in self.widths.items()}
        self.t0 = time.perf_counter()
        self._reset()
        self._m: torch.Tensor | None = None

    def _reset(self) -> None:
        self._gram: dict[str, torch.Tensor] = {}
        self._part: dict[str, list] = {}
        self._rows: dict[str, list[torch.Tensor]] = {r: [] for r in ROLES}
        self._total: dict[str, torch.Tensor] = {}
        self._resid = 0.0
        self._active = False

    def _weights(self, b: Batch) -> torch.Tensor:
        m = b.mask.float()
        if self.max_docs is not None:
            keep = torch.tensor([float(r < self.max_docs) for r in b.rows])
            m = m * keep[:, None]
        return m

    # ---- pass protocol -----------------------------------------------------------------
    def attach(self, li: int, layer: nn.Module) -> list:
        return [self.adapter.down_proj(layer).register_forward_pre_hook(self._hook("down")),
                self.adapter.o_proj(layer).register_forward_pre_hook(self._hook("o"))]

    def start_batch(self, li: int, batch: Batch, hidden: torch.Tensor) -> None:
        self._active = batch.group == self.group
        if self._active:
            self._m = self._weights(batch).to(hidden.device)
            self._resid += float(((hidden.float() ** 2).sum(-1) * self._m).sum())

    def layer_done(self, li: int) -> None:
        for role in list(self._part):
            self._flush(role)
        grams = {r: g for r, g in self._gram.items()}
        factors = {r: torch.cat(rows) if rows else torch.zeros((0, self.widths[r]), dtype=self.dtype)
                   for r, rows in self._rows.items() if self.factor[r]}
        totals = {r: self._total.get(r, torch.zeros(self.widths[r], dtype=torch.float64))
                  for r in ROLES}
        for r in ROLES:       # a role no token reached (nothing in this corpus): zeros
            if not self.factor[r] and r not in grams:
                grams[r] = torch.zeros((self.widths[r], self.widths[r]))
        write_layer(self.out, li, grams=grams, factors=factors, totals=totals,
                    resid_sq=self._resid, n_tokens=self.n_tokens)
        self._reset()

    def finish(self) -> None:
        d = self.dims
        summary = {"n_docs": self.n_docs, "n_tokens": self.n_tokens, "n_layers": d.n_layers,
                   "architecture": self.adapter.architecture, "shapes": self.widths,
                   "stored": {r: "inputs" if f else "gram" for r, f in self.factor.items()},
                   "seconds": round(time.perf_counter() - self.t0, 3),
                   "precision": self.precision, **self.extra}
        (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))

    # ---- hooks ---------------------------------------------------------------------------
    def _hook(self, role: str):
        def fn(_module, args) -> None:
            if not self._active:
                return
            with torch.no_grad():
                x = args[0]
                m = self._m.reshape(-1)
                xf = x.float().reshape(-1, x.shape[-1]) * m[:, None]
                s = xf.sum(0).double()
                self._total[role] = s if role not in self._total else self._total[role] + s
                if self.factor[role]:
                    self._rows[role].append(xf[m > 0].to(self.dtype))
                    return
                g = xtx(xf.to(self.dtype))
                part = self._part.get(role)
                if part is None:
                    self._part[role] = [g, 1]
                else:
                    part[0] += g
                    part[1] += 1
                    if part[1] >= FLUSH:
                        self._flush(role)
        return fn

    def _flush(self, role: str) -> None:
        g, _ = self._part.pop(role)
        self._gram[role] = g.double() if role not in self._gram else self._gram[role] + g.double()
