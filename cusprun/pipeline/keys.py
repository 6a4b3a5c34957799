"""Content-derived cache keys. A stage's key is a hash of exactly what determines its output:
model fingerprint, corpus hashes, upstream keys, the resolved settings that ran (precision,
device class), and the version of the code the stage runs (cusprun.pipeline.codehash): there is
no version number to bump by hand, so changed code never reuses an old artifact."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from cusprun.pipeline import codehash

# The modules each stage runs (its stage function's module; what they import is found).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "corpus": ("cusprun.pipeline.stages.corpus",),
    "stats": ("cusprun.pipeline.stages.statistics",),
    "grams": ("cusprun.pipeline.stages.statistics",),
    "scores": ("cusprun.pipeline.stages.scores",),
    "plan": ("cusprun.pipeline.stages.plans",),
    "baseline": ("cusprun.pipeline.stages.baselines",),
    "slice": ("cusprun.pipeline.stages.slicing",),
    "evaluate": ("cusprun.pipeline.stages.evaluation",),
    "dense-eval": ("cusprun.pipeline.stages.evaluation",),
}
STAGES: tuple[str, ...] = tuple(STAGE_CODE)


@lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    if stage not in STAGE_CODE:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(STAGE_CODE)}")
    return codehash.code_version(STAGE_CODE[stage])


def forget_code_versions() -> None:
    """Recompute code versions (after sources changed in this process: tests)."""
    code_version.cache_clear()
    codehash.forget()


def _canonical(obj: Any) -> str:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def content_key(stage: str, *parts: Any) -> str:
    """Stable hex key for `stage` from its inputs (pydantic models, dicts, strings...) and the
    version of its code."""
    h = hashlib.sha256(f"{stage}:{code_version(stage)}".encode())
    for p in parts:
        h.update(b"\x00")
        h.update(_canonical(p).encode())
    return h.hexdigest()[:24]
