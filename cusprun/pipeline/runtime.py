"""Runtime: where and how a build's passes run, resolved before any cache key is computed.

A spec says 'auto' for the device and for the precision of Grams, probes and the sweep; 'auto'
means bf16 on a GPU and on CPUs with native bf16 matmuls, float32 elsewhere. Keys hold what
'auto' resolved to, so a CPU worker and a GPU worker sharing one store never read each other's
(different) Grams or plans under one key.

Weights load in `dtype` (float32 on CPU, bf16 on CUDA), except for a pass whose precision
resolved to float32: it loads float32 weights (pass_dtype), since bf16 weights would multiply in
bf16 whatever autocast says. float32 is then float32 on every device; on a CPU nothing changes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:   # annotations only: the stages that validate a Runtime never run the spec's code
    from cusprun.pipeline.spec import ExpertSpec

Resolved = Literal["float32", "bfloat16"]


class Runtime(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: Literal["cpu", "cuda"]
    dtype: Resolved                 # weights of passes with no float32 setting: bf16 on CUDA
    gram_precision: Resolved
    probe_precision: Resolved
    sweep_precision: Resolved
    kernels: bool = False           # Hub kernels at load (CUDA only changes numbers)
    streaming: str = "auto"         # how passes hold the model: never changes a number

    def identity(self, *precisions: str) -> dict:
        """What of this runtime decides a stage's numbers: device, weight dtype, kernels and
        the named precisions (streaming gives the same numbers, so it is left out)."""
        out = {"device": self.device, "dtype": self.dtype}
        if self.kernels and self.device == "cuda":
            out["kernels"] = True
        out.update({p: getattr(self, p) for p in precisions})
        return out

    def pass_dtype(self, precision: str | None = None) -> str:
        """Weights of a pass run at the named precision field ('probe_precision', ...): float32
        where it resolved to float32, else `dtype` (module docstring)."""
        return "float32" if precision and getattr(self, precision) == "float32" else self.dtype

    def load_options(self, precision: str | None = None) -> dict:
        """What a stage passes to cusprun.engine.open_model for a pass at `precision` (a
        precision field's name; None: the statistics and scores passes, in `dtype`)."""
        import torch

        return {"device": self.device, "dtype": getattr(torch, self.pass_dtype(precision)),
                "streaming": self.streaming, "kernels": self.kernels}


def resolve_runtime(spec: ExpertSpec, device: str | None = None) -> Runtime:
    """The runtime of `spec` on `device` (default: the spec's, 'auto' meaning CUDA when this
    machine has it)."""
    import torch

    from cusprun.models.loading import default_dtype
    from cusprun.models.precision import resolve_precision

    dev = device or spec.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if default_dtype(dev) == torch.bfloat16 else "float32"

    def precision(p: str) -> str:
        if p == "auto" and dev == "cuda" and not torch.cuda.is_available():
            return "bfloat16"     # a remote GPU worker (gpu pool): Ampere or newer
        return resolve_precision(p, dev)

    return Runtime(device=dev, dtype=dtype, gram_precision=precision(spec.gram_precision),
                   probe_precision=precision(spec.probe_precision),
                   sweep_precision=precision(spec.evaluation.sweep_precision),
                   kernels=spec.hub_kernels, streaming=spec.streaming)


def statistics_runtime(spec: ExpertSpec) -> Runtime:
    """Statistics run on the gpu work pool in distributed mode (CUDA unless the spec says cpu)."""
    if spec.execution == "distributed" and spec.device == "auto":
        return resolve_runtime(spec, "cuda")
    return resolve_runtime(spec)
