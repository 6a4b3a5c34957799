"""Iterative pruning for `cusprun.prune(rounds=k)`: the rounds after the first, with the steps
the pipeline's stages run (cusprun.steps). Each round writes the round before's expert as a
real smaller checkpoint under the work directory, collects the statistics (and Grams) of every
corpus on it, and plans on it up to the round's cumulative target (cusprun.plans.rounds)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cusprun.plans.plan import PruningPlan


@dataclass
class LastRound:
    """Iterative pruning (rounds > 1): the last round's plan on the checkpoint the round before
    left, with its Grams; what the expert applies (its `plan` says the same in base terms)."""

    checkpoint: Path
    plan: PruningPlan
    grams: Any = None


class Rounds:
    """What every round of one prune() call shares: settings, tokenizer, texts, work dir."""

    def __init__(self, spec, tok, runtime, texts: dict, general: list[str] | None, work: Path,
                 want_grams: bool, progress: bool):
        self.spec, self.tok, self.runtime, self.texts = spec, tok, runtime, texts
        self.general, self.work, self.want_grams, self.progress = general, work, want_grams, progress

    def run(self, first, target: float, make: Callable[[PruningPlan, LastRound], Any]):
        """The expert after every round, from round 1's `first` (planned at target/k);
        `make(plan in base terms, last round)` makes each round's expert."""
        from cusprun.plans.rounds import round_targets

        expert = first
        for i, cumulative in enumerate(round_targets(target, self.spec.rounds)[1:], start=2):
            expert = self._round(expert, first, i, cumulative, self.work / "rounds" / f"{target:g}",
                                 make)
        return expert

    def _round(self, before, first, i: int, cumulative: float, where: Path, make):
        from cusprun.compensation import GramSet
        from cusprun.engine import open_model
        from cusprun.models import model_fingerprint
        from cusprun.models.loading import load_config
        from cusprun.pipeline.plan_inputs import (compensation_config, probe_tokens, prune_config,
                                                  uses_holdback)
        from cusprun.scoring import CorpusJob
        from cusprun.steps.plan import damage_probe
        from cusprun.steps.rounds import round_plan
        from cusprun.steps.stats import statistics

        spec = self.spec
        ckpt = before.save(where / f"round-{i - 1}", overwrite=True, progress=self.progress)
        lm, _ = open_model(ckpt, **self.runtime.load_options())
        fp = model_fingerprint(ckpt)
        gram_dir = where / f"grams-round-{i}"
        jobs = {d: CorpusJob(calib, grams_dir=gram_dir / d if self.want_grams else None,
                             grams_max_docs=spec.gram_docs)
                for d, (calib, _) in self.texts.items()}
        if self.general is not None:
            jobs["general"] = CorpusJob(self.general)
        stats = statistics(lm, self.tok, jobs, max_tokens=spec.max_tokens,
                           batch_size=spec.batch_size,
                           grams_precision=self.runtime.gram_precision, progress=self.progress)
        for d, s in stats.items():
            s.summary.update({"model_fingerprint": fp, "corpus_hash": f"prune:{d}",
                              "extra": {"dimension": d, "value": d}})
        general = stats.pop("general", None)
        grams = GramSet([gram_dir / d for d in self.texts]) if self.want_grams else None
        probe = None
        if uses_holdback(spec):
            probe = damage_probe(lm, self.tok, {d: held for d, (_, held) in self.texts.items()},
                                 grams=grams, compensation=compensation_config(spec),
                                 max_tokens=probe_tokens(spec),
                                 precision=self.runtime.probe_precision)
        local, plan = round_plan(before.plan, {d: [s] for d, s in stats.items()},
                                 [general] if general else None, prune_config(spec, cumulative),
                                 load_config(ckpt), fp, probe=probe,
                                 compensation=compensation_config(spec))
        return make(plan, LastRound(ckpt, local, grams if first.compensation.enabled else None))
