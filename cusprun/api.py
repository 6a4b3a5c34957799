"""cusprun.prune: a customized expert from Python, without Prefect or an artifact store.

    import cusprun
    expert = cusprun.prune("smollm2-135m", {"language": texts_en, "domain": "notes/*.txt"},
                           ratio=0.25)
    expert.save("my-expert")            # a smaller standard checkpoint

The same library parts the pipeline's stages run: one statistics pass over every corpus
(cusprun.scoring, whole or streamed through cusprun.engine), the plan (Cus-Prun's merge and
measured allocation, or a baseline's scores through the same selection), and closed-form
compensation applied when the expert is used in memory or sliced."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from cusprun.baselines.methods import BASELINES, NEEDS_GENERAL, baseline_setup, bias_family
from cusprun.compensation import ChannelMeans, CompensationConfig, GramSet
from cusprun.errors import CorpusError, SpecError
from cusprun.masks.config import PruneConfig, check_ratio
from cusprun.masks.plan import PruningPlan

log = logging.getLogger(__name__)

Corpus = Sequence[str] | str | Path
"""Documents (a list of strings), or a source: a local file or folder, s3://, bundled://, hf://."""
METHODS = ("cusprun", *BASELINES)


@dataclass
class Expert:
    """A plan for a base model, with what it takes to use or write it."""

    plan: PruningPlan
    base: Path                       # the dense checkpoint directory
    compensation: CompensationConfig
    grams: GramSet | ChannelMeans | None = None
    report: dict = field(default_factory=dict)
    _model: Any = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.plan.achieved_ratio

    def model(self):
        """The dense model with the plan applied in memory (FFN neurons cut, heads zeroed,
        kept columns compensated): what the saved expert computes. Loads the base whole."""
        if self._model is None:
            from cusprun.engine import MaskSession
            from cusprun.models.loading import load_model

            model, _ = load_model(self.base)
            MaskSession(model).apply(self.plan, grams=self.grams, config=self.compensation)
            self._model = model
        return self._model

    def save(self, out_dir: str | Path, *, card: dict | None = None, overwrite: bool = False,
             progress: bool = True) -> Path:
        """Write the expert as a smaller standard checkpoint (stock transformers loads it)."""
        from cusprun.slicing import slice_checkpoint
        from cusprun.slicing.compensated import Compensation

        return slice_checkpoint(self.base, self.plan, out_dir, card=card, overwrite=overwrite,
                                model_fingerprint=self.plan.base_fingerprint, progress=progress,
                                compensation=Compensation(self.compensation, self.grams))


def _check(corpora: Mapping[str, Corpus], ratios: list[float], method: str, compensation: str,
           general: Corpus | None, protect_fraction: float) -> None:
    """Every check that needs no model; SpecError names the bad value."""
    if method not in METHODS:
        raise SpecError(f"method={method!r}; accepted: {', '.join(METHODS)}")
    CompensationConfig(mode=compensation)
    for r in ratios:
        check_ratio(r, "ratio")
    PruneConfig(protect_fraction=protect_fraction)
    if not isinstance(corpora, Mapping) or not 1 <= len(corpora) <= 3:
        raise SpecError("corpora must map 1 to 3 dimensions (language, domain, task) to "
                        f"documents or sources, got {type(corpora).__name__} of {len(corpora or {})}")
    if method in NEEDS_GENERAL and general is None:
        raise SpecError(f"method {method!r} scores with general-text statistics: pass general=")
    for name, c in {**corpora, **({"general": general} if general is not None else {})}.items():
        if isinstance(c, (list, tuple)) and (not c or not all(isinstance(t, str) for t in c)):
            raise CorpusError(f"corpus {name!r}: give a non-empty list of strings or a source")


def _texts(name: str, corpus: Corpus, work: Path, max_docs: int, holdback: int) -> tuple[list[str], list[str]]:
    """(calibration documents, held-back documents) of one corpus."""
    if isinstance(corpus, (list, tuple)):
        docs = list(corpus)[: max_docs + holdback]
        if holdback and len(docs) <= holdback:
            raise CorpusError(f"corpus {name!r} has {len(docs)} documents; {holdback} are held "
                              "back to measure allocations: give more, or holdback_docs=0")
        return (docs[:-holdback], docs[-holdback:]) if holdback else (docs, [])
    from cusprun.corpora import CorpusSpec, prepare_corpus, read_corpus

    spec = CorpusSpec(source=str(corpus), max_docs=max_docs, holdback_docs=holdback,
                      max_eval_docs=1)
    pc = prepare_corpus(spec, work / "corpora" / name)
    text = lambda split: read_corpus(pc.path, split=split).column("text").to_pylist()  # noqa: E731
    return text("calib"), text("holdback") if holdback else []


