"""The statistics stage: impact statistics of calibration corpora, and the compensation Grams of
the expert's own corpora, from ONE pass over the base model for every corpus still missing
(cusprun.steps.stats): a streamed model is read from disk once, not once per corpus.
Each corpus's statistics and Grams are committed under their own keys (Grams first)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import ExitStack

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import commit_stage, corpus_table, open_base, reused
from cusprun.storage import ArtifactStore

log = logging.getLogger("cusprun.pipeline")


def stats_stage(store: ArtifactStore, jobs: list[dict], model: dict, runtime: dict, *,
                max_tokens: int, batch_size: int, refresh: list[str] = (),
                on_progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """`jobs`: [{group, corpus (record), stats (key), grams (key or None), grams_max_docs}].
    Returns, per job, {"stats": record, "grams": record or None}."""
    from cusprun.steps.stats import statistics
    from cusprun.pipeline.runtime import Runtime
    from cusprun.scoring import CorpusJob, save_stats

    out = [{"stats": reused(store, "stats", j["stats"], "stats" in refresh),
            "grams": j["grams"] and reused(store, "grams", j["grams"], "grams" in refresh)}
           for j in jobs]
    todo = [i for i, (j, o) in enumerate(zip(jobs, out))
            if o["stats"] is None or (j["grams"] and o["grams"] is None)]
    if not todo:
        return out
    rt = Runtime.model_validate(runtime)
    names = {i: f"{jobs[i]['group']}={jobs[i]['corpus']['value']}#{i}" for i in todo}
    with timed(f"statistics pass over {len(todo)} corpora"), ExitStack() as tmp:
        lm, tok = open_base(store, model, runtime)
        work, dirs = {}, {}
        for i in todo:
            j, c = jobs[i], jobs[i]["corpus"]
            texts = corpus_table(store, c, "calib").column("text").to_pylist()
            need_grams = bool(j["grams"]) and out[i]["grams"] is None
            dirs[i] = tmp.enter_context(scratch_dir("grams", j["grams"])) if need_grams else None
            work[names[i]] = CorpusJob(
                texts, stats=out[i]["stats"] is None, grams_dir=dirs[i],
                grams_max_docs=j.get("grams_max_docs"),
                grams_extra={"model_fingerprint": model["fingerprint"], "corpus_hash": c["hash"]})
        stats = statistics(lm, tok, work, max_tokens=max_tokens, batch_size=batch_size,
                                 grams_precision=rt.gram_precision, on_progress=on_progress)
        for i in todo:
            j, c = jobs[i], jobs[i]["corpus"]
            label = {"corpus_hash": c["hash"], "dimension": c["dimension"], "value": c["value"]}
            if dirs[i] is not None:
                n_tokens = json.loads((dirs[i] / "grams.json").read_text())["n_tokens"]
                out[i]["grams"] = commit_stage(store, "grams", j["grams"], dirs[i],
                                               {"n_tokens": n_tokens, **label})
            if out[i]["stats"] is None:
                s = stats[names[i]]
                d = tmp.enter_context(scratch_dir("stats", j["stats"]))
                save_stats(s, d, model_fingerprint=model["fingerprint"], corpus_hash=c["hash"],
                           extra={"dimension": c["dimension"], "value": c["value"]})
                out[i]["stats"] = commit_stage(store, "stats", j["stats"], d,
                                               {"n_docs": s.n_docs, **label})
    return out
