"""The `build-expert` flow: resolve -> corpora -> statistics (one pass for every corpus, or runs
on the gpu work pool) -> baseline scores -> plans -> slices (with rounds > 1: round by round,
statistics -> plan -> slice on the round before's slice) -> healing (optional) -> evaluation
-> publish.

The flow only walks the build's work list (cusprun.pipeline.worklist): every key is computed
there, from content and code, before a stage runs. Tasks exchange URIs, keys and small dicts;
each stage returns its artifact's record from the store when it is already there."""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from cusprun.models.loading import load_config
from cusprun.pipeline.identity import source_identity
from cusprun.pipeline.plan_inputs import check_fits_model, expert_card
from cusprun.pipeline.runtime import resolve_runtime, statistics_runtime
from cusprun.pipeline.spec import ExpertSpec, Stage
from cusprun.pipeline.worklist import WorkList, corpus_jobs, plan_work
from flows.distributed import collect_stats_remote
from tasks import build as t
from tasks.common import open_store_ref


def storage_ref(spec: ExpertSpec, storage_block: str | None) -> dict:
    """Where artifacts go: the root, and the Prefect Secret block holding fsspec options as a dict
    (endpoint, credentials) if any; tasks load the block themselves."""
    return {"root": spec.storage_root, "block": storage_block}


def _statistics(spec: ExpertSpec, statistics: list, storage: dict, model: dict, runtime: dict,
                refresh: list[str]) -> list[dict]:
    jobs = [{"group": s.group, "corpus": s.corpus, "stats": s.stats.key,
             "grams": s.grams.key if s.grams else None,
             "grams_max_docs": s.grams.inputs["max_docs"] if s.grams else None}
            for s in statistics]
    if spec.execution == "distributed":
        return collect_stats_remote(jobs, storage, model, runtime, spec, refresh)
    return t.stats_task.submit(storage, jobs, model, runtime, spec.max_tokens,
                                       spec.batch_size, refresh).result()


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
    check_fits_model(spec, load_config(model["path"]))
    runtime = resolve_runtime(spec)
    log.info("runtime: %s", runtime.model_dump())

    # Corpora: calibration corpora per dimension (+ general text), held-out evaluation corpora.
    opts = store.storage_options or None  # for source identities (file listings, ETags)
    calib, held = corpus_jobs(spec, {s: source_identity(s, opts, log=log) for s in _sources(spec)})
    prep = lambda j: t.corpus_task.submit(j.key, storage, j.inputs["corpus"],  # noqa: E731
                                             "corpus" in refresh)
    calib_futs = {g: [prep(j) for j in js] for g, js in calib.items()}
    eval_futs = {name: prep(j) for name, j in held.items()}
    corpora = {g: [f.result() for f in fs] for g, fs in calib_futs.items()}
    eval_corpora = {name: f.result() for name, f in eval_futs.items()}
    for g, cs in corpora.items():
        log.info("calibration %s: %s", g, ", ".join(f"{c['source']} ({c['n_calib']} docs)" for c in cs))

    wl = plan_work(spec, model, corpora, eval_corpora, runtime, statistics_runtime(spec))
    rt = runtime.model_dump()

    # Statistics and Grams of every calibration corpus, one pass (or runs on the gpu pool).
    srt = statistics_runtime(spec).model_dump()
    stats = _statistics(spec, wl.statistics, storage, model, srt, refresh)

    # Plans: baseline scores once, then Cus-Prun and every baseline at every ratio.
    scores = None
    if wl.scores is not None:
        scores = t.scores_task.submit(wl.scores.key, storage, model, rt, refresh="scores" in refresh,
                                          **wl.scores.inputs)
    plan_futs = {r: t.plan_task.submit(j.key, storage, model, rt, j.inputs, "plan" in refresh)
                 for (m, r), j in wl.plans.items() if m == "cusprun"}
    base_jobs = [{"key": j.key, **j.inputs} for (m, _), j in wl.plans.items() if m != "cusprun"]
    base = (t.baseline_task.submit(storage, base_jobs, model, "baseline" in refresh,
                                    wait_for=[scores]) if base_jobs else None)
    plans = {("cusprun", r): f.result() for r, f in plan_futs.items()}
    if base is not None:
        done = dict(zip([j["key"] for j in base_jobs], base.result()))
        plans.update({k: done[j.key] for k, j in wl.plans.items() if k[0] != "cusprun"})

    # Slice every plan at a target ratio into a real, smaller (compensated) checkpoint; the
    # expert's card (name, base model, license) is written when it is published.
    card = expert_card(spec, model)
    slice_futs = {k: t.slice_task.submit(j.key, storage, model, j.inputs, "slice" in refresh)
                  for k, j in wl.slices.items() if not (k[0] == "cusprun" and k[1] in wl.rounds)}
    sliced = {k: f.result() for k, f in slice_futs.items()}
    rounds = {r: _rounds(spec, chain, storage, srt, rt, refresh, stats)
              for r, chain in wl.rounds.items()}       # iterative pruning (spec.rounds > 1)
    for r, done in rounds.items():
        plans[("cusprun", r)], sliced[("cusprun", r)] = done[-1]

    # Optional healing (spec `heal:`): each healed slice is its own cached stage run.
    heal_futs = {k: t.heal_task.submit(j.key, storage, model, rt, j.inputs, "heal" in refresh)
                 for k, j in wl.heals.items()}
    healed = {k: f.result() for k, f in heal_futs.items()}

    # Evaluate dense vs Cus-Prun vs baselines on held-out data, then publish the expert.
    report = None
    if wl.evaluation is not None:
        report = t.evaluate_task.submit(wl.evaluation.key, storage, model, rt, wl.evaluation.inputs,
                                   "evaluate" in refresh).result()
        create_markdown_artifact(report.get("summary_markdown") or report["markdown"],
                                 key=f"{spec.name}-evaluation",
                                 description=f"Evaluation of expert {spec.name}")
        log.info("evaluation:\n%s", report["markdown"])
    t_pub = time.perf_counter()
    expert = ("cusprun", spec.target_ratios[0])    # the healed expert when healing is on
    published = t.publish_task(storage, spec.name, healed.get(expert, sliced[expert]), report, card,
                               spec.gguf)
    published["task_s"] = round(time.perf_counter() - t_pub, 1)
    create_link_artifact(published["uri"], link_text=f"{spec.name} {published['version']}",
                         key=f"{spec.name}-expert", description="Published expert checkpoint")
    log.info("published %s version %s at %s (%.1fs)", spec.name, published["version"],
             published["uri"], time.perf_counter() - t0)
    timings = stage_timings(
        [("corpora", c) for cs in [*corpora.values(), [*eval_corpora.values()]] for c in cs]
        + [("statistics", r) for s in stats for r in s.values() if r]
        + ([("baseline scores", scores.result())] if scores is not None else [])
        + [(f"plan {m}@{r:g}", p) for (m, r), p in plans.items()]
        + [(f"round {i} of cusprun@{r:g}", rec) for r, done in rounds.items()
           for i, (p, s) in enumerate(done[:-1], start=1) for rec in (p, s)]
        + [(f"slice {m}@{r:g}", s) for (m, r), s in sliced.items()]
        + [(f"heal {m}@{r:g}", h) for (m, r), h in healed.items()]
        + ([("evaluation", report)] if report else []) + [("publish", published)])
    return {"expert": published, "report": report["uri"] if report else None,
            "model": {k: model[k] for k in ("ref", "fingerprint", "architecture")},
            "plans": {f"{m}@{r:g}": p["achieved_ratio"] for (m, r), p in plans.items()},
            **({"healed": {f"{m}@{r:g}": {k: h.get(k) for k in ("tokens", "wall_s", "device")}
                           for (m, r), h in healed.items()}} if healed else {}),
            "timings": timings}


