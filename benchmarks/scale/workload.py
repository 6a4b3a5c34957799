"""The scale benchmark's build: local corpora of generated text, and the spec that runs every
stage of a default `cusprun build` on the least data that still exercises it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

COMMON = ("the of and to in is was for on that with as by at from an they which one were this "
          "it be are not or have had but what all when there can more").split()
TOPICS = {
    "language": "house morning friend street window letter summer family garden evening road".split(),
    "domain": "patient dose doctor clinic blood heart fever treatment symptom nurse therapy".split(),
    "task": "question answer why how which does explain means called reason example".split(),
    "general": "river city music train light water market energy history mountain bridge".split(),
}
DOCS = 40
"""Documents per file: about a fifth go to the held-out side (by a hash of each document), the
rest covers 8 calibration + 4 held-back documents."""
CALIB_DOCS, HOLDBACK_DOCS, EVAL_DOCS = 8, 4, 4


def write_corpora(out: Path, seed: int = 0, docs: int = DOCS) -> dict[str, Path]:
    """One .jsonl file per dimension and for general text: {"text": ...} documents of 40-80
    words (byte-level tokens: several hundred per document, cut at max_tokens)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files = {}
    for dim, topic in TOPICS.items():
        words = COMMON + 3 * topic
        path = out / f"{dim}.jsonl"
        with open(path, "w") as f:
            for i in range(docs):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(40, 80)))
                f.write(json.dumps({"text": f"{text.capitalize()}. ({dim} {i})"}) + "\n")
        files[dim] = path
    return files


def spec_for(model_dir: Path, corpora: dict[str, Path], storage_root: Path, *, name: str,
             max_tokens: int = 64, baselines: list[str] | None = None,
             measure_speed: bool = False) -> str:
    """The ExpertSpec YAML: default pruning settings (exact-ratio rule, measured allocation, ls
    compensation, uniform layout, target 0.25), reduced data and evaluation."""
    def dim(value: str, key: str) -> dict:
        return {"value": value, "sources": [str(corpora[key])], "max_docs": CALIB_DOCS}

    spec = {
        "name": name, "base_model": str(model_dir),
        "language": dim("en", "language"), "domain": dim("health", "domain"),
        "task": dim("qa", "task"), "general": dim("en", "general"),
        "max_tokens": max_tokens, "holdback_docs": HOLDBACK_DOCS, "min_docs": CALIB_DOCS,
        "baselines": list(baselines if baselines is not None else ["magnitude"]),
        "evaluation": {"max_docs": EVAL_DOCS, "min_loss_tokens": 0, "mc_items": 1,
                       "max_tokens": max_tokens, "other_languages": [], "sweep_ratios": [],
                       "measure_speed": measure_speed, "speed_iters": 1},
        "storage_root": str(storage_root),
    }
    return yaml.safe_dump(spec, sort_keys=False)
