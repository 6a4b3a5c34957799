"""Evaluation settings, model entries and the evaluation error type.

Validation raises `EvaluationError` (a `CusprunError`) directly from the validators: pydantic v2
lets non-ValueError exceptions through unchanged, so users see one error type with a clear message.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from cusprun.errors import CusprunError

MetricFamily = Literal["loss", "mc", "size", "speed"]
METRIC_FAMILIES: tuple[str, ...] = ("loss", "mc", "size", "speed")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class EvaluationError(CusprunError):
    """Bad evaluation input: empty eval set, malformed MC item, unknown metric, bad setting."""


class EvalConfig(BaseModel):
    """How models are evaluated. Every field has a default that suits a CPU smoke run."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = 512
    """Cap on tokens per document (loss) and per context+option sequence (MC)."""
    batch_size: int = 8
    max_docs_per_set: int | None = None
    """Use at most this many documents of each loss set (the first ones, in the order given)."""
    n_mc_items: int = 200
    """Use at most this many items per MC task (a seeded subsample if more are given)."""
    mc_normalization: Literal["char", "token", "none"] = "char"
    """Option score = sum of option-token log-probs divided by option characters / tokens / 1."""
    mc_shared_prefix: bool = True
    """Compute each MC question once for all its options (same scores, several times faster)."""
    seed: int = 0
    """Seeds the MC subsample (intervals are closed-form: no seed)."""
    metrics: list[str] = list(METRIC_FAMILIES)
    """Metric families to compute: any of loss, mc, size, speed."""
    speed_prompt_tokens: int = 128
    speed_decode_tokens: int = 32
    speed_warmup: int = 2
    speed_iters: int = 5
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """'auto': bf16 on CUDA, fp32 elsewhere (cusprun.models.loading.default_dtype)."""
    workers: int | Literal["auto"] = "auto"
    """Models evaluated at once (cusprun.evaluation.compare.eval_workers); same numbers."""
    streaming: Literal["auto", "always", "never"] = "auto"
    """How each model is held: whole, or streamed one decoder layer at a time from its
    checkpoint (cusprun.engine; 'auto': when it does not fit). Same numbers either way."""
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        positive = {"max_tokens": 2, "batch_size": 1, "n_mc_items": 1, "speed_prompt_tokens": 1,
                    "speed_decode_tokens": 1, "speed_iters": 1}
        for name, low in positive.items():
            if getattr(self, name) < low:
                raise EvaluationError(f"EvalConfig.{name}={getattr(self, name)!r}: must be >= {low}.")
        if self.workers != "auto" and (isinstance(self.workers, bool) or self.workers < 1):
            raise EvaluationError(f"EvalConfig.workers={self.workers!r}: 'auto' or >= 1.")
        if self.speed_warmup < 0:
            raise EvaluationError(f"EvalConfig.speed_warmup={self.speed_warmup!r}: must be >= 0.")
        if self.max_docs_per_set is not None and self.max_docs_per_set < 1:
            raise EvaluationError(
                f"EvalConfig.max_docs_per_set={self.max_docs_per_set!r}: must be >= 1 or None.")
        unknown = [m for m in self.metrics if m not in METRIC_FAMILIES]
        if unknown or not self.metrics:
            raise EvaluationError(f"EvalConfig.metrics={self.metrics!r}: unknown or empty; "
                                  f"accepted families: {', '.join(METRIC_FAMILIES)}.")
        if not _DEVICE_RE.match(self.device):
            raise EvaluationError(f"EvalConfig.device={self.device!r}: accepted: auto, cpu, "
                                  f"cuda, cuda:N, mps.")
        return self

    def resolved_device(self) -> str:
        from cusprun.models.loading import default_device

        return default_device() if self.device == "auto" else self.device

    def resolved_dtype(self):
        import torch

        from cusprun.models.loading import default_dtype

        if self.dtype == "auto":
            return default_dtype(self.resolved_device())
        return getattr(torch, self.dtype)


class ModelEntry(BaseModel):
    """One model to compare: a checkpoint directory, the method that made it and its ratio.

    The dense reference has method 'dense' and ratio 0; retention is measured against it."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    method: str
    ratio: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> "ModelEntry":
        if not self.method.strip():
            raise EvaluationError("ModelEntry.method is empty; use 'dense', 'cusprun' or a "
                                  "baseline name (random, magnitude, wanda-sp, flap, "
                                  "flap-score).")
        if not 0.0 <= self.ratio < 1.0:
            raise EvaluationError(f"ModelEntry.ratio={self.ratio!r}: must be in [0, 1).")
        if self.method == "dense" and self.ratio != 0.0:
            raise EvaluationError(f"ModelEntry(method='dense', ratio={self.ratio!r}): the dense "
                                  "model has ratio 0.")
        return self