def _rounds(spec: ExpertSpec, chain: list, storage: dict, srt: dict, rt: dict,
            refresh: list[str], stats: list[dict]) -> list[tuple[dict, dict]]:
    """Iterative pruning towards one target: each round's statistics (and Grams) on the round
    before's slice, its plan, its slice, in order (each round needs the one before). Returns
    (plan, slice) records per round; round statistics are added to `stats`."""
    out = []
    for rd in chain:
        if rd.statistics:
            stats += _statistics(spec, rd.statistics, storage, rd.model, srt, refresh)
        plan = t.plan_task.submit(rd.plan.key, storage, rd.model, rt, rd.plan.inputs,
                                  "plan" in refresh).result()
        out.append((plan, t.slice_task.submit(rd.slice.key, storage, rd.model, rd.slice.inputs,
                                              "slice" in refresh).result()))
    return out


def stage_timings(rows: list[tuple[str, dict]]) -> list[dict]:
    """One row per stage (baseline plans folded into one): what ran, its task's wall time, and
    how many of its artifacts came from the store. Tasks of one kind ran concurrently."""
    out: dict[str, dict] = {}
    for label, record in rows:
        name = "baseline plans" if label.startswith("plan ") and not label.startswith(
            "plan cusprun") else label
        row = out.setdefault(name, {"stage": name, "seconds": 0.0, "artifacts": 0, "reused": 0})
        row["seconds"] = max(row["seconds"], float(record.get("task_s") or 0.0))
        row["artifacts"] += 1
        row["reused"] += bool(record.get("reused"))
    return list(out.values())


def _sources(spec: ExpertSpec) -> list[str]:
    from cusprun.pipeline.plan_inputs import calibration_corpora, evaluation_corpora

    cs = [c for group in calibration_corpora(spec).values() for c in group]
    cs += list(evaluation_corpora(spec).values())
    return sorted({c["source"] for c in cs})
