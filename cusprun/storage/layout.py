"""Where artifacts live in the store: the one module that knows the layout. Stage artifacts are
addressed by content keys (cusprun.pipeline.keys), so equal inputs map to the same place and a
finished stage is found again instead of recomputed.

    corpus/<key>/       prepared corpus (parquet)
    stats/<key>/        impact statistics of one corpus
    grams/<key>/        compensation Grams of one corpus (one file per layer)
    scores/<key>/       baseline unit scores (every method at once)
    plan/<key>/         a pruning plan (stage plan: Cus-Prun; stage baseline: a baseline's)
    slice/<key>/        a sliced checkpoint
    evaluate/<key>/     an evaluation report
    dense-eval/<key>/   the dense model's evaluation on one set of held-out inputs
    experts/<name>/<version>/...        (+ MANIFEST.json, written last)
    experts/<name>/LATEST.json          (pointer, updated after the manifest)

A stage's prefix is its name (the spec's `refresh` names, the Prefect task names), except that
baseline plans live beside Cus-Prun's under plan/. Stage artifacts are committed by
cusprun.pipeline.artifacts: <key>/DONE.json makes one visible, and .claims/<key>,
.attempts/<key>/<id>/ and .retired/<key>/ keep concurrent builds and refreshes of one stage from
mixing their files or deleting those a reader holds.
"""
from __future__ import annotations

import re

from cusprun.errors import SpecError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

STAGE_PREFIX = {"corpus": "corpus", "stats": "stats", "grams": "grams", "scores": "scores",
                "plan": "plan", "baseline": "plan", "slice": "slice", "heal": "heal",
                "evaluate": "evaluate", "dense-eval": "dense-eval"}
DONE = "DONE.json"
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


def claim_key(key: str) -> str:
    """Created atomically by the first build that writes the artifact at store key `key`."""
    return f".claims/{key}"


def attempts_key(key: str) -> str:
    """Uploads of builds that found `key` claimed, one folder each."""
    return f".attempts/{key}"


def retired_key(key: str) -> str:
    """Where records replaced by a refresh are kept until their files are removed."""
    return f".retired/{key}"
