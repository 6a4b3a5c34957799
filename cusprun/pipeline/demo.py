"""The demo experts on the embedded SmolLM2-135M and the bundled corpora: the full comparison
(`cusprun demo --full`: every baseline and the retention-vs-ratio sweep) and the quick one
`make demo` runs (the expert against dense and the strongest baseline, no sweep). Both share
their calibration, statistics, Grams and Cus-Prun plan, so either reuses what the other computed.

Which baseline is the strongest is read from the recorded full comparison
(benchmarks/results/<FULL_RECORD>/report.json): `make results` ranks its baselines
(cusprun.evaluation.ranking) into demo_baseline.json beside this module, which the quick demo
reads; a test checks that file is what the record ranks."""
from __future__ import annotations

import json
from pathlib import Path

FULL_DEMO_SPEC = {
    "name": "en-health-qa",
    "base_model": "smollm2-135m",
    # 128 calibration docs per dimension: where the held-out retention curve flattens
    # (benchmarks/quality_calibration.py); general text only protects units, 40 docs do.
    "language": {"value": "en", "max_docs": 128},
    "domain": {"value": "health", "max_docs": 128},
    "task": {"value": "qa", "max_docs": 128},
    "general": {"value": "en", "max_docs": 40},
    "target_ratios": [0.25],
    "max_tokens": 256,
    # 32+ held-out documents per loss set, so a t interval over documents holds its coverage
    # (docs/evaluation.md); their first 64 tokens keep the demo within its time budget.
    "evaluation": {"max_docs": 32, "mc_items": 16, "max_tokens": 64, "other_languages": ["de"],
                   "speed_iters": 2},
}
FULL_RECORD = "en-health-qa-full"
"""benchmarks/results/<this>/: the recorded full comparison (`python -m benchmarks run record_build
--demo --full`)."""
BASELINE_FILE = Path(__file__).with_name("demo_baseline.json")


def recorded_baseline() -> dict:
    """The strongest baseline of the recorded full comparison, with the numbers that rank it."""
    return json.loads(BASELINE_FILE.read_text())


def quick_demo_spec() -> dict:
    """The full demo's expert against the recorded strongest baseline alone, without the sweep."""
    return {**FULL_DEMO_SPEC, "baselines": [recorded_baseline()["baseline"]],
            "evaluation": {**FULL_DEMO_SPEC["evaluation"], "sweep_ratios": []}}


def demo_spec(full: bool = False, storage_root: str | None = None) -> dict:
    return {**(FULL_DEMO_SPEC if full else quick_demo_spec()),
            "storage_root": storage_root or "./artifacts"}
