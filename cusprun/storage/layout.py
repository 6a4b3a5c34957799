"""Where artifacts live in the store. Everything but experts is addressed by content hashes
(see cusprun.pipeline.keys.content_key), so equal inputs map to the same key and a finished
stage is found again instead of recomputed.

    corpora/<corpus_hash>/
    stats/<model_fp>/<corpus_hash>/<config_hash>/
    plans/<plan_hash>/
    reports/<report_hash>/
    experts/<name>/<version>/...        (+ MANIFEST.json, written last)
    experts/<name>/LATEST.json          (pointer, updated after the manifest)

Stage artifacts are committed by cusprun.pipeline.artifacts, which also uses .claims/<key> and
.attempts/<key>/<id>/ so that concurrent builds of one stage never mix their files.
"""
from __future__ import annotations

import re

from cusprun.errors import SpecError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

CORPORA = "corpora"
STATS = "stats"
PLANS = "plans"
REPORTS = "reports"
EXPERTS = "experts"
MANIFEST = "MANIFEST.json"
LATEST = "LATEST.json"


def segment(value: str, what: str) -> str:
    """Validate one path segment (a hash, expert name or version)."""
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise SpecError(f"Invalid {what} {value!r}: use 1-128 characters from letters, digits, "
                        "'.', '_' and '-', starting with a letter or digit")
    return value


def corpus_key(corpus_hash: str) -> str:
    return f"{CORPORA}/{segment(corpus_hash, 'corpus hash')}"


def stats_key(model_fp: str, corpus_hash: str, config_hash: str) -> str:
    return (f"{STATS}/{segment(model_fp, 'model fingerprint')}/"
            f"{segment(corpus_hash, 'corpus hash')}/{segment(config_hash, 'config hash')}")


def plan_key(plan_hash: str) -> str:
    return f"{PLANS}/{segment(plan_hash, 'plan hash')}"


def report_key(report_hash: str) -> str:
    return f"{REPORTS}/{segment(report_hash, 'report hash')}"


def expert_prefix(name: str) -> str:
    return f"{EXPERTS}/{segment(name, 'expert name')}"


def expert_key(name: str, version: str) -> str:
    return f"{expert_prefix(name)}/{segment(version, 'expert version')}"


def manifest_key(name: str, version: str) -> str:
    return f"{expert_key(name, version)}/{MANIFEST}"


def latest_key(name: str) -> str:
    return f"{expert_prefix(name)}/{LATEST}"
