"""Run a model one decoder layer at a time over a fixed set of calibration batches.

Only the hidden states entering the current layer are held (one [B, T, hidden] tensor per batch),
so a pass that needs a large per-layer accumulator (a Gram matrix) holds one layer's worth of it,
not every layer's. The keyword arguments each layer receives (attention masks, rotary position
embeddings; Gemma 3 gives sliding-window and global layers different ones) are captured by a
forward of the model in which every decoder layer is replaced by a pass-through, so the capture
costs the embedding lookup and mask construction, not a forward pass."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from cusprun.adapters import Adapter
from cusprun.models.loading import input_device


@dataclass
class Batch:
    """One calibration batch: the hidden states entering the current layer, which tokens are real
    (1) and which are padding (0), and the keyword arguments every layer was called with."""

    hidden: torch.Tensor
    mask: torch.Tensor
    layer_kwargs: list[dict] = field(default_factory=list)


def _pass_through(record: Callable[[tuple, dict], None]):
    def forward(*args, **kwargs):
        record(args, kwargs)
        return args[0] if args else kwargs["hidden_states"]
    return forward


@torch.no_grad()
def capture_batches(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[Batch]:
    """Hidden states entering layer 0 and every layer's keyword arguments, for each (ids, mask)."""
    adapter = Adapter.for_model(model)
    layers = adapter.layers(model)
    dev = input_device(model)
    out: list[Batch] = []
    for ids, mask in batches:
        rec = Batch(hidden=torch.empty(0), mask=mask)

        def record(args, kwargs, rec=rec):
            if not rec.layer_kwargs:
                rec.hidden = args[0] if args else kwargs["hidden_states"]
            rec.layer_kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})

        for layer in layers:
            layer.forward = _pass_through(record)   # instance attribute shadows the class method
        try:
            model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False,
                  logits_to_keep=1)
        finally:
            for layer in layers:
                del layer.forward
        if len(rec.layer_kwargs) != len(layers):
            raise RuntimeError(f"captured {len(rec.layer_kwargs)} of {len(layers)} decoder layers")
        out.append(rec)
    return out


def run_layer(layer: nn.Module, batch: Batch, li: int) -> torch.Tensor:
    """The layer's output hidden states for one batch (layers return a tensor or a tuple)."""
    kwargs = dict(batch.layer_kwargs[li])
    kwargs["use_cache"] = False
    kwargs.pop("past_key_values", None)
    kwargs.pop("cache", None)
    dev = next((p.device for p in layer.parameters() if not p.is_meta), batch.hidden.device)
    y = layer(batch.hidden.to(dev), **kwargs)
    return y[0] if isinstance(y, tuple) else y


@torch.no_grad()
def layer_by_layer(model: nn.Module, batches: list[Batch]
                   ) -> Iterator[tuple[int, nn.Module, Callable[..., None]]]:
    """Yields (layer index, layer, run) for each decoder layer in order. `run(before=None)` runs
    the layer on every batch (hooks the caller registered on the layer see them; `before(batch)`
    is called just before each batch) and moves the batches' hidden states to its outputs, ready
    for the next layer. A layer the caller did not run is run when the loop moves on."""
    layers = Adapter.for_model(model).layers(model)
    for li, layer in enumerate(layers):
        done = []

        def run(before: Callable[[Batch], None] | None = None, li=li, layer=layer, done=done):
            if done:
                raise RuntimeError(f"layer {li} was already run")
            for b in batches:
                if before is not None:
                    before(b)
                b.hidden = run_layer(layer, b, li)
            done.append(True)

        yield li, layer, run
        if not done:
            run()
