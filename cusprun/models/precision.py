"""Compute precision of measurement passes: float32, or bfloat16 matmuls where the hardware has
them natively.

bfloat16 runs the forward under autocast, which keeps softmax, log-softmax and norms in float32.
On hardware with native bfloat16 matmuls (CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or
AMX) that halves a forward's time; elsewhere bfloat16 is emulated and slower, so 'auto' picks it
only where native. On the demo's sweep, bfloat16 moved held-out loss retention by 0.0007 on
average, at most 0.0023 for Cus-Prun and 0.015 for a badly damaged baseline
(benchmarks/bench_sweep_precision.py).

Autocast only narrows: weights loaded in bfloat16 multiply in bfloat16 whatever a pass asks. On
a CPU weights load in float32, so either setting is what it says. On CUDA they load in bfloat16
(cusprun.models.loading.default_dtype) unless the pass asks float32: the pipeline then loads
float32 weights (cusprun.pipeline.runtime.Runtime.pass_dtype), and `matmul_dtype` names what a
model already loaded will really do (reports record that, not the setting)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, get_args

import torch

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(bool(getattr(cpu, f, lambda: False)())
                   for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'float32' or 'bfloat16': what `precision` means on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return precision


def matmul_dtype(precision: str, device: torch.device | str, weights: torch.dtype) -> str:
    """What the matmuls of a pass at `precision` on `device` run in with `weights`-dtype weights:
    the resolved precision, or under float32 the weights' own dtype (bf16 weights multiply in
    bf16)."""
    resolved = resolve_precision(precision, device)
    if weights == torch.float32 or resolved == "bfloat16":
        return resolved
    return str(weights).removeprefix("torch.")


@contextlib.contextmanager
def compute_precision(device: torch.device | str, precision: str) -> Iterator[str]:
    """Run the block's forwards at `precision` on `device`; yields the resolved name."""
    resolved = resolve_precision(precision, device)
    if resolved == "float32":
        yield resolved
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield resolved
