"""The heal stage (optional, `heal:` in the spec): a sliced checkpoint distilled from the dense
model on the training side of the expert's calibration corpora plus general text
(cusprun.healing), written in the sliced checkpoint's layout, verified, then committed with its
healing record (settings, cost, loss curve). Its key: the slice's, the dense model's
fingerprint, the healing corpora's hashes, the settings and the device that ran it."""
from __future__ import annotations

import json
from collections.abc import Callable

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import (artifact_dir, base_path, check_runtime, commit_stage,
                                            corpus_table, reused)
from cusprun.storage import ArtifactStore


def healing_documents(store: ArtifactStore, corpora: dict[str, list[dict]]
                      ) -> dict[str, list[tuple[str, str]]]:
    """group -> (doc_id, text) of its corpora's training side (splits cusprun.healing.data.
    TRAIN_SPLITS): never a held-out evaluation document."""
    from cusprun.healing.data import TRAIN_SPLITS

    out: dict[str, list[tuple[str, str]]] = {}
    for group, records in corpora.items():
        for c in records:
            for split in TRAIN_SPLITS:
                t = corpus_table(store, c, split)
                out.setdefault(group, []).extend(zip(t.column("doc_id").to_pylist(),
                                                     t.column("text").to_pylist()))
    return out


def heal_stage(store: ArtifactStore, key: str, model: dict, runtime: dict, slice: str,
               corpora: dict[str, list[dict]], heal: dict, refresh: bool = False,
               on_step: Callable[[int, int], None] | None = None) -> dict:
    """`slice`: the key of the sliced checkpoint to heal; `corpora`: group -> corpus records
    (the expert's dimensions and 'general'); `heal`: HealSpec settings."""
    from cusprun.healing import HealSpec
    from cusprun.healing.distill import heal as run_heal
    from cusprun.pipeline.stages.publish import checkpoint_matches_config

    if (done := reused(store, "heal", key, refresh)) is not None:
        return done
    spec = HealSpec.model_validate(heal)
    rt = check_runtime(runtime)
    src = artifact_dir(store, "slice", slice)
    meta = json.loads((src / "cusprun.json").read_text())
    texts = {g: [t for _, t in docs] for g, docs in healing_documents(store, corpora).items()}
    with timed(f"heal {meta.get('method')} ({spec.tokens} tokens, {spec.train}, {rt.device})"), \
            scratch_dir("heal", key) as out:
        record = run_heal(src, base_path(store, model), texts, spec, out / "model",
                          device=rt.device, on_step=on_step)
        n = checkpoint_matches_config(out / "model")
        expected = meta.get("params", {}).get("pruned", {}).get("total")
        if expected is not None and n != expected:
            raise ValueError(f"healed checkpoint has {n} parameters, the slice {expected}")
        return commit_stage(store, "heal", key, out / "model", {
            "method": meta.get("method"), "ratio": meta.get("achieved_ratio", meta.get("ratio")),
            "slice": slice, "params": meta.get("params", {}),
            **{k: record[k] for k in ("tokens", "steps", "wall_s", "train_s", "teacher_s",
                                      "tokens_per_s", "device", "device_name", "kl_before",
                                      "kl_after", "peak_rss_bytes")}})
