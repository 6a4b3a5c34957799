"""The `build-expert` flow: resolve -> corpora -> statistics per dimension (concurrently, or on the
gpu work pool) -> merge masks -> baselines -> slice -> evaluate -> publish.

Tasks exchange only URIs, hashes and small dicts; each heavy task is cached by a content key.
A cached result is reused only while its artifact is still in the store."""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from cusprun.models.loading import load_config
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from cusprun.models.embedded import license_card
from cusprun.pipeline.artifacts import read_done
from cusprun.pipeline.context import invalidate, is_done
from cusprun.pipeline.identity import source_identity
from cusprun.pipeline.keys import content_key
from cusprun.pipeline.plan_inputs import (calibration_corpora, check_fits_model, compensation_config,
                                          evaluation_corpora, fuse_grams, gram_tokens, grams_key,
                                          needs_grams, probe_tokens, prune_config, stats_key,
                                          uses_holdback)
from cusprun.pipeline.spec import EvaluationOptions, ExpertSpec, Stage
from flows.distributed import collect_stats_remote
from tasks import stages as t
from tasks.common import open_store_ref

PREFIX = {"corpus": "corpora", "stats": "stats", "grams": "grams", "plan": "plans", "baseline": "plans",
          "slice": "sliced", "evaluate": "reports"}


def storage_ref(spec: ExpertSpec, storage_block: str | None) -> dict:
    """Where artifacts go: the root, and the Prefect Secret block holding fsspec options as a dict
    (endpoint, credentials) if any; tasks load the block themselves."""
    return {"root": spec.storage_root, "block": storage_block}


def pending(store, stage: str, key: str, refresh: list[str]) -> bool:
    """Whether a stage will run: asked to refresh, or its artifact is not in the store."""
    return stage in refresh or not is_done(store, f"{PREFIX[stage]}/{key}")


def prepare(store, stage: str, key: str, refresh: list[str]) -> bool:
    """Remove the artifact of a stage asked to refresh; whether the stage will run."""
    if stage in refresh:
        invalidate(store, f"{PREFIX[stage]}/{key}")
    return pending(store, stage, key, refresh)


def submit(task, stage: str, key: str, store, storage: dict, refresh: list[str], **kwargs):
    """Submit a heavy task; force it when asked (its old artifact is removed first) or when the
    store lost its artifact."""
    force = prepare(store, stage, key, refresh)
    return task.with_options(refresh_cache=force).submit(stage=stage, key=key, storage=storage, **kwargs)


