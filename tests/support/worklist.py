"""A build's work list without Prefect, models or data, for tests of its keys: made-up corpus
records, a float32 CPU runtime, and every key by a readable name.

  corpus_record(dim, value, h)   what the corpus stage records for a corpus with hash `h`
  MODEL, CPU, CORPORA, EVAL      a resolved model, runtime, calibration corpora and eval sets
  worklist_keys(wl)              every key of a WorkList by name ("stats language", "plan x@r")
  work(spec=None, runtime=CPU)   worklist_keys of the plan for `spec` (default: two baselines)
  changed_keys(before, after)    the names whose key differs
"""
from __future__ import annotations

from cusprun.pipeline.runtime import Runtime
from cusprun.pipeline.spec import load_spec
from cusprun.pipeline.worklist import WorkList, plan_work

MODEL = {"ref": "m", "fingerprint": "fp0123456789abcdef"}
CPU = Runtime(device="cpu", dtype="float32", gram_precision="float32", probe_precision="float32",
              sweep_precision="float32")


def corpus_record(dim: str, value: str, h: str) -> dict:
    return {"key": f"corpus/{h}", "hash": h, "dimension": dim, "value": value,
            "source": f"bundled://{dim}/{value}", "file": "corpus.parquet"}


CORPORA = {"language": [corpus_record("language", "en", "c1")],
           "domain": [corpus_record("domain", "health", "c2")],
           "task": [corpus_record("task", "qa", "c3")],
           "general": [corpus_record("general", "en", "c4")]}
EVAL = {"language=en": corpus_record("language", "en", "e1"),
        "domain=health": corpus_record("domain", "health", "e2")}


def worklist_keys(wl: WorkList) -> dict[str, str]:
    """Every key of the work list by a readable name."""
    out = {f"stats {s.group}": s.stats.key for s in wl.statistics}
    out.update({f"grams {s.group}": s.grams.key for s in wl.statistics if s.grams})
    if wl.scores:
        out["scores"] = wl.scores.key
    out.update({f"plan {m}@{r}": j.key for (m, r), j in wl.plans.items()})
    out.update({f"slice {m}@{r}": j.key for (m, r), j in wl.slices.items()})
    out.update({f"heal {m}@{r}": j.key for (m, r), j in wl.heals.items()})
    if wl.evaluation:
        out["evaluate"] = wl.evaluation.key
    return out


def work(spec=None, runtime: Runtime = CPU) -> dict[str, str]:
    spec = spec or load_spec({"baselines": ["magnitude", "flap"],
                              "evaluation": {"sweep_ratios": [0.1, 0.25]}})
    return worklist_keys(plan_work(spec, MODEL, CORPORA, EVAL, runtime))


def changed_keys(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}
