"""run_pass: every batch through one decoder layer, then the next (layer-major).

What a pass measures comes from Recorders (forward hooks on a layer's modules while it runs:
impact statistics, compensation Grams) and from `on_final` (the final hidden states, for losses
and multiple-choice scores). A pass may carry several Variants of the model at once (the dense
model and masked candidates, say): each layer is loaded once and run under each variant's edit
on that variant's own hidden states, so a streamed model is read from disk once per pass
whatever the number of variants."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import nn
from tqdm.auto import tqdm

from cusprun.engine.batches import Batch, HiddenStore
from cusprun.engine.model import LayeredModel
from cusprun.system import release_free_memory
from cusprun.models.precision import compute_precision

log = logging.getLogger(__name__)


class Recorder:
    """What a pass feeds. Hooks go on the layer's modules in `attach` (called once the layer's
    weights are real); `start_batch` comes before each batch enters layer `li` with the hidden
    states it enters with; `layer_done` after the last batch left it; `finish` once at the end.
    Whole-model order (batch by batch) and layer order give the same calls per (layer, batch)."""

    def attach(self, li: int, layer: nn.Module) -> list[Any]:
        return []

    def start_batch(self, li: int, batch: Batch, hidden: torch.Tensor) -> None:
        pass

    def layer_done(self, li: int) -> None:
        pass

    def finish(self) -> None:
        pass


Edit = Callable[[int, nn.Module], ContextManager]


@dataclass
class Variant:
    """One version of the model in a pass: `edit(li, layer)` changes layer li for the block
    (masking, compensation) and must restore it; `recorders` see this variant's batches."""

    name: str = "dense"
    edit: Edit | None = None
    recorders: Sequence[Recorder] = ()


HIDDEN_SHARE = 0.25
"""Share of the free memory a pass's hidden states may take before they spill."""


def hidden_budgets(device: torch.device, n_variants: int, budget: int | None) -> tuple[int, int]:
    """(device, host) bytes per variant for hidden states: `budget` when given, else a share
    of the device's (and, from a GPU, the host's) free memory measured now."""
    if budget is not None:
        return budget, budget
    from cusprun.engine.placement import free_bytes

    share = lambda free: int(HIDDEN_SHARE * free / n_variants) if free else 1 << 62  # noqa: E731
    return share(free_bytes(device)), share(free_bytes("cpu")) if device.type != "cpu" else 0


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    y = layer(hidden, **kwargs)
    return y[0] if isinstance(y, tuple) else y


@torch.no_grad()
def run_pass(lm: LayeredModel, batches: Sequence[Batch], variants: Sequence[Variant] = (Variant(),),
             *, precision: str = "float32",
             on_final: Callable[[str, int, Batch, torch.Tensor], None] | None = None,
             on_layer: Callable[[int, int], None] | None = None, budget_bytes: int | None = None,
             desc: str = "pass", progress: bool = True) -> dict:
    """Run `batches` through every layer of `lm` under each variant; `on_final(variant, i,
    batch, hidden)` receives the hidden states leaving the last layer for batch i (before the
    final norm, which is per token: consumers norm the positions they score, lm.norm). `precision`: float32,
    or bfloat16 matmuls under autocast (cusprun.models.precision). `budget_bytes`: hidden states
    kept on the device per variant before spilling (cusprun.engine.batches.HiddenStore; default
    from free memory, hidden_budgets).
    `on_layer(done, total)` after each layer. Returns timings and bytes read."""
    t0 = time.perf_counter()
    read0 = lm.bytes_read
    device_budget, host_budget = hidden_budgets(lm.device, len(variants), budget_bytes)
    stores = {v.name: HiddenStore(lm.device, device_budget, host_budget) for v in variants}
    if len(stores) != len(variants):
        raise ValueError(f"variant names must be unique: {[v.name for v in variants]}")
    try:
        first = lm.capture(batches)
        for store in stores.values():
            for i, h in enumerate(first):
                store.put(i, h)
        del first
        bar = tqdm(range(lm.dims.n_layers), desc=desc, unit="layer", disable=not progress,
                   leave=False)
        for li in bar:
            with lm.layer(li) as layer:
                for v in variants:
                    _run_variant(li, layer, v, batches, stores[v.name], lm.device, precision)
            release_free_memory()      # the layer's temporaries, before the next layer loads
            if on_layer is not None:
                on_layer(li + 1, lm.dims.n_layers)
        bar.close()
        for v in variants:
            for r in v.recorders:
                r.finish()
        if on_final is not None:
            for v in variants:
                with compute_precision(lm.device, precision):
                    for i, b in enumerate(batches):
                        on_final(v.name, i, b, stores[v.name].get(i))
    finally:
        for store in stores.values():
            store.close()
    spilled = {v: s.spilled for v, s in stores.items()}
    out = {"seconds": time.perf_counter() - t0, "bytes_read": lm.bytes_read - read0,
           "spilled": spilled}
    log.debug("%s: %d layers x %d batches x %d variant(s) in %.1fs (%.2f GB read)", desc,
              lm.dims.n_layers, len(batches), len(variants), out["seconds"], out["bytes_read"] / 1e9)
    return out


def _run_variant(li: int, layer: nn.Module, v: Variant, batches: Sequence[Batch],
                 store: HiddenStore, device: torch.device, precision: str) -> None:
    with v.edit(li, layer) if v.edit is not None else contextlib.nullcontext():
        handles = [h for r in v.recorders for h in r.attach(li, layer)]
        try:
            with compute_precision(device, precision):
                for i, b in enumerate(batches):
                    hidden = store.get(i)
                    for r in v.recorders:
                        r.start_batch(li, b, hidden)
                    store.put(i, run_layer(layer, hidden, b.kwargs[li]))
        finally:
            for h in handles:
                h.remove()
        for r in v.recorders:
            r.layer_done(li)
