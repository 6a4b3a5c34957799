"""The work list of a build: every stage it needs, with its content key and its inputs.

Pure: from the spec, the resolved base model, the prepared corpora (their content hashes) and the
resolved runtime, it says what each stage will compute and under which key, before anything
runs. The flow only walks it; tests check keys without a Prefect server. A key holds what
decides the stage's output: upstream keys, settings, what 'auto' resolved to, and the version of
the stage's code (cusprun.pipeline.keys)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cusprun.pipeline.keys import content_key
from cusprun.storage.layout import stage_key
from cusprun.pipeline.plan_inputs import (baseline_job, baseline_setup, calibration_corpora,
                                          compensation_config, evaluation_corpora, gram_tokens,
                                          needs_grams, probe_tokens, prune_config,
                                          slice_compensation, uses_holdback)
from cusprun.pipeline.runtime import Runtime
from cusprun.pipeline.spec import EvaluationOptions, ExpertSpec
from cusprun.plans.rounds import round_targets


@dataclass
class Job:
    """One stage run: `key` is its content key (the artifact lives at layout.stage_key(stage,
    key)); `inputs` are what the stage function receives besides store and key."""

    stage: str
    key: str
    label: str
    inputs: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return stage_key(self.stage, self.key)


@dataclass
class StatisticsJob:
    """One calibration corpus: its statistics and, for the expert's own dimensions when
    compensation needs them, its Grams (computed by the same pass)."""

    group: str
    corpus: dict
    stats: Job
    grams: Job | None = None


@dataclass
class Round:
    """One round of iterative pruning (spec.rounds > 1) towards one target ratio. Round 1 plans
    on the dense statistics (its `statistics` are empty: the build's dense pass) at target/k;
    round i > 1 collects statistics (and Grams) of every calibration corpus on `model`, round
    i-1's slice, plans on them up to the cumulative target*i/k and slices that checkpoint."""

    index: int
    model: dict
    statistics: list[StatisticsJob]
    plan: Job
    slice: Job


@dataclass
class WorkList:
    runtime: Runtime
    statistics: list[StatisticsJob]
    scores: Job | None
    plans: dict[tuple[str, float], Job]
    slices: dict[tuple[str, float], Job]
    evaluation: Job | None
    rounds: dict[float, list[Round]] = field(default_factory=dict)
    heals: dict[tuple[str, float], Job] = field(default_factory=dict)

    def stats_of(self, group: str) -> list[Job]:
        return [s.stats for s in self.statistics if s.group == group]

    @property
    def grams(self) -> list[Job]:
        return [s.grams for s in self.statistics if s.grams is not None]


def corpus_jobs(spec: ExpertSpec, identities: dict[str, str]) -> tuple[dict[str, list[Job]],
                                                                          dict[str, Job]]:
    """(calibration corpora by dimension, held-out evaluation corpora by 'dimension=value'):
    each keyed by its spec and the current identity of its source (`identities[source]`, from
    cusprun.pipeline.identity: what the files it matches are now)."""
    def job(c: dict) -> Job:
        return Job("corpus", content_key("corpus", c, identities.get(c["source"], "")),
                   f"corpus {c['dimension']}={c['value']} ({c['source']})", {"corpus": c})

    calib = {g: [job(c) for c in cs] for g, cs in calibration_corpora(spec).items()}
    return calib, {name: job(c) for name, c in evaluation_corpora(spec).items()}


def _ratios(spec: ExpertSpec) -> list[float]:
    sweep = spec.evaluation.sweep_ratios if spec.evaluation.enabled else []
    return list(spec.target_ratios) + [r for r in sweep if r not in spec.target_ratios]


def plan_work(spec: ExpertSpec, model: dict, corpora: dict[str, list[dict]],
              eval_corpora: dict[str, dict], runtime: Runtime,
              stats_runtime: Runtime | None = None) -> WorkList:
    """The work list of a build (see module docstring). `corpora`: dimension (and 'general') ->
    prepared corpus records; `eval_corpora`: name -> prepared held-out corpus record."""
    fp = model["fingerprint"]
    srt = stats_runtime or runtime
    stats = _statistics_jobs(spec, fp, corpora, srt)
    own = [s for s in stats if s.group != "general"]
    general = [s.stats.key for s in stats if s.group == "general"]
    gram_keys = [s.grams.key for s in own if s.grams is not None]
    comp = compensation_config(spec)

    scores = None
    if spec.baselines:
        scores = Job("scores", content_key("scores", fp, sorted(spec.baselines), general, spec.seed),
                     "baseline unit scores", {"methods": sorted(spec.baselines), "general": general,
                                              "seed": spec.seed})
    plans: dict[tuple[str, float], Job] = {}
    measured = uses_holdback(spec)
    heldback = {g: [s.corpus for s in own if s.group == g] for g in dict.fromkeys(s.group for s in own)}

    def cusprun_plan(fp: str, stats: list[StatisticsJob], ratio: float, label: str,
                     previous: str | None = None) -> Job:
        """Cus-Prun's plan on the model `fp` from its `stats`; `previous`: the plan of the round
        before (iterative pruning; its key then joins this one's)."""
        own = [s for s in stats if s.group != "general"]
        general = [s.stats.key for s in stats if s.group == "general"]
        gram_keys = [s.grams.key for s in own if s.grams is not None]
        by_dim = {g: [s.stats.key for s in own if s.group == g] for g in sorted(heldback)}
        prune = prune_config(spec, ratio)
        search = ({"grams": gram_keys, "compensation": comp, "max_tokens": probe_tokens(spec),
                   "heldback": {g: [c["hash"] for c in cs] for g, cs in heldback.items()},
                   **runtime.identity("probe_precision")} if measured else None)
        chain = [previous] if previous else []
        return Job(
            "plan", content_key("plan", fp, [by_dim[g] for g in sorted(by_dim)], general, prune,
                                search, *chain),
            label,
            {"stats": by_dim, "general": general, "prune": prune,
             "grams": gram_keys if (measured or comp["mode"] != "none") else [],
             "heldback": heldback if measured else {}, "compensation": comp,
             "probe_max_tokens": probe_tokens(spec), "probe_precision": runtime.probe_precision,
             **({"previous": previous} if previous else {})})

    iterative = spec.rounds > 1
    sweep_ratios = spec.evaluation.sweep_ratios if spec.evaluation.enabled else []
    for ratio in _ratios(spec):
        if not iterative or ratio in sweep_ratios:   # iterative targets: see rounds below
            plans[("cusprun", ratio)] = cusprun_plan(fp, stats, ratio, f"Cus-Prun plan at {ratio:g}")
        for method in spec.baselines:     # each with its own setup where it brings one (flap)
            setup = baseline_setup(spec, method, model.get("architecture"))
            plans[(method, ratio)] = Job(
                "baseline", content_key("baseline", scores.key, method, ratio, setup),
                f"{method} plan at {ratio:g}",
                {**baseline_job(spec, method, ratio), "scores": scores.key})

    # what each method's slice and sweep points compensate with (cusprun: comp and gram_keys)
    comp_of = {m: slice_compensation(spec, m, model.get("architecture"), gram_keys, general)
               for m in ["cusprun", *spec.baselines]}
    slice_job = lambda m, r, p, comp, label: Job(  # noqa: E731
        "slice", content_key("slice", p.key, comp), label, {"plan": p.key, **comp})
    slices = {(m, r): slice_job(m, r, p, comp_of[m], f"slice {m} at {r:g}")
              for (m, r), p in plans.items() if r in spec.target_ratios
              and not (iterative and m == "cusprun")}
    rounds: dict[float, list[Round]] = {}
    for ratio in spec.target_ratios if iterative else []:
        chain: list[Round] = []
        for i, cumulative in enumerate(round_targets(ratio, spec.rounds), start=1):
            at = f"round {i}/{spec.rounds} to {ratio:g}"
            if i == 1:   # today's one-shot plan and slice at target/k, on the dense statistics
                rm, rstats = model, []
                p = cusprun_plan(fp, stats, cumulative, f"Cus-Prun plan at {cumulative:g} ({at})")
            else:
                rm = round_model(model, chain[-1].slice.key)
                rstats = _statistics_jobs(spec, rm["fingerprint"], corpora, srt, f" ({at})")
                p = cusprun_plan(rm["fingerprint"], rstats, cumulative,
                                 f"Cus-Prun plan at {cumulative:g} ({at})", chain[-1].plan.key)
            comp_i = slice_compensation(spec, "cusprun", model.get("architecture"),
                                        [s.grams.key for s in rstats or stats if s.grams
                                         and s.group != "general"],
                                        [s.stats.key for s in rstats or stats
                                         if s.group == "general"])
            chain.append(Round(i, rm, rstats, p, slice_job("cusprun", cumulative, p, comp_i,
                                                           f"slice cusprun ({at})")))
        rounds[ratio] = chain
        slices[("cusprun", ratio)] = chain[-1].slice

    heals = heal_jobs(spec, fp, corpora, slices, runtime)
    evaluation = None
    if spec.evaluation.enabled:
        options = {**spec.evaluation.model_dump(), "seed": spec.seed,
                   "own_language": spec.language.value if spec.language else None,
                   "compensation": comp, "sweep_precision": runtime.sweep_precision}
        sweep = {f"{m}@{r:g}": {"plan": p.key, "method": m, "ratio": r, **comp_of[m]}
                 for (m, r), p in plans.items() if r in spec.evaluation.sweep_ratios}
        candidates = {f"{m}@{r:g}": {"key": s.key, "method": m, "ratio": r}
                      for (m, r), s in slices.items()}
        healing = {healed_name(m, r): {"one_shot": f"{m}@{r:g}", "key": h.key}
                   for (m, r), h in heals.items()}
        candidates.update({healed_name(m, r): {"key": h.key, "stage": "heal", "method": m,
                                                "ratio": r} for (m, r), h in heals.items()})
        key = content_key("evaluate", fp, sorted(s.key for s in slices.values()),
                          *([sorted(h.key for h in heals.values())] if heals else []),
                          {n: c["hash"] for n, c in eval_corpora.items()},
                          {k: v for k, v in options.items() if k not in EvaluationOptions.SPEED_ONLY},
                          sorted(v["plan"] for v in sweep.values()), gram_keys,
                          runtime.identity("sweep_precision"))
        inputs = {k: options[k] for k in ("max_docs", "mc_items", "max_tokens", "min_loss_tokens",
                                           "other_languages", "seed", "own_language")}
        dense_key = content_key("dense-eval", fp, {n: c["hash"] for n, c in eval_corpora.items()},
                                inputs, runtime.identity())
        evaluation = Job("evaluate", key, "evaluation", {
            "candidates": candidates, "eval_corpora": eval_corpora, "options": options,
            "dense_key": dense_key,
            "overlap_plan": (rounds[spec.target_ratios[0]][-1].plan.key if iterative
                             else plans[("cusprun", spec.target_ratios[0])].key), "sweep": sweep,
            "grams": gram_keys if comp["mode"] != "none" else [],
            **({"healing": healing} if healing else {})})
    return WorkList(runtime, stats, scores, plans, slices, evaluation, rounds, heals)


def _statistics_jobs(spec: ExpertSpec, fp: str, corpora: dict[str, list[dict]], srt: Runtime,
                     suffix: str = "") -> list[StatisticsJob]:
    """Statistics (and, where compensation needs them, Grams) of every calibration corpus on the
    model whose fingerprint is `fp`."""
    stats: list[StatisticsJob] = []
    for group, records in corpora.items():
        for c in records:
            label = f"{group}={c['value']}{suffix}"
            s = Job("stats", content_key("stats", fp, c["hash"], {"max_tokens": spec.max_tokens,
                                                                 **srt.identity()}),
                    f"statistics {label}")
            g = None
            if needs_grams(spec) and group != "general":
                cap = {"max_docs": spec.gram_docs} if spec.gram_docs else {}
                g = Job("grams", content_key("grams", fp, c["hash"], {
                    "max_tokens": gram_tokens(spec), **cap, **srt.identity("gram_precision")}),
                    f"compensation Grams {label}", {"max_docs": spec.gram_docs})
            stats.append(StatisticsJob(group, c, s, g))
    return stats


def round_model(model: dict, slice_key: str) -> dict:
    """The model a round after the first runs on: the previous round's slice (a real, smaller
    checkpoint in the store). Its fingerprint names that slice's content key, so statistics,
    plans and slices made on it are keyed apart from the base model's and chain on the slice."""
    return {**model, "fingerprint": f"round:{slice_key}", "slice": slice_key}


def healed_name(method: str, ratio: float) -> str:
    """The report's name of a healed slice, beside its one-shot `method@ratio`."""
    return f"{method}@{ratio:g}+heal"


def heal_jobs(spec: ExpertSpec, fp: str, corpora: dict[str, list[dict]],
              slices: dict[tuple[str, float], Job], runtime: Runtime) -> dict[tuple[str, float], Job]:
    """One heal job per slice the spec heals (the expert's, and heal.baselines' or every
    baseline's), keyed by the slice, the dense model, the healing corpora (the calibration
    corpora of the dimensions and general text), the settings and the device."""
    if spec.heal is None:
        return {}
    healed = {"cusprun", *(spec.heal.baselines if spec.heal.baselines is not None
                           else spec.baselines)}
    data = {g: [c["hash"] for c in cs] for g, cs in sorted(corpora.items())}
    settings = spec.heal.key_settings()
    return {(m, r): Job("heal", content_key("heal", s.key, fp, data, settings, runtime.identity()),
                        f"heal {m} at {r:g}", {"slice": s.key, "corpora": corpora,
                                               "heal": spec.heal.model_dump()})
            for (m, r), s in slices.items() if m in healed}
