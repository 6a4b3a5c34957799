"""cusprun.prune: a customized expert from Python, without Prefect or an artifact store.

    import cusprun
    expert = cusprun.prune("smollm2-135m", {"language": texts_en, "domain": "notes/*.txt"},
                           ratio=0.25)
    expert.save("my-expert")            # a smaller standard checkpoint

The same steps the pipeline's stages run (cusprun.steps), with the same settings: prune()'s
keyword settings are ExpertSpec fields, validated and derived (cusprun.pipeline.plan_inputs)
exactly as for `cusprun build`, and checked before any model is loaded. Closed-form
compensation is applied when the expert is used in memory or sliced."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from cusprun.api_rounds import LastRound
from cusprun.compensation import ChannelMeans, CompensationConfig, GramSet
from cusprun.errors import SpecError
from cusprun.plans.plan import PruningPlan

log = logging.getLogger(__name__)

Corpus = Sequence[str] | str | Path
"""Documents (a list of strings), or a source: a local file or folder, s3://, bundled://, hf://."""
# ExpertSpec fields that prune() takes as keyword settings (defaults: ExpertSpec's).
SETTINGS = ("rule", "score", "sigma", "allocation", "layout", "ffn_multiple", "protect_fraction",
            "min_docs", "holdback_docs", "compensation", "ridge", "gram_docs", "gram_precision",
            "probe_precision", "max_tokens", "batch_size", "streaming", "device", "hub_kernels",
            "rounds", "heal", "seed")


@dataclass
class Expert:
    """A plan for a base model, with what it takes to use or write it."""

    plan: PruningPlan                # in the base model's terms
    base: Path                       # the dense checkpoint directory
    compensation: CompensationConfig
    grams: GramSet | ChannelMeans | None = None
    report: dict = field(default_factory=dict)
    last_round: LastRound | None = None
    healed: Path | None = None
    """The healed checkpoint (prune(..., heal=...)): what model() and save() give then."""
    _model: Any = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.plan.achieved_ratio

    def _applied(self) -> tuple[Path, PruningPlan, Any]:
        """(checkpoint, plan on it, its Grams): the base, or the last round's checkpoint."""
        r = self.last_round
        return (self.base, self.plan, self.grams) if r is None else (r.checkpoint, r.plan, r.grams)

    def model(self):
        """The dense model (after rounds > 1: the round before's checkpoint) with the plan
        applied in memory (FFN neurons cut, heads zeroed, kept columns compensated): what the
        saved expert computes. Loads that checkpoint whole; a healed expert loads its healed
        checkpoint."""
        if self._model is None and self.healed is not None:
            import cusprun.slicing  # noqa: F401  (per-layer experts load through Auto classes)
            from cusprun.models.loading import load_model

            self._model = load_model(self.healed)[0]
        if self._model is None:
            from cusprun.engine import MaskSession
            from cusprun.models.loading import load_model

            path, plan, grams = self._applied()
            model, _ = load_model(path)
            MaskSession(model).apply(plan, grams=grams, config=self.compensation)
            self._model = model
        return self._model

    def save(self, out_dir: str | Path, *, card: dict | None = None, overwrite: bool = False,
             progress: bool = True, gguf: str | Sequence[str] | None = None) -> Path:
        """Write the expert as a smaller standard checkpoint (stock transformers loads it).
        `gguf`: GGUF types (cusprun.export.GGUF_TYPES, e.g. "Q8_0" or ["F16", "Q4_K_M"]) also
        written beside it for llama.cpp, checked before the checkpoint is written."""
        from cusprun.export import check_gguf_request

        types = check_gguf_request(gguf, self.plan.layout)
        out = self._save_checkpoint(Path(out_dir), card, overwrite, progress)
        if types:
            from cusprun.export import export_gguf

            export_gguf(out, out, types)
        return out

    def _save_checkpoint(self, out_dir: Path, card: dict | None, overwrite: bool,
                         progress: bool) -> Path:
        if self.healed is not None:
            return _copy_checkpoint(self.healed, Path(out_dir), card, overwrite)
        from cusprun.slicing import slice_checkpoint
        from cusprun.slicing.compensated import Compensation

        path, plan, grams = self._applied()
        out = slice_checkpoint(path, plan, out_dir, card=card, overwrite=overwrite,
                               model_fingerprint=plan.base_fingerprint, progress=progress,
                               compensation=Compensation(self.compensation, grams))
        if self.last_round is not None:
            from cusprun.steps.rounds import describe_against_base

            describe_against_base(Path(out), self.plan, path)
        return out


def _copy_checkpoint(src: Path, out: Path, card: dict | None, overwrite: bool) -> Path:
    """A healed checkpoint copied to `out` (its card rewritten when `card` is given)."""
    import shutil

    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        shutil.rmtree(out)
    shutil.copytree(src, out)
    if card:
        from cusprun.slicing.card import rewrite_card

        rewrite_card(out, card)
    return out


