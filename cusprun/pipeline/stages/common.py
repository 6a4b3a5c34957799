"""What every stage needs besides its own work: the base model on this worker, committed
artifacts read back (corpora, statistics, Grams, plans), and the one cache rule: a stage whose
artifact is committed under its key returns that record instead of computing it again."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from cusprun.errors import SpecError
from cusprun.models import resolve_model
from cusprun.pipeline.artifacts import read_done
from cusprun.pipeline.context import commit, local_copy, scratch_dir
from cusprun.storage import ArtifactStore
from cusprun.storage.layout import stage_key

log = logging.getLogger("cusprun.pipeline")
# (store root, stage key) that reused(refresh=True) handed to a stage: its next commit
# replaces the committed artifact instead of adopting it (reused and commit_stage run in one
# task, so the stage functions need not carry the flag to their commits).
_refreshing: set[tuple[str, str]] = set()
_refreshing_lock = threading.Lock()


def model_info(ref: str, storage_options: dict | None = None) -> dict:
    """Resolve the base model on this machine; downstream stages carry only ref + fingerprint."""
    r = resolve_model(ref, storage_options=storage_options)
    return {"ref": ref, "fingerprint": r.fingerprint, "architecture": r.architecture,
            "path": str(r.path), "license": r.license}


def local_model(ref: str, fingerprint: str, storage_options: dict | None = None) -> Path:
    """The base model on this worker, refusing a model that changed since the flow started."""
    r = resolve_model(ref, storage_options=storage_options)
    if r.fingerprint != fingerprint:
        raise SpecError(f"Base model {ref!r} has fingerprint {r.fingerprint} on this worker, but the "
                        f"flow started with {fingerprint}; rerun the flow to use the new revision.")
    return r.path


def base_path(store: ArtifactStore, model: dict) -> Path:
    return local_model(model["ref"], model["fingerprint"], store.storage_options or None)


def model_dir(store: ArtifactStore, model: dict) -> Path:
    """The checkpoint a pass runs on: the base model, or, in a round of iterative pruning after
    the first (worklist.round_model), the previous round's slice from the store."""
    if model.get("slice"):
        return artifact_dir(store, "slice", model["slice"])
    return base_path(store, model)


def check_runtime(runtime: dict):
    """The runtime this stage's keys were made for, refused where this worker cannot run it."""
    import torch

    from cusprun.pipeline.runtime import Runtime

    rt = Runtime.model_validate(runtime)
    if rt.device == "cuda" and not torch.cuda.is_available():
        raise SpecError("This worker has no CUDA, but the build's cache keys are for statistics "
                        "computed on CUDA (device 'auto' in distributed mode means the gpu pool); "
                        "run a GPU worker, or set device: cpu in the spec.")
    return rt


def open_base(store: ArtifactStore, model: dict, runtime: dict, precision: str | None = None):
    """(LayeredModel, tokenizer) of the base model (or a round's model: model_dir) for passes:
    whole or streamed, in the dtype the runtime gives passes at `precision` (a field name:
    Runtime.pass_dtype)."""
    from cusprun.engine import open_model

    return open_model(model_dir(store, model), **check_runtime(runtime).load_options(precision))


def reused(store: ArtifactStore, stage: str, key: str, refresh: bool = False) -> dict | None:
    """The committed record of the stage's artifact, marked reused; None when it must run (not
    committed, or asked to refresh: then the stage's commit replaces the committed artifact,
    deleting nothing a concurrent reader may hold). A worker whose code for the stage is not the
    code the key was made for refuses here, before any work."""
    from cusprun.pipeline.keys import check_code

    check_code(stage, key)
    path = stage_key(stage, key)
    if refresh:
        with _refreshing_lock:
            _refreshing.add((store.root, path))
        return None
    record = read_done(store, path)
    if record is None:
        return None
    log.info("%s: reused from the store", path)
    return {**record, "reused": True}


def commit_stage(store: ArtifactStore, stage: str, key: str, local_dir: Path, summary: dict) -> dict:
    """Commit the stage's artifact; its DONE record names the code version that computed it."""
    from cusprun.pipeline.keys import code_version

    summary = {**summary, "code_version": code_version(stage)}
    path = stage_key(stage, key)
    with _refreshing_lock:
        replace = (store.root, path) in _refreshing
        _refreshing.discard((store.root, path))
    return {**commit(store, local_dir, path, summary, replace=replace), "reused": False}


def artifact_dir(store: ArtifactStore, stage: str, key: str) -> Path:
    return local_copy(store, stage_key(stage, key))


def corpus_table(store: ArtifactStore, corpus: dict, split: str | None):
    from cusprun.corpora import read_corpus

    return read_corpus(local_copy(store, corpus["key"]) / corpus["file"], split=split)


def gram_set(store: ArtifactStore, keys: list[str], cache_bytes: int = 1 << 30):
    """The summed Grams of the given grams artifacts, or None when there are none."""
    from cusprun.compensation import GramSet

    return GramSet([artifact_dir(store, "grams", k) for k in keys], cache_bytes) if keys else None


def load_stats(store: ArtifactStore, key: str):
    from cusprun.scoring import load_stats as load

    return load(artifact_dir(store, "stats", key))


def heldback_texts(store: ArtifactStore, corpora: dict[str, list[dict]]) -> dict[str, list[str]]:
    """dimension -> its corpora's held-back documents (split 'holdback')."""
    return {dim: [t for c in cs for t in corpus_table(store, c, "holdback").column("text").to_pylist()]
            for dim, cs in corpora.items()}


LOCAL_PLAN = "round_plan.json"
"""A round of iterative pruning after the first: its plan on the round's own (partly pruned)
model, which its slice applies; plan.json holds the same plan in base-model terms."""


def write_plan(store: ArtifactStore, stage: str, key: str, plan, local=None) -> dict:
    with scratch_dir("plan", key) as out:
        (out / "plan.json").write_text(plan.model_dump_json(indent=2))
        if local is not None:
            (out / LOCAL_PLAN).write_text(local.model_dump_json(indent=2))
        return commit_stage(store, stage, key, out, {
            "method": plan.method, "target_ratio": plan.target_ratio,
            "achieved_ratio": plan.achieved_ratio, "layout": plan.layout,
            **({"round_ratio": local.achieved_ratio} if local is not None else {})})


def read_plan(store: ArtifactStore, key: str, local: bool = False):
    """The plan in base-model terms; `local`: the plan the slice applies (a round's own plan
    where there is one)."""
    from cusprun.plans.plan import PruningPlan

    d = artifact_dir(store, "plan", key)
    f = d / LOCAL_PLAN if local and (d / LOCAL_PLAN).exists() else d / "plan.json"
    return PruningPlan.model_validate_json(f.read_text())