def prune(model: str | Path | nn.Module, corpora: Mapping[str, Corpus], *,
          ratio: float | Sequence[float] = 0.25, method: str = "cusprun", compensation: str = "ls",
          ridge: float = 0.1, layout: str = "uniform", allocation: str = "measured",
          general: Corpus | None = None, tokenizer=None, max_docs: int = 128,
          holdback_docs: int = 8, max_tokens: int = 256, batch_size: int = 8,
          ffn_multiple: int = 1, protect_fraction: float = 0.05, streaming: str = "auto",
          device: str | None = None, seed: int = 0, work_dir: str | Path | None = None,
          progress: bool = True) -> Expert | list[Expert]:
    """Prune `model` into an expert for the dimensions of `corpora` (dimension -> documents or
    a source) at `ratio` of its prunable parameters (several ratios: one expert each, from one
    statistics pass). `model`: an alias (cusprun.models.ALIASES), a local directory, a hub id,
    or a loaded transformers model (with `tokenizer`). `method`: 'cusprun' or a baseline;
    `compensation` applies to all but 'flap', which brings FLAP's own (its bias from `general`).
    `general`: general text, needed by wanda-sp and flap (Cus-Prun then protects the units it
    needs most: the top `protect_fraction` by mean rank percentile). Grams, corpora and a saved
    copy of an in-memory model go to `work_dir` (default: a temporary directory kept with the
    expert)."""
    from cusprun.engine import LayeredModel, open_model
    from cusprun.models import model_fingerprint, resolve_model
    from cusprun.models.loading import load_config, load_tokenizer

    ratios = [ratio] if isinstance(ratio, (int, float)) else list(ratio)
    _check(corpora, ratios, method, compensation, general, protect_fraction)
    measured = method == "cusprun" and allocation == "measured"
    work = Path(work_dir or tempfile.mkdtemp(prefix="cusprun-prune-"))
    work.mkdir(parents=True, exist_ok=True)
    hold = holdback_docs if measured else 0
    texts = {d: _texts(d, c, work, max_docs, hold) for d, c in corpora.items()}
    gen = _texts("general", general, work, max_docs, 0)[0] if general is not None else None

    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise SpecError("A loaded model needs its tokenizer: prune(model, ..., tokenizer=tok)")
        base = work / "base"
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        lm, tok = LayeredModel.resident(model), tokenizer
    else:
        base = resolve_model(str(model)).path
        lm, tok = open_model(base, streaming=streaming, device=device)
    fp = model_fingerprint(base)
    config = load_config(base)
    comp = CompensationConfig(mode=compensation, ridge=ridge)
    setup = None
    if method != "cusprun":      # a baseline's own layout and compensation, where it has them
        from cusprun.adapters import Adapter

        setup = baseline_setup(method, layout=layout, compensation=compensation, ridge=ridge,
                               ffn_multiple=ffn_multiple,
                               bias_family=bias_family(Adapter.for_config(config)))
        comp = CompensationConfig.model_validate(setup.compensation)
    own_grams = setup is None or setup.means == "own"
    stats, grams = _statistics(lm, tok, texts, gen, work, comp, layout, measured, max_tokens,
                               batch_size, fp, progress, own_grams)
    if method == "cusprun":
        plans = _cusprun_plans(lm, tok, stats, texts, grams, comp, config, fp, ratios, layout,
                               allocation, ffn_multiple, max_tokens, batch_size, protect_fraction)
    else:
        from cusprun.baselines import plan_from_scores, unit_scores

        general_stats = stats.pop("general", [None])[0]
        scores = unit_scores(lm, [method], general_stats, seed)[method]
        plans = [plan_from_scores(method, scores, config, r, layout, base_fingerprint=fp,
                                  seed=seed, ffn_multiple=ffn_multiple, compensation=compensation,
                                  ridge=ridge) for r in ratios]
        if setup.means == "general" and comp.enabled:
            grams = ChannelMeans.from_stats([general_stats])
    experts = [Expert(p, Path(base), comp, grams if comp.enabled else None) for p in plans]
    return experts[0] if isinstance(ratio, (int, float)) else experts


def _statistics(lm, tok, texts, general, work, comp, layout, measured, max_tokens, batch_size,
                fp, progress, own_grams=True):
    """(statistics by corpus, the expert's Grams or None); `own_grams`: whether compensation
    reads the expert's Grams (not a baseline's own source)."""
    from cusprun.scoring import CorpusJob, collect_corpora

    want_grams = (comp.enabled and own_grams) or (measured and layout == "per_layer")
    jobs = {d: CorpusJob(calib, grams_dir=work / "grams" / d if want_grams else None)
            for d, (calib, _) in texts.items()}
    if general is not None:
        jobs["general"] = CorpusJob(general)
    stats = collect_corpora(lm, tok, jobs, max_tokens=max_tokens, batch_size=batch_size,
                            grams_precision="auto", progress=progress)
    for d, s in stats.items():
        s.summary.update({"model_fingerprint": fp, "corpus_hash": f"prune:{d}",
                          "extra": {"dimension": d, "value": d}})
    grams = GramSet([work / "grams" / d for d in texts]) if want_grams else None
    return {d: [s] for d, s in stats.items()}, grams


def _cusprun_plans(lm, tok, stats, texts, grams, comp, config, fp, ratios, layout, allocation,
                   ffn_multiple, max_tokens, batch_size, protect_fraction):
    from cusprun.allocation import DamageProbe
    from cusprun.masks import build_plan

    general = stats.pop("general", None)
    probe = None
    if allocation == "measured":
        probe = DamageProbe(lm, tok, {d: held for d, (_, held) in texts.items()}, grams=grams,
                            compensation=comp, max_tokens=min(max_tokens, 128),
                            batch_size=batch_size, precision="auto")
    out = []
    for r in ratios:
        prune_config = PruneConfig(target_ratio=r, layout=layout, allocation=allocation,
                                   ffn_multiple=ffn_multiple, protect_fraction=protect_fraction,
                                   min_docs=min(8, *(s[0].n_docs for s in stats.values())))
        plan = build_plan(stats, prune_config, config, base_fingerprint=fp, general=general,
                          probe=probe)
        plan.report["compensation"] = comp.model_dump()
        out.append(plan)
    return out