def build_spec(corpora: Mapping[str, Corpus], *, ratio: float | Sequence[float] | None = None,
               general: Corpus | None = None, max_docs: int | None = None,
               base_model: str = "in-memory model", **settings):
    """The ExpertSpec a prune() call stands for (no evaluation, no baselines), validated: a bad
    value raises SpecError naming it and what is accepted."""
    from pydantic import ValidationError

    from cusprun.pipeline.spec import DIMENSIONS, ExpertSpec, validation_message

    if unknown := sorted(set(settings) - set(SETTINGS)):
        raise SpecError(f"cusprun.prune has no setting {unknown[0]!r}; settings: "
                        f"{', '.join(SETTINGS)} (and ratio, method, general, max_docs)")
    if not isinstance(corpora, Mapping) or not 1 <= len(corpora) <= 3:
        raise SpecError("corpora must map 1 to 3 dimensions (language, domain, task) to "
                        f"documents or sources, got {type(corpora).__name__} of {len(corpora or {})}")
    if bad := [d for d in corpora if d not in DIMENSIONS]:
        raise SpecError(f"corpora has dimension {bad[0]!r}; accepted: {', '.join(DIMENSIONS)}")

    def dim(name: str, corpus: Corpus) -> dict:
        source = [str(corpus)] if isinstance(corpus, (str, Path)) else []
        return {"value": name, "sources": source, **({"max_docs": max_docs} if max_docs else {})}

    data = {"name": "prune", "base_model": base_model, "baselines": [],
            "evaluation": {"enabled": False}, **{d: None for d in DIMENSIONS},
            **{d: dim(d, c) for d, c in corpora.items()},
            "general": dim("general", general) if general is not None else None, **settings}
    if ratio is not None:
        data["target_ratios"] = [ratio] if isinstance(ratio, (int, float)) else list(ratio)
    try:
        return ExpertSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(validation_message("Invalid cusprun.prune setting", e)
                        .replace("target_ratios", "ratio")) from e


def _texts(spec, group: str, corpus: Corpus, work: Path) -> tuple[list[str], list[str]]:
    """(calibration documents, held-back documents) of one corpus, split as the pipeline's
    corpus stage splits it (plan_inputs.corpus_specs)."""
    from cusprun.pipeline.plan_inputs import corpus_specs

    dim = spec.general if group == "general" else getattr(spec, group)
    c = corpus_specs(group, dim if dim.sources else dim.model_copy(update={"sources": ["-"]}),
                     spec)[0]
    hold = c.get("holdback_docs", 0)
    if isinstance(corpus, (list, tuple)):
        docs = list(corpus)[: dim.max_docs + hold]
        return (docs[:-hold], docs[-hold:]) if hold else (docs, [])
    from cusprun.corpora import CorpusSpec, prepare_corpus, read_corpus

    c["value"] = None            # prune() knows no value: a bundled source names its own
    pc = prepare_corpus(CorpusSpec.model_validate(c), work / "corpora" / group)
    text = lambda split: read_corpus(pc.path, split=split).column("text").to_pylist()  # noqa: E731
    return text("calib"), text("holdback") if hold else []


def prune(model: str | Path | nn.Module, corpora: Mapping[str, Corpus], *,
          ratio: float | Sequence[float] | None = None, method: str = "cusprun",
          general: Corpus | None = None, max_docs: int | None = None, tokenizer=None,
          work_dir: str | Path | None = None, progress: bool = True,
          **settings) -> Expert | list[Expert]:
    """Prune `model` into an expert for the dimensions of `corpora` (language, domain and/or
    task -> documents or a source) at `ratio` of its prunable parameters (several ratios: one
    expert each, from one statistics pass; default: ExpertSpec's target ratio). `model`: an
    alias (cusprun.models.ALIASES), a local directory, a hub id, or a loaded transformers model
    (with `tokenizer`). `method`: 'cusprun' or a baseline; `general`: general text, needed by
    wanda-sp and flap (Cus-Prun then protects the units it needs most). `max_docs`: calibration
    documents per corpus. `settings`: any of SETTINGS, as in an ExpertSpec (layout, allocation,
    compensation, ridge, max_tokens, protect_fraction, device, ...), with the same defaults.
    Every setting is checked before the model is loaded. Grams, corpora and a saved copy of an
    in-memory model go to `work_dir` (default: a temporary directory kept with the expert)."""
    from cusprun.pipeline.validate import validate_build

    spec = build_spec(corpora, ratio=ratio, general=general, max_docs=max_docs,
                      base_model=str(model) if isinstance(model, (str, Path)) else "in-memory model",
                      **settings)
    lists = {g: c for g, c in {**corpora, "general": general}.items()
             if c is not None and not isinstance(c, (str, Path))}
    validate_build(spec, [method], lists)
    if isinstance(model, nn.Module) and tokenizer is None:
        raise SpecError("A loaded model needs its tokenizer: prune(model, ..., tokenizer=tok)")
    work = Path(work_dir or tempfile.mkdtemp(prefix="cusprun-prune-"))
    work.mkdir(parents=True, exist_ok=True)
    experts = _prune(spec, method, model, tokenizer, corpora, general, work, progress)
    return experts[0] if ratio is None or isinstance(ratio, (int, float)) else experts


