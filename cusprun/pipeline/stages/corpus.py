"""The corpus stage: a source (bundled, local files, S3, hub) sampled and normalised into one
parquet file with calibration, held-back and held-out splits (cusprun.corpora)."""
from __future__ import annotations

from pathlib import Path

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import commit_stage, reused
from cusprun.storage import ArtifactStore


def corpus_stage(store: ArtifactStore, key: str, corpus: dict, refresh: bool = False) -> dict:
    from cusprun.corpora import CorpusSpec, prepare_corpus

    if (done := reused(store, "corpus", key, refresh)) is not None:
        return done
    if corpus["source"].startswith("s3://") and not corpus.get("storage_options"):
        corpus = {**corpus, "storage_options": store.storage_options}  # same endpoint as the store
    spec = CorpusSpec.model_validate(corpus)
    with timed(f"corpus {spec.source}"), scratch_dir("corpus", key) as out:
        prepared = prepare_corpus(spec, out)
        return commit_stage(store, "corpus", key, out, {
            "hash": prepared.hash, "n_docs": prepared.n_docs, "n_calib": prepared.n_calib,
            "n_eval": prepared.n_eval, "file": Path(prepared.path).name, "source": spec.source,
            "dimension": spec.dimension, "value": spec.value})
