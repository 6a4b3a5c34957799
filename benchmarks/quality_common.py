"""Shared set-up of the quality benchmarks: the demo expert's corpora, statistics, Grams and
held-out loss sets on the embedded SmolLM2-135M, built with the library (no Prefect), exactly as
the build-expert flow builds them for `cusprun demo`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cusprun.compensation import GramSet
from cusprun.corpora import prepare_corpus
from cusprun.evaluation.likelihood import heldout_loss, scored_tokens
from cusprun.evaluation.tasks import loss_sets_from_tables
from cusprun.models import load_model, resolve_model
from cusprun.pipeline.plan_inputs import calibration_corpora, evaluation_corpora, gram_tokens
from cusprun.pipeline.spec import ExpertSpec
from cusprun.scoring import CorpusJob
from cusprun.steps.stats import statistics

from cusprun.pipeline.demo import FULL_DEMO_SPEC as DEMO_SPEC

# `cusprun demo`'s spec, without its build-only fields.
DEMO = {k: v for k, v in DEMO_SPEC.items() if k not in ("target_ratios",)}


@dataclass
class Calibration:
    stats: dict = field(default_factory=dict)       # dimension -> [DimensionStats]
    general: list = field(default_factory=list)
    heldback: dict = field(default_factory=dict)    # dimension -> [texts]
    grams: GramSet | None = None
    seconds: dict = field(default_factory=dict)


def demo_model():
    r = resolve_model("smollm2-135m")
    model, tok = load_model(r.path, device="cpu")
    return model, tok, r.fingerprint


def eval_sets(spec: ExpertSpec, work: Path, tokenizer) -> dict:
    """The demo report's held-out loss sets (same documents as `cusprun demo`'s report)."""
    tables = {n: prepare_corpus(c, work / "eval").read("eval")
              for n, c in evaluation_corpora(spec).items()}
    ev = spec.evaluation
    return loss_sets_from_tables(tables, max_docs=ev.max_docs, min_tokens=ev.min_loss_tokens,
                                 count_tokens=scored_tokens(tokenizer, ev.max_tokens))


def losses(model, tok, sets: dict, max_tokens: int = 128) -> dict[str, float]:
    return {n: heldout_loss(model, tok, ex, max_tokens=max_tokens, progress=False).loss
            for n, ex in sets.items()}


def calibrate(model, tok, fp: str, spec: ExpertSpec, work: Path) -> Calibration:
    """Statistics of every calibration corpus and Grams of the expert's own, from one pass
    (cusprun.steps.stats, as the pipeline's stats stage), and held-back docs."""
    cal = Calibration()
    jobs, where = {}, {}
    for dim, specs in calibration_corpora(spec).items():
        for i, c in enumerate(specs):
            p = prepare_corpus(c, work / "corpora")
            name = f"{dim}#{i}"
            grams = None if dim == "general" else work / (
                f"grams-{name}-{p.hash[:12]}-{gram_tokens(spec)}-{spec.gram_docs}-{spec.gram_precision}")
            jobs[name] = CorpusJob(p.texts("calib"), grams_dir=grams, grams_max_docs=spec.gram_docs)
            where[name] = (dim, grams)
            if dim != "general":
                cal.heldback.setdefault(dim, []).extend(p.texts("holdback"))
    t = time.perf_counter()
    stats = statistics(model, tok, jobs, max_tokens=spec.max_tokens, batch_size=spec.batch_size,
                       grams_precision=spec.gram_precision, progress=False)
    cal.seconds = {"stats + grams": time.perf_counter() - t}
    for name, s in stats.items():
        s.summary["model_fingerprint"] = fp
        dim = where[name][0]
        (cal.general if dim == "general" else cal.stats.setdefault(dim, [])).append(s)
    cal.grams = GramSet([g for _, g in where.values() if g is not None])
    return cal


def own_sets(sets: dict, spec: ExpertSpec) -> list[str]:
    return [n for n in sets if n.split("=")[0] in ("domain", "task")
            or n == f"language={spec.language.value}"]


def table_cells(rows: list[dict], float_fmt: str = "{:.3f}") -> tuple[list[str], list[list[str]]]:
    """Columns and formatted cells of dict rows (seconds, 'X s' columns, as whole numbers)."""
    cols = list(rows[0])
    cells = [[(f"{v:.0f}" if k.endswith(" s") else float_fmt.format(v)) if isinstance(v, float) else str(v)
              for k, v in r.items()] for r in rows]
    return cols, cells
