"""The demo experts on the embedded SmolLM2-135M and the bundled corpora: the full comparison
(`cusprun demo --full`: every baseline and the retention-vs-ratio sweep) and the quick one
`make demo` runs (the expert against dense and the best baseline, no sweep). Both share their
calibration, statistics, Grams and Cus-Prun plan, so either reuses what the other computed."""
from __future__ import annotations

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
    "evaluation": {"max_docs": 10, "mc_items": 16, "max_tokens": 128, "other_languages": ["de"],
                   "speed_iters": 2},
}
BEST_BASELINE = "flap"
"""The strongest baseline on this demo (docs/results.md): the quick demo compares with it alone."""

QUICK_DEMO_SPEC = {
    **FULL_DEMO_SPEC,
    "baselines": [BEST_BASELINE],
    "evaluation": {**FULL_DEMO_SPEC["evaluation"], "sweep_ratios": []},
}


def demo_spec(full: bool = False, storage_root: str | None = None) -> dict:
    return {**(FULL_DEMO_SPEC if full else QUICK_DEMO_SPEC),
            "storage_root": storage_root or "./artifacts"}
