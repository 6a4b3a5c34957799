"""Content-derived cache keys. A stage's key is a hash of exactly what determines its output:
model fingerprint, corpus hashes, upstream keys, the resolved settings that ran (precision,
device class), and the version of the code the stage runs (cusprun.pipeline.codehash): there is
no version number to bump by hand, so changed code never reuses an old artifact.

A key reads `<hash>-<code version>`: whoever holds a key knows which code it was made for, so a
worker whose own code differs refuses to compute it (check_code) instead of storing what older
or newer code computed under the key of the flow's code."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from cusprun.pipeline import codehash

# The modules each stage runs (its stage function's module; what they import is found).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "corpus": ("cusprun.pipeline.stages.corpus",),
    "stats": ("cusprun.pipeline.stages.stats",),
    "grams": ("cusprun.pipeline.stages.stats",),
    "scores": ("cusprun.pipeline.stages.scores",),
    "plan": ("cusprun.pipeline.stages.plan",),
    "baseline": ("cusprun.pipeline.stages.baseline",),
    "slice": ("cusprun.pipeline.stages.slice",),
    "heal": ("cusprun.pipeline.stages.heal",),
    "evaluate": ("cusprun.pipeline.stages.evaluate",),
    "dense-eval": ("cusprun.pipeline.stages.evaluate",),
}
STAGES: tuple[str, ...] = tuple(STAGE_CODE)
# Stages that turn text into token ids: the tokenizers release is part of their code version.
TOKENIZES = frozenset({"stats", "grams", "plan", "heal", "evaluate", "dense-eval"})
CODE_CHARS = 12   # of the code version, in a key: enough to tell two releases apart


@lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    if stage not in STAGE_CODE:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(STAGE_CODE)}")
    return codehash.code_version(STAGE_CODE[stage], tokenizes=stage in TOKENIZES)


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
    code = code_version(stage)
    h = hashlib.sha256(f"{stage}:{code}".encode())
    for p in parts:
        h.update(b"\x00")
        h.update(_canonical(p).encode())
    return f"{h.hexdigest()[:24]}-{code[:CODE_CHARS]}"


def key_code(key: str) -> str | None:
    """The code version a key was made for (None for a key without one)."""
    head, sep, code = key.rpartition("-")
    return code if sep and head else None


def check_code(stage: str, key: str) -> None:
    """Refuse to compute or reuse `key` on a worker whose code for `stage` differs from the code
    the key was made for: its result would be stored (or read) under the other code's key."""
    want, have = key_code(key), code_version(stage)[:CODE_CHARS]
    if want is not None and want != have:
        from cusprun.errors import SpecError

        raise SpecError(f"{stage} key {key} was made for code version {want}, but this worker runs "
                        f"{stage} code version {have}: run the flow and its workers on the same "
                        "cusprun release (and torch, transformers, tokenizers releases)")
