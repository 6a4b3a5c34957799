"""Content-derived cache keys. A stage's key is a hash of exactly what determines its output:
model fingerprint, corpus hashes, the relevant part of the spec, and that stage's code version.
Bump a stage's version when its code changes what it writes."""
from __future__ import annotations

import hashlib
import json
from typing import Any

STAGE_VERSIONS = {
    "corpus": "1",
    "stats": "2",     # 2: centred impacts
    "grams": "1",
    "plan": "2",
    "baseline": "1",
    "slice": "2",     # 2: compensation
    "evaluate": "4",  # 2: intervals, paired differences, packed MC, clipped options; 3: ratio sweep;
    # 4: sweep precision
}


def _canonical(obj: Any) -> str:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def content_key(stage: str, *parts: Any) -> str:
    """Stable hex key for `stage` from its inputs (pydantic models, dicts, strings...)."""
    if stage not in STAGE_VERSIONS:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(STAGE_VERSIONS)}")
    h = hashlib.sha256(f"{stage}:v{STAGE_VERSIONS[stage]}".encode())
    for p in parts:
        h.update(b"\x00")
        h.update(_canonical(p).encode())
    return h.hexdigest()[:24]
