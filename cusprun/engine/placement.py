"""Whole or streamed: how a pass holds the model, decided from measured free memory.

'auto' keeps the model whole on the device when loading it takes at most FIT_SHARE of the
device's free memory, leaving the rest for hidden states, Grams and solves; otherwise the model
is streamed one decoder layer at a time (cusprun.engine.model). Loading whole costs its weights
in the compute dtype plus, on CPU, the memory-mapped checkpoint the loader reads them from.
Decisions and whole loads happen one at a time on the machine, across threads and processes
(cusprun.engine.machine_lock), so stages and flow runs that start together see each other's
models in the free memory. Both ways give the same numbers (tests/unit/test_engine.py)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

import torch

from cusprun.engine.machine_lock import placement_lock
from cusprun.engine.model import LayeredModel
from cusprun.errors import SpecError
from cusprun.models.checkpoint import checkpoint_tensors
from cusprun.models.st_io import DTYPES

log = logging.getLogger(__name__)

Streaming = Literal["auto", "always", "never"]
STREAMING: tuple[str, ...] = get_args(Streaming)
FIT_SHARE = 0.5


def model_bytes(path: str | Path, dtype: torch.dtype) -> int:
    """Bytes of the checkpoint's tensors once floating ones are in `dtype` (headers only)."""
    total = 0
    for info in checkpoint_tensors(path).values():
        numel = 1
        for s in info.shape:
            numel *= s
        src = DTYPES.get(info.dtype)
        size = dtype.itemsize if src is not None and src.is_floating_point else (
            src.itemsize if src is not None else 1)
        total += numel * size
    return total


def load_bytes(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> int:
    """Memory a whole load of the model takes on `device` (see module docstring)."""
    need = model_bytes(path, dtype)
    if torch.device(device).type == "cpu":
        need += sum(i.nbytes for i in checkpoint_tensors(path).values())
    return need


def free_bytes(device: torch.device | str) -> int | None:
    """Free memory of the device: CUDA's free memory, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    from cusprun.system import available_memory

    return available_memory()


def decide(path: str | Path, device: torch.device | str, dtype: torch.dtype,
           streaming: str = "auto") -> bool:
    """Whether passes over the model at `path` stream it (see module docstring)."""
    if streaming not in STREAMING:
        raise SpecError(f"streaming={streaming!r}; accepted: {', '.join(STREAMING)}")
    if streaming != "auto":
        return streaming == "always"
    need, free = load_bytes(path, device, dtype), free_bytes(device)
    stream = free is not None and need > FIT_SHARE * free
    log.info("model %s: %.2f GB as %s, %s free on %s: %s", Path(path).name, need / 1e9,
             str(dtype).removeprefix("torch."), "?" if free is None else f"{free / 1e9:.1f} GB",
             device, "streamed layer by layer" if stream else "whole")
    return stream


def open_model(path: str | Path, *, streaming: str = "auto", device: str | None = None,
               dtype: torch.dtype | None = None, kernels: bool = False,
               trust_remote_code: bool = False) -> tuple[LayeredModel, object]:
    """(LayeredModel, tokenizer) for passes over the model at `path`: whole or streamed as
    `streaming` says ('auto': from free memory)."""
    from cusprun.models.loading import default_device, default_dtype, load_model, load_tokenizer

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    with placement_lock():
        if not decide(path, device, dtype, streaming):
            model, tok = load_model(path, device=device, dtype=dtype, kernels=kernels,
                                    trust_remote_code=trust_remote_code)
            return LayeredModel.resident(model), tok
    lm = LayeredModel.streamed(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    return lm, load_tokenizer(path, trust_remote_code=trust_remote_code)