@flow(name="build-expert", log_prints=True)
def build_expert(spec: ExpertSpec = ExpertSpec(), refresh: list[Stage] = [],  # noqa: B006
                 storage_block: str | None = None) -> dict:
    """Build, evaluate and publish one customized expert.

    Args:
        spec: The expert: base model, dimensions and their corpora, pruning and evaluation.
        refresh: Stages to recompute even when their artifact is in the store.
        storage_block: Name of a Prefect Secret block holding s3fs options (endpoint,
            credentials) for an s3:// storage root; none: the usual AWS sources.
    """
    log = get_run_logger()
    t0 = time.perf_counter()
    storage = storage_ref(spec, storage_block)
    t.check_inputs(spec, storage)  # store, model, corpus sources: seconds, before heavy work
    store = open_store_ref(storage)
    model = t.resolve_base_model(spec.base_model, storage)
    log.info("base model %s: %s, fingerprint %s", spec.base_model, model["architecture"],
             model["fingerprint"])
    config = load_config(model["path"])
    check_fits_model(spec, config)

    # Corpora: calibration corpora per dimension (+ general text), held-out evaluation corpora.
    opts = store.storage_options or None  # for source identities (ETags)

    def corpus(c: dict):
        key = content_key("corpus", c, source_identity(c["source"], opts))
        return submit(t.prepare_corpus, "corpus", key, store, storage, refresh, corpus=c)

    calib_futs = {g: [corpus(c) for c in specs] for g, specs in calibration_corpora(spec).items()}
    eval_futs = {name: corpus(c) for name, c in evaluation_corpora(spec).items()}
    corpora = {g: [f.result() for f in fs] for g, fs in calib_futs.items()}
    eval_corpora = {name: f.result() for name, f in eval_futs.items()}
    for g, cs in corpora.items():
        log.info("calibration %s: %s", g, ", ".join(f"{c['source']} ({c['n_calib']} docs)" for c in cs))

    # Statistics per calibration corpus, concurrently (or as runs on the gpu work pool).
    jobs = {(g, i): (stats_key(model["fingerprint"], c["hash"], spec), c)
            for g, cs in corpora.items() for i, c in enumerate(cs)}
    # Compensation Grams of the expert's own calibration corpora. Already in the store: their
    # commit record is the result (a statistics pass may have made them, which Prefect's cache
    # cannot know). To compute: by the statistics pass itself when that runs too and the Grams fit
    # in memory, else by a layer-by-layer pass of their own.
    gram_done, gram_futs, fused = {}, {}, {}
    if needs_grams(spec):
        fuse = fuse_grams(spec, config)
        for (g, i), (skey, c) in jobs.items():
            if g == "general":
                continue
            gkey = grams_key(model["fingerprint"], c["hash"], spec)
            record = None if "grams" in refresh else read_done(store, f"{PREFIX['grams']}/{gkey}")
            if record is not None:
                gram_done[(g, i)] = record
            elif fuse and pending(store, "stats", skey, refresh):
                prepare(store, "grams", gkey, refresh)
                fused[(g, i)] = gkey
            else:
                gram_futs[(g, i)] = submit(t.collect_grams, "grams", gkey, store, storage, refresh,
                                           model=model, corpus=c, max_tokens=gram_tokens(spec),
                                           max_docs=spec.gram_docs, batch_size=spec.batch_size,
                                           precision=spec.gram_precision)
    if spec.execution == "distributed":
        done = collect_stats_remote(jobs, storage, model, spec, refresh)
    else:
        futs = {j: submit(t.collect_stats, "stats", key, store, storage, refresh, model=model, corpus=c,
                          max_tokens=spec.max_tokens, batch_size=spec.batch_size,
                          **({"grams_key": fused[j], "grams_precision": spec.gram_precision}
                             if j in fused else {}))
                for j, (key, c) in jobs.items()}
        done = {j: f.result() for j, f in futs.items()}
    gram_done.update({j: f.result() for j, f in gram_futs.items()})
    gram_done.update({j: done[j]["grams"] for j in fused})
    stats = {g: [done[(g, i)] for i in range(len(cs))] for g, cs in corpora.items()}
    general = stats.pop("general", [])
    grams = [gram_done[j] for j in sorted(gram_done)]
    gram_keys = [g["key"] for g in grams]
    comp = compensation_config(spec)

    # Plans: Cus-Prun and every baseline at every target ratio and every sweep ratio.
    ratios = list(spec.target_ratios) + [r for r in (spec.evaluation.sweep_ratios if spec.evaluation.enabled
                                                     else []) if r not in spec.target_ratios]
    measured = uses_holdback(spec)
    heldback = {g: cs for g, cs in corpora.items() if g != "general"} if measured else {}
    plan_futs = {}
    for ratio in ratios:
        prune = prune_config(spec, ratio)
        search = ({"grams": gram_keys, "heldback": {g: [c["hash"] for c in cs] for g, cs in heldback.items()},
                   "compensation": comp, "max_tokens": probe_tokens(spec),
                   # float32 probes keep the key of before (the requested value: auto resolves per device)
                   **({"precision": spec.probe_precision} if spec.probe_precision != "float32" else {})}
                  if measured else None)
        key = content_key("plan", model["fingerprint"], [[s["key"] for s in stats[g]] for g in sorted(stats)],
                          [s["key"] for s in general], prune, search)
        plan_futs[("cusprun", ratio)] = submit(t.merge_masks, "plan", key, store, storage, refresh,
                                               model=model, stats=stats, general=general, prune=prune,
                                               grams=grams, heldback=heldback, compensation=comp,
                                               probe_max_tokens=probe_tokens(spec),
                                               probe_precision=spec.probe_precision)
        for method in spec.baselines:
            key = content_key("baseline", model["fingerprint"], method, ratio, spec.layout,
                              [s["key"] for s in general], spec.seed, spec.ffn_multiple)
            plan_futs[(method, ratio)] = submit(t.baseline_plan, "baseline", key, store, storage, refresh,
                                                model=model, method=method, ratio=ratio,
                                                layout=spec.layout, general=general, seed=spec.seed,
                                                ffn_multiple=spec.ffn_multiple)
    plans = {k: f.result() for k, f in plan_futs.items()}

    # Slice every plan at a target ratio into a real, smaller (compensated) checkpoint.
    card = {"expert": spec.name, "base_model": spec.base_model, **license_card(model.get("license"))}
    comp_key = {"compensation": comp, "grams": gram_keys if comp["mode"] != "none" else []}
    slice_futs = {(m, r): submit(t.slice_weights, "slice", content_key("slice", p["key"], comp_key), store,
                                 storage, refresh, model=model, plan=p, card=card, grams=grams,
                                 compensation=comp)
                  for (m, r), p in plans.items() if r in spec.target_ratios}
    sliced = {k: f.result() for k, f in slice_futs.items()}

    # Evaluate dense vs Cus-Prun vs baselines on held-out data, then publish the expert.
    report = None
    if spec.evaluation.enabled:
        candidates = {f"{m}@{r:g}": {"key": s["key"], "method": m, "ratio": r}
                      for (m, r), s in sliced.items()}
        options = {**spec.evaluation.model_dump(), "seed": spec.seed,
                   "own_language": spec.language.value if spec.language else None,
                   "compensation": comp}
        sweep = {f"{m}@{r:g}": {"plan": p, "method": m, "ratio": r} for (m, r), p in plans.items()
                 if r in spec.evaluation.sweep_ratios}
        key = content_key("evaluate", model["fingerprint"], sorted(s["key"] for s in sliced.values()),
                          {n: c["hash"] for n, c in eval_corpora.items()},
                          {k: v for k, v in options.items() if k not in EvaluationOptions.SPEED_ONLY},
                          sorted(v["plan"]["key"] for v in sweep.values()), gram_keys)
        report = submit(t.evaluate, "evaluate", key, store, storage, refresh, model=model,
                        candidates=candidates, eval_corpora=eval_corpora, options=options,
                        overlap_plan=plans[("cusprun", spec.target_ratios[0])], sweep=sweep,
                        grams=grams).result()
        create_markdown_artifact(report["markdown"], key=f"{spec.name}-evaluation",
                                 description=f"Evaluation of expert {spec.name}")
        log.info("evaluation:\n%s", report["markdown"])
    published = t.publish(storage, spec.name, sliced[("cusprun", spec.target_ratios[0])], report)
    create_link_artifact(published["uri"], link_text=f"{spec.name} {published['version']}",
                         key=f"{spec.name}-expert", description="Published expert checkpoint")
    log.info("published %s version %s at %s (%.1fs)", spec.name, published["version"],
             published["uri"], time.perf_counter() - t0)
    return {"expert": published, "report": report["uri"] if report else None,
            "model": {k: model[k] for k in ("ref", "fingerprint", "architecture")},
            "plans": {f"{m}@{r:g}": p["achieved_ratio"] for (m, r), p in plans.items()}}