def _prune(spec, method, model, tokenizer, corpora, general, work: Path, progress: bool):
    from cusprun.steps.baseline import baseline_plan, baseline_scores
    from cusprun.steps.plan import cusprun_plan, damage_probe
    from cusprun.steps.stats import statistics
    from cusprun.adapters import Adapter
    from cusprun.engine import LayeredModel, open_model
    from cusprun.models import model_fingerprint, resolve_model
    from cusprun.models.loading import load_config
    from cusprun.pipeline.plan_inputs import (baseline_job, check_fits_model, compensation_config,
                                              probe_tokens, prune_config, slice_compensation,
                                              uses_holdback)
    from cusprun.pipeline.runtime import resolve_runtime
    from cusprun.scoring import CorpusJob

    if isinstance(model, nn.Module):
        config = model.config
    else:
        base = resolve_model(str(model)).path
        config = load_config(base)
    check_fits_model(spec, config)                       # config only: no weights read yet
    texts = {g: _texts(spec, g, c, work) for g, c in corpora.items()}
    gen = _texts(spec, "general", general, work)[0] if general is not None else None
    runtime = resolve_runtime(spec)
    if isinstance(model, nn.Module):
        base = work / "base"
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        lm, tok = LayeredModel.resident(model), tokenizer
    else:
        lm, tok = open_model(base, **runtime.load_options())
    fp = model_fingerprint(base)
    # what the method's slice compensates with: the expert's own Grams, or (flap) its own means
    setup = slice_compensation(spec, method, Adapter.for_config(config).architecture, ["own"],
                               ["general"])
    comp = CompensationConfig.model_validate(setup["compensation"])
    measured = method == "cusprun" and uses_holdback(spec)
    want_grams = setup["grams"] == ["own"] or (measured and spec.layout == "per_layer")
    jobs = {d: CorpusJob(calib, grams_dir=work / "grams" / d if want_grams else None,
                         grams_max_docs=spec.gram_docs)
            for d, (calib, _) in texts.items()}
    if gen is not None:
        jobs["general"] = CorpusJob(gen)
    stats = statistics(lm, tok, jobs, max_tokens=spec.max_tokens,
                             batch_size=spec.batch_size, grams_precision=runtime.gram_precision,
                             progress=progress)
    for d, s in stats.items():
        s.summary.update({"model_fingerprint": fp, "corpus_hash": f"prune:{d}",
                          "extra": {"dimension": d, "value": d}})
    general_stats = stats.pop("general", None)
    grams = GramSet([work / "grams" / d for d in texts]) if want_grams else None
    experts: list[Expert] = []      # built by the rounds when there are several
    if method == "cusprun":
        probe = None
        if measured:
            probe = damage_probe(lm, tok, {d: held for d, (_, held) in texts.items()},
                                       grams=grams, compensation=compensation_config(spec),
                                       max_tokens=probe_tokens(spec),
                                       precision=runtime.probe_precision)
        plans = [cusprun_plan({d: [s] for d, s in stats.items()},   # rounds > 1: round 1
                                    [general_stats] if general_stats else None,
                                    prune_config(spec, r / spec.rounds), config, fp, probe=probe,
                                    compensation=compensation_config(spec))
                 for r in spec.target_ratios]
        if spec.rounds > 1:
            from cusprun.api_rounds import Rounds

            it = Rounds(spec, tok, runtime, texts, gen, work, want_grams, progress)
            make = lambda plan, last: Expert(plan, Path(base), comp, None,  # noqa: E731
                                             last_round=last)
            experts = [it.run(Expert(p, Path(base), comp, grams if comp.enabled else None), r,
                              make) for p, r in zip(plans, spec.target_ratios)]
    else:
        scores = baseline_scores(lm, [method], general_stats, spec.seed, fp)[method]
        plans = [baseline_plan(baseline_job(spec, method, r), scores, config, fp)
                 for r in spec.target_ratios]
        if setup.get("means") and comp.enabled:   # a method's own compensation (flap's biases)
            grams = ChannelMeans.from_stats([general_stats])
    if not experts:
        experts = [Expert(p, Path(base), comp, grams if comp.enabled else None) for p in plans]
    if spec.heal is not None:    # the same healing as the pipeline's heal stage
        from cusprun.healing.distill import heal

        del lm                  # the teacher and the student load from disk
        heal_texts = {d: calib + held for d, (calib, held) in texts.items()}
        if gen is not None:
            heal_texts["general"] = gen
        for i, e in enumerate(experts):
            sliced = e.save(work / f"sliced-{i}", overwrite=True, progress=progress)
            e.report["healing"] = heal(sliced, base, heal_texts, spec.heal, work / f"healed-{i}",
                                       device=runtime.device, progress=progress)
            e.healed = work / f"healed-{i}"
    return experts
