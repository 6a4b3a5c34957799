"""Where artifacts live in the store: the one module that knows the layout. Stage artifacts are
addressed by content keys (cusprun.pipeline.keys), so equal inputs map to the same place and a
finished stage is found again instead of recomputed.

    corpora/<key>/      prepared corpus (parquet)
    stats/<key>/        impact statistics of one corpus
    grams/<key>/        compensation Grams of one corpus (one file per layer)
    scores/<key>/       baseline unit scores (every method at once)
    plans/<key>/        a pruning plan (Cus-Prun or a baseline)
    sliced/<key>/       a sliced checkpoint
    reports/<key>/      an evaluation report
    experts/<name>/<version>/...        (+ MANIFEST.json, written last)
    experts/<name>/LATEST.json          (pointer, updated after the manifest)

Stage artifacts are committed by cusprun.pipeline.artifacts, which also uses .claims/<key>,
.attempts/<key>/<id>/ and .retired/<key>/ so that concurrent builds and refreshes of one stage
never mix their files nor delete those a reader holds.
"""
from __future__ import annotations

import re

from cusprun.errors import SpecError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

STAGE_PREFIX = {"corpus": "corpora", "stats": "stats", "grams": "grams", "scores": "scores",
                "plan": "plans", "baseline": "plans", "slice": "sliced", "evaluate": "reports",
                "dense-eval": "dense-evals"}
EXPERTS = "experts"
MANIFEST = "MANIFEST.json"
LATEST = "LATEST.json"


def segment(value: str, what: str) -> str:
    """Validate one path segment (a hash, expert name or version)."""
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise SpecError(f"Invalid {what} {value!r}: use 1-128 characters from letters, digits, "
                        "'.', '_' and '-', starting with a letter or digit")
    return value


def stage_key(stage: str, key: str) -> str:
    """The store key of a stage's artifact."""
    if stage not in STAGE_PREFIX:
        raise SpecError(f"Unknown stage {stage!r}; stages: {', '.join(STAGE_PREFIX)}")
    return f"{STAGE_PREFIX[stage]}/{segment(key, f'{stage} key')}"


def stage_of(store_key: str) -> str | None:
    """The stage whose artifacts live under the first segment of `store_key`, if any."""
    prefix = store_key.split("/", 1)[0]
    return next((s for s, p in STAGE_PREFIX.items() if p == prefix), None)


def expert_prefix(name: str) -> str:
    return f"{EXPERTS}/{segment(name, 'expert name')}"


def expert_key(name: str, version: str) -> str:
    return f"{expert_prefix(name)}/{segment(version, 'expert version')}"


def manifest_key(name: str, version: str) -> str:
    return f"{expert_key(name, version)}/{MANIFEST}"


def latest_key(name: str) -> str:
    return f"{expert_prefix(name)}/{LATEST}"
